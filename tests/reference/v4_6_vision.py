"""MiniCPM-V 4.6's vision path as transformers 5.23.0 runs it (its own `MiniCPMV4_6ForConditionalGeneration`, no
transcription): a tiny model from a config with unusual dimensions and seeded random weights, the per-piece image
features of `get_image_features` in "16x" and "4x" mode, and the position ids of `get_vision_nearest_position_ids`.
Runs in a child under transformers 5.23 (reference/isolated.py); arguments and results are plain numpy and dicts.
"""

from __future__ import annotations

import numpy as np

# unusual on purpose: 3 heads of 32, an MLP width that is not a multiple of 32, insert layer 2 of 5 (not 6), a
# 42 x 42 position table (not 70), a 64-wide language model
TINY = {"hidden_size": 96, "intermediate_size": 200, "num_hidden_layers": 5, "num_attention_heads": 3,
        "patch_size": 14, "image_size": 14 * 42, "insert_layer_id": 2, "llm_hidden": 64, "layer_norm_eps": 1e-6}


def _config(d: dict):
    from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import MiniCPMV4_6Config

    text = {"hidden_size": d["llm_hidden"], "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 128, "linear_num_key_heads": 2,
            "linear_num_value_heads": 2, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
            "layer_types": ["full_attention"]}
    vision = {"hidden_size": d["hidden_size"], "intermediate_size": d["intermediate_size"],
              "num_hidden_layers": d["num_hidden_layers"], "num_attention_heads": d["num_attention_heads"],
              "patch_size": d["patch_size"], "image_size": d["image_size"], "layer_norm_eps": d["layer_norm_eps"],
              "hidden_act": "gelu_pytorch_tanh"}
    return MiniCPMV4_6Config(text_config=text, vision_config=vision, insert_layer_id=d["insert_layer_id"])


def _model(d: dict, seed: int, f16: bool):
    """The tiny model with seeded weights large enough that every block matters: matrices ~ N(0, 1 / fan_in),
    LayerNorm weights around 1, biases and positions around 0; with `f16`, every tensor of two or more dimensions
    rounded through float16 (what an f16 GGUF holds)."""
    import torch
    from transformers.models.minicpmv4_6.modeling_minicpmv4_6 import MiniCPMV4_6ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = _config(d)
    cfg._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = MiniCPMV4_6ForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(("model.vision_tower.", "model.merger.")):
                continue
            if "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif "position_embedding" in name:
                v = 0.5 * torch.randn(p.shape, generator=g)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                v = torch.randn(p.shape, generator=g) / np.sqrt(fan_in)
            if f16 and p.ndim >= 2:
                v = v.half().float()
            p.copy_(v)
    return model


def _pack(pieces: list[np.ndarray], patch: int):
    """The processor's NaViT packing (`reshape_by_patch`): each [3, H, W] piece as its patches side by side,
    [1, 3, P, sum(patches) * P], and the (h, w) patch grids."""
    import torch

    packed, sizes = [], []
    for chw in pieces:
        t = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))
        u = torch.nn.functional.unfold(t.unsqueeze(0), (patch, patch), stride=(patch, patch))
        packed.append(u.reshape(3, patch, patch, -1).permute(0, 1, 3, 2).reshape(3, patch, -1))
        sizes.append([chw.shape[1] // patch, chw.shape[2] // patch])
    return torch.cat(packed, dim=-1).unsqueeze(0), torch.tensor(sizes, dtype=torch.int32)


def run(d: dict, seed: int, cases: dict[str, list[np.ndarray]], f16: bool = False) -> dict:
    """{"state": {name: float32 array} of the vision tower and merger, "out": {mode: [rows, llm_hidden] per piece}}
    for `cases` = {downsample_mode: [float32 [3, H, W] pieces]}; each mode's pieces are encoded together, packed
    into one sequence as the processor does."""
    import torch

    model = _model(d, seed, f16)
    out: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for mode, pieces in cases.items():
            pixel_values, target_sizes = _pack(pieces, d["patch_size"])
            feats = model.model.get_image_features(pixel_values, target_sizes, downsample_mode=mode).pooler_output
            out[mode] = [f.float().numpy().copy() for f in feats]
    state = {k: v.float().numpy().copy() for k, v in model.state_dict().items()
             if k.startswith(("model.vision_tower.", "model.merger."))}
    return {"state": state, "out": out}


def nearest_position_ids(sizes: list[tuple[int, int]], sides: list[int]) -> dict[int, list[np.ndarray]]:
    """transformers' get_vision_nearest_position_ids for each (h, w) alone, per table side."""
    import torch
    from transformers.vision_utils import get_vision_nearest_position_ids

    return {side: [get_vision_nearest_position_ids(torch.tensor([list(s)], dtype=torch.int32), side).numpy().copy()
                   for s in sizes] for side in sides}
