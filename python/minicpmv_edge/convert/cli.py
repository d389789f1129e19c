"""`minicpmv-edge convert` and `minicpmv-edge quantize`."""

from __future__ import annotations

import argparse
import sys

from .gguf_out import FILE_TYPES


def add_convert_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("hf_dir", help="original Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer)")
    ap.add_argument("-o", "--out", required=True,
                    help="output folder for model-<type>.gguf and mmproj-model-<type>.gguf")
    ap.add_argument("--outtype", choices=list(FILE_TYPES), default="f16", help="tensor type (default: f16)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_convert(args: argparse.Namespace) -> int:
    from . import convert_checkpoint

    res = convert_checkpoint(args.hf_dir, args.out, args.outtype, progress=not args.no_progress)
    print(f"{res.family.display}: wrote {res.model} and {res.mmproj}")
    return 0


def add_quantize_args(ap: argparse.ArgumentParser) -> None:
    from .quantize import TYPES

    ap.add_argument("input", help="language-model GGUF (f32/f16/bf16)")
    ap.add_argument("output", help="quantized GGUF to write")
    ap.add_argument("type", metavar="TYPE", type=str.upper, choices=TYPES, help="e.g. Q4_K_M, Q5_K_M, Q8_0")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")


def run_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_model

    print(quantize_model(args.input, args.output, args.type, args.threads))
    return 0


def add_quantize_mmproj_args(ap: argparse.ArgumentParser) -> None:
    from .quantize_mmproj import TYPES

    ap.add_argument("input", help="mmproj GGUF (f32/f16/bf16)")
    ap.add_argument("output", help="quantized mmproj to write")
    ap.add_argument("--type", required=True, choices=sorted(TYPES), help="block type of the matrices")


def run_quantize_mmproj(args: argparse.Namespace) -> int:
    from .quantize_mmproj import quantize_mmproj

    print(quantize_mmproj(args.input, args.output, args.type))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Script entry point: `python convert/convert_hf_to_gguf.py HF_DIR -o OUT`."""
    ap = argparse.ArgumentParser(prog="convert_hf_to_gguf", description="MiniCPM-V checkpoint -> GGUF files")
    add_convert_args(ap)
    return run_convert(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
