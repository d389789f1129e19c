"""Quantize a language-model GGUF with llama.cpp's own quantizer (`llama_model_quantize`)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import llama_cpp

from .gguf_out import check_in_out

TYPES = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_"))


def quantize_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str,
                   n_threads: int | None = None) -> Path:
    """Write `dst` as `qtype` (e.g. Q4_K_M); nothing is left at `dst` if llama.cpp fails."""
    name = qtype.upper()
    if name not in TYPES:
        raise ValueError(f"unknown quantization type {qtype!r} (choose from {', '.join(TYPES)})")
    src_p, dst_p = check_in_out(src, dst)
    tmp = dst_p.with_name(dst_p.name + ".partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
    params.nthread = n_threads or (os.cpu_count() or 1)
    try:
        rc = llama_cpp.llama_model_quantize(os.fsencode(src_p), os.fsencode(tmp), ctypes.byref(params))
        if rc != 0:
            raise ValueError(f"{src_p}: llama.cpp could not quantize this file to {name} (code {rc}); "
                             "is it a language-model GGUF?")
        os.replace(tmp, dst_p)
    finally:
        tmp.unlink(missing_ok=True)
    return dst_p
