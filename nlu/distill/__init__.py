"""Distillation: black-box teachers (`teachers`) fused into one student trained by the
training engine (`recipe`)."""

from nlu._aliases import forward_names

# `from nlu.distill import distill` (nlu.distill was one module before 0.2).
__getattr__ = forward_names(
    "nlu.distill", ["nlu.distill.recipe", "nlu.distill.config", "nlu.distill.targets"]
)
