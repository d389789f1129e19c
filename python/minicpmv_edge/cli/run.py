"""`minicpmv-edge run`: one question about images or videos, the answer streamed (llama.cpp-style flags)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..video import Video
from .common import add_model_args, answer, load


def add_args(ap: argparse.ArgumentParser) -> None:
    add_model_args(ap)
    ap.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    ap.add_argument("--video", action="append", default=[], help="video file (repeatable): ~1 frame/s, at most 64")
    ap.add_argument("-p", "--prompt", required=True, help="the question")


def run(args: argparse.Namespace) -> int:
    with load(args) as m:
        media = [*map(Path, args.image), *map(Video, args.video)]
        answer(m, [{"role": "user", "content": [*media, args.prompt]}], args)
    return 0
