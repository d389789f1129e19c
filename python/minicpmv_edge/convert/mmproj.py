"""The vision tower (`vpm.*`) and resampler (`resampler.*`) as a llama.cpp "mmproj" GGUF.

Layout: llama.cpp's `clip-impl.h` keys and tensor names (docs/sources.md). Kept as llama.cpp's legacy converter
writes it, so that llama.cpp of any era loads our 2.5/2.6 files: fc1/fc2 under the swapped names
`ffn_down`/`ffn_up`, the fused `in_proj` split into q/k/v, `proj` transposed, and a 70x70 sin-cos table as
`resampler.pos_embed_k`.

MiniCPM-V 2.0 (a timm tower) gets the same names, with its fused `qkv` split too, its 27x27 position table as
`v.position_embd.weight` and its stored query table as `resampler.pos_embed_q`; its projector type is ours
("minicpmv-2.0"), so a llama.cpp that does not know 2.0 refuses the file instead of running a 2.5/2.6 graph on
it, and the two graph differences are explicit keys: `minicpmv_edge.vision.position_embedding` ("resampled_grid":
the table resized to each piece with antialiased bicubic) and `minicpmv_edge.vision.gelu` ("erf").
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


# timm's names (2.0), without "vpm."; qkv is split into q/k/v below
_TIMM_GLOBAL = {
    "patch_embed.proj.weight": "v.patch_embd.weight",
    "patch_embed.proj.bias": "v.patch_embd.bias",
    "pos_embed": "v.position_embd.weight",
    "norm.weight": "v.post_ln.weight",
    "norm.bias": "v.post_ln.bias",
}
_TIMM_LAYER = {
    "attn.proj.weight": "attn_out.weight", "attn.proj.bias": "attn_out.bias",
    "norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",
    "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "ffn_down.weight", "mlp.fc1.bias": "ffn_down.bias",  # the same legacy naming
    "mlp.fc2.weight": "ffn_up.weight", "mlp.fc2.bias": "ffn_up.bias",
}
# timm towers a config names without a vision_config (the original builds them from the name alone)
TIMM_TOWERS = {
    "vit_so400m_patch14_siglip_384": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                      "num_attention_heads": 16, "patch_size": 14, "image_size": 384},
}


def vision_config(cfg: dict, version: ModelVersion, where: str) -> dict:
    """The tower's dimensions: config.json's `vision_config`, or for a timm tower the dimensions of its name."""
    if isinstance(cfg.get("vision_config"), dict):
        return cfg["vision_config"]
    tower = str(cfg.get("vision_encoder", ""))
    if version.vision_layout == "timm":
        for name, dims in TIMM_TOWERS.items():
            if tower.split(".")[0] == name:
                return dims
        raise CheckpointError(f"{where}: vision_encoder {tower!r} is not a timm tower this converter knows "
                              f"({', '.join(TIMM_TOWERS)}); add a 'vision_config' with its dimensions")
    raise CheckpointError(f"{where}: missing key 'vision_config'")


def _rows(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a[lo:hi]


def _vision_table(cfg: dict, version: ModelVersion, n_layers: int, D: int
                  ) -> list[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None, tuple[int, ...] | None]]:
    """(original name, GGUF name, transform, original shape when the transform changes it) of the tower."""
    out: list[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None, tuple[int, ...] | None]] = []
    if version.vision_layout == "timm":
        side = int(cfg["vision_config"]["image_size"]) // int(cfg["vision_config"]["patch_size"])
        for hf, gg in _TIMM_GLOBAL.items():
            fn, shape = (lambda a: a[0], (1, side * side, D)) if hf == "pos_embed" else (None, None)
            out.append((f"vpm.{hf}", gg, fn, shape))
        for i in range(n_layers):
            b = f"vpm.blocks.{i}."
            for k, name in enumerate("qkv"):
                out += [(f"{b}attn.qkv.weight", f"v.blk.{i}.attn_{name}.weight", _rows(k * D, (k + 1) * D),
                         (3 * D, D)),
                        (f"{b}attn.qkv.bias", f"v.blk.{i}.attn_{name}.bias", _rows(k * D, (k + 1) * D), (3 * D,))]
            out += [(f"{b}{hf}", f"v.blk.{i}.{gg}", None, None) for hf, gg in _TIMM_LAYER.items()]
        return out
    for hf, gg in _VISION_GLOBAL.items():
        out.append((f"vpm.{hf}", gg, None, None))
    for i in range(n_layers):
        out += [(f"vpm.encoder.layers.{i}.{hf}", f"v.blk.{i}.{gg}", None, None) for hf, gg in _VISION_LAYER.items()]
    return out


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
    table += [("resampler.proj", "resampler.proj.weight", (E, E), lambda a: np.ascontiguousarray(a.T))]
    if version.resampler_query_pos:
        table += [("resampler.pos_embed", "resampler.pos_embed_q", (Q, E), None)]
    if version.mmproj_version is not None:  # llama.cpp's files carry the key cache; our encoder computes it
        table += [(None, "resampler.pos_embed_k", (POS_GRID * POS_GRID, E), None)]
    original_shape: dict[str, tuple[int, ...]] = {}
    for hf, gg, fn, shape in _vision_table(cfg, version, n_layers, D):
        table.append((hf, gg, shapes.get(gg.split(".", 3)[-1] if gg.startswith("v.blk.") else gg, (D,)), fn))
        if shape is not None:
            original_shape[hf] = shape
    # a dropped last layer (drop_vision_last_layer) stored but never run (2.5/2.6 keep all; 2.0 does not store it)
    n_stored = int(vc["num_hidden_layers"])
    src.skip([f"vpm.encoder.layers.{i}.{hf}" for i in range(n_layers, n_stored) for hf in _VISION_LAYER])

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
    if outtype == QT.F32 or len(shape) == 1 or name in ("resampler.query", "resampler.pos_embed_q"):
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
    w.add_string("clip.projector_type", version.projector_type)
    if version.mmproj_version is not None:  # a file llama.cpp runs
        w.add_bool("clip.has_minicpmv_projector", True)
        w.add_int32("clip.minicpmv_version", version.mmproj_version)
    w.add_uint32("clip.minicpmv_query_num", int(cfg["query_num"]))
    w.add_uint32("clip.minicpmv_projection_dim", int(cfg["hidden_size"]))
    w.add_uint32("clip.vision.image_size", int(cfg.get("scale_resolution", cfg.get("image_size",
                                                                                   version.scale_resolution))))
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
    if version.vision_gelu == "tanh":
        w.add_bool("clip.use_gelu", True)  # llama.cpp's meaning: its FFN's tanh GELU
    w.add_string("minicpmv_edge.vision.position_embedding", version.vision_position)
    w.add_string("minicpmv_edge.vision.gelu", version.vision_gelu)
    # 2.5's padded vision batch, unless the checkpoint's config turns batching off (then each piece alone)
    w.add_bool("minicpmv_edge.vision.padded_batch",
               version.padded_vision_batch and bool(cfg.get("batch_vision_input", True)))
    w.add_string("minicpmv_edge.version", version.name)
    w.add_uint32("minicpmv_edge.max_slice_nums", int(pre.get("max_slice_nums", cfg.get("max_slice_nums",
                                                                                        version.max_slice_nums))))
    w.add_bool("minicpmv_edge.use_image_id", bool(pre.get("use_image_id", version.use_image_id)))
    if file_type == 7:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
