"""`minicpmv-edge quantize-mmproj IN OUT --type q8_0`: an mmproj's matrices block-quantized."""

from __future__ import annotations

import argparse


def add_args(ap: argparse.ArgumentParser) -> None:
    from ..convert.quantize_mmproj import TYPES

    ap.add_argument("input", help="mmproj GGUF (f32/f16/bf16)")
    ap.add_argument("output", help="quantized mmproj to write")
    ap.add_argument("--type", required=True, choices=sorted(TYPES), help="block type of the matrices")


def run(args: argparse.Namespace) -> int:
    from ..convert.quantize_mmproj import quantize_mmproj

    print(quantize_mmproj(args.input, args.output, args.type))
    return 0
