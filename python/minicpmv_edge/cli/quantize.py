"""`minicpmv-edge quantize IN OUT TYPE`: a language-model GGUF quantized by llama.cpp's own quantizer."""

from __future__ import annotations

import argparse


def add_args(ap: argparse.ArgumentParser) -> None:
    from ..convert.quantize import TYPES

    ap.add_argument("input", help="language-model GGUF (f32/f16/bf16)")
    ap.add_argument("output", help="quantized GGUF to write")
    ap.add_argument("type", metavar="TYPE", type=str.upper, choices=TYPES, help="e.g. Q4_K_M, Q5_K_M, Q8_0")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    from ..convert.quantize import quantize_model

    print(quantize_model(args.input, args.output, args.type, args.threads))
    return 0
