"""MiniCPM-V 4.0's test checkpoints: 2.6's files (config.json with `version` 4.0, preprocessor_config.json,
generation_config.json, tokenizer_config.json) with MiniCPM4's language model as transformers' LlamaForCausalLM
config (an explicit `head_dim`, grouped queries, no biases, `rope_scaling` longrope with factor 1.0 and equal
short and long factors), and a SentencePiece `tokenizer.model` (MiniCPM's vocabulary kind, read by
LlamaTokenizer(Fast)) whose ChatML and image markers are user-defined pieces.

The tiny preset's dimensions are unusual on purpose: a head size of 40 with a 256-wide model of 8 heads (so
heads x head_dim = 320 is wider than the model, and hidden / heads = 32 is not the head size), 8 / 2 grouped
queries, and LongRoPE factors that swing between about 0.46 and 52 across the 20 pairs, so a RoPE that ignored or
misplaced them gives different logits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..common.versioned import VersionedRecipe
from ..family import SpmSettings
from ..presets import Preset
from ..v2_6 import CHATML_TEMPLATE


@dataclass(frozen=True)
class Preset40(Preset):
    head_dim: int = 128
    longrope: str = "tiny"  # which factor curve: "tiny" (strongly varying) or "real" (the released curve's shape)


PRESETS = {
    "tiny-4.0": Preset40("4.0", 96, 2, 3, 200, 256, 2, 8, 2, 512, 700, "BF16", head_dim=40),
    # the real MiniCPM-V 4.0 vision tower and resampler (1152 wide, 27 layers, 64 x 2560, 20 heads of 128) and the
    # real attention shape (32 heads of 128, 2 kv heads), with a small LLM depth and vocabulary
    "real-4.0": Preset40("4.0", 1152, 27, 16, 4304, 2560, 2, 32, 2, 1024, 700, "BF16", head_dim=128, longrope="real"),
}


def longrope_factors(n: int, kind: str) -> list[float]:
    """n per-pair frequency divisors. "real": a smooth rise from 0.99780 to 31.02392 (the released curve's ends,
    fact sheet §2.2; its middle values were not seen); "tiny": 0.5 x 120^(i / (n - 1)) with a +-45 % wiggle (0.46
    to 52 over 20 pairs), so that neighbouring pairs differ."""
    if kind == "real":
        return [round(0.9978 * (31.02392 / 0.9978) ** (i / (n - 1)), 5) for i in range(n)]
    return [round(0.5 * 120.0 ** (i / (n - 1)) * (1.0 + 0.45 * math.sin(2.3 * i)), 5) for i in range(n)]


class Recipe(VersionedRecipe):
    tokenizer_corpus: tuple[str, ...] = (
        "<|im_start|>user\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\nA red car.<|im_end|>",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", "图片里有什么？一只小狗。",
    )

    def __init__(self, presets: dict[str, Any], spm: SpmSettings) -> None:
        super().__init__(presets, {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 32768,
                                   "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
                                   "pretraining_tp": 1})
        self.spm = spm  # type: ignore[assignment]

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
        out = super().configs(p, f, ids, vocab_size)
        factors = longrope_factors(p.head_dim // 2, p.longrope)
        out["config.json"].update({
            "head_dim": p.head_dim, "pad_token_id": ids["</s>"],
            # factor 1.0 and no top-level original_max_position_embeddings: transformers' attention factor is 1
            "rope_scaling": {"rope_type": "longrope", "factor": 1.0, "original_max_position_embeddings": 32786,
                             "long_factor": factors, "short_factor": list(factors)},
        })
        tok = out["tokenizer_config.json"]
        # 2.6's ChatML as tokenizer_config.json stores it, without BOS: LlamaTokenizerFast's encode() adds `<s>`
        tok.update({"chat_template": CHATML_TEMPLATE, "legacy": True, "spaces_between_special_tokens": False,
                    "sp_model_kwargs": {}, "add_prefix_space": False})
        out["special_tokens_map.json"] = {"bos_token": f.bos_token, "eos_token": f.eos_token, "unk_token": "<unk>",
                                          "pad_token": f.pad_token}
        return out
