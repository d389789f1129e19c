"""`minicpmv-edge demo`: the bundled demo model answers a question about a picture (`--tiny FAMILY`: a tiny
random-weight model of that family instead; its text is noise)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..demo import DEMO_IMAGE, DEMO_PROMPT, ensure_demo_model, ensure_model
from ..families import FAMILIES


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-p", "--prompt", default=DEMO_PROMPT, help="the question")
    ap.add_argument("--image", default=str(DEMO_IMAGE), help="image file (default: a bundled picture)")
    ap.add_argument("-n", "--n-predict", type=int, default=32, help="most tokens to generate")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the CPUs this process may use)")
    ap.add_argument("--tiny", choices=sorted(FAMILIES), default=None,
                    help="run a tiny random-weight model of this family instead of the trained demo model")


def run(args: argparse.Namespace) -> int:
    from ..chat import MiniCPMV

    t0 = time.perf_counter()
    if args.tiny:
        model, mmproj = ensure_model(f"tiny-{args.tiny}")
        what = f"tiny random-weight {FAMILIES[args.tiny].display}"
    else:
        model, mmproj = ensure_demo_model()
        what = "demo model (a tiny model trained on the shapes task)"
    print(f"{what}: {model} + {mmproj} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    with MiniCPMV(model, mmproj, n_ctx=4096, n_threads=args.threads) as m:
        print(f"> {args.prompt}  [{args.image}]", file=sys.stderr)
        for piece in m.chat([{"role": "user", "content": [Path(args.image), args.prompt]}], stream=True,
                            max_new_tokens=args.n_predict, temperature=0):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        print(m.last.summary(), file=sys.stderr)
    return 0
