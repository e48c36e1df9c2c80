"""Parse texts with a trained model: encode -> logits (predict) -> structured results (decode).

Two backends compute the same three logits arrays: eager PyTorch (`model.safetensors`) and ONNX
Runtime (`model.onnx`, written by `nlu export`). Everything else (tokenization, alignment,
constrained decoding, result building) is shared, so both backends answer identically up to
floating-point noise in the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nlu import modeldir
from nlu.alignment import Tokenizer, check_tokenizer, encode, pad_id
from nlu.decode import chosen_skill, decode
from nlu.features import encodings_inputs
from nlu.labels import LabelIndex, SkillLabels
from nlu.modeldir import ModelDirError, ModelFolder
from nlu.result import ParseResult

if TYPE_CHECKING:
    from nlu.model import JointModel


class UnknownSkillError(ValueError):
    pass


@dataclass
class Logits:
    router: np.ndarray  # [batch, skills]
    intents: np.ndarray  # [batch, total intents]
    slots: np.ndarray  # [batch, tokens, total tags]


Forward = Callable[[dict[str, np.ndarray]], Logits]


def torch_forward(model: JointModel) -> Forward:
    """Forward pass of a `JointModel` (eval mode, no autograd) as a numpy -> Logits function."""
    import torch

    @torch.inference_mode()
    def forward(batch: dict[str, np.ndarray]) -> Logits:
        device = next(model.parameters()).device
        out = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        return Logits(
            router=out.router_logits.float().cpu().numpy(),
            intents=out.intent_logits.float().cpu().numpy(),
            slots=out.slot_logits.float().cpu().numpy(),
        )

    return forward


def onnx_forward(path: Path | None, *, threads: int | None = None) -> Forward:
    import onnxruntime as ort

    if path is None:
        raise ModelDirError("this model folder was loaded without its ONNX graph")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch: dict[str, np.ndarray]) -> Logits:
        router, intents, slots = session.run(None, batch)
        return Logits(router=router, intents=intents, slots=slots)

    return forward


def apply_adapters(
    logits: Logits,
    batch: dict[str, np.ndarray],
    *,
    adapters: Mapping[str, Forward],
    index: LabelIndex,
    forced: Sequence[str | None],
) -> None:
    """Replace the intent and slot logits of rows decoded as an adapted skill with those of a
    second pass through that skill's adapted encoder (see nlu/adapters.py). Other rows, and the
    router, keep the base model's logits."""
    chosen = np.array(
        [chosen_skill(logits.router[row], index, skill) for row, skill in enumerate(forced)]
    )
    for name, forward in adapters.items():
        k = index.position[name]
        rows = np.flatnonzero(chosen == k)
        if not len(rows):
            continue
        width = int(batch["attention_mask"][rows].sum(1).max())  # drop padding only others need
        sub = forward({key: value[rows, :width] for key, value in batch.items()})
        intents, tags = index.intent_slices[k], index.tag_slices[k]
        logits.intents[rows, intents] = sub.intents[:, intents]
        logits.slots[rows, :width, tags] = sub.slots[:, :, tags]


def parse_batch(
    forward: Forward,
    index: LabelIndex,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    skill: str | None = None,
    top_k: int = 5,
    options: Sequence[tuple[str | None, int]] | None = None,
    adapters: Mapping[str, Forward] | None = None,
) -> list[ParseResult]:
    """One forward pass over `texts`; the single code path for evaluation and serving.

    `options` gives each text its own (forced skill, top_k), so the server can answer several
    requests from one micro-batch; otherwise `skill` and `top_k` apply to all. `adapters`:
    per-skill adapted forwards (a second pass for the texts decoded as those skills).
    """
    encodings = encode(tokenizer, texts, max_length)
    batch = encodings_inputs(encodings, pad_id(tokenizer))
    logits = forward(batch)
    per_text = options if options is not None else [(skill, top_k)] * len(texts)
    if adapters:
        apply_adapters(
            logits, batch, adapters=adapters, index=index, forced=[s for s, _ in per_text]
        )
    return [
        decode(
            text=text,
            encoding=enc,
            router_logits=logits.router[row],
            intent_logits=logits.intents[row],
            slot_logits=logits.slots[row],
            index=index,
            skill=text_skill,
            top_k=text_top_k,
        )
        for row, (text, enc, (text_skill, text_top_k)) in enumerate(
            zip(texts, encodings, per_text, strict=True)
        )
    ]


class Parser:
    """A loaded model; `parse` is what `nlu predict`, evaluation and the server call."""

    def __init__(
        self,
        *,
        forward: Forward,
        skills: Sequence[SkillLabels],
        tokenizer: Tokenizer,
        max_length: int,
        backend: str,
        adapters: Mapping[str, Forward] | None = None,
    ) -> None:
        check_tokenizer(tokenizer)
        self.forward = forward
        self.adapters = dict(adapters or {})
        self.index = LabelIndex.of(skills)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.backend = backend

    @classmethod
    def from_folder(cls, folder: ModelFolder, *, threads: int | None = None) -> Parser:
        """`threads` caps intra-op threads (several server workers on few cores)."""
        if folder.backend == "torch":
            import torch

            from nlu.adapters import adapted_model
            from nlu.model import JointModel

            if threads:
                torch.set_num_threads(threads)
            model = JointModel.from_folder(folder)
            forward = torch_forward(model)
            adapters = {
                skill: torch_forward(adapted_model(model, skill, adapter))
                for skill, adapter in folder.adapters.items()
            }
        else:
            forward = onnx_forward(folder.onnx, threads=threads)
            adapters = {
                skill: onnx_forward(adapter.onnx, threads=threads)
                for skill, adapter in folder.adapters.items()
            }
        return cls(
            forward=forward,
            skills=folder.meta.skills,
            tokenizer=folder.tokenizer,
            max_length=folder.meta.max_length,
            backend=folder.backend,
            adapters=adapters,
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, backend: str = "auto", threads: int | None = None
    ) -> Parser:
        """backend: 'torch', 'onnx', or 'auto' (ONNX when the directory has model.onnx)."""
        return cls.from_folder(modeldir.load(directory, backend), threads=threads)

    @property
    def skills(self) -> list[SkillLabels]:
        return list(self.index.skills)

    @property
    def skill_names(self) -> list[str]:
        return self.index.names

    def check_skill(self, skill: str | None) -> None:
        if skill is not None and skill not in self.index.position:
            raise UnknownSkillError(
                f"unknown skill {skill!r}; this model knows: {', '.join(self.skill_names)}"
            )

    def parse(
        self,
        texts: Sequence[str],
        *,
        skill: str | None = None,
        top_k: int = 5,
        batch_size: int = 64,
    ) -> list[ParseResult]:
        return self.parse_with_options(texts, [(skill, top_k)] * len(texts), batch_size=batch_size)

    def parse_with_options(
        self,
        texts: Sequence[str],
        options: Sequence[tuple[str | None, int]],
        *,
        batch_size: int = 64,
    ) -> list[ParseResult]:
        """Each text with its own (forced skill or None, top_k)."""
        for skill, _ in set(options):
            self.check_skill(skill)
        results: list[ParseResult] = []
        for start in range(0, len(texts), batch_size):
            results += parse_batch(
                self.forward,
                self.index,
                self.tokenizer,
                texts[start : start + batch_size],
                max_length=self.max_length,
                options=options[start : start + batch_size],
                adapters=self.adapters,
            )
        return results
