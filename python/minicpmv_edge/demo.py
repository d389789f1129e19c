"""`minicpmv-edge demo`: build the tiny 2.6 checkpoint once (cached), convert it, and generate from it.

Until the chat runtime exists (issue 5) the demo is text-only: it proves the whole path from an original-layout
checkpoint to tokens streamed by llama.cpp. The tiny model has random weights, so its text is noise.
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


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("-p", "--prompt", default="Describe a sunny day at the beach.", help="user message")
    ap.add_argument("-n", "--n-predict", type=int, default=32, help="tokens to generate (default: 32)")


def run(args: argparse.Namespace) -> int:
    from llama_cpp import Llama

    t0 = time.perf_counter()
    model, mmproj = ensure_model("tiny-2.6")
    print(f"tiny MiniCPM-V 2.6 checkpoint converted: {model} + {mmproj} ({time.perf_counter() - t0:.1f} s)",
          file=sys.stderr)
    llm = Llama(str(model), n_ctx=512, n_threads=os.cpu_count() or 1, verbose=False, seed=0)
    stream = llm.create_chat_completion(messages=[{"role": "user", "content": args.prompt}],
                                        max_tokens=args.n_predict, temperature=0.0, stream=True)
    for chunk in stream:
        sys.stdout.write(chunk["choices"][0]["delta"].get("content", "") or "")  # type: ignore[index, union-attr]
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
