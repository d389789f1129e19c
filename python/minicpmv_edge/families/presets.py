"""A test checkpoint's dimensions (families/*/ declare theirs; recipes.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    family: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    llm_width: int  # at least 128: the resampler has width // 128 heads
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_ffn: int
    vocab: int  # BPE tokens before the special tokens; for SentencePiece the whole vocabulary
    dtype: str  # safetensors storage dtype, as the real checkpoints ("BF16" or "F16")
    seed: int = 0
    query_num: int = 0  # resampler queries (tokens per piece); 0: the family's
    corpus: tuple[str, ...] = ()  # more tokenizer training text (the demo model's words become whole tokens)
    image_size: int = 0  # config.json's image_size where a family reads it (1.0's square); 0: the family's

    def queries(self, f: Any) -> int:
        return self.query_num or f.query_num
