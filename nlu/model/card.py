"""The model card (`README.md` in every model folder): what the model knows, what it was
trained on, how well it did, and what it is for, in the Hugging Face model-card layout (YAML
metadata, then Markdown). Rendered by `nlu.model.modeldir` on every save, from the folder itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from nlu.model.modeldir import ModelFolder

METRIC_NAMES = {
    "router_accuracy": "router accuracy",
    "intent_accuracy": "intent accuracy",
    "slot_f1": "slot F1 (strict, entity level)",
    "exact_match": "exact match",
}


def render(folder: ModelFolder) -> str:
    training = _training_config(folder)
    data = training.get("data", {}) if isinstance(training.get("data"), dict) else {}
    model = training.get("model", {}) if isinstance(training.get("model"), dict) else {}
    encoder = model.get("encoder") or folder.encoder_config.get("_name_or_path") or "unknown"
    header = {
        "library_name": "nlu",
        "pipeline_tag": "token-classification",
        "tags": ["intent-classification", "slot-filling", "joint-nlu", "voice-assistant"],
        "base_model": str(encoder),
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# Joint NLU model: {', '.join(s.name for s in folder.meta.skills)}",
        "",
        "One shared transformer encoder with a skill router and, per skill, an intent head and a "
        "slot-filling (BIO) head, trained with [nlu](https://github.com/) on CPU.",
        "",
        *_skills(folder),
        *_training(folder, str(encoder), data.get("data") or []),
        *_metrics(folder),
        *_out_of_scope(folder),
        *USE,
    ]
    return "\n".join(lines)


def _training_config(folder: ModelFolder) -> dict[str, Any]:
    if not folder.training_config:
        return {}
    try:
        loaded = yaml.safe_load(folder.training_config)
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _skills(folder: ModelFolder) -> list[str]:
    lines = ["## Skills", "", "| skill | intents | slots |", "|---|---|---|"]
    for s in folder.meta.skills:
        slots = ", ".join(
            f"{slot} ({s.slot_kinds[slot]})" if slot in s.slot_kinds else slot for slot in s.slots
        )
        lines.append(f"| {s.name} | {', '.join(s.intents)} | {slots or '—'} |")
    return lines


def _training(folder: ModelFolder, encoder: str, sources: list[Any]) -> list[str]:
    lines = ["", "## Training", ""]
    lines.append(f"- Encoder: `{encoder}`, max length {folder.meta.max_length} tokens.")
    lines.append(
        "- Data: " + (", ".join(f"`{src}`" for src in sources) if sources else "not recorded")
    )
    if folder.adapters:
        lines.append(f"- Per-skill LoRA adapters: {', '.join(sorted(folder.adapters))}.")
    lines.append(
        "- The full resolved training config is `training_config.yaml` in this folder."
        if folder.training_config
        else "- No training config recorded."
    )
    return lines


def _metrics(folder: ModelFolder) -> list[str]:
    dev = (folder.metrics or {}).get("dev")
    if not dev:
        return []
    return [
        "",
        f"## Metrics (dev split, {dev.get('n', '?')} utterances, selected epoch "
        f"{(folder.metrics or {}).get('best_epoch', '?')})",
        "",
        "| " + " | ".join(METRIC_NAMES.values()) + " |",
        "|" + "---|" * len(METRIC_NAMES),
        "| " + " | ".join(str(dev.get(k, "—")) for k in METRIC_NAMES) + " |",
        "",
        "Scored by `nlu evaluate`; test-set figures belong in your own evaluation report.",
    ]


def _out_of_scope(folder: ModelFolder) -> list[str]:
    lines = ["", "## Out of scope", ""]
    if folder.ood is not None:
        lines.append(
            f"Texts scored above the {folder.ood.method} threshold ({folder.ood.threshold:.4g}, "
            f"chosen for {100 * folder.ood.target_recall:g} % in-scope recall on dev) are "
            "rejected (`in_scope: false`); confidences are temperature-scaled."
        )
    else:
        lines.append("No out-of-scope detector: every text is parsed as one of the skills.")
    return lines


USE = [
    "",
    "## Intended use",
    "",
    "Understanding short commands and questions to a voice assistant in the skills above "
    "(English, as in the training data). Not for other domains or languages, and not for "
    "decisions about people; check the out-of-scope rejection before acting on a parse.",
    "",
    "## How to use",
    "",
    "```bash",
    'nlu serve THIS_FOLDER            # HTTP: POST /parse {"text": ...}',
    'nlu predict --model THIS_FOLDER "turn on the lights"',
    "```",
    "",
    "```python",
    "from nlu import Parser",
    'parser = Parser.from_pretrained("THIS_FOLDER")',
    'parser.parse("turn on the lights")',
    '# The encoder alone: transformers.AutoModel.from_pretrained("THIS_FOLDER", '
    "add_pooling_layer=False)",
    "```",
    "",
]
