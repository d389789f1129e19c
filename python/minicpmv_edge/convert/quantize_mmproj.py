"""Quantize an mmproj's matrices (q8_0 / q4_0), keeping what quantization would hurt or cannot hold.

Block-quantized: the attention, MLP and resampler matrices whose rows are whole blocks. Kept as they are: the
embeddings (patch kernel, position table), the queries, every vector, and matrices whose rows are not a whole
number of blocks (SigLIP's fc2, 4304 wide).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from .gguf_out import GGUFFile, PlannedTensor, check_in_out, matrix_type

TYPES = {"q8_0": (QT.Q8_0, 7), "q4_0": (QT.Q4_0, 2)}
_QUANTIZABLE = re.compile(
    r"^(v\.blk\.\d+\.(attn_[qkv]|attn_out|ffn_up|ffn_down)\.weight"
    r"|resampler\.(kv|proj|attn\.[qkv]|attn\.out)\.weight"
    r"|v\.vit_merger\.(attn_[qkv]|attn_out|ds_ffn_up|ds_ffn_down)\.weight|mm\.(up|down)\.weight)$")  # 4.6
_FLOAT = (QT.F32, QT.F16, QT.BF16)
_SKIP_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture")


def quantize_mmproj(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str) -> Path:
    if qtype not in TYPES:
        raise ValueError(f"unknown mmproj quantization type {qtype!r} (choose from {', '.join(TYPES)})")
    src_p, dst_p = check_in_out(src, dst)
    try:
        reader = gguf.GGUFReader(src_p)
    except (ValueError, OSError, IndexError) as e:
        raise ValueError(f"{src_p}: not a readable GGUF file ({e})") from e
    arch = reader.fields.get("general.architecture")
    if arch is None or arch.contents() != "clip":
        raise ValueError(f"{src_p}: not an mmproj file (general.architecture is not 'clip')")
    wanted, file_type = TYPES[qtype]

    plan: list[PlannedTensor] = []
    for t in reader.tensors:
        if t.tensor_type not in _FLOAT:
            raise ValueError(f"{src_p}: tensor {t.name} is already {t.tensor_type.name}; "
                             "quantize from an f32, f16 or bf16 file")
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # numpy order
        if _QUANTIZABLE.match(t.name) and len(shape) == 2:
            out_type = matrix_type(shape, wanted, fallback=t.tensor_type)
        else:
            out_type = t.tensor_type
        plan.append(PlannedTensor(t.name, shape, out_type,
                                  lambda t=t, shape=shape: np.asarray(
                                      gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)))

    out = GGUFFile(dst_p, "clip")
    try:
        for name, field in reader.fields.items():
            if name in _SKIP_FIELDS:
                continue
            value = file_type if name == "general.file_type" else field.contents()
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            out.writer.add_key_value(name, value, vtype, sub_type=sub)
        if "general.file_type" not in reader.fields:
            out.writer.add_file_type(file_type)
        out.write_tensors(plan)
    except BaseException:
        out.discard()
        raise
    out.commit()
    return dst_p
