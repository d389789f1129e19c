"""`minicpmv-edge encode --mmproj F IMAGE --out emb.npy`: the embeddings of every piece of an image."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..encoder import VisionEncoder


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--mmproj", required=True, help="vision encoder GGUF (ours or llama.cpp's)")
    ap.add_argument("image", help="image file")
    ap.add_argument("--max-slices", type=int, default=9, help="max_slice_nums")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--device", default="cpu", help="cpu, auto (the GPU llama-cpp-python was built for) or a name")
    ap.add_argument("--out", required=True, help="output .npy: float32 [n_pieces, query_num, hidden]")


def run(args: argparse.Namespace) -> int:
    with VisionEncoder(args.mmproj, n_threads=args.threads, device=args.device) as enc:
        t0 = time.perf_counter()
        sliced = enc.slice(args.image, args.max_slices, args.threads)
        t1 = time.perf_counter()
        # a padded-batch file: the image alone is the original's whole batch, padded to its longest piece
        longest = max(h * w for h, w in sliced.patch_grids)
        emb = enc.encode(sliced, pad_to=longest if enc.padded_batch else 0)
        t2 = time.perf_counter()
    out = Path(args.out)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("wb") as f:
        np.save(f, emb)
    os.replace(tmp, out)
    grid = f"{sliced.grid[0]}x{sliced.grid[1]}" if sliced.grid else "none"
    print(f"{out}: {emb.shape[0]} pieces (grid {grid}) x {emb.shape[1]} tokens x {emb.shape[2]}; "
          f"slice {1e3 * (t1 - t0):.0f} ms, encode {1e3 * (t2 - t1):.0f} ms", file=sys.stderr)
    return 0
