"""MiniCPM-V 4.0's part of the converter: the 2.6 tower and resampler (HF SigLIP names), and its language model
(transformers' LlamaForCausalLM with LongRoPE) as llama.cpp's `llama` architecture with the LongRoPE factors in the
`rope_freqs` tensor.

What llama.cpp does with that tensor (the vendored llama.cpp of llama-cpp-python 0.3.36): the `llama` loader
(`llama_model_llama::load_arch_tensors`, src/models/llama.cpp) reads an optional `rope_freqs.weight` of n_rot / 2
values unless the file says `rope.scaling.type` longrope; its graph passes `llama_model::get_rope_factors` (which
returns that tensor) to `ggml_rope_ext` for Q and K, and ggml's RoPE divides each pair's angle by its factor
(`ggml_rope_cache_init`: theta / freq_factors[i0 / 2]). transformers' longrope (`_compute_longrope_parameters`)
computes inv_freq_i = 1 / (f_i * base^(2i / head_dim)) with f = short_factor while the sequence fits the original
length (long_factor beyond it), and scales cos/sin by an attention factor that is 1 when `factor` <= 1 and the
config has no top-level `original_max_position_embeddings`. So `rope_freqs` = short_factor reproduces it exactly
when the two lists are equal (the released config) and the attention factor is 1; anything else is refused here
rather than converted into a file that runs a different RoPE.
"""

from __future__ import annotations

import numpy as np

from ..common.siglip import SiglipConverter


def _fail(msg: str) -> Exception:
    from ...convert.safetensors_io import CheckpointError

    return CheckpointError(msg)


def rope_factors(cfg: dict) -> np.ndarray:
    """The per-pair frequency divisors of config.json's `rope_scaling` (longrope), checked to be what one
    `rope_freqs` tensor can carry: short == long, attention factor 1, head_dim / 2 values."""
    rs = cfg.get("rope_scaling")
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]))
    if not isinstance(rs, dict) or rs.get("rope_type", rs.get("type")) != "longrope":
        raise _fail(f"config.json: rope_scaling is {rs!r}; MiniCPM-V 4.0's language model uses longrope")
    short, long = rs.get("short_factor"), rs.get("long_factor")
    if not isinstance(short, list) or len(short) != head_dim // 2:
        raise _fail(f"config.json: rope_scaling.short_factor must be {head_dim // 2} numbers (head_dim {head_dim} / 2)")
    if long is not None and [float(x) for x in long] != [float(x) for x in short]:
        raise _fail("config.json: rope_scaling.long_factor differs from short_factor: llama.cpp's `rope_freqs` "
                    "holds one list, so prompts longer than the original context would run other frequencies "
                    "than transformers (not supported)")
    factor = float(rs.get("factor", 1.0) or 1.0)
    attention = rs.get("attention_factor")
    if "original_max_position_embeddings" in cfg or factor > 1.0 or (attention is not None and float(attention) != 1):
        raise _fail("config.json: this longrope setting scales cos/sin by an attention factor other than 1 "
                    f"(factor {factor}, attention_factor {attention}, top-level original_max_position_embeddings "
                    f"{cfg.get('original_max_position_embeddings')}); only factor <= 1 without one is supported")
    a = np.asarray(short, dtype=np.float32)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise _fail("config.json: rope_scaling.short_factor must be positive numbers")
    return a


class LongRopeLlamaConverter(SiglipConverter):
    """The 2.6 tower's tables; the language model's LongRoPE factors as `rope_freqs.weight`. A config with
    `scale_emb` (MiniCPM's embedding scale, which 4.0's remote code would apply to prompt text rows only) is refused:
    a llama-architecture file cannot reproduce that."""

    def llm_tensors(self, cfg: dict) -> list[tuple[str, np.ndarray]]:
        """Language-model tensors computed from config.json: (GGUF name, float32 array); planned (and so checked)
        before anything is written."""
        if float(cfg.get("scale_emb", 1) or 1) != 1.0:
            raise _fail(f"config.json: scale_emb {cfg['scale_emb']}: MiniCPM-V 4.0's remote code would scale the "
                        "prompt's text rows but not generated tokens; a llama-architecture GGUF cannot do that "
                        "(not supported)")
        return [("rope_freqs.weight", rope_factors(cfg))]
