"""The vision tower (`vpm.*`) and resampler (`resampler.*`) as a llama.cpp "mmproj" GGUF.

Layout: llama.cpp's `clip-impl.h` keys and tensor names (docs/sources.md). Kept as llama.cpp's legacy converter
writes it, so that llama.cpp of any era loads our files: fc1/fc2 under the swapped names `ffn_down`/`ffn_up`, the fused
`in_proj` split into q/k/v, `proj` transposed, and a 70x70 sin-cos table as `resampler.pos_embed_k`.
"""

from __future__ import annotations

from collections.abc import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from ..versions import ModelVersion
from .gguf_out import PlannedTensor, matrix_type
from .mapping import Source
from .safetensors_io import CheckpointError

POS_GRID = 70  # the resampler's sin-cos cache side (the original `resampler.py`)

# original vision name (without "vpm.") -> GGUF name
_VISION_GLOBAL = {
    "embeddings.patch_embedding.weight": "v.patch_embd.weight",
    "embeddings.patch_embedding.bias": "v.patch_embd.bias",
    "embeddings.position_embedding.weight": "v.position_embd.weight",
    "post_layernorm.weight": "v.post_ln.weight",
    "post_layernorm.bias": "v.post_ln.bias",
}
_VISION_LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.out_proj.weight": "attn_out.weight", "self_attn.out_proj.bias": "attn_out.bias",
    "layer_norm1.weight": "ln1.weight", "layer_norm1.bias": "ln1.bias",
    "layer_norm2.weight": "ln2.weight", "layer_norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "ffn_down.weight", "mlp.fc1.bias": "ffn_down.bias",  # legacy swapped naming
    "mlp.fc2.weight": "ffn_up.weight", "mlp.fc2.bias": "ffn_up.bias",
}


def sincos_2d(dim: int, rows: int, cols: int) -> np.ndarray:
    """[rows*cols, dim]: channels [sin col, cos col, sin row, cos row], each dim/4 wide, float32 (the original
    `resampler.py`)."""
    omega = 1.0 / np.float32(10000) ** (np.arange(dim // 4, dtype=np.float32) / np.float32(dim / 4))
    r, c = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")

    def enc(p: np.ndarray) -> np.ndarray:
        t = np.outer(p.reshape(-1), omega)
        return np.concatenate([np.sin(t), np.cos(t)], axis=1)

    return np.concatenate([enc(c), enc(r)], axis=1).astype(np.float32)


def _rows(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a[lo:hi]


def plan_mmproj(src: Source, cfg: dict, version: ModelVersion, outtype: QT) -> list[PlannedTensor]:
    vc = cfg["vision_config"]
    D, F = int(vc["hidden_size"]), int(vc["intermediate_size"])
    E, Q = int(cfg["hidden_size"]), int(cfg["query_num"])
    if E % 128:
        raise CheckpointError(f"config.json: hidden_size {E} is not a multiple of 128 (resampler heads = hidden/128)")
    side = int(vc["image_size"]) // int(vc["patch_size"])
    n_layers = vision_layers(cfg)
    shapes = {
        "v.patch_embd.weight": (D, 3, int(vc["patch_size"]), int(vc["patch_size"])), "v.patch_embd.bias": (D,),
        "v.position_embd.weight": (side * side, D), "v.post_ln.weight": (D,), "v.post_ln.bias": (D,),
        "attn_q.weight": (D, D), "attn_k.weight": (D, D), "attn_v.weight": (D, D), "attn_out.weight": (D, D),
        "ffn_down.weight": (F, D), "ffn_down.bias": (F,), "ffn_up.weight": (D, F),
    }
    table: list[tuple[str | None, str, tuple[int, ...], Callable[[np.ndarray], np.ndarray] | None]] = []
    # resampler first, as llama.cpp's files have it
    table += [
        ("resampler.query", "resampler.query", (Q, E), None),
        ("resampler.kv_proj.weight", "resampler.kv.weight", (E, D), None),
    ]
    for k, name in enumerate("qkv"):
        table += [("resampler.attn.in_proj_weight", f"resampler.attn.{name}.weight", (E, E), _rows(k * E, (k + 1) * E)),
                  ("resampler.attn.in_proj_bias", f"resampler.attn.{name}.bias", (E,), _rows(k * E, (k + 1) * E))]
    table += [("resampler.attn.out_proj.weight", "resampler.attn.out.weight", (E, E), None),
              ("resampler.attn.out_proj.bias", "resampler.attn.out.bias", (E,), None)]
    for n in ("ln_q", "ln_kv", "ln_post"):
        table += [(f"resampler.{n}.weight", f"resampler.{n}.weight", (E,), None),
                  (f"resampler.{n}.bias", f"resampler.{n}.bias", (E,), None)]
    table += [("resampler.proj", "resampler.proj.weight", (E, E), lambda a: np.ascontiguousarray(a.T)),
              (None, "resampler.pos_embed_k", (POS_GRID * POS_GRID, E), None)]
    for hf, gg in _VISION_GLOBAL.items():
        table.append((f"vpm.{hf}", gg, shapes[gg], None))
    for i in range(n_layers):
        for hf, gg in _VISION_LAYER.items():
            table.append((f"vpm.encoder.layers.{i}.{hf}", f"v.blk.{i}.{gg}", shapes.get(gg, (D,)), None))
    # a dropped last layer (drop_vision_last_layer) is stored but never run
    n_stored = int(vc["num_hidden_layers"])
    src.skip([f"vpm.encoder.layers.{i}.{hf}" for i in range(n_layers, n_stored) for hf in _VISION_LAYER])

    fused = {"resampler.attn.in_proj_weight": (3 * E, E), "resampler.attn.in_proj_bias": (3 * E,)}  # split q/k/v
    out = []
    for hf, gg, shape, fn in table:
        if hf is None:
            out.append(PlannedTensor(gg, shape, QT.F32, lambda E=E: sincos_2d(E, POS_GRID, POS_GRID)))
            continue
        src.expect(hf, fused.get(hf, shape))
        out.append(PlannedTensor(gg, shape, _tensor_type(gg, shape, outtype), src.reader(hf, fn)))
    return out


def _tensor_type(name: str, shape: tuple[int, ...], outtype: QT) -> QT:
    """llama.cpp's choices (its legacy converter): matrices in the output type, vectors/queries/tables in f32; the
    embeddings (patch conv, position table) never block-quantized."""
    if outtype == QT.F32 or len(shape) == 1 or name == "resampler.query":
        return QT.F32
    if name in ("v.patch_embd.weight", "v.position_embd.weight"):
        return QT.F16  # the conv kernel feeds an f16 im2col in ggml
    return matrix_type(shape, outtype)


def vision_layers(cfg: dict) -> int:
    n = int(cfg["vision_config"]["num_hidden_layers"])
    return n - 1 if cfg.get("drop_vision_last_layer", True) else n  # HF's class default drops it


def write_mmproj_kv(w: gguf.GGUFWriter, cfg: dict, pre: dict, version: ModelVersion, file_type: int, name: str) -> None:
    vc = cfg["vision_config"]
    w.add_name(name)
    w.add_description(f"image encoder for {version.display}")
    w.add_file_type(file_type)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_minicpmv_projector", True)
    w.add_string("clip.projector_type", "resampler")
    w.add_int32("clip.minicpmv_version", version.mmproj_version)
    w.add_uint32("clip.minicpmv_query_num", int(cfg["query_num"]))
    w.add_uint32("clip.minicpmv_projection_dim", int(cfg["hidden_size"]))
    w.add_uint32("clip.vision.image_size", int(cfg.get("image_size", version.scale_resolution)))
    w.add_uint32("clip.vision.patch_size", int(vc["patch_size"]))
    w.add_uint32("clip.vision.embedding_length", int(vc["hidden_size"]))
    w.add_uint32("clip.vision.feed_forward_length", int(vc["intermediate_size"]))
    w.add_uint32("clip.vision.projection_dim", 0)
    w.add_uint32("clip.vision.attention.head_count", int(vc["num_attention_heads"]))
    w.add_float32("clip.vision.attention.layer_norm_epsilon", float(vc.get("layer_norm_eps", 1e-6)))
    w.add_uint32("clip.vision.block_count", vision_layers(cfg))
    for key, field in (("clip.vision.image_mean", "norm_mean"), ("clip.vision.image_std", "norm_std")):
        vals = [float(x) for x in pre.get(field, [0.5, 0.5, 0.5])]
        w.add_key_value(key, vals, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
    w.add_bool("clip.use_gelu", True)
    w.add_string("minicpmv_edge.version", version.name)
    w.add_uint32("minicpmv_edge.max_slice_nums", int(pre.get("max_slice_nums", version.max_slice_nums)))
    w.add_bool("minicpmv_edge.use_image_id", bool(pre.get("use_image_id", version.use_image_id)))
    if file_type == 7:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
