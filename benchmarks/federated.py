"""Federated vs centralised training on MASSIVE en-US (issue 15), at equal passes over the data.

    python benchmarks/federated.py [--rounds 3] [--local-epochs 1] [--limit N] [--runs a,b]

Runs (each `nlu federated` in Flower's simulation engine, clients one after another):
- central: `nlu train` with epochs = rounds · local_epochs / local_parts (the reference);
- owners: 18 clients, one per scenario (the skill-owner case), router fitted (`router: lda`);
- owners-trained-router: the same with the naive router (every client trains it on its own
  examples, FedAvg) - what the fitted router is measured against;
- iid: 10 IID shards; dirichlet: 10 shards, each intent's shares from Dirichlet(0.5);
- owners-fedprox: owners with FedProx (mu 0.01);
- owners-batch8, owners-batch4, owners-batch2: owners with local batches of 8, 4 or 2 (4×, 8×
  or 16× the local steps at the same passes);
- owners-batch4-slr2, -slr4: owners-batch4 with a server learning rate of 2 or 4 on the shared
  arrays (`shared_server_lr`); owners-batch2-slr4: batches of 2 with the rate 4;
- owners-lora-batch4, owners-lora-batch4-slr2: owners-lora with local batches of 4, and with
  the server learning rate 2 too (against owners-batch4-slr2: LoRA against full updates), and
  that with learning_rate 1e-3 (which LoRA does not use: a repeat, run-to-run noise);
- owners-lora: owners sending LoRA adapters (rank 8) and heads only;
- owners-lora-dp: owners-lora with server-side clipping (norm 1) and noise multiplier 0.1;
- ...-refit1, ...-refit3: with one (three) more passes in which each client refits its own
  heads on the final encoder (`head_refit_epochs`).
`--local-parts N` splits each client's data into N parts, one per round in turn (`local_parts`;
`--rounds` N times as many for the same passes: `--rounds 6 --local-parts 2`).
Reported on the test split (selection: the last round; no test label is read before): intent
accuracy, slot F1, exact match, router accuracy; rounds, bytes per round (down and up), wall
time as a ratio to central (same machine, same session). `--limit` subsamples the train split
(smoke runs; say so when reporting). Each run caches its JSON in OUT/<run>.json, so a killed
benchmark resumes; curves per round: OUT/<run>/federated.png. Writes
benchmarks/results/federated.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import write_results

from nlu.config import build
from nlu.federated.config import FederatedConfig

MASSIVE = "../shared/data/massive_en_us/en-US.jsonl"
# LoRA-B on every linear layer, local batches of 4, server rate 2, adapters and heads at 3e-3:
# the LoRA settings that keep up with full updates (benchmarks/results/studies/federated.md).
LORA_B: dict[str, Any] = {
    "updates": "lora_b",
    "lora_rank": 8,
    "lora_modules": "all",
    "batch_size": 4,
    "shared_server_lr": 2.0,
    "head_learning_rate": 3e-3,
}
# Full updates, batches of 4, server rate 2, encoder rate 3e-4, head rate 3e-3, three refit
# passes: the owners' best full-update settings (benchmarks/results/studies/federated.md).
OWNERS_BEST: dict[str, Any] = {
    "partition": "skill",
    "batch_size": 4,
    "shared_server_lr": 2.0,
    "learning_rate": 3e-4,
    "head_learning_rate": 3e-3,
    "head_refit_epochs": 3,
}
RUNS: dict[str, dict[str, Any]] = {
    "central": {},
    # Central training with the owners' best local settings: how much of their lead over
    # central is the smaller batches and the higher head rate rather than federation.
    "central-batch4-hlr3e-3": {"batch_size": 4, "head_learning_rate": 3e-3},
    # Central training at the encoder rate that helped the owners (3e-4).
    "central-batch4-lr3e-4-hlr3e-3": {
        "batch_size": 4,
        "learning_rate": 3e-4,
        "head_learning_rate": 3e-3,
    },
    # The same, then 3 epochs of the heads alone on its final encoder (`finetune: heads`): what
    # the owners' heads refit (`head_refit_epochs: 3`) is worth to central training.
    "central-batch4-hlr3e-3-heads3": {
        "batch_size": 4,
        "head_learning_rate": 3e-3,
        "then_heads_epochs": 3,
    },
    # Central with the owners' router input (`router_input: layers`), trained router.
    "central-batch4-hlr3e-3-heads3-layers": {
        "batch_size": 4,
        "head_learning_rate": 3e-3,
        "then_heads_epochs": 3,
        "router_input": "layers",
    },
    # Central at the encoder rate 3e-4, then 3 head epochs: the fair reference for the owners'
    # best run (`owners-batch4-slr2-lr3e-4-hlr3e-3-refit3`), same rates and same extra passes.
    "central-batch4-lr3e-4-hlr3e-3-heads3": {
        "batch_size": 4,
        "learning_rate": 3e-4,
        "head_learning_rate": 3e-3,
        "then_heads_epochs": 3,
    },
    "owners": {"partition": "skill"},
    "owners-trained-router": {"partition": "skill", "router": "trained"},
    "iid": {"partition": "iid", "clients": 10},
    "dirichlet": {"partition": "dirichlet", "clients": 10, "dirichlet_alpha": 0.5},
    "owners-fedprox": {"partition": "skill", "strategy": "fedprox", "proximal_mu": 0.01},
    # Owners take ~5 local steps of 32 per round, where central training updates each skill's
    # heads in most of its ~100 steps per epoch: smaller local batches, more local steps.
    "owners-batch8": {"partition": "skill", "batch_size": 8},
    "owners-batch4": {"partition": "skill", "batch_size": 4},
    "owners-batch2": {"partition": "skill", "batch_size": 2},
    # The average of 18 owners' encoder updates moves the encoder far less than one pass of
    # centralised training: a server learning rate on the shared arrays.
    "owners-batch4-slr2": {"partition": "skill", "batch_size": 4, "shared_server_lr": 2.0},
    "owners-batch4-slr4": {"partition": "skill", "batch_size": 4, "shared_server_lr": 4.0},
    "owners-batch2-slr4": {"partition": "skill", "batch_size": 2, "shared_server_lr": 4.0},
    "owners-lora-batch4": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "batch_size": 4,
    },
    "owners-lora-batch4-slr2": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "batch_size": 4,
        "shared_server_lr": 2.0,
    },
    # Meant as a larger adapter step; but `learning_rate` is the pretrained encoder's, and LoRA
    # adapters already learn at `head_learning_rate` (1e-3): in effect a repeat of the run above.
    "owners-lora-batch4-slr2-lr1e-3": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "batch_size": 4,
        "shared_server_lr": 2.0,
        "learning_rate": 1e-3,
    },
    # LoRA with the full model's best local batch and server rate.
    "owners-lora-batch2-slr4": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "batch_size": 2,
        "shared_server_lr": 4.0,
    },
    # Only the B matrices train and travel (A frozen, the same on every machine): averaging is
    # exact, where averaging A and B apart is not the average of the adapters.
    "owners-lorab-batch4-slr2": {
        "partition": "skill",
        "updates": "lora_b",
        "lora_rank": 8,
        "batch_size": 4,
        "shared_server_lr": 2.0,
    },
    "owners-lorab-batch2-slr4": {
        "partition": "skill",
        "updates": "lora_b",
        "lora_rank": 8,
        "batch_size": 2,
        "shared_server_lr": 4.0,
    },
    # Adapters on every linear layer of the encoder, not only attention's query and value.
    "owners-lora-all-batch4": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "lora_modules": "all",
        "batch_size": 4,
    },
    "owners-lorab-all-batch4-slr2": {
        "partition": "skill",
        "updates": "lora_b",
        "lora_rank": 8,
        "lora_modules": "all",
        "batch_size": 4,
        "shared_server_lr": 2.0,
    },
    # Adapters (and heads) at 3e-3 instead of 1e-3: few local steps, a B that starts at zero.
    "owners-lorab-all-batch4-slr2-hlr3e-3": {"partition": "skill", **LORA_B},
    # Full updates with the same head rate: is the rate, not LoRA, what helped?
    "owners-batch4-slr2-hlr3e-3": {
        "partition": "skill",
        "batch_size": 4,
        "shared_server_lr": 2.0,
        "head_learning_rate": 3e-3,
    },
    # The same two, then one more pass in which each owner refits its heads on the final
    # encoder (`head_refit_epochs`): the last round's heads were fitted to the owner's locally
    # moved encoder, not to the average the model ends with.
    "owners-lorab-all-batch4-slr2-hlr3e-3-refit1": {
        "partition": "skill",
        **LORA_B,
        "head_refit_epochs": 1,
    },
    # With the heads refitted at the end, a larger server step on the encoder.
    "owners-lorab-all-batch4-slr4-hlr3e-3-refit1": {
        "partition": "skill",
        **LORA_B,
        "shared_server_lr": 4.0,
        "head_refit_epochs": 1,
    },
    # More passes of the heads alone on the final encoder.
    "owners-lorab-all-batch4-slr2-hlr3e-3-refit3": {
        "partition": "skill",
        **LORA_B,
        "head_refit_epochs": 3,
    },
    "owners-batch4-slr2-hlr3e-3-refit1": {
        "partition": "skill",
        "batch_size": 4,
        "shared_server_lr": 2.0,
        "head_learning_rate": 3e-3,
        "head_refit_epochs": 1,
    },
    # The encoder's own rate 3× higher: does the averaged encoder move too little?
    "owners-batch4-slr2-lr3e-4-hlr3e-3-refit1": {
        "partition": "skill",
        "batch_size": 4,
        "shared_server_lr": 2.0,
        "learning_rate": 3e-4,
        "head_learning_rate": 3e-3,
        "head_refit_epochs": 1,
    },
    "owners-batch4-slr2-lr3e-4-hlr3e-3-refit3": OWNERS_BEST,
    # The router reads the mean of every layer's pooled vector (`router_input: layers`): the
    # fitted router's features, not its fit, limited it (benchmarks/router_fits.py).
    "owners-batch4-slr2-lr3e-4-hlr3e-3-refit3-layers": {**OWNERS_BEST, "router_input": "layers"},
    # The same with the quadratic router: each skill its own covariance, shrunk to the pooled
    # one (`router: qda`, shrinkage 0.95 chosen on dev by benchmarks/router_fits.py).
    "owners-batch4-slr2-lr3e-4-hlr3e-3-refit3-layers-qda": {
        **OWNERS_BEST,
        "router_input": "layers",
        "router": "qda",
    },
    # The encoder's rate further up (the averaged encoder still learns less per pass).
    "owners-batch4-slr2-lr5e-4-hlr3e-3-refit3": {
        "partition": "skill",
        "batch_size": 4,
        "shared_server_lr": 2.0,
        "learning_rate": 5e-4,
        "head_learning_rate": 3e-3,
        "head_refit_epochs": 3,
    },
    "owners-lora": {"partition": "skill", "updates": "lora", "lora_rank": 8},
    # The LoRA row above with server-side DP: each client's update clipped to norm 1, Gaussian
    # noise of std 0.1 · 1 / clients on the average.
    "owners-lorab-all-batch4-slr2-hlr3e-3-dp": {
        "partition": "skill",
        **LORA_B,
        "dp": "server",
        "dp_noise_multiplier": 0.1,
        "dp_clipping_norm": 1.0,
    },
    # The shards with the settings that work for owners (LoRA-B on all layers).
    "iid-lorab-all-batch4-slr2-hlr3e-3": {"partition": "iid", "clients": 10, **LORA_B},
    "dirichlet-lorab-all-batch4-slr2-hlr3e-3": {
        "partition": "dirichlet",
        "clients": 10,
        "dirichlet_alpha": 0.5,
        **LORA_B,
    },
    # With the heads refitted at the end: each skill's heads are the average of ten shards'
    # refits on one fixed encoder, not of ten locally moved ones.
    "iid-lorab-all-batch4-slr2-hlr3e-3-refit1": {
        "partition": "iid",
        "clients": 10,
        **LORA_B,
        "head_refit_epochs": 1,
    },
    "dirichlet-lorab-all-batch4-slr2-hlr3e-3-refit1": {
        "partition": "dirichlet",
        "clients": 10,
        "dirichlet_alpha": 0.5,
        **LORA_B,
        "head_refit_epochs": 1,
    },
    # Clipping alone (no noise): how much of the DP cost is the clipping norm.
    "owners-lorab-all-batch4-slr2-hlr3e-3-clip": {
        "partition": "skill",
        **LORA_B,
        "dp": "server",
        "dp_noise_multiplier": 0.0,
        "dp_clipping_norm": 1.0,
    },
    "owners-lora-dp": {
        "partition": "skill",
        "updates": "lora",
        "lora_rank": 8,
        "dp": "server",
        "dp_noise_multiplier": 0.1,
        "dp_clipping_norm": 1.0,
    },
}
KEYS = ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy")


def data_source(out: Path, limit: int | None, seed: int) -> str:
    """MASSIVE itself, or (--limit) a folder with a subsample of its train split and its full
    dev and test splits, under OUT (never in the repository)."""
    if not limit:
        return str(Path(MASSIVE).resolve())
    from nlu.data.formats import write_jsonl
    from nlu.data.loaders import load_split

    folder = out / f"massive-limit-{limit}"
    if not (folder / "test.jsonl").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        train = load_split(MASSIVE, "train").examples
        write_jsonl(folder / "train.jsonl", random.Random(seed).sample(train, limit))
        for split in ("dev", "test"):
            write_jsonl(folder / f"{split}.jsonl", load_split(MASSIVE, split).examples)
    return str(folder.resolve())


def common(args: argparse.Namespace, source: str, output_dir: Path) -> dict[str, Any]:
    return {
        "data": [source],
        "encoder": "default",
        "batch_size": 32,
        "learning_rate": 1e-4,
        "head_learning_rate": 1e-3,
        "max_length": 64,
        "oos_method": "none",
        "seed": args.seed,
        "output_dir": str(output_dir),
        "overwrite": True,
    }


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from nlu.evaluation.evaluate import evaluate

    out = Path(args.out)
    source = data_source(out, args.limit, args.seed)
    output_dir = out / name
    started = time.perf_counter()
    result: dict[str, Any] = {"run": name}
    if name.startswith("central"):
        from nlu.config import make_config
        from nlu.training.train import train

        settings = dict(RUNS[name])
        heads_epochs = settings.pop("then_heads_epochs", 0)
        values = {**common(args, source, output_dir), "epochs": args.passes, **settings}
        trained = train(make_config(values, source=name))
        model_dir = trained.model_dir
        result["history"] = trained.history
        if heads_epochs:
            refit = {
                **values,
                "epochs": heads_epochs,
                "init_from": str(model_dir),
                "finetune": "heads",
                "output_dir": str(output_dir / "heads"),
            }
            model_dir = train(make_config(refit, source=name)).model_dir
    else:
        from nlu.federated.simulation import federated

        values = {
            **common(args, source, output_dir),
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "local_parts": args.local_parts,
            **RUNS[name],
        }
        fed = federated(build(FederatedConfig, values, source=name))
        model_dir = fed.model_dir
        rounds = fed.history
        result |= {
            "clients": len(fed.clients),
            "rounds": rounds,
            "bytes_down_per_round": per_round(rounds, "bytes_down"),
            "bytes_up_per_round": per_round(rounds, "bytes_up"),
            "router_seconds": sum(r["router_seconds"] for r in rounds),
        }
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    test = evaluate(model_dir=model_dir, data=[source], split="test")["overall"]
    result["test"] = {k: test[k] for k in KEYS}
    return result


def per_round(rounds: list[dict[str, Any]], key: str) -> float:
    """Mean bytes of a training round; the heads' refit round (heads only) is not one."""
    train = [r for r in rounds if r.get("phase", "train") == "train"]
    return sum(r[key] for r in train) / len(train)


def cached(name: str, args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / f"{name}.json"
    if not path.is_file():
        print(f"-- {name}", flush=True)
        cmd = [sys.executable, __file__, "--phase", name, "--out", args.root]
        cmd += ["--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs)]
        cmd += ["--local-parts", str(args.local_parts)]
        cmd += ["--seed", str(args.seed)] + (["--limit", str(args.limit)] if args.limit else [])
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return dict(json.loads(path.read_text()))


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument(
        "--local-parts",
        type=int,
        default=1,
        help="each round trains on the next 1/N of a client's data (central: fewer epochs)",
    )
    ap.add_argument(
        "--results",
        default="federated",
        help="file stem under benchmarks/results/ (another keeps an earlier table)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="subsample the train split (smoke runs)")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of runs")
    ap.add_argument("--out", default="runs/federated_bench")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    passes, rest = divmod(args.rounds * args.local_epochs, args.local_parts)
    if rest:
        raise SystemExit("rounds × local-epochs must be a multiple of local-parts (whole passes)")
    args.passes = passes
    tag = f"r{args.rounds}-e{args.local_epochs}" + (f"-limit{args.limit}" if args.limit else "")
    if args.local_parts > 1:
        tag += f"-parts{args.local_parts}"
    if args.seed:  # seed 0 keeps the tag of the runs cached before seeds were tagged
        tag += f"-seed{args.seed}"
    args.root, args.out = args.out, str(Path(args.out) / tag)
    if args.phase:
        result = run_one(args.phase, args)
        path = Path(args.out) / f"{args.phase}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        return
    names = [n for n in args.runs.split(",") if n]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    results = {name: cached(name, args) for name in names}
    base = results.get("central")
    lines = [
        f"MASSIVE en-US{' (train limited to ' + str(args.limit) + ')' if args.limit else ''}, "
        f"{args.rounds} rounds × {args.local_epochs} local epoch(s)"
        f"{f' / {args.local_parts} parts' if args.local_parts > 1 else ''} = central "
        f"{args.passes} epochs; all-MiniLM-L6-v2, batch 32, lr 1e-4 / 1e-3 "
        "(encoder / heads and LoRA adapters) unless the run's entry in RUNS "
        f"(benchmarks/federated.py) changes them; seed {args.seed}, {os.cpu_count()} CPU cores. "
        "Test split; model of the last round (central: best dev epoch). Dev exact match by "
        "round: the clients' held-out parts together (the dev split); curves in "
        "federated.png.",
        "",
        "| run | clients | intent acc | slot F1 | exact match | router acc | Δ EM vs central "
        "| dev EM by round | MB down / round | MB up / round | wall (× central) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t = r["test"]
        delta = f"{t['exact_match'] - base['test']['exact_match']:+.2f}" if base else ""
        ratio = f"{r['wall_seconds'] / base['wall_seconds']:.2f}" if base else ""
        lines.append(
            f"| {name} | {r.get('clients', 1)} | {t['intent_accuracy']} | {t['slot_f1']} | "
            f"{t['exact_match']} | {t['router_accuracy']} | {delta} | "
            f"{' → '.join(f'{x:.1f}' for x in dev_curve(r))} | "
            f"{mb(per_round(r['rounds'], 'bytes_down')) if 'rounds' in r else ''} | "
            f"{mb(per_round(r['rounds'], 'bytes_up')) if 'rounds' in r else ''} | "
            f"{r['wall_seconds']:.0f} s ({ratio}) |"
        )
    table = "\n".join(lines)
    print(table)
    write_results(f"benchmarks/results/{args.results}", table, results)
    plot_curves(results, Path(f"benchmarks/results/{args.results}.png"))


def dev_curve(result: dict[str, Any]) -> list[float]:
    """Dev exact match after each round (central: each epoch); the clients' dev parts together
    are the dev split central training scores on."""
    rows = result.get("rounds") or result.get("history") or []
    return [float(row["dev"]["exact_match"]) for row in rows]


def plot_curves(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, result in results.items():
        curve = dev_curve(result)
        style = "-" if "lora" in name else ("--" if name.startswith("central") else "-.")
        ax.plot(range(1, len(curve) + 1), curve, style, marker="o", label=name)
    ax.set_xlabel("round (central: epoch)")
    ax.set_ylabel("dev exact match (%)")
    ax.set_xticks(range(1, 1 + max((len(dev_curve(r)) for r in results.values()), default=1)))
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
