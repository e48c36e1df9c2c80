"""Parse texts with a trained model: encode -> logits (predict) -> structured results (decode).

Two backends compute the same three logits arrays: eager PyTorch (`model.safetensors`) and ONNX
Runtime (`model.onnx`, written by `nlu export`). Everything else (tokenization, alignment,
constrained decoding, result building) is shared, so both backends answer identically up to
floating-point noise in the logits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, overload

import numpy as np

from nlu.inference.backends import Forward as Forward
from nlu.inference.backends import Logits as Logits
from nlu.inference.backends import onnx_forward as onnx_forward
from nlu.inference.backends import torch_forward as torch_forward
from nlu.inference.decode import chosen_skill, decode_batch
from nlu.labels import LabelIndex, SkillLabels
from nlu.model import modeldir
from nlu.model.alignment import Encoding, Tokenizer, check_tokenizer, encode, pad_id
from nlu.model.features import encodings_inputs
from nlu.model.modeldir import ModelDirError, ModelFolder
from nlu.model.ood import OutOfScope, threshold_problem
from nlu.result import ParseOptions, ParseResult
from nlu.text import TextError, text_problem

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class HubApi(Protocol):
    """The two `huggingface_hub.HfApi` methods `push_to_hub` uses."""

    def create_repo(
        self, repo_id: str, *, private: bool, exist_ok: bool, repo_type: str
    ) -> object: ...

    def upload_folder(
        self, *, repo_id: str, folder_path: str, repo_type: str, commit_message: str
    ) -> object: ...


class UnknownSkillError(ValueError):
    pass


class OptionError(ValueError):
    """A parse option that does not fit the model (e.g. a threshold it cannot use)."""


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


# What one more forward pass costs, in padded tokens: a pass pays a fixed price (thread
# hand-offs, every graph node once) besides its tokens. For the int8 MiniLM on 2 cores about
# 30-40 tokens (benchmarks/serve_floor.py prints raw passes with and without length groups).
PASS_COST_TOKENS = 32


def length_groups(lengths: Sequence[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Rows grouped into forward passes of similar lengths: of the splits of the rows sorted by
    length, the one with the fewest padded tokens plus `pass_cost` per pass (each pass pads to
    its longest row). A batch of like lengths stays one pass."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ordered = [lengths[i] for i in order]
    # A pass only ever ends where the length changes.
    cuts = [0] + [i for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1]]
    cuts.append(len(ordered))
    cost = [0] * len(cuts)
    first = [0] * len(cuts)  # the cut where the last pass ending at cuts[j] starts
    for j in range(1, len(cuts)):
        cost[j], first[j] = min(
            (cost[i] + (cuts[j] - cuts[i]) * ordered[cuts[j] - 1] + pass_cost, i) for i in range(j)
        )
    groups = []
    j = len(cuts) - 1
    while j > 0:
        groups.append(order[cuts[first[j]] : cuts[j]])
        j = first[j]
    return groups[::-1]


def parse_batch(
    forward: Forward,
    index: LabelIndex,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    options: Sequence[ParseOptions] | None = None,
    adapters: Mapping[str, Forward] | None = None,
    ood: OutOfScope | None = None,
) -> list[ParseResult]:
    """The single code path for evaluation and serving: tokenize `texts`, run the forward
    passes (one per length group, `length_groups`), decode.

    `options` gives each text its own (forced skill, top_k, threshold), so the server can answer
    several requests from one micro-batch. `adapters`: per-skill adapted forwards (a second pass
    for the texts decoded as those skills). `ood`: the out-of-scope detector and calibration.
    """
    encodings = encode(tokenizer, texts, max_length)
    per_text = list(options) if options is not None else [ParseOptions()] * len(texts)
    results: list[ParseResult | None] = [None] * len(texts)
    for rows in length_groups([len(e.input_ids) for e in encodings]):
        parsed = parse_encoded(
            forward,
            index,
            [encodings[row] for row in rows],
            [texts[row] for row in rows],
            [per_text[row] for row in rows],
            pad=pad_id(tokenizer),
            adapters=adapters,
            ood=ood,
        )
        for row, result in zip(rows, parsed, strict=True):
            results[row] = result
    done = [r for r in results if r is not None]
    assert len(done) == len(texts), "length_groups covers every row once"
    return done


def parse_encoded(
    forward: Forward,
    index: LabelIndex,
    encodings: Sequence[Encoding],
    texts: Sequence[str],
    options: Sequence[ParseOptions],
    *,
    pad: int,
    adapters: Mapping[str, Forward] | None,
    ood: OutOfScope | None,
) -> list[ParseResult]:
    """One forward pass over tokenized texts, then their results."""
    batch = encodings_inputs(encodings, pad)
    logits = forward(batch)
    if adapters:
        apply_adapters(
            logits, batch, adapters=adapters, index=index, forced=[o.skill for o in options]
        )
    oos_scores: list[float | None] = [None] * len(texts)
    in_scope = [True] * len(texts)
    if ood is not None:
        scores = [float(s) for s in ood.scores(logits.router, logits.pooled)]
        for row, (score, opts) in enumerate(zip(scores, options, strict=True)):
            threshold = ood.threshold if opts.oos_threshold is None else opts.oos_threshold
            # A forced skill is always in scope: the caller knows what the text is about.
            in_scope[row] = opts.skill is not None or score <= threshold
        oos_scores = list(scores)
    return decode_batch(
        texts=texts,
        encodings=encodings,
        router_logits=logits.router,
        intent_logits=logits.intents,
        slot_logits=logits.slots,
        index=index,
        options=options,
        oos_scores=oos_scores,
        in_scope=in_scope,
        router_temperature=ood.router_temperature if ood else 1.0,
        intent_temperature=ood.intent_temperature if ood else 1.0,
    )


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
        ood: OutOfScope | None = None,
    ) -> None:
        check_tokenizer(tokenizer)
        if any(s.slot_kinds for s in skills):
            from nlu.resolve import engine

            try:
                engine.load()  # not on the first request
            except engine.EngineUnavailable as err:
                log.warning("%s", err)
        self.source: Path | None = None  # the model folder, when loaded from one
        self.ood = ood
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

            from nlu.model.adapters import adapted_model
            from nlu.model.joint import JointModel

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
            ood=folder.ood,
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model folder this parser was loaded from (with its current out-of-scope
        threshold) to `directory`; `Parser.from_pretrained(directory)` reads it back. The folder
        is read again from where it was loaded: a serving parser keeps no second copy of the
        weights in memory."""
        if self.source is None:
            raise ModelDirError("this parser was not loaded from a model folder; nothing to save")
        folder = modeldir.load(self.source, self.backend)
        return modeldir.save(directory, dataclasses.replace(folder, ood=self.ood))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = True,
        token: str | None = None,
        commit_message: str = "Upload nlu model",
        api: HubApi | None = None,
    ) -> str:
        """Save to a temporary folder and upload it to the Hugging Face hub as a model repo
        (model card included); returns the commit URL. `api`: a `huggingface_hub.HfApi` or a
        stand-in with the same two methods (tests use a local one, never the network)."""
        import tempfile

        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                repo_type="model",
                commit_message=commit_message,
            )
        return str(commit)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, backend: str = "auto", threads: int | None = None
    ) -> Parser:
        """backend: 'torch', 'onnx', or 'auto' (ONNX when the directory has model.onnx)."""
        parser = cls.from_folder(modeldir.load(directory, backend), threads=threads)
        parser.source = modeldir.locate(directory)
        return parser

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

    def check_options(self, options: ParseOptions) -> None:
        """UnknownSkillError, or OptionError naming the option that cannot be used."""
        self.check_skill(options.skill)
        if options.timezone is not None or options.locale is not None:
            from nlu.resolve import InvalidReference, make_reference

            try:
                make_reference(options.reference_time, options.timezone, options.locale)
            except InvalidReference as err:
                raise OptionError(str(err)) from None
        if options.oos_threshold is None:
            return
        problem = threshold_problem(self.ood, options.oos_threshold)
        if problem:
            raise OptionError(f"oos_threshold: {problem}")

    def use_threshold(self, threshold: float) -> None:
        """Replace the model's out-of-scope threshold (`nlu serve --oos-threshold`)."""
        self.check_options(ParseOptions(oos_threshold=threshold))
        assert self.ood is not None  # check_options refuses a threshold without a detector
        self.ood = dataclasses.replace(self.ood, threshold=threshold)

    @overload
    def parse(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self,
        texts: str,
        *,
        skill: str | None = None,
        top_k: int = 5,
        oos_threshold: float | None = None,
        reference_time: datetime | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        batch_size: int = 64,
    ) -> ParseResult: ...

    @overload
    def parse(
        self,
        texts: Sequence[str],
        *,
        skill: str | None = None,
        top_k: int = 5,
        oos_threshold: float | None = None,
        reference_time: datetime | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        batch_size: int = 64,
    ) -> list[ParseResult]: ...

    def parse(
        self,
        texts: str | Sequence[str],
        *,
        skill: str | None = None,
        top_k: int = 5,
        oos_threshold: float | None = None,
        reference_time: datetime | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        batch_size: int = 64,
    ) -> ParseResult | list[ParseResult]:
        """One text gives one result; a list of texts, a list of results in the same order.
        `reference_time`: "now" for relative dates and times in slot values (default: the
        current time); `timezone`: the user's IANA zone (default: the offset of an aware
        `reference_time`, else this machine's zone); `locale`: "en_GB" reads "12/11" as 12
        November (default: none, such a date is ambiguous). OptionError names a bad one."""
        options = ParseOptions(
            skill=skill,
            top_k=top_k,
            oos_threshold=oos_threshold,
            reference_time=reference_time,
            timezone=timezone,
            locale=locale,
        )
        if isinstance(texts, str):
            return self.parse_with_options([texts], [options], batch_size=batch_size)[0]
        return self.parse_with_options(texts, [options] * len(texts), batch_size=batch_size)

    def parse_nbest(
        self,
        hypotheses: Sequence[tuple[str, float]],
        *,
        skill: str | None = None,
        top_k: int = 5,
        oos_threshold: float | None = None,
        reference_time: datetime | None = None,
        timezone: str | None = None,
        locale: str | None = None,
    ) -> ParseResult:
        """One result for an ASR n-best list of (text, ASR confidence): see
        `nlu.inference.nbest`."""
        from nlu.inference.nbest import combine

        if not hypotheses:
            raise TextError("an n-best list needs at least one hypothesis")
        texts = [text for text, _ in hypotheses]
        results = self.parse(
            texts,
            skill=skill,
            top_k=top_k,
            oos_threshold=oos_threshold,
            reference_time=reference_time,
            timezone=timezone,
            locale=locale,
        )
        return combine(results, [confidence for _, confidence in hypotheses], top_k=top_k)

    def parse_with_options(
        self,
        texts: Sequence[str],
        options: Sequence[ParseOptions],
        *,
        batch_size: int = 64,
    ) -> list[ParseResult]:
        """Each text with its own options."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings; Parser.parse also takes one string")
        if len(options) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(options)} options")
        for i, text in enumerate(texts):
            problem = text_problem(text)
            if problem:
                raise TextError(f"text {i} ({text!r}) {problem}")
        for distinct in set(options):
            self.check_options(distinct)
        return self.parse_checked(texts, options, batch_size=batch_size)

    def parse_checked(
        self,
        texts: Sequence[str],
        options: Sequence[ParseOptions],
        *,
        batch_size: int = 64,
    ) -> list[ParseResult]:
        """`parse_with_options` for texts and options that the caller has checked already (the
        server: its request schema holds the text rule, and `check_options` ran once per
        request), so that no check runs twice on the way."""
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
                ood=self.ood,
            )
        return results
