"""The vision tower (`vpm.*`) and resampler (`resampler.*`) as a llama.cpp "mmproj" GGUF.

Layout: llama.cpp's `clip-impl.h` keys and tensor names (docs/sources.md), as llama.cpp's legacy converter writes
it, so that llama.cpp of any era loads the files llama.cpp runs: the fused `in_proj` split into q/k/v, `proj`
transposed, and a 70x70 sin-cos table as `resampler.pos_embed_k`. The tower's own tensor table is the family
converter's (`Family.converter`). A family llama.cpp does not run gets a projector type of ours
(`Family.projector_type`), so a llama.cpp that does not know it refuses the file instead of running another graph
on it, and the graph's variants are explicit keys: `minicpmv_edge.vision.position_embedding` ("resampled_grid": the
table resized to each piece with antialiased bicubic), `minicpmv_edge.vision.gelu` ("erf"),
`minicpmv_edge.vision.slicing` ("square": one squashed piece per image), `minicpmv_edge.resampler.key_positions`
("stored": the family converter's `resampler.pos_embed_k` table) and the resampler's stored query table
`resampler.pos_embed_q`.
"""

from __future__ import annotations

from collections.abc import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from ..families import Family
from .gguf_out import PlannedTensor, matrix_type
from .mapping import Source
from .safetensors_io import CheckpointError

POS_GRID = 70  # the resampler's sin-cos cache side (the original `resampler.py`)


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


def plan_mmproj(src: Source, cfg: dict, family: Family, outtype: QT) -> list[PlannedTensor]:
    vc = cfg["vision_config"]
    D, F = int(vc["hidden_size"]), int(vc["intermediate_size"])
    E, Q = int(cfg["hidden_size"]), int(cfg["query_num"])
    if E < 128 or E % (E // 128):
        raise CheckpointError(f"config.json: hidden_size {E} is not a multiple of hidden_size // 128 (the "
                              "resampler's attention heads)")
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
    table += [("resampler.proj", "resampler.proj.weight", (E, E), lambda a: np.ascontiguousarray(a.T))]
    if family.resampler_query_pos:
        table += [("resampler.pos_embed", "resampler.pos_embed_q", (Q, E), None)]
    if family.mmproj_version is not None:  # llama.cpp's files carry the key cache; our encoder computes it
        table += [(None, "resampler.pos_embed_k", (POS_GRID * POS_GRID, E), None)]
    original_shape: dict[str, tuple[int, ...]] = {}
    assert family.converter is not None
    for hf, gg, fn, shape, hf_shape in family.converter.resampler_table(cfg):  # tables derived at conversion
        table.append((hf, gg, shape, fn))
        original_shape[hf] = hf_shape
    for hf, gg, fn, shape in family.converter.vision_table(cfg, n_layers, D):
        table.append((hf, gg, shapes.get(gg.split(".", 3)[-1] if gg.startswith("v.blk.") else gg, (D,)), fn))
        if shape is not None:
            original_shape[hf] = shape
    # a dropped last layer (drop_vision_last_layer) stored but never run
    src.skip(family.converter.stored_layer_names(n_layers, int(vc["num_hidden_layers"])))

    fused = {"resampler.attn.in_proj_weight": (3 * E, E), "resampler.attn.in_proj_bias": (3 * E,),
             **original_shape}  # split q/k/v, the timm position table's batch axis
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
    if outtype == QT.F32 or len(shape) == 1 or name in ("resampler.query", "resampler.pos_embed_q",
                                                        "resampler.pos_embed_k"):
        return QT.F32
    if name in ("v.patch_embd.weight", "v.position_embd.weight"):
        return QT.F16  # the conv kernel feeds an f16 im2col in ggml
    return matrix_type(shape, outtype)


def vision_layers(cfg: dict) -> int:
    n = int(cfg["vision_config"]["num_hidden_layers"])
    return n - 1 if cfg.get("drop_vision_last_layer", True) else n  # HF's class default drops it


def write_mmproj_kv(w: gguf.GGUFWriter, cfg: dict, pre: dict, family: Family, file_type: int, name: str) -> None:
    vc = cfg["vision_config"]
    w.add_name(name)
    w.add_description(f"image encoder for {family.display}")
    w.add_file_type(file_type)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", family.projector_type)
    if family.mmproj_version is not None:  # a file llama.cpp runs
        w.add_bool("clip.has_minicpmv_projector", True)
        w.add_int32("clip.minicpmv_version", family.mmproj_version)
    w.add_uint32("clip.minicpmv_query_num", int(cfg["query_num"]))
    w.add_uint32("clip.minicpmv_projection_dim", int(cfg["hidden_size"]))
    w.add_uint32("clip.vision.image_size", int(cfg.get("scale_resolution", cfg.get("image_size",
                                                                                   family.scale_resolution))))
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
    if family.vision_gelu == "tanh":
        w.add_bool("clip.use_gelu", True)  # llama.cpp's meaning: its FFN's tanh GELU
    w.add_string("minicpmv_edge.vision.position_embedding", family.vision_position)
    if family.position_ids is not None:
        w.add_string("minicpmv_edge.vision.position_ids", family.position_ids)
    w.add_string("minicpmv_edge.vision.gelu", family.vision_gelu)
    w.add_string("minicpmv_edge.vision.slicing", family.slicing)
    w.add_string("minicpmv_edge.resampler.key_positions", family.resampler_keys)
    if family.resampler_temporal:  # 4.5's 3-D resampler (video frames packed by time ids)
        w.add_bool("minicpmv_edge.resampler.temporal", True)
    # a padded vision batch, unless the checkpoint's config turns batching off (then each piece alone)
    w.add_bool("minicpmv_edge.vision.padded_batch",
               family.padded_vision_batch and bool(cfg.get("batch_vision_input", True)))
    w.add_uint32("minicpmv_edge.max_slice_nums", int(pre.get("max_slice_nums", cfg.get("max_slice_nums",
                                                                                        family.max_slice_nums))))
    w.add_bool("minicpmv_edge.use_image_id", bool(pre.get("use_image_id", family.use_image_id)))
    if file_type == 7:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
