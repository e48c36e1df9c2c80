"""The model room: the joint encoder-router-heads network (`joint`), parameter sharing
(`sharing`, `columns`), LoRA adapters (`adapters`), the out-of-scope detector (`ood`), the model
folder and its card (`modeldir`, `card`), ONNX export (`export`), and the text-to-tensor parts
(`alignment`, `features`)."""

from nlu._aliases import forward_names

# `from nlu.model import JointModel` (nlu.model was one module before 0.2).
__getattr__ = forward_names(
    "nlu.model", ["nlu.model.joint", "nlu.model.encoders", "nlu.model.losses"]
)
