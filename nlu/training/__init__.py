"""The training room: one engine (`engine`: the stages and the fit loop; `finish`: the one end
of every run) and the recipes built on it: `train`, `finetune`, `add_skill`, `calibrate`,
`benchmark`; `mtl` holds multi-task sampling and loss weighting."""
