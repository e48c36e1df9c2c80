"""Distillation benchmarks (issue 14): fusing black-box experts, compressing a large teacher,
and labelling a transfer set through an HTTP teacher.

    python benchmarks/fusion.py fusion            # experts -> one fused student
    python benchmarks/fusion.py fusion --student-epochs 4 --alpha 0.5
    python benchmarks/fusion.py compression --teacher runs/teachers/snips_mpnet/model
    python benchmarks/fusion.py compression --dataset atis --teacher runs/teachers/atis_mpnet/model
    python benchmarks/fusion.py http              # SNIPS transfer set through `nlu serve`

**fusion**: the separate per-dataset experts of benchmarks/joint_vs_separate.py (for ATIS,
SNIPS and MASSIVE en-US a Hugging Face intent classifier and a BIO slot tagger each: six
models) are the teachers. Each expert's owner hands over only its training texts, labels
hidden; `nlu distill` fuses the experts' answers on them into one joint student. The student
is scored on each test split against each expert and against joint training on the gold
labels (the same run's `joint`), with serving parameters and latency. Model selection uses a
held-out share of the teacher-labelled texts: no gold label is read before test.

**compression**: an `encoder=mpnet` joint model trained on SNIPS (or ATIS, `--dataset`) is the
teacher; the default encoder is the student, trained on the training texts with the teacher's
distributions and the gold labels (`alpha` mixes them), against the same student without KD at
the same budget (epochs, batch, learning rates). Dev selects, test is scored once.

**http**: `nlu serve` (the fusion run's joint model) on loopback as an `http` teacher labels
the 13,084 SNIPS training texts; the labelling client is killed part-way and started again:
reported are the answers kept across the kill, the texts asked twice (none) and the total
wall time.

Each phase runs in its own process and caches its JSON result in OUT/phases/, so a killed run
resumes where it stopped. Results: benchmarks/results/fusion_<what>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nlu.config import load
from nlu.distill.config import DistillConfig

sys.path.insert(0, str(Path(__file__).parent))

# The experts and the joint run on gold labels come from there.
import joint_vs_separate as jvs
from common import write_results

SNIPS = "../shared/data/snips"
DATA = {"snips": SNIPS, "atis": "../shared/data/atis"}


def student_tag(args: argparse.Namespace) -> str:
    """Names the fused student's run, phases and results when it leaves the shared budget."""
    epochs = args.student_epochs or args.epochs
    return "" if (epochs, args.alpha) == (args.epochs, 0.5) else f"-e{epochs}-a{args.alpha}"


def fused_config(out: Path, tag: str, epochs: int, seed: int, alpha: float) -> Path:
    """The distillation config of the fused student, written where the user can read it."""
    import yaml

    teachers = [
        {
            "name": f"{name}_expert",
            "kind": "hf",
            "path": str(out / "separate" / f"{name}_intent"),
            "slot_model": str(out / "separate" / f"{name}_slots"),
            # Intent labels are "skill/intent" (MASSIVE: its scenarios); texts: the owner's
            # training texts, labels ignored.
            "texts": [path],
            "batch_size": 64,
        }
        for name, path in jvs.DATASETS.items()
    ]
    config = {
        "teachers": teachers,
        "alpha": alpha,
        "temperature": 2.0,
        "cache_dir": str(out / "teacher_cache"),
        "encoder": "default",
        "epochs": epochs,
        "seed": seed,
        "batch_size": jvs.BATCH,
        "learning_rate": jvs.ENCODER_LR,
        "head_learning_rate": jvs.HEAD_LR,
        "max_length": jvs.MAX_LENGTH,
        "sampling": "proportional",  # as the joint run
        "oos_method": "none",
        "output_dir": str(out / f"fused{tag}"),
    }
    # A killed run goes on from its last epoch checkpoint instead of starting again.
    if (out / f"fused{tag}" / "checkpoints").is_dir():
        config["resume"] = "latest"
    else:
        config["overwrite"] = True
    path = out / f"fused{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_scores(model_dir: Path, datasets: dict[str, str]) -> dict[str, Any]:
    from nlu.evaluation.evaluate import evaluate

    return {
        name: evaluate(model_dir=model_dir, data=[path], split="test")["overall"]
        for name, path in datasets.items()
    }


def run_distill(config: Path) -> dict[str, Any]:
    from nlu.distill.recipe import distill

    started = time.perf_counter()
    result = distill(load(DistillConfig, config))
    summary = json.loads((result.model_dir.parent / "train_summary.json").read_text())
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "transfer": summary.get("transfer"),
        "model_dir": str(result.model_dir),
        "peak_train_rss_mb": jvs.peak_rss_mb(),
    }


# -- compression -----------------------------------------------------------------------------------


def compression_config(
    out: Path, data: str, teacher: str, epochs: int, seed: int, alpha: float
) -> Path:
    import yaml

    config = {
        "teachers": [{"name": "mpnet", "kind": "nlu", "path": teacher, "texts": [data]}],
        "alpha": alpha,
        "temperature": 2.0,
        "cache_dir": str(out / "teacher_cache"),
        "data": [data],  # gold labels beside the teacher's, and dev for selection
        "encoder": "default",
        "epochs": epochs,
        "seed": seed,
        "batch_size": 32,
        "learning_rate": 1e-4,
        "head_learning_rate": 1e-3,
        "max_length": 64,
        "sampling": "proportional",
        "oos_method": "none",
        "output_dir": str(out / f"kd_alpha{alpha}"),
        "overwrite": True,
    }
    path = out / f"kd_alpha{alpha}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_plain(out: Path, data: str, epochs: int, seed: int) -> dict[str, Any]:
    from nlu.config import TrainConfig, replace
    from nlu.training.train import train

    cfg = replace(
        TrainConfig(),
        data=[data],
        encoder="default",
        epochs=epochs,
        seed=seed,
        learning_rate=1e-4,
        head_learning_rate=1e-3,
        max_length=64,
        sampling="proportional",
        oos_method="none",
        output_dir=str(out / "no_kd"),
        overwrite=True,
    )
    result = train(cfg)
    return {"train_seconds": result.train_seconds, "best_epoch": result.best_epoch}


# -- http teacher ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def label_over_http(url: str, cache: Path) -> dict[str, Any]:
    """Ask an http teacher for every SNIPS training text (this process may be killed)."""
    from nlu.distill.answers import TeacherConfig
    from nlu.distill.cache import ask_all
    from nlu.distill.targets import read_texts
    from nlu.distill.teachers import open_teacher

    teacher = open_teacher(
        TeacherConfig(name="served", kind="http", url=url, batch_size=64, concurrency=4)
    )
    texts = read_texts(SNIPS)
    started = time.perf_counter()
    answers = ask_all(teacher, texts, cache)
    return {
        "texts": len(set(texts)),
        "answers": len(answers),
        "seconds": time.perf_counter() - started,
    }


def http_benchmark(out: Path, model_dir: Path, kill_after: float) -> dict[str, Any]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "nlu.cli", "serve", str(model_dir), "--port", str(port)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = out / "http_cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = [sys.executable, __file__, "http", "--phase", "http-client", url, str(cache)]
        started = time.perf_counter()
        first = subprocess.Popen(client, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        time.sleep(kill_after)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.perf_counter() - started
        files = list(cache.glob("*.jsonl"))
        kept = sum(1 for _ in files[0].open()) if files else 0
        subprocess.run(client, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        total = time.perf_counter() - started
        (file,) = cache.glob("*.jsonl")
        lines = [json.loads(line)["text"] for line in file.open()]
    finally:
        server.kill()
        server.wait()
    return {
        "texts": len(set(lines)),
        "cached_lines": len(lines),
        "asked_twice": len(lines) - len(set(lines)),
        "killed_after_seconds": round(killed_at, 1),
        "answers_kept_across_kill": kept,
        "total_wall_seconds": round(total, 1),
        "texts_per_second": round(len(set(lines)) / total, 1),
    }


# -- orchestration ---------------------------------------------------------------------------------


def phase(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(args.out) / "phases" / f"{'_'.join(a.replace('/', '-') for a in argv)}.json"
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    print(f"-- {' '.join(argv)}", flush=True)
    cmd = [sys.executable, __file__, args.what, "--out", args.out, "--epochs", str(args.epochs)]
    cmd += ["--seed", str(args.seed), "--alpha", str(args.alpha)]
    if args.student_epochs:
        cmd += ["--student-epochs", str(args.student_epochs)]
    if args.teacher:
        cmd += ["--teacher", args.teacher]
    cmd += ["--dataset", args.dataset]
    cmd += ["--phase", *argv]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return dict(json.loads(cache.read_text()))


def run_phase(args: argparse.Namespace) -> None:
    out = Path(args.out)
    what, *rest = args.phase
    if what == "http-client":
        print(json.dumps(label_over_http(rest[0], Path(rest[1]))))
        return
    result: dict[str, Any]
    tag = student_tag(args)
    epochs = args.student_epochs or args.epochs
    if what == f"distill-fused{tag}":
        result = run_distill(fused_config(out, tag, epochs, args.seed, args.alpha))
    elif what == f"test-fused{tag}":
        result = {"test": test_scores(out / f"fused{tag}" / "model", jvs.DATASETS)}
    elif what == f"serve-fused{tag}":
        result = jvs.serve_measure(
            system="joint", out=out, utterances=300, model_dir=out / f"fused{tag}" / "model"
        )
    elif what == "distill-kd":
        data = DATA[args.dataset]
        config = compression_config(out, data, args.teacher, args.epochs, args.seed, args.alpha)
        result = run_distill(config)
        result["test"] = test_scores(Path(result["model_dir"]), {args.dataset: data})
    elif what == "train-no-kd":
        data = DATA[args.dataset]
        result = train_plain(out, data, args.epochs, args.seed)
        result["test"] = test_scores(out / "no_kd" / "model", {args.dataset: data})
    elif what == "test-teacher":
        result = {"test": test_scores(Path(args.teacher), {args.dataset: DATA[args.dataset]})}
    elif what == "http":
        result = http_benchmark(out, Path(rest[0]), kill_after=float(rest[1]))
    else:
        raise SystemExit(f"unknown phase {what}")
    cache = out / "phases" / f"{'_'.join(a.replace('/', '-') for a in args.phase)}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")


def row(name: str, system: str, m: dict[str, Any]) -> str:
    return (
        f"| {name} | {system} | {m['intent_accuracy']} | {m['slot_f1']} | {m['exact_match']} | "
        f"{m['router_accuracy']} |"
    )


HEADER = [
    "| dataset | system | intent acc | slot F1 | exact match | router acc |",
    "|---|---|---|---|---|---|",
]


def fusion(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    jargs = argparse.Namespace(
        out=args.out, epochs=args.epochs, seed=args.seed, utterances=300, limit=None
    )
    joint = jvs.phase(["train-joint"], jargs) | jvs.phase(["serve", "joint"], jargs)
    parts = [
        jvs.phase(["train-separate", k, d], jargs)
        for d in jvs.DATASETS
        for k in ("intent", "slots")
    ]
    experts = jvs.phase(["test-separate"], jargs) | jvs.phase(["serve", "separate"], jargs)
    tag = student_tag(args)
    fused = phase([f"distill-fused{tag}"], args)
    fused |= phase([f"test-fused{tag}"], args) | phase([f"serve-fused{tag}"], args)
    # Each expert pair sees its dataset 2 × epochs times; a student at 2 × epochs sees the
    # union as often: the same number of training examples in all.
    lines = [
        f"Budget: experts and joint {args.epochs} epochs, fused student "
        f"{args.student_epochs or args.epochs} epochs; seed {args.seed}, batch 32, "
        f"all-MiniLM-L6-v2, alpha {args.alpha}, T 2, {os.cpu_count()} CPU cores.",
        "",
        *HEADER,
    ]
    for name in jvs.DATASETS:
        lines.append(row(name, "expert (intent + slot model)", experts["test"][name]))
        lines.append(row(name, "fused student (teachers' answers only)", fused["test"][name]))
        lines.append(row(name, "joint on gold labels", joint["test"][name]))
        gap = fused["test"][name]["exact_match"] - experts["test"][name]["exact_match"]
        lines.append(f"| {name} | fused − expert (exact match) | | | {gap:+.2f} | |")
    expert_train = sum(p["train_seconds"] for p in parts)
    lines += [
        "",
        "| | experts (6 models) | fused student | fused / experts |",
        "|---|---|---|---|",
        f"| parameters served (M) | {experts['parameters_millions']} | "
        f"{fused['parameters_millions']} | "
        f"{fused['parameters_millions'] / experts['parameters_millions']:.2f} |",
        f"| serving memory (MB RSS) | {experts['serving_rss_mb']:.0f} | "
        f"{fused['serving_rss_mb']:.0f} | "
        f"{fused['serving_rss_mb'] / experts['serving_rss_mb']:.2f} |",
        f"| latency p50 (ms) | {experts['latency_p50_ms']} | {fused['latency_p50_ms']} | "
        f"{fused['latency_p50_ms'] / experts['latency_p50_ms']:.2f} |",
        f"| training (s) | {expert_train:.0f} | {fused['train_seconds']:.0f} (+"
        f"{fused['wall_seconds'] - fused['train_seconds']:.0f} asking the teachers, setup) | |",
    ]
    return "\n".join(lines), {"joint": joint, "experts": experts, "fused": fused, "parts": parts}


def compression(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if not args.teacher:
        raise SystemExit("compression needs --teacher (an nlu model folder, e.g. encoder=mpnet)")
    name = args.dataset
    teacher = phase(["test-teacher"], args)
    kd = phase(["distill-kd"], args)
    plain = phase(["train-no-kd"], args)
    lines = [
        f"{name.upper()} test, seed {args.seed}; students: all-MiniLM-L6-v2, {args.epochs} epochs, "
        f"batch 32, lr 1e-4 / 1e-3; KD alpha {args.alpha}, T 2; teacher: {args.teacher}.",
        "",
        *HEADER,
        row(name, "teacher", teacher["test"][name]),
        row(name, "student with KD", kd["test"][name]),
        row(name, "student without KD", plain["test"][name]),
        "",
        f"Student training: {kd['train_seconds']:.0f} s with KD (+"
        f"{kd['wall_seconds'] - kd['train_seconds']:.0f} s asking the teacher, setup), "
        f"{plain['train_seconds']:.0f} s without.",
    ]
    return "\n".join(lines), {"teacher": teacher, "kd": kd, "no_kd": plain}


def http(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    model = Path(args.out) / "joint" / "model"
    result = phase(["http", str(model), str(args.kill_after)], args)
    lines = [
        "| texts | answers kept across the kill | asked twice | total wall (s) | texts/s |",
        "|---|---|---|---|---|",
        f"| {result['texts']} | {result['answers_kept_across_kill']} (killed at "
        f"{result['killed_after_seconds']} s) | {result['asked_twice']} | "
        f"{result['total_wall_seconds']} | {result['texts_per_second']} |",
    ]
    return "\n".join(lines), result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["fusion", "compression", "http"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument(
        "--student-epochs", type=int, help="fusion: the fused student's epochs (default --epochs)"
    )
    ap.add_argument("--teacher", help="compression: the teacher's model folder")
    ap.add_argument("--dataset", choices=sorted(DATA), default="snips", help="compression: data")
    ap.add_argument("--kill-after", type=float, default=20.0, help="http: seconds before the kill")
    ap.add_argument(
        "--out", help="default: runs/fusion (compression: runs/fusion/compression_<dataset>)"
    )
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.out is None:
        compression = args.what == "compression"
        args.out = f"runs/fusion/compression_{args.dataset}" if compression else "runs/fusion"
    if args.phase:
        run_phase(args)
        return
    table, payload = {"fusion": fusion, "compression": compression, "http": http}[args.what](args)
    print(table)
    tag = {"fusion": student_tag(args), "compression": f"_{args.dataset}"}.get(args.what, "")
    write_results(f"benchmarks/results/fusion_{args.what}{tag}", table, payload)


if __name__ == "__main__":
    main()
