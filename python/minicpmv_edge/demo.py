"""`minicpmv-edge demo`: build a tiny checkpoint once (cached; 2.6 unless --model-version), convert it, and chat
about a bundled image.

It runs the whole path: original-layout checkpoint -> GGUF files -> slicing -> vision encoder -> llama.cpp
decoding with the image embeddings -> streamed text. The tiny model has random weights, so its text is noise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from . import recipes
from .convert import convert_checkpoint
from .versions import VERSIONS

RECIPE_REVISION = 1  # bump when recipes.py changes what it writes, so cached checkpoints are rebuilt


def cache_dir() -> Path:
    return Path(os.environ.get("MINICPMV_EDGE_CACHE", Path.home() / ".cache" / "minicpmv-edge"))


def ensure_model(preset: str, outtype: str = "f16", root: Path | None = None) -> tuple[Path, Path]:
    """(model GGUF, mmproj GGUF) of a preset, generated and converted on first use."""
    p = recipes.PRESETS[preset]
    key = hashlib.sha256(repr((RECIPE_REVISION, p, VERSIONS[p.version])).encode()).hexdigest()[:12]
    base = (root or cache_dir()) / f"{preset}-{key}"
    hf, gg = base / "hf", base / "gguf"
    model, mmproj = gg / f"model-{outtype}.gguf", gg / f"mmproj-model-{outtype}.gguf"
    if not (model.exists() and mmproj.exists()):
        if not (hf / "model.safetensors").exists():
            recipes.write_checkpoint(preset, hf)
        convert_checkpoint(hf, gg, outtype, progress=False)
    return model, mmproj


DEMO_IMAGE = Path(__file__).parent / "data" / "demo.png"


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model-version", choices=sorted(VERSIONS), default="2.6", help="which tiny model to build")
    ap.add_argument("-p", "--prompt", default="What is in the image?", help="the question")
    ap.add_argument("--image", default=str(DEMO_IMAGE), help="image file (default: a bundled picture)")
    ap.add_argument("-n", "--n-predict", type=int, default=32, help="tokens to generate")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the CPUs this process may use)")


def run(args: argparse.Namespace) -> int:
    from .chat import MiniCPMV

    t0 = time.perf_counter()
    model, mmproj = ensure_model(f"tiny-{args.model_version}")
    print(f"tiny {VERSIONS[args.model_version].display} checkpoint converted: {model} + {mmproj} "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    with MiniCPMV(model, mmproj, n_ctx=2048, n_threads=args.threads) as m:
        print(f"> {args.prompt}  [{args.image}]", file=sys.stderr)
        for piece in m.chat([{"role": "user", "content": [Path(args.image), args.prompt]}], stream=True,
                            max_new_tokens=args.n_predict, temperature=0):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        print(m.last.summary(), file=sys.stderr)
    return 0
