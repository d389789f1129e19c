#!/usr/bin/env python3
"""Slicing a 4032x3024 photo into MiniCPM-V pieces (resize, crop, normalise to float32 CHW):
our C++ slicer vs the same steps with Pillow + numpy in Python, in the same run, on the same decoded pixels.

    python benchmarks/bench_slice.py [--threads 2] [--repeat 15]

Ends with one JSON line of the figures; "ratio_vs_pillow" is our median time / Pillow's (target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import numpy as np
from PIL import Image

from minicpmv_edge.slicer import SliceConfig, slice_image


def pillow_pieces(arr: np.ndarray, max_slice_nums: int = 9, scale: int = 448, patch: int = 14) -> list[np.ndarray]:
    """The original processor's steps, with Pillow and numpy (as tests/reference/slicing.py, inlined to be
    self-contained)."""

    def ensure_divide(x: float) -> int:
        return max(round(x / patch) * patch, patch)

    def best_resize(w: float, h: float, upscale: bool) -> tuple[int, int]:
        if w * h > scale * scale or upscale:
            r = w / h
            h = int(scale / math.sqrt(r))
            w = int(h * r)
        return ensure_divide(w), ensure_divide(h)

    img = Image.fromarray(arr)
    W, H = img.size
    multiple = min(math.ceil(W * H / scale**2), max_slice_nums)
    log_ratio = math.log(W / H)
    grids = [[m, n // m] for n in (multiple - 1, multiple, multiple + 1) if 1 < n <= max_slice_nums
             for m in range(1, n + 1) if n % m == 0]
    gx, gy = min(grids, key=lambda g: abs(log_ratio - math.log(g[0] / g[1])))
    out = [img.resize(best_resize(W, H, False), Image.Resampling.BICUBIC)]
    cw, ch = best_resize(max(round(W / gx) * gx, gx) / gx, max(round(H / gy) * gy, gy) / gy, True)
    refine = img.resize((cw * gx, ch * gy), Image.Resampling.BICUBIC)
    out += [refine.crop((c * cw, r * ch, (c + 1) * cw, (r + 1) * ch)) for r in range(gy) for c in range(gx)]
    return [((np.asarray(p, dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1) for p in out]


def ours(arr: np.ndarray, threads: int) -> list[np.ndarray]:
    return slice_image(arr, SliceConfig(n_threads=threads)).pieces()


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3024, 0:4032].astype(np.float32)
    photo = np.stack([128 + 100 * np.sin(xx / 97) * np.cos(yy / 61), 128 + 90 * np.sin((xx + yy) / 143),
                      128 + 80 * np.cos(xx / 211)], -1) + rng.normal(0, 12, (3024, 4032, 3))
    arr = np.clip(photo, 0, 255).astype(np.uint8)

    a, b = ours(arr, args.threads), pillow_pieces(arr)
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b, strict=True))
    max_err = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    t_ours = timed(lambda: ours(arr, args.threads), args.repeat)
    t_pil = timed(lambda: pillow_pieces(arr), args.repeat)
    m_ours, m_pil = statistics.median(t_ours), statistics.median(t_pil)
    print(f"image 4032x3024 -> {len(a)} pieces of {a[0].shape[2]}x{a[0].shape[1]} (overview) ...")
    print(f"ours  ({args.threads} threads): median {m_ours * 1e3:7.1f} ms  (min {min(t_ours) * 1e3:.1f})")
    print(f"Pillow + numpy (1 thread): median {m_pil * 1e3:7.1f} ms  (min {min(t_pil) * 1e3:.1f})")
    print(f"ratio ours / Pillow: {m_ours / m_pil:.3f}   max |difference| of the float pieces: {max_err:g}")
    print(json.dumps({"bench": "slice", "image": [4032, 3024], "pieces": len(a), "threads": args.threads,
                      "ours_ms": round(m_ours * 1e3, 2), "pillow_ms": round(m_pil * 1e3, 2),
                      "ratio_vs_pillow": round(m_ours / m_pil, 4), "max_abs_diff": max_err,
                      "pillow": Image.__version__, "cpu": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
