"""MiniCPM-V 1.0's test checkpoints: 2.0's files (the same tokenizer.model settings, the timm tower's names) without
the slicing keys, with `image_size` as the square side, `max_position_embeddings` 2048 and 1.0's tokenizer_config.json
(the eleven special strings of its added tokens, no pad token)."""

from __future__ import annotations

from typing import Any

from ..presets import Preset
from ..v2_0.recipe import Recipe as Recipe20
from .convert import SLICING_KEYS

PRESETS = {
    # unusual dimensions: resampler width 320 (2 heads of 160), a 420 x 420 square (30 x 30 tokens: the stored 8 x 8
    # key table resized to 30 x 30, the tower's 27 x 27 table to 30 x 30)
    "tiny-1.0": Preset("1.0", 112, 3, 7, 304, 320, 2, 5, 5, 640, 700, "BF16", image_size=420),
    # the real MiniCPM-V 1.0: so400m (26 of 27 blocks run), resampler 64 x 2304, MiniCPM-2.4B's width, 448 x 448
    "real-1.0": Preset("1.0", 1152, 27, 16, 4304, 2304, 2, 36, 36, 5760, 600, "BF16", image_size=448),
}


class Recipe(Recipe20):
    presets = PRESETS

    def configs(self, p: Any, f: Any, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
        files = super().configs(p, f, ids, vocab_size)
        cfg = files["config.json"]
        for k in (*SLICING_KEYS, "scale_resolution", "patch_size", "mm_use_im_start_end"):
            cfg.pop(k, None)
        cfg["image_size"] = p.image_size or f.scale_resolution
        cfg["max_position_embeddings"] = 2048
        tok = files["tokenizer_config.json"]
        tok["pad_token"] = None
        files["special_tokens_map.json"].pop("pad_token", None)
        return files
