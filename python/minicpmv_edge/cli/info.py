"""`minicpmv-edge info [FILE.gguf]`: ggml's backends (those the installed llama-cpp-python was built with), its
devices and CPU features, a GGUF file's keys, and how our encoder would run an mmproj."""

from __future__ import annotations

import argparse


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("gguf", nargs="?", help="a GGUF file to describe (omit to list backends and devices only)")


def run(args: argparse.Namespace) -> int:
    from .._native import _core

    print(f"ggml {_core.ggml_commit()}")
    print("backends: " + ", ".join(_core.list_backends()))
    for d in _core.list_devices():
        print(f"device {d.name} ({d.kind}): {d.description}")
    print("cpu features: " + " ".join(n for n, v in _core.cpu_features() if v != "0"))
    if args.gguf:
        info = _core.read_gguf_info(args.gguf)
        print(f"{args.gguf}: GGUF v{info.version}, {len(info.kv)} keys, {len(info.tensors)} tensors")
        for k, v in info.kv:
            text = f"[{len(v)} items]" if isinstance(v, list) and len(v) > 8 else repr(v)
            print(f"  {k} = {text[:200]}")
        if dict(info.kv).get("general.architecture") == "clip":  # how our encoder would run it, chosen at load
            from ..encoder import VisionEncoder

            with VisionEncoder(args.gguf) as enc:
                print(f"vision encoder: {enc.native.matmul_summary}")
    return 0
