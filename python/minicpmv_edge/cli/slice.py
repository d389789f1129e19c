"""`minicpmv-edge slice IMAGE`: the slicing plan of an image, and what it costs in tokens."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from ..families import DEFAULT, FAMILIES
from ..image import DEFAULT_MAX_PIXELS
from ..slicer import SliceConfig, slice_image


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("image", help="image file")
    ap.add_argument("--max-slices", type=int, default=9, help="max_slice_nums: most slices besides the overview")
    ap.add_argument("--model-version", choices=sorted(FAMILIES), default=DEFAULT,
                    help="model family whose tokens per piece are counted")
    ap.add_argument("--downsample-mode", choices=("16x", "4x"), default=None,
                    help="MiniCPM-V 4.6: tokens per 4x4 patches (16x, the default) or per 2x2 (4x)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--save-dir", help="write every resized piece as piece_NN.png")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    version = FAMILIES[args.model_version]
    merge = version.merge_of(args.downsample_mode)
    config = SliceConfig(max_slice_nums=args.max_slices, scale_resolution=version.scale_resolution,
                         patch_size=version.patch_size, max_pixels=args.max_pixels,
                         square=version.slicing == "square", preprocess=version.preprocess,
                         size_unit=version.patch_size * merge,
                         **({"n_threads": args.threads} if args.threads else {}))
    s = slice_image(args.image, config)
    per_piece = [version.piece_tokens(w, h, args.downsample_mode) for w, h in s.sizes]
    tokens = sum(per_piece)
    if args.save_dir:
        out = Path(args.save_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(s.pieces_u8):
            Image.fromarray(p).save(out / f"piece_{i:02d}.png")
    if args.json:
        print(json.dumps({"grid": list(s.grid) if s.grid else None,
                          "pieces": [{"width": w, "height": h, "tokens": t} for (w, h), t in zip(s.sizes, per_piece,
                                                                                                   strict=True)],
                          "tokens": tokens}))
        return 0
    (ow, oh), n = s.sizes[0], len(s.sizes)
    if s.grid is None:
        print(f"not sliced: 1 piece of {ow}x{oh}")
    else:
        cw, ch = s.sizes[1]
        print(f"grid {s.grid[0]}x{s.grid[1]} (cols x rows): overview {ow}x{oh} + {n - 1} slices of {cw}x{ch}")
    each = f"{version.query_num} per piece" if version.query_num else "+".join(map(str, per_piece))
    print(f"{tokens} image tokens for {version.display} ({each}; {n} pieces)")
    return 0
