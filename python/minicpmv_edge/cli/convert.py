"""`minicpmv-edge convert HF_DIR -o OUT`: an original checkpoint as the two GGUF files (also a script:
tools/convert_hf_to_gguf.py)."""

from __future__ import annotations

import argparse
import sys

from ..convert.gguf_out import FILE_TYPES
from ..families import FAMILIES


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("hf_dir", help="original Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer)")
    ap.add_argument("-o", "--out", required=True,
                    help="output folder for model-<type>.gguf and mmproj-model-<type>.gguf")
    ap.add_argument("--outtype", choices=list(FILE_TYPES), default="f16", help="tensor type (default: f16)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--family", choices=list(FAMILIES), default=None,
                    help="the model family, for a config.json that does not say it (default: from config.json)")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint

    res = convert_checkpoint(args.hf_dir, args.out, args.outtype, progress=not args.no_progress, family=args.family)
    print(f"{res.family.display}: wrote {res.model} and {res.mmproj}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Script entry point: `python tools/convert_hf_to_gguf.py HF_DIR -o OUT`."""
    ap = argparse.ArgumentParser(prog="convert_hf_to_gguf", description="MiniCPM-V checkpoint -> GGUF files")
    add_args(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
