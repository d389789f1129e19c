"""`minicpmv-edge make-model PRESET -o DIR`: a deterministic test checkpoint in the original layout."""

from __future__ import annotations

import argparse


def add_args(ap: argparse.ArgumentParser) -> None:
    from ..recipes import PRESETS

    ap.add_argument("preset", choices=sorted(PRESETS), help="which checkpoint to write")
    ap.add_argument("-o", "--out", required=True, help="output folder (replaced if it exists)")


def run(args: argparse.Namespace) -> int:
    from ..recipes import write_checkpoint

    print(write_checkpoint(args.preset, args.out))
    return 0
