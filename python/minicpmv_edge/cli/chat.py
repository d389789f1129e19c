"""`minicpmv-edge chat`: an interactive chat with images and videos (`/image PATH`, `/video PATH`, `/clear`,
`/exit`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..video import Video
from .common import add_model_args, answer, load
from .errors import error_text


def add_args(ap: argparse.ArgumentParser) -> None:
    add_model_args(ap)
    ap.add_argument("--image", action="append", default=[], help="image for the first question (repeatable)")
    ap.add_argument("--video", action="append", default=[], help="video for the first question (repeatable)")


HELP = ("commands: /image PATH or /video PATH (attach to your next message), /clear (forget the conversation), "
        "/exit")


def run(args: argparse.Namespace) -> int:
    with load(args) as m:
        history: list[dict] = []
        pending: list[Path | Video] = [*map(Path, args.image), *map(Video, args.video)]
        print(HELP, file=sys.stderr)
        for line in sys.stdin:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("/exit"):
                break
            if line.startswith("/clear"):
                history, pending = [], []
                print("(conversation cleared)", file=sys.stderr)
                continue
            if line.startswith(("/image", "/video")):
                kind, _, path = line.partition(" ")
                if path.strip():
                    pending.append(Path(path.strip()) if kind == "/image" else Video(path.strip()))
                    print(f"({kind[1:]} {path.strip()} attached)", file=sys.stderr)
                continue
            msg = {"role": "user", "content": [*pending, line]}
            try:
                text = answer(m, [*history, msg], args)
            except (ValueError, MemoryError) as e:  # a bad image or message: say so and keep the session
                print(f"error: {error_text(e)}", file=sys.stderr)
                continue
            history += [msg, {"role": "assistant", "content": text}]
            pending = []
    return 0
