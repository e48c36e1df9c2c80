"""`nlu train`, `nlu add-skill`, `nlu calibrate`, `nlu benchmark`: the training room's commands.
Recipes are imported when a command runs (torch is slow to import)."""

from __future__ import annotations

import argparse
import os

from nlu.config import FinetuneMode, choices
from nlu.console import Subparsers, overrides_help, print_json, run_summary


def train_command(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from nlu.config import TrainConfig, load
    from nlu.training.train import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not os.path.exists(config):
        config, overrides = None, [config, *overrides]  # `nlu train key=value ...` with no file
    flags = {k: getattr(args, k) for k in ("encoder", "init_from", "finetune", "resume")}
    result = train(load(TrainConfig, config, overrides, flags=flags))
    if PartialState().is_main_process:
        print_json(run_summary(result))


def add_skill_command(args: argparse.Namespace) -> None:
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
    print_json(
        {
            "model": str(result.model_dir),
            "added": result.new_skills,
            **{k: getattr(result, k) for k in keys},
            "new_skill_dev": result.dev,
        }
    )


def calibrate_command(args: argparse.Namespace) -> None:
    from pathlib import Path

    from nlu.config import OodConfig, load
    from nlu.training.calibrate import recalibrate

    detector = recalibrate(Path(args.model), load(OodConfig, None, list(args.overrides)))
    print_json(detector.report if detector else {"out_of_scope": "none: every text is in scope"})


def benchmark_command(args: argparse.Namespace) -> None:
    from nlu.training.benchmark import benchmark, benchmark_config, format_report

    cfg = benchmark_config(args.name, args.overrides, flags={"encoder": args.encoder})
    out = args.out or f"runs/benchmarks/{args.name}"
    report = benchmark(name=args.name, data=args.data, seeds=args.seeds, config=cfg, output_dir=out)
    print(format_report(report))
    print(f"\nwrote {out}/report.json and report.md")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("train", help="train one joint model on skills / datasets")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help=overrides_help("epochs=2 data=skills"))
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
    p.set_defaults(func=train_command)

    p = sub.add_parser("benchmark", help="train/select/test over seeds on a public benchmark")
    p.add_argument(
        "name", help="atis, snips, massive, slurp (presets in nlu/presets/), or any name"
    )
    p.add_argument("--data", required=True, help="path (or hub:OWNER/NAME[:CONFIG]) of the dataset")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--encoder", help="Hugging Face model name or local path")
    p.add_argument("--out", help="output folder (default runs/benchmarks/NAME)")
    p.add_argument("overrides", nargs="*", help=overrides_help("epochs=2"))
    p.set_defaults(func=benchmark_command)

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
    p.set_defaults(func=add_skill_command)

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
    p.set_defaults(func=calibrate_command)
