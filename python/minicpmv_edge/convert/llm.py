"""The language model (`llm.*`, or the names a layout converter gives) as a llama.cpp GGUF of the family's
architecture (`Family.llm_arch`).

One mapping table from original names (after stripping `llm.`) to llama.cpp names; the only transform is the
q/k row permutation that llama.cpp's `llama` and `minicpm` architectures need for their interleaved RoPE
(llama.cpp's `convert_hf_to_gguf.py`, `Family.permute_qk`). Keys beyond the architecture's own (MiniCPM's
scalings) are the family converter's `llm_kv`.
"""

from __future__ import annotations

from collections.abc import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from ..families import Family
from .gguf_out import PlannedTensor, matrix_type
from .mapping import Source

# original name (without "llm.") -> GGUF name; {i} is the layer index
_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",  # Qwen3's per-head norms (Family.llm_qk_norm)
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

_QK_NORM = ("attn_q_norm.weight", "attn_k_norm.weight")


def _permute_rows(n_head: int) -> Callable[[np.ndarray], np.ndarray]:
    """HF's rotate-half RoPE layout -> llama.cpp's interleaved pairs, per head (for weights and biases)."""
    def f(w: np.ndarray) -> np.ndarray:
        rows = w.shape[0]
        return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return f


def head_dim(cfg: dict) -> int:
    """The attention head size: config.json's `head_dim` where it has one (Qwen3: need not be hidden / heads)."""
    return int(cfg.get("head_dim") or int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]))


def plan_llm(src: Source, cfg: dict, family: Family, outtype: QT, prefix: str = "llm.") -> list[PlannedTensor]:
    """`prefix`: where the checkpoint keeps the language model's names (MiniCPM-V: `llm.`; OmniLMM: none)."""
    n_layer = int(cfg["num_hidden_layers"])
    n_head, n_kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    E, F, V = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["vocab_size"])
    hd = head_dim(cfg)
    with_bias = family.llm_qkv_bias
    shapes = {
        "token_embd.weight": (V, E), "output_norm.weight": (E,), "output.weight": (V, E),
        "attn_norm.weight": (E,), "ffn_norm.weight": (E,),
        "attn_q.weight": (n_head * hd, E), "attn_q.bias": (n_head * hd,), "attn_k.weight": (n_kv * hd, E),
        "attn_k.bias": (n_kv * hd,), "attn_v.weight": (n_kv * hd, E), "attn_v.bias": (n_kv * hd,),
        "attn_output.weight": (E, n_head * hd), "attn_q_norm.weight": (hd,), "attn_k_norm.weight": (hd,),
        "ffn_gate.weight": (F, E), "ffn_up.weight": (F, E), "ffn_down.weight": (E, F),
    }
    table: list[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None]] = []
    for hf, gg in _GLOBAL.items():
        if hf == "lm_head.weight" and cfg.get("tie_word_embeddings", False):
            continue
        table.append((f"{prefix}{hf}", gg, None))
    for i in range(n_layer):
        for hf, gg in _LAYER.items():
            if (gg.endswith(".bias") and not with_bias) or (gg in _QK_NORM and not family.llm_qk_norm):
                continue
            fn = None
            if family.permute_qk and gg.startswith("attn_q."):
                fn = _permute_rows(n_head)
            elif family.permute_qk and gg.startswith("attn_k."):
                fn = _permute_rows(n_kv)
            table.append((f"{prefix}model.layers.{i}.{hf}", f"blk.{i}.{gg}", fn))

    out = []
    for hf, gg, fn in table:
        shape = shapes[gg.split(".", 2)[-1] if gg.startswith("blk.") else gg]
        src.expect(hf, shape)
        qtype = QT.F32 if len(shape) == 1 or outtype == QT.F32 else matrix_type(shape, outtype)
        out.append(PlannedTensor(gg, shape, qtype, src.reader(hf, fn)))
    computed = getattr(family.converter, "llm_tensors", None)  # from config.json, e.g. 4.0's rope_freqs
    for gg, a in computed(cfg) if computed is not None else []:
        out.append(PlannedTensor(gg, a.shape, QT.F32, lambda a=a: a))
    return out


def write_llm_kv(w: gguf.GGUFWriter, cfg: dict, family: Family, file_type: int, name: str) -> None:
    n_head = int(cfg["num_attention_heads"])
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_block_count(int(cfg["num_hidden_layers"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(int(cfg.get("num_key_value_heads", n_head)))
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    hd = head_dim(cfg)
    if hd != int(cfg["hidden_size"]) // n_head:  # an explicit head size (config.json's head_dim)
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(int(cfg["vocab_size"]))
    if family.converter is not None:
        family.converter.llm_kv(w, cfg)
    if file_type == 7:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
