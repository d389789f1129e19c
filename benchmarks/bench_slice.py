#!/usr/bin/env python3
"""Slicing a 4032x3024 photo into MiniCPM-V pieces (resize, crop, normalise to float32 CHW):
our C++ slicer vs the same steps with Pillow + numpy in Python, in the same run, on the same decoded pixels.

    python benchmarks/bench_slice.py [--threads 2] [--repeat 15] [--preprocess pil|torchvision]

--preprocess torchvision: MiniCPM-V 4.6's steps instead (sizes in multiples of 56, torch's uint8 bicubic,
float32 normalisation), against torchvision + torch (one thread, as Pillow); needs torch and torchvision.
Ends with one JSON line of the figures; "ratio_vs_pillow" (or "ratio_vs_torchvision") is our median time / the
reference's (target vs Pillow <= 0.5; torch's own uint8 kernel, AVX2 madd on int16 weights, is faster than ours).
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


def plan_sizes(W: int, H: int, max_slice_nums: int = 9, scale: int = 448, unit: int = 14):
    """The original processor's plan (as tests/reference/slicing.py, inlined to be self-contained): the
    overview's (w, h), the grid (cols, rows) and the slice's (w, h)."""

    def ensure_divide(x: float) -> int:
        return max(round(x / unit) * unit, unit)

    def best_resize(w: float, h: float, upscale: bool) -> tuple[int, int]:
        if w * h > scale * scale or upscale:
            r = w / h
            h = int(scale / math.sqrt(r))
            w = int(h * r)
        return ensure_divide(w), ensure_divide(h)

    multiple = min(math.ceil(W * H / scale**2), max_slice_nums)
    log_ratio = math.log(W / H)
    grids = [[m, n // m] for n in (multiple - 1, multiple, multiple + 1) if 1 < n <= max_slice_nums
             for m in range(1, n + 1) if n % m == 0]
    gx, gy = min(grids, key=lambda g: abs(log_ratio - math.log(g[0] / g[1])))
    cell = best_resize(max(round(W / gx) * gx, gx) / gx, max(round(H / gy) * gy, gy) / gy, True)
    return best_resize(W, H, False), (gx, gy), cell


def pillow_pieces(arr: np.ndarray) -> list[np.ndarray]:
    """MiniCPM-V 2.6's steps with Pillow and numpy."""
    img = Image.fromarray(arr)
    overview, (gx, gy), (cw, ch) = plan_sizes(*img.size)
    out = [img.resize(overview, Image.Resampling.BICUBIC)]
    refine = img.resize((cw * gx, ch * gy), Image.Resampling.BICUBIC)
    out += [refine.crop((c * cw, r * ch, (c + 1) * cw, (r + 1) * ch)) for r in range(gy) for c in range(gx)]
    return [((np.asarray(p, dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1) for p in out]


def torchvision_pieces(arr: np.ndarray) -> list[np.ndarray]:
    """MiniCPM-V 4.6's steps with torchvision and torch (transformers 5.23's default image processor)."""
    import torch
    from torchvision.transforms.v2 import functional as tvf

    img = torch.from_numpy(arr).permute(2, 0, 1)
    overview, (gx, gy), (cw, ch) = plan_sizes(arr.shape[1], arr.shape[0], unit=56)

    def resize(size: tuple[int, int]) -> torch.Tensor:
        return tvf.resize(img, [size[1], size[0]], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)

    out = [resize(overview)]
    refine = resize((cw * gx, ch * gy))
    out += [refine[:, r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] for r in range(gy) for c in range(gx)]
    return [((p.float() - 127.5) / 127.5).numpy() for p in out]


def ours(arr: np.ndarray, threads: int, preprocess: str = "pil") -> list[np.ndarray]:
    unit = 56 if preprocess == "torchvision" else 0
    return slice_image(arr, SliceConfig(n_threads=threads, size_unit=unit, preprocess=preprocess)).pieces()


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
    ap.add_argument("--preprocess", choices=("pil", "torchvision"), default="pil",
                    help="MiniCPM-V 2.6's steps against Pillow, or 4.6's against torchvision")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3024, 0:4032].astype(np.float32)
    photo = np.stack([128 + 100 * np.sin(xx / 97) * np.cos(yy / 61), 128 + 90 * np.sin((xx + yy) / 143),
                      128 + 80 * np.cos(xx / 211)], -1) + rng.normal(0, 12, (3024, 4032, 3))
    arr = np.clip(photo, 0, 255).astype(np.uint8)

    if args.preprocess == "torchvision":
        import torch

        torch.set_num_threads(1)
        ref_name, ref_fn = "torchvision", torchvision_pieces
    else:
        ref_name, ref_fn = "pillow", pillow_pieces
    a, b = ours(arr, args.threads, args.preprocess), ref_fn(arr)
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b, strict=True))
    max_err = max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    t_ours = timed(lambda: ours(arr, args.threads, args.preprocess), args.repeat)
    t_ref = timed(lambda: ref_fn(arr), args.repeat)
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    label = "Pillow + numpy" if ref_name == "pillow" else "torchvision + torch"
    print(f"image 4032x3024 -> {len(a)} pieces of {a[0].shape[2]}x{a[0].shape[1]} (overview) ...")
    print(f"ours  ({args.threads} threads): median {m_ours * 1e3:7.1f} ms  (min {min(t_ours) * 1e3:.1f})")
    print(f"{label} (1 thread): median {m_ref * 1e3:7.1f} ms  (min {min(t_ref) * 1e3:.1f})")
    print(f"ratio ours / {label}: {m_ours / m_ref:.3f}   max |difference| of the float pieces: {max_err:g}")
    versions = {"pillow": Image.__version__}
    if ref_name == "torchvision":
        import torch
        import torchvision

        versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    print(json.dumps({"bench": "slice", "preprocess": args.preprocess, "image": [4032, 3024], "pieces": len(a),
                      "threads": args.threads, "ours_ms": round(m_ours * 1e3, 2),
                      f"{ref_name}_ms": round(m_ref * 1e3, 2), f"ratio_vs_{ref_name}": round(m_ours / m_ref, 4),
                      "max_abs_diff": max_err, **versions, "cpu": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
