"""MiniCPM-V 2.0's part of the converter: its timm tower (`vpm.blocks.N.*`, fused `qkv` split into q/k/v, the
27x27 position table without its batch axis, the last of its blocks not stored), its tower's dimensions from the
timm name when config.json has no `vision_config`, and MiniCPM's three scalings as llama.cpp's `minicpm.*` keys
(input embeddings x scale_emb, each residual branch x scale_depth / sqrt(layers), logits / (hidden /
dim_model_base)), as llama.cpp's `convert_hf_to_gguf.py` writes them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

# timm's names, without "vpm."; qkv is split into q/k/v below
GLOBAL = {
    "patch_embed.proj.weight": "v.patch_embd.weight",
    "patch_embed.proj.bias": "v.patch_embd.bias",
    "pos_embed": "v.position_embd.weight",
    "norm.weight": "v.post_ln.weight",
    "norm.bias": "v.post_ln.bias",
}
LAYER = {
    "attn.proj.weight": "attn_out.weight", "attn.proj.bias": "attn_out.bias",
    "norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",
    "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "ffn_down.weight", "mlp.fc1.bias": "ffn_down.bias",  # llama.cpp's legacy swapped naming
    "mlp.fc2.weight": "ffn_up.weight", "mlp.fc2.bias": "ffn_up.bias",
}
# timm towers a config names without a vision_config (the original builds them from the name alone)
TIMM_TOWERS = {
    "vit_so400m_patch14_siglip_384": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                      "num_attention_heads": 16, "patch_size": 14, "image_size": 384},
}


def _rows(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a[lo:hi]


class TimmConverter:
    def vision_config(self, cfg: dict, where: str) -> dict:
        """config.json's `vision_config`, or the dimensions the timm tower's name stands for."""
        if isinstance(cfg.get("vision_config"), dict):
            return cfg["vision_config"]
        tower = str(cfg.get("vision_encoder", ""))
        for name, dims in TIMM_TOWERS.items():
            if tower.split(".")[0] == name:
                return dims
        from ...convert.safetensors_io import CheckpointError

        raise CheckpointError(f"{where}: vision_encoder {tower!r} is not a timm tower this converter knows "
                              f"({', '.join(TIMM_TOWERS)}); add a 'vision_config' with its dimensions")

    def vision_table(self, cfg: dict, n_layers: int, width: int) -> list[tuple[str, str, Any, tuple | None]]:
        D = width
        side = int(cfg["vision_config"]["image_size"]) // int(cfg["vision_config"]["patch_size"])
        out: list[tuple[str, str, Any, tuple | None]] = []
        for hf, gg in GLOBAL.items():
            fn, shape = (lambda a: a[0], (1, side * side, D)) if hf == "pos_embed" else (None, None)
            out.append((f"vpm.{hf}", gg, fn, shape))
        for i in range(n_layers):
            b = f"vpm.blocks.{i}."
            for k, name in enumerate("qkv"):
                out += [(f"{b}attn.qkv.weight", f"v.blk.{i}.attn_{name}.weight", _rows(k * D, (k + 1) * D),
                         (3 * D, D)),
                        (f"{b}attn.qkv.bias", f"v.blk.{i}.attn_{name}.bias", _rows(k * D, (k + 1) * D), (3 * D,))]
            out += [(f"{b}{hf}", f"v.blk.{i}.{gg}", None, None) for hf, gg in LAYER.items()]
        return out

    def stored_layer_names(self, n_layers: int, n_stored: int) -> list[str]:
        return []  # the dropped last block is not stored

    def resampler_table(self, cfg: dict) -> list[tuple[str, str, Any, tuple, tuple]]:
        return []  # every resampler tensor is stored as it is used

    def llm_kv(self, writer: Any, cfg: dict) -> None:
        """llama.cpp reads all three; MiniCPMConfig's defaults are 1."""
        writer.add_embedding_scale(float(cfg.get("scale_emb", 1)))
        writer.add_residual_scale(float(cfg.get("scale_depth", 1)) / math.sqrt(int(cfg["num_hidden_layers"])))
        writer.add_logit_scale(float(cfg["hidden_size"]) / float(cfg.get("dim_model_base", 1)))


def timm_minicpmv(cfg: dict) -> bool:
    """No `version` key, and a timm SigLIP tower named in `vision_encoder` (MiniCPM-V 1.0 and 2.0)."""
    tower = cfg.get("vision_encoder")
    return "version" not in cfg and isinstance(tower, str) and "siglip" in tower


def detects(cfg: dict) -> bool:
    """A timm SigLIP tower, no `version` key, and the slicing keys (`slice_mode` or `max_slice_nums`) that 1.0's
    config lacks."""
    return timm_minicpmv(cfg) and ("slice_mode" in cfg or "max_slice_nums" in cfg)
