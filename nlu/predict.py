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
from typing import Any

import numpy as np

from nlu.alignment import Encoding, encode
from nlu.decode import LabelIndex, chosen_skill, decode
from nlu.schema import SkillLabels

ONNX_FILE = "model.onnx"


class UnknownSkillError(ValueError):
    pass


@dataclass
class Logits:
    router: np.ndarray  # [batch, skills]
    intents: np.ndarray  # [batch, total intents]
    slots: np.ndarray  # [batch, tokens, total tags]


Forward = Callable[[dict[str, np.ndarray]], Logits]


def pad_batch(encodings: Sequence[Encoding], pad_id: int) -> dict[str, np.ndarray]:
    """Dynamic padding to the longest text in the batch."""
    width = max(len(e.input_ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.input_ids)] = enc.input_ids
        mask[row, : len(enc.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def torch_forward(model: Any) -> Forward:
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


def onnx_forward(path: Path, *, threads: int | None = None) -> Forward:
    import onnxruntime as ort

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
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    skill: str | None = None,
    top_k: int = 5,
    options: Sequence[tuple[str | None, int]] | None = None,
    adapters: Mapping[str, Forward] | None = None,
) -> list[dict[str, Any]]:
    """One forward pass over `texts`; the single code path for evaluation and serving.

    `options` gives each text its own (forced skill, top_k), so the server can answer several
    requests from one micro-batch; otherwise `skill` and `top_k` apply to all. `adapters`:
    per-skill adapted forwards (a second pass for the texts decoded as those skills).
    """
    encodings = encode(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = pad_batch(encodings, pad_id)
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
    """A loaded model directory; `parse` is what `nlu predict`, evaluation and the server call."""

    def __init__(
        self,
        *,
        forward: Forward,
        skills: Sequence[SkillLabels],
        tokenizer: Any,
        max_length: int,
        backend: str,
        adapters: Mapping[str, Forward] | None = None,
    ) -> None:
        self.forward = forward
        self.adapters = dict(adapters or {})
        self.index = LabelIndex(list(skills))
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.backend = backend

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, backend: str = "auto", threads: int | None = None
    ) -> Parser:
        """backend: 'torch', 'onnx', or 'auto' (ONNX when the directory has model.onnx).

        `threads` caps intra-op threads (several server workers on few cores)."""
        from transformers import AutoTokenizer

        from nlu.adapters import ADAPTERS_DIR, adapted_model, adapter_skills, check_adapters
        from nlu.model import JointModel, ModelDirError, check_model_dir, read_nlu_config

        directory = Path(directory)
        if backend == "auto":
            backend = "onnx" if (directory / ONNX_FILE).is_file() else "torch"
        if backend == "torch":
            if threads:
                import torch

                torch.set_num_threads(threads)
            model, tokenizer, max_length = JointModel.from_pretrained(directory)
            check_adapters(directory, model.index.names)
            return cls(
                forward=torch_forward(model),
                skills=model.skills,
                tokenizer=tokenizer,
                max_length=max_length,
                backend="torch",
                adapters={
                    skill: torch_forward(adapted_model(model, directory, skill))
                    for skill in adapter_skills(directory)
                },
            )
        if backend != "onnx":
            raise ValueError(f"backend must be torch, onnx or auto, not {backend!r}")
        check_model_dir(directory, weights=ONNX_FILE)
        meta = read_nlu_config(directory)
        if not (directory / ONNX_FILE).is_file():
            raise ModelDirError(f"{directory} has no {ONNX_FILE}; create it with `nlu export`")
        skills = [SkillLabels.from_dict(s) for s in meta["skills"]]
        check_adapters(directory, [s.name for s in skills])
        unexported = sorted(
            set(adapter_skills(directory)) - set(adapter_skills(directory, weights=ONNX_FILE))
        )
        if unexported:
            raise ModelDirError(
                f"{directory} has adapters without {ONNX_FILE} for skills {unexported}; "
                "export the model again with `nlu export`"
            )
        return cls(
            forward=onnx_forward(directory / ONNX_FILE, threads=threads),
            skills=skills,
            tokenizer=AutoTokenizer.from_pretrained(directory),
            max_length=int(meta["max_length"]),
            backend="onnx",
            adapters={
                skill: onnx_forward(directory / ADAPTERS_DIR / skill / ONNX_FILE, threads=threads)
                for skill in adapter_skills(directory, weights=ONNX_FILE)
            },
        )

    @property
    def skills(self) -> list[SkillLabels]:
        return self.index.skills

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
    ) -> list[dict[str, Any]]:
        return self.parse_with_options(texts, [(skill, top_k)] * len(texts), batch_size=batch_size)

    def parse_with_options(
        self,
        texts: Sequence[str],
        options: Sequence[tuple[str | None, int]],
        *,
        batch_size: int = 64,
    ) -> list[dict[str, Any]]:
        """Each text with its own (forced skill or None, top_k)."""
        for skill, _ in set(options):
            self.check_skill(skill)
        results: list[dict[str, Any]] = []
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
