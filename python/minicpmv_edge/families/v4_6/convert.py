"""MiniCPM-V 4.6's checkpoint (transformers' `MiniCPMV4_6ForConditionalGeneration`) -> llama.cpp's files: the
language model as a `qwen35` GGUF, the tower and mergers as llama.cpp's `minicpmv4_6` mmproj, plus the keys our
encoder and runtime read.

Language model, as llama.cpp's converter writes Qwen3.5 (llama.cpp `conversion/qwen.py`, facts only): the
zero-centred RMSNorm weights stored as 1 + w (all but linear attention's gated norm), A_log stored as -exp(A_log),
dt_bias as `ssm_dt.bias`, the conv kernel squeezed to [channels, kernel], and where a layer has more value heads than
key heads, the value heads reordered from grouped (by key head) to tiled order in every tensor that holds them. The
checkpoint's MTP settings (`mtp_num_hidden_layers` without any `mtp.*` tensor in the released files) declare no
extra block here: a GGUF that declares one the file lacks does not load. A checkpoint that does carry `mtp.*`
tensors has them skipped (llama.cpp runs no MTP head in this runtime's decoding).

mmproj: llama.cpp's 4.6 layout (`clip.projector_type` "minicpmv4_6", the insert layer as
`clip.vision.wa_layer_indexes`, `clip.vision.projector.scale_factor` 4 with the insert merger's tensors, so both
downsample modes run from one file), and our keys: the tower's position grid side (llama.cpp assumes 70), the
preprocessing (`torchvision`), the default downsample mode, max_slice_nums and use_image_id from
preprocessor_config.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

LM = "model.language_model."
VT = "model.vision_tower."
MODES = ("16x", "4x")


def CheckpointError(message: str) -> Exception:
    from ...convert.safetensors_io import CheckpointError as E  # converter package imports the families)

    return E(message)


def detects(cfg: dict) -> bool:
    return cfg.get("model_type") == "minicpmv4_6"


def _need(d: dict, keys: tuple[str, ...], where: str) -> None:
    for k in keys:
        if k not in d:
            raise CheckpointError(f"{where}: missing key {k!r}")


def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise CheckpointError(f"{where}: {key!r} must be a positive integer, not {v!r}")
    return v


def layer_types(tc: dict, where: str) -> list[str]:
    """Each text layer's kind, as Qwen3.5's config resolves it: `layer_types`, else every
    `full_attention_interval`-th layer full (default 4)."""
    n = _int(tc, "num_hidden_layers", where)
    kinds = tc.get("layer_types")
    if kinds is None:
        every = int(tc.get("full_attention_interval", 4))
        return ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
    if not isinstance(kinds, list) or len(kinds) != n or any(k not in ("full_attention", "linear_attention")
                                                             for k in kinds):
        raise CheckpointError(f"{where}: text_config.layer_types must list 'full_attention' or 'linear_attention' "
                              f"for each of the {n} layers")
    return kinds


def _plus_one(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) + 1.0).astype(np.float32)


def _tiled(n_k: int, per_k: int, dim: int, axis: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Value heads grouped by key head [k0: v0..v(r-1), k1: ...] -> tiled [v0 of k0, v0 of k1, ..., v1 of k0, ...]
    along `axis`, each head `dim` wide (llama.cpp broadcasts key heads over value heads that way)."""
    def f(a: np.ndarray) -> np.ndarray:
        if per_k == 1:
            return a
        a = np.moveaxis(a, axis, 0)
        rest = a.shape[1:]
        a = a.reshape(n_k, per_k, dim, *rest).swapaxes(0, 1).reshape(n_k * per_k * dim, *rest)
        return np.ascontiguousarray(np.moveaxis(a, 0, axis))
    return f


class Converter:
    """The whole 4.6 conversion (families.family.LayoutConverter)."""

    def config(self, cfg: dict, where: str) -> dict:
        for part in ("text_config", "vision_config"):
            if not isinstance(cfg.get(part), dict):
                raise CheckpointError(f"{where}: missing key {part!r}")
        tc, vc = cfg["text_config"], cfg["vision_config"]
        _need(tc, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads", "vocab_size", "head_dim", "linear_conv_kernel_dim", "linear_key_head_dim",
                   "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads"), f"{where} text_config")
        _need(vc, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                   "image_size"), f"{where} vision_config")
        if tc["linear_key_head_dim"] != tc["linear_value_head_dim"]:
            raise CheckpointError(f"{where}: linear_key_head_dim {tc['linear_key_head_dim']} differs from "
                                  f"linear_value_head_dim {tc['linear_value_head_dim']} (llama.cpp's qwen35 needs "
                                  "them equal)")
        if tc["linear_num_value_heads"] % tc["linear_num_key_heads"]:
            raise CheckpointError(f"{where}: linear_num_value_heads must be a multiple of linear_num_key_heads")
        insert = int(cfg.get("insert_layer_id", vc.get("insert_layer_id", 6)))
        if not 0 <= insert < int(vc["num_hidden_layers"]) - 1:
            raise CheckpointError(f"{where}: insert_layer_id {insert} is not a vision layer before the last")
        if tuple(cfg.get("merge_kernel_size", (2, 2))) != (2, 2) or int(cfg.get("merger_times", 1)) != 1 or \
                tuple(vc.get("window_kernel_size", (2, 2))) != (2, 2):
            raise CheckpointError(f"{where}: only 2x2 merges, merged once, are supported (merge_kernel_size, "
                                  "merger_times, window_kernel_size)")
        layer_types(tc, f"{where} text_config")
        # the class default is False, the released file says True: a checkpoint without lm_head must tie
        tied = bool(cfg.get("tie_word_embeddings", tc.get("tie_word_embeddings", False)))
        return {**cfg, "vocab_size": int(tc["vocab_size"]), "insert_layer_id": insert, "tie_word_embeddings": tied}

    # -- language model ------------------------------------------------------------------------------------------

    def plan_llm(self, src: Any, cfg: dict, outtype: QT) -> list:
        from ...convert.gguf_out import PlannedTensor, matrix_type

        tc = cfg["text_config"]
        E, F, V = int(tc["hidden_size"]), int(tc["intermediate_size"]), int(tc["vocab_size"])
        H, KV, hd = int(tc["num_attention_heads"]), int(tc["num_key_value_heads"]), int(tc["head_dim"])
        nk, nv, dk = int(tc["linear_num_key_heads"]), int(tc["linear_num_value_heads"]), int(tc["linear_key_head_dim"])
        kernel, r = int(tc["linear_conv_kernel_dim"]), nv // nk
        conv = 2 * nk * dk + nv * dk
        table: list[tuple[str, str, tuple[int, ...], Any, tuple[int, ...] | None]] = [
            (f"{LM}embed_tokens.weight", "token_embd.weight", (V, E), None, None),
            (f"{LM}norm.weight", "output_norm.weight", (E,), _plus_one, None),
        ]
        if not cfg["tie_word_embeddings"]:
            table.append(("lm_head.weight", "output.weight", (V, E), None, None))
        v_rows = _tiled(nk, r, dk)
        for i, kind in enumerate(layer_types(tc, "config.json text_config")):
            p, b = f"{LM}layers.{i}.", f"blk.{i}."
            table += [(f"{p}input_layernorm.weight", f"{b}attn_norm.weight", (E,), _plus_one, None),
                      (f"{p}post_attention_layernorm.weight", f"{b}post_attention_norm.weight", (E,), _plus_one, None),
                      (f"{p}mlp.gate_proj.weight", f"{b}ffn_gate.weight", (F, E), None, None),
                      (f"{p}mlp.up_proj.weight", f"{b}ffn_up.weight", (F, E), None, None),
                      (f"{p}mlp.down_proj.weight", f"{b}ffn_down.weight", (E, F), None, None)]
            if kind == "full_attention":
                a = f"{p}self_attn."
                table += [(f"{a}q_proj.weight", f"{b}attn_q.weight", (2 * H * hd, E), None, None),
                          (f"{a}k_proj.weight", f"{b}attn_k.weight", (KV * hd, E), None, None),
                          (f"{a}v_proj.weight", f"{b}attn_v.weight", (KV * hd, E), None, None),
                          (f"{a}o_proj.weight", f"{b}attn_output.weight", (E, H * hd), None, None),
                          (f"{a}q_norm.weight", f"{b}attn_q_norm.weight", (hd,), _plus_one, None),
                          (f"{a}k_norm.weight", f"{b}attn_k_norm.weight", (hd,), _plus_one, None)]
                continue
            a = f"{p}linear_attn."
            qk = 2 * nk * dk

            def qkv(w: np.ndarray, qk: int = qk) -> np.ndarray:
                return np.concatenate([w[:qk], v_rows(w[qk:])])

            def conv1d(w: np.ndarray, qk: int = qk) -> np.ndarray:
                w = w.reshape(w.shape[0], w.shape[-1])
                return np.concatenate([w[:qk], v_rows(w[qk:])]).astype(np.float32)

            heads = _tiled(nk, r, 1)
            table += [
                (f"{a}in_proj_qkv.weight", f"{b}attn_qkv.weight", (conv, E), qkv, None),
                (f"{a}in_proj_z.weight", f"{b}attn_gate.weight", (nv * dk, E), v_rows, None),
                (f"{a}in_proj_b.weight", f"{b}ssm_beta.weight", (nv, E), heads, None),
                (f"{a}in_proj_a.weight", f"{b}ssm_alpha.weight", (nv, E), heads, None),
                (f"{a}conv1d.weight", f"{b}ssm_conv1d.weight", (conv, kernel), conv1d, (conv, 1, kernel)),
                (f"{a}dt_bias", f"{b}ssm_dt.bias", (nv,), lambda x, h=heads: h(x).astype(np.float32), None),
                (f"{a}A_log", f"{b}ssm_a", (nv,),
                 lambda x, h=heads: h(-np.exp(x.astype(np.float32))).astype(np.float32), None),
                (f"{a}norm.weight", f"{b}ssm_norm.weight", (dk,), None, None),
                (f"{a}out_proj.weight", f"{b}ssm_out.weight", (E, nv * dk), _tiled(nk, r, dk, axis=1), None),
            ]
        src.skip([k for k in src.ckpt.keys() if k.startswith(("mtp.", "model.mtp."))])
        out = []
        for hf, gg, shape, fn, stored in table:
            src.expect(hf, stored or shape)
            small = len(shape) == 1 or gg.endswith(("ssm_conv1d.weight",))
            qtype = QT.F32 if small or outtype == QT.F32 else matrix_type(shape, outtype)
            out.append(PlannedTensor(gg, shape, qtype, src.reader(hf, fn)))
        return out

    def write_llm_kv(self, w: gguf.GGUFWriter, cfg: dict, file_type: int, name: str, folder: Path) -> None:
        tc = cfg["text_config"]
        rope = tc.get("rope_parameters") or {}
        hd = int(tc["head_dim"])
        partial = float(rope.get("partial_rotary_factor", tc.get("partial_rotary_factor", 0.25)))
        w.add_name(name)
        w.add_file_type(file_type)
        w.add_context_length(int(tc.get("max_position_embeddings", 262144)))
        w.add_embedding_length(int(tc["hidden_size"]))
        w.add_block_count(int(tc["num_hidden_layers"]))
        w.add_feed_forward_length(int(tc["intermediate_size"]))
        w.add_head_count(int(tc["num_attention_heads"]))
        w.add_head_count_kv(int(tc["num_key_value_heads"]))
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_rope_freq_base(float(rope.get("rope_theta", tc.get("rope_theta", 10000000.0))))
        w.add_layer_norm_rms_eps(float(tc.get("rms_norm_eps", 1e-6)))
        w.add_rope_dimension_count(int(hd * partial))
        # Qwen3.5's interleaved M-RoPE sections (the code default when the config has none); 4.6 feeds every
        # section the same 1-D position, so this only has to be what llama.cpp's loader requires
        w.add_rope_dimension_sections([*rope.get("mrope_section", [11, 11, 10]), 0][:4])
        w.add_ssm_conv_kernel(int(tc["linear_conv_kernel_dim"]))
        w.add_ssm_state_size(int(tc["linear_key_head_dim"]))
        w.add_ssm_group_count(int(tc["linear_num_key_heads"]))
        w.add_ssm_time_step_rank(int(tc["linear_num_value_heads"]))
        w.add_ssm_inner_size(int(tc["linear_value_head_dim"]) * int(tc["linear_num_value_heads"]))
        w.add_full_attention_interval(int(tc.get("full_attention_interval", 4)))
        w.add_array(f"{w.arch}.attention.recurrent_layers",
                    [k == "linear_attention" for k in layer_types(tc, "config.json text_config")])
        w.add_vocab_size(int(tc["vocab_size"]))
        gen_path = folder / "generation_config.json"
        gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.exists() else {}
        write_generation_kv(w, gen)
        if file_type == 7:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # -- mmproj ----------------------------------------------------------------------------------------------------

    def plan_mmproj(self, src: Any, cfg: dict, pre: dict, outtype: QT) -> list:
        from ...convert.gguf_out import PlannedTensor, matrix_type

        vc = cfg["vision_config"]
        D, F, P = int(vc["hidden_size"]), int(vc["intermediate_size"]), int(vc["patch_size"])
        n_layer, side = int(vc["num_hidden_layers"]), int(vc["image_size"]) // int(vc["patch_size"])
        E = int(cfg["text_config"]["hidden_size"])
        table: list[tuple[str, str, tuple[int, ...]]] = [
            (f"{VT}embeddings.patch_embedding.weight", "v.patch_embd.weight", (D, 3, P, P)),
            (f"{VT}embeddings.patch_embedding.bias", "v.patch_embd.bias", (D,)),
            (f"{VT}embeddings.position_embedding.weight", "v.position_embd.weight", (side * side, D)),
        ]
        for i in range(n_layer):
            p, b = f"{VT}encoder.layers.{i}.", f"v.blk.{i}."
            table += _attention(p, b, D)
            table += [(f"{p}layer_norm2.weight", f"{b}ln2.weight", (D,)),
                      (f"{p}layer_norm2.bias", f"{b}ln2.bias", (D,)),
                      (f"{p}mlp.fc1.weight", f"{b}ffn_up.weight", (F, D)),
                      (f"{p}mlp.fc1.bias", f"{b}ffn_up.bias", (F,)),
                      (f"{p}mlp.fc2.weight", f"{b}ffn_down.weight", (D, F)),
                      (f"{p}mlp.fc2.bias", f"{b}ffn_down.bias", (D,))]
        table += [(f"{VT}post_layernorm.weight", "v.post_ln.weight", (D,)),
                  (f"{VT}post_layernorm.bias", "v.post_ln.bias", (D,))]
        m, g = f"{VT}vit_merger.", "v.vit_merger."
        table += _attention(m, g, D)
        table += [(f"{m}pre_norm.weight", f"{g}ds_ln.weight", (4 * D,)),
                  (f"{m}pre_norm.bias", f"{g}ds_ln.bias", (4 * D,)),
                  (f"{m}linear_1.weight", f"{g}ds_ffn_up.weight", (4 * F, 4 * D)),
                  (f"{m}linear_1.bias", f"{g}ds_ffn_up.bias", (4 * F,)),
                  (f"{m}linear_2.weight", f"{g}ds_ffn_down.weight", (D, 4 * F)),
                  (f"{m}linear_2.bias", f"{g}ds_ffn_down.bias", (D,))]
        mm = "model.merger.mlp.0."
        table += [(f"{mm}pre_norm.weight", "mm.input_norm.weight", (4 * D,)),
                  (f"{mm}pre_norm.bias", "mm.input_norm.bias", (4 * D,)),
                  (f"{mm}linear_1.weight", "mm.up.weight", (4 * D, 4 * D)),
                  (f"{mm}linear_1.bias", "mm.up.bias", (4 * D,)),
                  (f"{mm}linear_2.weight", "mm.down.weight", (E, 4 * D)), (f"{mm}linear_2.bias", "mm.down.bias", (E,))]
        out = []
        for hf, gg, shape in table:
            src.expect(hf, shape)
            if outtype == QT.F32 or len(shape) == 1:
                qtype = QT.F32
            elif gg in ("v.patch_embd.weight", "v.position_embd.weight"):
                qtype = QT.F16  # the conv kernel feeds an f16 im2col in ggml; the table is looked up, not multiplied
            else:
                qtype = matrix_type(shape, outtype)
            out.append(PlannedTensor(gg, shape, qtype, src.reader(hf)))
        return out

    def write_mmproj_kv(self, w: gguf.GGUFWriter, cfg: dict, pre: dict, file_type: int, name: str) -> None:
        vc = cfg["vision_config"]
        mode = pre.get("downsample_mode", cfg.get("downsample_mode", "16x"))
        if mode not in MODES:
            raise CheckpointError(f"downsample_mode {mode!r} is not one of {', '.join(MODES)}")
        w.add_name(name)
        w.add_description("image encoder for MiniCPM-V 4.6")
        w.add_file_type(file_type)
        w.add_bool("clip.has_text_encoder", False)
        w.add_bool("clip.has_vision_encoder", True)
        w.add_string("clip.projector_type", "minicpmv4_6")
        # the slicing resolution, not the tower's position-grid size (llama.cpp's converter does the same)
        w.add_uint32("clip.vision.image_size", int(pre.get("scale_resolution", 448)))
        w.add_uint32("clip.vision.patch_size", int(vc["patch_size"]))
        w.add_uint32("clip.vision.embedding_length", int(vc["hidden_size"]))
        w.add_uint32("clip.vision.feed_forward_length", int(vc["intermediate_size"]))
        w.add_uint32("clip.vision.projection_dim", int(cfg["text_config"]["hidden_size"]))
        w.add_uint32("clip.vision.attention.head_count", int(vc["num_attention_heads"]))
        w.add_float32("clip.vision.attention.layer_norm_epsilon", float(vc.get("layer_norm_eps", 1e-6)))
        w.add_uint32("clip.vision.block_count", int(vc["num_hidden_layers"]))
        for key, field in (("clip.vision.image_mean", "image_mean"), ("clip.vision.image_std", "image_std")):
            vals = [float(x) for x in pre.get(field, [0.5, 0.5, 0.5])]
            w.add_key_value(key, vals, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
        w.add_bool("clip.use_gelu", True)
        w.add_uint32("clip.vision.projector.scale_factor", 4)  # the insert merger is in the file: 16x and 4x run
        w.add_array("clip.vision.wa_layer_indexes", [int(cfg["insert_layer_id"])])
        w.add_uint32("minicpmv_edge.vision.position_grid", int(vc["image_size"]) // int(vc["patch_size"]))
        w.add_string("minicpmv_edge.vision.preprocess", "torchvision")
        w.add_string("minicpmv_edge.vision.downsample_mode", mode)
        w.add_uint32("minicpmv_edge.max_slice_nums", int(pre.get("max_slice_nums", 9)))
        w.add_bool("minicpmv_edge.use_image_id", bool(pre.get("use_image_id", True)))
        if file_type == 7:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _attention(p: str, b: str, D: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """A pre-LN attention block's tensors: layer_norm1 and q/k/v/out with biases."""
    out = [(f"{p}layer_norm1.weight", f"{b}ln1.weight", (D,)), (f"{p}layer_norm1.bias", f"{b}ln1.bias", (D,))]
    for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("out_proj", "attn_out")):
        out += [(f"{p}self_attn.{hf}.weight", f"{b}{gg}.weight", (D, D)),
                (f"{p}self_attn.{hf}.bias", f"{b}{gg}.bias", (D,))]
    return out


GENERATION_KEYS = {"do_sample": "minicpmv_edge.generation.do_sample",
                   "temperature": "minicpmv_edge.generation.temperature",
                   "top_p": "minicpmv_edge.generation.top_p", "top_k": "minicpmv_edge.generation.top_k",
                   "repetition_penalty": "minicpmv_edge.generation.repetition_penalty"}


def write_generation_kv(w: gguf.GGUFWriter, gen: dict) -> None:
    """generation_config.json's sampling settings, which chat() uses as its defaults."""
    for field, key in GENERATION_KEYS.items():
        v = gen.get(field)
        if isinstance(v, bool):
            w.add_bool(key, v)
        elif isinstance(v, (int, float)):
            w.add_float32(key, float(v))
