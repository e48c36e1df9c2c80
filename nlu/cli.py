"""`nlu train | evaluate | predict | serve`: a thin layer over plain functions."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nlu.config import FinetuneMode, choices
from nlu.model.modeldir import BACKENDS
from nlu.serve.settings import DEFAULT_MODEL, LOCAL_HOSTS, ServeSettings


def _print(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _train(args: argparse.Namespace) -> None:
    from nlu.config import load_config
    from nlu.training.train import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not os.path.exists(config):
        config, overrides = None, [config, *overrides]  # `nlu train key=value ...` with no file
    for key in ("encoder", "init_from", "finetune", "resume"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    result = train(load_config(config, overrides))
    from accelerate import PartialState

    if PartialState().is_main_process:
        keys = ("best_epoch", "best_dev", "train_seconds", "examples_per_second")
        _print({"model_dir": str(result.model_dir), **{k: getattr(result, k) for k in keys}})


def _distill(args: argparse.Namespace) -> None:
    from nlu.distill.config import load_distill_config
    from nlu.distill.recipe import distill

    result = distill(load_distill_config(args.config, args.overrides))
    from accelerate import PartialState

    if PartialState().is_main_process:
        keys = ("best_epoch", "best_dev", "train_seconds", "examples_per_second")
        _print({"model_dir": str(result.model_dir), **{k: getattr(result, k) for k in keys}})


def _federated(args: argparse.Namespace) -> None:
    from nlu.federated.config import load_federated_config
    from nlu.federated.simulation import federated

    result = federated(load_federated_config(args.config, args.overrides))
    last = result.history[-1] if result.history else {}
    _print(
        {
            "model_dir": str(result.model_dir),
            "clients": len(result.clients),
            "skills": len(result.labels),
            "rounds": len(result.history),
            "dev": last.get("dev"),
            "seconds": result.seconds,
        }
    )


def _evaluate(args: argparse.Namespace) -> None:
    from nlu.evaluation.evaluate import evaluate
    from nlu.evaluation.report import format_table

    metrics = evaluate(model_dir=args.model, data=args.data, split=args.split, out_dir=args.out)
    print(format_table(metrics))
    if args.out:
        print(f"\nwrote {args.out}/metrics.json, metrics.md, confusion.png, predictions.jsonl")


def _predict(args: argparse.Namespace) -> None:
    from nlu.inference.parser import Parser

    parser = Parser.from_pretrained(args.model)
    results = [
        r.to_dict()
        for r in parser.parse(
            args.texts, skill=args.skill, top_k=args.top_k, oos_threshold=args.oos_threshold
        )
    ]
    _print(results[0] if len(results) == 1 else results)


def _import(args: argparse.Namespace) -> None:
    from nlu.config import ConfigError
    from nlu.data.importers import import_alexa, import_rasa

    source, out = Path(args.file), Path(args.out)
    if args.format == "rasa":
        if not args.skill:
            raise ConfigError("nlu import rasa: name the skill with --skill NAME")
        target = import_rasa(source, skill=args.skill, out=out, force=args.force)
    else:
        target = import_alexa(source, skill=args.skill, out=out, force=args.force)
    print(f"wrote {target}; check it with: nlu validate {target.parent}")


def _validate(args: argparse.Namespace) -> None:
    from nlu.data.validate import format_report, validate

    reports = validate(args.paths)
    for report in reports:
        print(format_report(report))
    bad = sum(not r.ok for r in reports)
    if bad:
        raise ValidationFailed(f"{bad} of {len(reports)} source(s) have problems (listed above)")


class ValidationFailed(Exception):
    pass


# Errors that are the user's to fix (a message, exit status 2, no traceback), by module. Looked
# up only among modules already imported: an error class whose module was never loaded cannot
# have been raised, and importing them all up front would load torch for `nlu validate`.
USER_ERRORS = {
    "nlu.training.add_skill": ("AddSkillError",),
    "nlu.config": ("ConfigError",),
    "nlu.federated.config": ("FederationError",),
    "nlu.training.finetune": ("FinetuneError",),
    "nlu.model.modeldir": ("ModelDirError",),
    "nlu.inference.parser": ("OptionError", "UnknownSkillError"),
    "nlu.schema": ("DataError",),
    "nlu.distill.answers": ("TeacherError",),
    "nlu.text": ("TextError",),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ValidationFailed, FileNotFoundError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            found += [getattr(sys.modules[module], name) for name in names]
    return tuple(found)


def _benchmark(args: argparse.Namespace) -> None:
    from nlu.training.benchmark import benchmark, benchmark_config, format_report

    overrides = list(args.overrides)
    if args.encoder:
        overrides.append(f"encoder={args.encoder}")
    cfg = benchmark_config(args.name, overrides)
    out = args.out or f"runs/benchmarks/{args.name}"
    report = benchmark(name=args.name, data=args.data, seeds=args.seeds, config=cfg, output_dir=out)
    print(format_report(report))
    print(f"\nwrote {out}/report.json and report.md")


def _calibrate(args: argparse.Namespace) -> None:
    from nlu.config import load_config
    from nlu.training.calibrate import recalibrate

    cfg = load_config(None, list(args.overrides))
    detector = recalibrate(Path(args.model), cfg.ood)
    _print(detector.report if detector else {"out_of_scope": "none: every text is in scope"})


def _export(args: argparse.Namespace) -> None:
    from nlu.model.export import export_onnx

    target = export_onnx(model_dir=args.model, out_dir=args.out, quantize=args.quantize)
    size = target.stat().st_size / 1e6
    print(f"wrote {target} ({size:.1f} MB); serve it with: nlu serve {args.out}")


def _add_skill(args: argparse.Namespace) -> None:
    from nlu.training.add_skill import add_skill

    result = add_skill(
        model_dir=args.model,
        skill_data=args.skill,
        out_dir=args.out,
        replay=args.replay,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    keys = ("train_examples", "replay_examples", "seconds")
    _print(
        {
            "model": str(result.model_dir),
            "added": result.new_skills,
            **{k: getattr(result, k) for k in keys},
            "new_skill_dev": result.dev,
        }
    )


def _serve(args: argparse.Namespace) -> None:
    from nlu.serve.run import serve
    from nlu.serve.settings import ServeSettings

    keys = {f.name for f in dataclasses.fields(ServeSettings)} - {"api_key", "trusted_hosts"}
    hosts = None
    if args.allow_host:
        hosts = (*LOCAL_HOSTS, *args.allow_host) if args.host in LOCAL_HOSTS else args.allow_host
    serve(
        ServeSettings(
            **{k: getattr(args, k) for k in keys},
            api_key=_api_key(args),
            trusted_hosts=tuple(hosts) if hosts is not None else None,
        )
    )


def _api_key(args: argparse.Namespace) -> str | None:
    """From --api-key-file or NLU_API_KEY (neither shows in `ps`), or --api-key (it does)."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise FileNotFoundError(f"--api-key-file {args.api_key_file}: {err.strerror}") from err
        if not key:
            raise FileNotFoundError(f"--api-key-file {args.api_key_file} is empty")
        return key
    if args.api_key:
        logging.getLogger("nlu").warning(
            "--api-key on the command line is visible to every local user (ps); prefer "
            "--api-key-file or the NLU_API_KEY environment variable"
        )
        return str(args.api_key)
    return os.environ.get("NLU_API_KEY") or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlu", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one joint model on skills / datasets")
    p.add_argument(
        "config", nargs="?", help="YAML config (see configs/); keys as in nlu.config.TrainConfig"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 data=skills")
    p.add_argument(
        "--encoder", help="Hugging Face model name or local path (default: all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--from", dest="init_from", help="continue training this saved model (fine-tuning)"
    )
    p.add_argument(
        "--finetune",
        choices=choices(FinetuneMode),
        help="with --from: which parameters train (default full; lora: a per-skill adapter)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue an interrupted run from its last epoch checkpoint (or this checkpoint "
        "folder); give the same config and output_dir",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "distill",
        help="train a joint model from teachers' outputs (fuse expert models, or compress one)",
    )
    p.add_argument(
        "config", help="YAML with teachers: [...] and student keys (see docs/guide/distillation.md)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 alpha=0.7")
    p.set_defaults(func=_distill)

    p = sub.add_parser(
        "federated",
        help="train a joint model with Flower: clients keep their data (simulation here; "
        "deployment: docs/guide/federated.md)",
    )
    p.add_argument(
        "config", help="YAML with federation keys and model keys (docs/guide/federated.md)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=3 clients=4")
    p.set_defaults(func=_federated)

    p = sub.add_parser("evaluate", help="score a model on a data split")
    p.add_argument("model", help="model directory written by `nlu train`")
    p.add_argument("data", nargs="+", help="skill folders, JSONL files or JointBERT folders")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", help="folder for metrics.json, metrics.md, confusion.png")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("benchmark", help="train/select/test over seeds on a public benchmark")
    p.add_argument(
        "name", help="atis, snips, massive, slurp (presets in nlu/presets/), or any name"
    )
    p.add_argument("--data", required=True, help="path (or hub:OWNER/NAME[:CONFIG]) of the dataset")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--encoder", help="Hugging Face model name or local path")
    p.add_argument("--out", help="output folder (default runs/benchmarks/NAME)")
    p.add_argument("overrides", nargs="*", help="training config overrides key=value")
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("import", help="write a skill folder from Rasa or Alexa training data")
    p.add_argument("format", choices=["rasa", "alexa"])
    p.add_argument("file", help="Rasa 3 nlu.yml, or an Alexa interaction model JSON")
    p.add_argument("--skill", help="skill name (required for rasa; alexa: the invocation name)")
    p.add_argument("--out", default="skills", help="folder to write <skill>/skill.yaml into")
    p.add_argument("--force", action="store_true", help="replace an existing skill.yaml")
    p.set_defaults(func=_import)

    p = sub.add_parser(
        "validate",
        help="check skill folders, JSONL files and benchmark folders without training",
    )
    p.add_argument("paths", nargs="+", help="skill folder(s), JSONL file(s), data folder(s)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("predict", help="parse utterances and print JSON")
    p.add_argument("texts", nargs="+", help="utterance(s)")
    p.add_argument(
        "--model",
        default=os.environ.get("NLU_MODEL", DEFAULT_MODEL),
        help="model directory (env NLU_MODEL)",
    )
    p.add_argument("--skill", help="force this skill instead of routing")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--oos-threshold", type=float, help="out-of-scope threshold (see nlu serve)")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "add-skill", help="add skill(s) to a trained model; encoder and old skills frozen"
    )
    p.add_argument("model", help="a run folder written by `nlu train`, or its model folder")
    p.add_argument("skill", nargs="+", help="the new skill's folder(s) or JSONL file(s)")
    p.add_argument(
        "--out", required=True, help="run folder for the extended model (written to OUT/model)"
    )
    p.add_argument(
        "--replay",
        nargs="+",
        help="existing skills' data the router learns to tell apart from the new skill "
        "(default: the data in the model's training_config.yaml)",
    )
    p.add_argument("--epochs", type=int, default=30, help="head epochs over cached features")
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_add_skill)

    p = sub.add_parser(
        "calibrate",
        help="refit a trained model's out-of-scope detector and confidence calibration",
    )
    p.add_argument("model", help="model directory written by `nlu train`")
    p.add_argument(
        "overrides",
        nargs="*",
        help="oos_method=mahalanobis|energy|msp|temperature|none, target_recall=0.98",
    )
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("export", help="export a model to ONNX (optionally int8)")
    p.add_argument("model", help="model directory written by `nlu train`")
    p.add_argument("out", help="output directory (servable: nlu serve OUT)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8, per-channel weights")
    p.set_defaults(func=_export)

    defaults = ServeSettings()
    p = sub.add_parser("serve", help="HTTP endpoint: /parse, /skills, /health, /metrics")
    p.add_argument(
        "model_dir", nargs="?", metavar="model", default=os.environ.get("NLU_MODEL", DEFAULT_MODEL)
    )
    p.add_argument("--backend", default=defaults.backend, choices=BACKENDS)
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--workers", type=int, default=defaults.workers, help="server processes")
    p.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="texts per micro-batch"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="extra wait to grow micro-batches (requests queued during a pass are batched anyway)",
    )
    p.add_argument(
        "--fill-wait-ms",
        type=float,
        default=defaults.fill_wait_ms,
        help="under heavy load only (the last micro-batch at least half of --max-batch): wait "
        "this long for the next one to fill; a lone request never waits (0: off)",
    )
    p.add_argument(
        "--threads", type=int, help="inference threads per worker (default: cores / workers)"
    )
    p.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="queued requests before 503"
    )
    p.add_argument(
        "--oos-threshold",
        type=float,
        help="out-of-scope threshold instead of the one saved in the model (texts scoring above "
        "it are rejected; msp/temperature methods: in [0, 1])",
    )
    p.add_argument(
        "--body-timeout",
        dest="body_timeout_s",
        type=float,
        default=defaults.body_timeout_s,
        help="seconds a request body may take to arrive (slow clients get 408)",
    )
    p.add_argument(
        "--api-key-file",
        help="require the X-API-Key header to equal the key in this file (or set NLU_API_KEY)",
    )
    p.add_argument(
        "--api-key",
        help="the key itself; visible to other local users in `ps`: prefer --api-key-file or "
        "NLU_API_KEY",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header is NAME (a local bind answers only "
        "127.0.0.1, localhost and ::1, against DNS rebinding); repeatable",
    )
    p.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`nlu benchmark atis --data X epochs=2`), which
    # argparse cannot interleave with positionals on its own.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("accelerate", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Weights and data never come from a hub at run time unless the user opts in.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args.func(args)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"nlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
