"""`nlu evaluate`: load a model, parse a split of each data source, score it, write the
reports (metrics.json, metrics.md, confusion.png, reliability.png, predictions.jsonl)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlu.config import ConfigError, parse_config
from nlu.evaluation.metrics import calibration_metrics, score
from nlu.evaluation.report import format_table, plot_confusion, plot_reliability, prediction_row
from nlu.model import modeldir
from nlu.result import ParseResult
from nlu.schema import Example

if TYPE_CHECKING:
    from nlu.inference.parser import Parser

logger = logging.getLogger(__name__)


def _template_options(model_dir: Path) -> dict[str, Any]:
    """Expand skill templates exactly as training did, so a skill's train/dev split matches."""
    saved = modeldir.read_training_config(model_dir)
    if saved is None:
        return {}
    try:
        cfg = parse_config(saved, source=str(model_dir / modeldir.TRAINING_CONFIG_FILE))
    except ConfigError as err:
        logger.warning("cannot read the training config (%s); default template options", err)
        return {}
    return {
        "samples_per_template": cfg.data.samples_per_template,
        "dev_fraction": cfg.data.dev_fraction,
        "seed": cfg.seed,
    }


def _closed_set(
    parser: Parser,
    examples: list[Example],
    texts: list[str],
    rejecting: dict[str, Any],
    batch_size: int,
) -> tuple[list[ParseResult], dict[str, Any]]:
    """Data without out-of-scope rows measures the skills, not the rejection: the headline is
    the closed-set score (nothing rejected, as published results are), and what rejection
    costs on this data is kept beside it (`with_rejection`)."""
    detector = parser.ood
    assert detector is not None
    parser.ood = dataclasses.replace(detector, threshold=float("inf"))
    try:
        closed = parse_with_progress(parser, texts, batch_size=batch_size)
    finally:
        parser.ood = detector
    metrics = score(examples, closed, tokenizer=parser.tokenizer)
    oos = rejecting.get("out_of_scope") or {}
    metrics["headline"] = "closed set: the data has no out-of-scope rows, so nothing is rejected"
    metrics["with_rejection"] = {
        "in_scope_rejected": oos.get("in_scope_rejected", 0.0),
        "overall": rejecting["overall"],
    }
    return closed, metrics


PROGRESS_FROM = 1000  # utterances: a progress bar on longer evaluations


def parse_with_progress(
    parser: Parser, texts: Sequence[str], *, batch_size: int
) -> list[ParseResult]:
    from tqdm.auto import tqdm

    results: list[ParseResult] = []
    chunk = batch_size * 8
    with tqdm(
        total=len(texts), desc="evaluating", unit="utt", disable=len(texts) < PROGRESS_FROM
    ) as bar:
        for start in range(0, len(texts), chunk):
            results += parser.parse(list(texts[start : start + chunk]), batch_size=batch_size)
            bar.update(min(chunk, len(texts) - start))
    return results


def write_sharing(model_dir: Path, out: Path) -> Path | None:
    """A softly shared model's learned mixing weights: sharing.json and a heat map per layer
    (sharing.png). None for hard sharing or a folder without PyTorch weights."""
    from nlu.model.sharing import mixing_report

    meta = modeldir.read_meta(model_dir)
    weights = model_dir / modeldir.WEIGHTS_FILE
    if meta.sharing is None or not weights.is_file():
        return None
    report = mixing_report(meta.sharing, weights)
    (out / "sharing.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["mixing"]
    units = report["units"]
    fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers) + 1, 3), squeeze=False)
    for layer, (ax, matrix) in enumerate(zip(axes[0], layers, strict=True)):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"after layer {layer + 1}", fontsize=8)
        ax.set_xticks(range(len(units)), units, rotation=90, fontsize=6)
        ax.set_yticks(range(len(units)), units if layer == 0 else [], fontsize=6)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="reads from (column) → weight")
    fig.suptitle(f"{report['mode']} mixing (rows read from columns)", fontsize=9)
    fig.savefig(out / "sharing.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out / "sharing.png"


def evaluate(
    *,
    model_dir: str | Path,
    data: Sequence[str | Path],
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    backend: str = "auto",
) -> dict[str, Any]:
    """`nlu evaluate`: load a model, predict a split of each data source, score, write reports."""
    from nlu.data.loaders import load_split, unseen_labels
    from nlu.inference.parser import Parser

    model_dir = modeldir.locate(model_dir)
    parser = Parser.from_pretrained(model_dir, backend=backend)
    examples: list[Example] = []
    for source in data:
        examples += load_split(source, split, **_template_options(Path(model_dir))).examples
    unseen = unseen_labels(parser.skills, examples)
    if any(unseen.values()):
        logger.warning("labels absent from the model (they count as errors): %s", unseen)
    texts = [ex.text for ex in examples]
    predictions = parse_with_progress(parser, texts, batch_size=batch_size)
    metrics = score(examples, predictions, tokenizer=parser.tokenizer)
    if parser.ood is not None and all(ex.in_scope for ex in examples):
        predictions, metrics = _closed_set(parser, examples, texts, metrics, batch_size)
    if parser.ood is not None:
        # The same model with plain softmax confidences: what temperature scaling changed.
        metrics["out_of_scope_detector"] = parser.ood.to_json()
        calibrated = parser.ood
        raw = predictions
        if (calibrated.router_temperature, calibrated.intent_temperature) != (1.0, 1.0):
            # A second pass only when temperatures changed the confidences.
            parser.ood = dataclasses.replace(
                calibrated, router_temperature=1.0, intent_temperature=1.0
            )
            try:
                raw = parser.parse(texts, batch_size=batch_size)
            finally:
                parser.ood = calibrated
        metrics["calibration_uncalibrated"] = {
            k: v for k, v in calibration_metrics(examples, raw).items() if k.endswith("_ece")
        }
    oos = metrics.get("out_of_scope") or {}
    if oos.get("recall") is not None and oos["recall"] < 50:
        logger.warning(
            "the model rejects only %s%% of the %d out-of-scope texts here: most requests no "
            "skill handles would be accepted; add such texts to an out_of_scope.yaml and "
            "retrain, or refit with `nlu calibrate %s oos_method=...`",
            oos["recall"],
            oos["n_out_of_scope"],
            model_dir,
        )
    metrics["unseen_labels"] = unseen
    metrics["split"] = split
    metrics["data"] = [str(d) for d in data]
    metrics["model"] = str(model_dir)
    metrics["backend"] = parser.backend
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / "metrics.md").write_text(format_table(metrics) + "\n")
        plot_confusion(metrics["confusion"], out / "confusion.png")
        if metrics["calibration"]:
            plot_reliability(metrics["calibration"], out / "reliability.png")
        sharing = write_sharing(Path(model_dir), out)
        if sharing:
            logger.info("learned sharing weights: %s", sharing)
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for ex, pred in zip(examples, predictions, strict=True):
                handle.write(json.dumps(prediction_row(ex, pred), ensure_ascii=False) + "\n")
    return metrics
