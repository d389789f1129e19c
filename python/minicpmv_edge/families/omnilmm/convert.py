"""OmniLMM-12B's checkpoint -> llama.cpp's files. Its layout is its own: the language model is Mistral's under
`model.` + `lm_head` (llama.cpp's `llama` architecture, q/k rows permuted for its RoPE), the tower is timm's Eva
under `model.vision_tower.` and the resampler is under `model.resampler.`; the weights are one torch pickle
(`pytorch_model.bin`, read by convert/torch_pickle.py without running code) or safetensors.

The mmproj is ours (`clip.projector_type` "omnilmm": llama.cpp has no EVA tower and refuses it). Since every image is
one `image_size` square, both position tables are constants, computed here once in float64 from the stored values
and kept in f32: the tower's 16 x 16 grid resized to the square's token grid with torch's antialiased bicubic (timm's
`resample_abs_pos_embed`), its class row apart (`v.class_position_embd`); the resampler's key table, its stored query
table resized with torch's plain bicubic (the original `get_abs_pos`). timm's fused qkv is split, and k, which has no
bias in EVA, gets a zero one. The tower's graph variant (`minicpmv_edge.vision.tower` "eva": class token, post-norm
blocks) and the fp16 rounding of the pixels (`minicpmv_edge.vision.pixels_f16`) are keys.

Facts: the original `omnilmm/model/omnilmm.py`, `resampler.py`, `utils.py` (OpenBMB/MiniCPM-V@2553592) and timm
0.9.10's `eva.py` (docs/sources.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from ..v1_0.convert import resize_table

VT, RS = "model.vision_tower.", "model.resampler."
# timm's eva02_enormous_patch14_clip_224, which the original builds by name (its config has no vision_config)
EVA02_E = {"hidden_size": 1792, "num_attention_heads": 16, "intermediate_size": 15360, "num_hidden_layers": 64,
           "patch_size": 14, "image_size": 224}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, as the original's build_transform
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "rms_norm_eps",
             "rope_theta", "max_position_embeddings", "vocab_size", "image_size", "num_query")


def CheckpointError(message: str) -> Exception:
    from ...convert.safetensors_io import CheckpointError as E  # (the converter package imports the families)

    return E(message)


def detects(cfg: dict) -> bool:
    return cfg.get("model_type") == "omnilmm"


def _aa_cubic(d: np.ndarray) -> np.ndarray:
    """torch's antialiased bicubic filter (a = -0.5)."""
    a, d = -0.5, np.abs(d)
    return np.where(d < 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                    np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))


def aa_bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] of F.interpolate(mode="bicubic", antialias=True, align_corners=False): taps within
    2 * max(scale, 1) of the centre scale * (i + 0.5), weighted on a stretched filter and normalised per output."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        taps = _aa_cubic((np.arange(lo, hi) - centre + 0.5) / stretch)
        w[i, lo:hi] = taps / taps.sum()
    return w


def tower_positions(table: np.ndarray, side: int) -> np.ndarray:
    """timm's [1, 1 + g*g, D] table's grid rows resized to side x side -> [side * side, D] float32 (the class row
    is stored apart)."""
    grid = table[0, 1:].astype(np.float64)
    g = math.isqrt(grid.shape[0])
    if g * g != grid.shape[0]:
        raise CheckpointError(f"{VT}pos_embed: {grid.shape[0]} grid rows are not a square")
    if g == side:
        return grid.astype(np.float32)
    w = aa_bicubic_weights(g, side)
    out = np.einsum("is,jt,stc->ijc", w, w, grid.reshape(g, g, -1), optimize=True)
    return out.reshape(side * side, -1).astype(np.float32)


def _rows(lo: int, hi: int) -> Any:
    return lambda a: a[lo:hi]


class Converter:
    def config(self, cfg: dict, where: str) -> dict:
        """config.json checked, with the tower's dimensions (its `vision_config`, a convention of our test
        checkpoints, else EVA02-E's) and the keys the rest of the converter reads."""
        for k in _REQUIRED:
            if k not in cfg:
                raise CheckpointError(f"{where}: missing key {k!r}")
        vc = cfg.get("vision_config")
        vc = {**EVA02_E, **(vc if isinstance(vc, dict) else {})}
        E, Q, size = int(cfg["hidden_size"]), int(cfg["num_query"]), int(cfg["image_size"])
        if E % 128:
            raise CheckpointError(f"{where}: hidden_size {E} is not a multiple of 128 (the resampler's heads)")
        if math.isqrt(Q) ** 2 != Q:
            raise CheckpointError(f"{where}: num_query {Q} is not a square number (the resampler's query grid)")
        if size % int(vc["patch_size"]):
            raise CheckpointError(f"{where}: image_size {size} is not a multiple of the patch size {vc['patch_size']}")
        if int(vc["hidden_size"]) % int(vc["num_attention_heads"]):
            raise CheckpointError(f"{where}: the tower's width is not a multiple of its heads")
        return {**cfg, "vision_config": vc, "query_num": Q}

    # -- language model: Mistral's names under model. and lm_head --------------------------------------------------

    def plan_llm(self, src: Any, cfg: dict, outtype: QT) -> list:
        from ...convert.llm import plan_llm
        from . import FAMILY

        return plan_llm(src, cfg, FAMILY, outtype, prefix="")

    def write_llm_kv(self, w: gguf.GGUFWriter, cfg: dict, file_type: int, name: str, folder: Path) -> None:
        """llama.cpp's llama keys; the context is capped at Mistral's sliding window (llama.cpp's llama graph has
        none), where the original's attention is still full."""
        from ...convert.llm import write_llm_kv
        from . import FAMILY

        window = cfg.get("sliding_window")
        ctx = int(cfg["max_position_embeddings"])
        if isinstance(window, int) and not isinstance(window, bool) and 0 < window < ctx:
            ctx = window
        write_llm_kv(w, {**cfg, "max_position_embeddings": ctx}, FAMILY, file_type, name)

    # -- mmproj ----------------------------------------------------------------------------------------------------

    def plan_mmproj(self, src: Any, cfg: dict, pre: dict, outtype: QT) -> list:
        from ...convert.gguf_out import PlannedTensor, matrix_type

        vc = cfg["vision_config"]
        D, F, P = int(vc["hidden_size"]), int(vc["intermediate_size"]), int(vc["patch_size"])
        g = int(vc["image_size"]) // P  # timm's position grid
        side = int(cfg["image_size"]) // P  # the square's token grid
        n_run = int(vc["num_hidden_layers"]) - 1  # the last block is replaced by Identity
        E, Q = int(cfg["hidden_size"]), int(cfg["query_num"])
        table: list[tuple[str | None, str, tuple[int, ...], tuple[int, ...] | None, Any]] = [
            (f"{VT}patch_embed.proj.weight", "v.patch_embd.weight", (D, 3, P, P), None, None),
            (f"{VT}patch_embed.proj.bias", "v.patch_embd.bias", (D,), None, None),
            (f"{VT}cls_token", "v.class_embd", (D,), (1, 1, D), lambda a: a.reshape(D)),
            (f"{VT}pos_embed", "v.class_position_embd", (D,), (1, 1 + g * g, D), lambda a: a[0, 0]),
            (f"{VT}pos_embed", "v.position_embd.weight", (side * side, D), (1, 1 + g * g, D),
             lambda a: tower_positions(a, side)),
        ]
        for i in range(n_run):
            p, b = f"{VT}blocks.{i}.", f"v.blk.{i}."
            table += [(f"{p}attn.qkv.weight", f"{b}attn_{n}.weight", (D, D), (3 * D, D), _rows(k * D, (k + 1) * D))
                      for k, n in enumerate("qkv")]
            table += [(f"{p}attn.q_bias", f"{b}attn_q.bias", (D,), None, None),
                      (None, f"{b}attn_k.bias", (D,), None, lambda: np.zeros(D, np.float32)),
                      (f"{p}attn.v_bias", f"{b}attn_v.bias", (D,), None, None),
                      (f"{p}attn.proj.weight", f"{b}attn_out.weight", (D, D), None, None),
                      (f"{p}attn.proj.bias", f"{b}attn_out.bias", (D,), None, None),
                      (f"{p}norm1.weight", f"{b}ln1.weight", (D,), None, None),
                      (f"{p}norm1.bias", f"{b}ln1.bias", (D,), None, None),
                      (f"{p}norm2.weight", f"{b}ln2.weight", (D,), None, None),
                      (f"{p}norm2.bias", f"{b}ln2.bias", (D,), None, None),
                      (f"{p}mlp.fc1.weight", f"{b}ffn_up.weight", (F, D), None, None),
                      (f"{p}mlp.fc1.bias", f"{b}ffn_up.bias", (F,), None, None),
                      (f"{p}mlp.fc2.weight", f"{b}ffn_down.weight", (D, F), None, None),
                      (f"{p}mlp.fc2.bias", f"{b}ffn_down.bias", (D,), None, None)]
        table += [(f"{VT}norm.weight", "v.post_ln.weight", (D,), None, None),
                  (f"{VT}norm.bias", "v.post_ln.bias", (D,), None, None),
                  (f"{RS}query", "resampler.query", (Q, E), None, None),
                  (f"{RS}pos_embed", "resampler.pos_embed_q", (Q, E), None, None),
                  (f"{RS}pos_embed", "resampler.pos_embed_k", (side * side, E), (Q, E),
                   lambda a: resize_table(a, side)),
                  (f"{RS}kv_proj.weight", "resampler.kv.weight", (E, D), None, None)]
        for k, n in enumerate("qkv"):
            table += [(f"{RS}attn.in_proj_weight", f"resampler.attn.{n}.weight", (E, E), (3 * E, E),
                       _rows(k * E, (k + 1) * E)),
                      (f"{RS}attn.in_proj_bias", f"resampler.attn.{n}.bias", (E,), (3 * E,), _rows(k * E, (k + 1) * E))]
        table += [(f"{RS}attn.out_proj.weight", "resampler.attn.out.weight", (E, E), None, None),
                  (f"{RS}attn.out_proj.bias", "resampler.attn.out.bias", (E,), None, None)]
        for n in ("ln_q", "ln_kv", "ln_post"):
            table += [(f"{RS}{n}.weight", f"resampler.{n}.weight", (E,), None, None),
                      (f"{RS}{n}.bias", f"resampler.{n}.bias", (E,), None, None)]
        table += [(f"{RS}proj", "resampler.proj.weight", (E, E), None, lambda a: np.ascontiguousarray(a.T))]
        src.skip([n for n in src.ckpt.keys() if n.startswith(f"{VT}blocks.{n_run}.")])  # Identity in the original

        computed = ("v.class_embd", "v.class_position_embd", "v.position_embd.weight", "resampler.query",
                    "resampler.pos_embed_q", "resampler.pos_embed_k")
        out = []
        for hf, gg, shape, hf_shape, fn in table:
            if outtype == QT.F32 or len(shape) == 1 or gg in computed:
                qtype = QT.F32  # vectors and the tables (constants computed in float64) stay exact
            elif gg == "v.patch_embd.weight":
                qtype = QT.F16  # the conv kernel feeds an f16 im2col in ggml
            else:
                qtype = matrix_type(shape, outtype)
            if hf is None:
                out.append(PlannedTensor(gg, shape, qtype, fn))
                continue
            src.expect(hf, hf_shape or shape)
            out.append(PlannedTensor(gg, shape, qtype, src.reader(hf, fn)))
        return out

    def write_mmproj_kv(self, w: gguf.GGUFWriter, cfg: dict, pre: dict, file_type: int, name: str) -> None:
        vc = cfg["vision_config"]
        w.add_name(name)
        w.add_description("image encoder for OmniLMM-12B")
        w.add_file_type(file_type)
        w.add_bool("clip.has_text_encoder", False)
        w.add_bool("clip.has_vision_encoder", True)
        w.add_string("clip.projector_type", "omnilmm")
        w.add_uint32("clip.minicpmv_query_num", int(cfg["query_num"]))
        w.add_uint32("clip.minicpmv_projection_dim", int(cfg["hidden_size"]))
        w.add_uint32("clip.vision.image_size", int(cfg["image_size"]))
        w.add_uint32("clip.vision.patch_size", int(vc["patch_size"]))
        w.add_uint32("clip.vision.embedding_length", int(vc["hidden_size"]))
        w.add_uint32("clip.vision.feed_forward_length", int(vc["intermediate_size"]))
        w.add_uint32("clip.vision.projection_dim", 0)
        w.add_uint32("clip.vision.attention.head_count", int(vc["num_attention_heads"]))
        w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)  # timm's Eva and the resampler
        w.add_uint32("clip.vision.block_count", int(vc["num_hidden_layers"]) - 1)
        for key, vals in (("clip.vision.image_mean", CLIP_MEAN), ("clip.vision.image_std", CLIP_STD)):
            w.add_key_value(key, list(vals), gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
        w.add_string("minicpmv_edge.vision.tower", "eva")
        w.add_bool("minicpmv_edge.vision.pixels_f16", True)
        w.add_string("minicpmv_edge.vision.position_embedding", "resampled_grid")
        w.add_string("minicpmv_edge.vision.gelu", "erf")
        w.add_string("minicpmv_edge.vision.slicing", "square")
        w.add_string("minicpmv_edge.resampler.key_positions", "stored")
        w.add_bool("minicpmv_edge.vision.padded_batch", False)
        w.add_uint32("minicpmv_edge.max_slice_nums", 1)
        w.add_bool("minicpmv_edge.use_image_id", False)
        if file_type == 7:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
