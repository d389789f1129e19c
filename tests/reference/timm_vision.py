"""MiniCPM-V 2.0's vision tower and resampler in PyTorch: the tower is timm's own `VisionTransformer`, built as the
original `modeling_minicpmv.py` builds `vit_so400m_patch14_siglip_384` (no class token, the MAP head replaced by
Identity, dynamic image size and padding, the last block dropped), so its 27x27 position table is resized by timm's
`resample_abs_pos_embed` (antialiased bicubic) and its MLP uses exact GELU; the resampler adds the stored query
table to its queries (the original 2.0 `resampler.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from .checkpoint import load_config, load_state
from .vision import ReferenceResampler


class ReferenceVision20(torch.nn.Module):
    resampler_class = ReferenceResampler

    def __init__(self, hf_dir: Path) -> None:
        super().__init__()
        cfg = load_config(hf_dir)
        vc = cfg["vision_config"]  # our fixtures' dimensions (the real so400m: 1152, 27 blocks, 16 heads, 4304)
        D, F = vc["hidden_size"], vc["intermediate_size"]
        self.vpm = VisionTransformer(
            img_size=vc["image_size"], patch_size=vc["patch_size"], embed_dim=D, depth=vc["num_hidden_layers"],
            num_heads=vc["num_attention_heads"], mlp_ratio=(F + 0.5) / D, class_token=False, global_pool="map",
            num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
        self.vpm.attn_pool = torch.nn.Identity()
        if cfg.get("drop_vision_last_layer", True):
            self.vpm.blocks = self.vpm.blocks[:-1]
        state = load_state(hf_dir)
        self.vpm.load_state_dict({k.removeprefix("vpm."): v for k, v in state.items() if k.startswith("vpm.")},
                                 strict=True)
        self.resampler = self.resampler_class(state, cfg["hidden_size"])
        self.eval()

    @torch.no_grad()
    def encode(self, pixels: np.ndarray, rule: str | None = None) -> np.ndarray:
        """[3, H, W] normalised float32 -> [Q, E]: one piece at a time, as the original."""
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
        h, w = x.shape[2] // 14, x.shape[3] // 14
        return self.resampler(self.vpm.forward_features(x)[0], h, w).numpy()  # tower output after its final norm
