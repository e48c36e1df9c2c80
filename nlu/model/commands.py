"""`nlu export`: the model room's command."""

from __future__ import annotations

import argparse

from nlu.console import Subparsers


def export_command(args: argparse.Namespace) -> None:
    from nlu.model.export import export_onnx

    target = export_onnx(model_dir=args.model, out_dir=args.out, quantize=args.quantize)
    size = target.stat().st_size / 1e6
    print(f"wrote {target} ({size:.1f} MB); serve it with: nlu serve {args.out}")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (optionally int8)")
    p.add_argument("model", help="model directory written by `nlu train`")
    p.add_argument("out", help="output directory (servable: nlu serve OUT)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8, per-channel weights")
    p.set_defaults(func=export_command)
