"""The vision tower and resampler of MiniCPM-V 2.5/2.6 in PyTorch (the original `modeling_navit_siglip.py` and
`resampler.py`).

The encoder layers are transformers' `Idefics2VisionTransformer` (the class 2.5 imports and 2.6 copies, imported
where it is built); position ids are computed here so a test can choose the original float32 `bucketize` rule or
llama.cpp's exact floor; the resampler is `torch.nn.MultiheadAttention` plus the sin-cos formula, written from the
spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_config, load_state


def position_ids_hf(h: int, w: int, side: int = 70) -> torch.Tensor:
    """The original float32 op sequence: bucketize(arange(0, 1-1e-6, 1/n), arange(1/side, 1, 1/side), right=True)."""
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    fh = torch.arange(0, 1 - 1e-6, 1 / torch.tensor(h, dtype=torch.int32))
    fw = torch.arange(0, 1 - 1e-6, 1 / torch.tensor(w, dtype=torch.int32))
    bh = torch.bucketize(fh, boundaries, right=True)
    bw = torch.bucketize(fw, boundaries, right=True)
    return (bh[:, None] * side + bw[None, :]).reshape(-1)


def position_ids_floor(h: int, w: int, side: int = 70) -> torch.Tensor:
    """llama.cpp's rule: floor(side * i / n), exact."""
    bh = torch.tensor([side * i // h for i in range(h)])
    bw = torch.tensor([side * j // w for j in range(w)])
    return (bh[:, None] * side + bw[None, :]).reshape(-1)


def reshape_by_patch(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[3, H, W] -> [3, patch, L * patch]: patches side by side in row-major order, as the original processor."""
    patches = torch.nn.functional.unfold(image, (patch, patch), stride=(patch, patch))
    patches = patches.reshape(image.size(0), patch, patch, -1)
    return patches.permute(0, 1, 3, 2).reshape(image.size(0), patch, -1)


def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """[h*w, dim], channels [sin col, cos col, sin row, cos row] (the original `resampler.py`), float32 numpy as
    the original."""
    omega = np.arange(dim // 4, dtype=np.float32)
    omega /= dim / 4.0
    omega = 1.0 / 10000**omega

    def half(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float32), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_w, grid_h = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return torch.from_numpy(np.concatenate([half(grid_w), half(grid_h)], axis=1).astype(np.float32))


class ReferenceResampler:
    """The perceiver resampler (the original `resampler.py`): LN_kv(kv_proj(x)) as keys (+ the sin-cos code of the
    piece's grid) and values, torch's MultiheadAttention with E / 128 heads from LN_q(query) (+ 2.0's stored query
    table when the checkpoint has one), LN_post, then `@ proj`."""

    def __init__(self, state: dict[str, torch.Tensor], E: int) -> None:
        self.E = E
        self.query = state["resampler.query"]
        self.query_pos = state.get("resampler.pos_embed")  # 2.0 only
        self.kv_proj = state["resampler.kv_proj.weight"]
        self.attn = torch.nn.MultiheadAttention(E, E // 128)
        self.attn.load_state_dict({k: state[f"resampler.attn.{k}"] for k in self.attn.state_dict()})
        self.ln = {n: torch.nn.LayerNorm(E, eps=1e-6) for n in ("ln_q", "ln_kv", "ln_post")}
        for n, ln in self.ln.items():
            ln.load_state_dict({"weight": state[f"resampler.{n}.weight"], "bias": state[f"resampler.{n}.bias"]})
        self.proj = state["resampler.proj"]

    def key_positions(self, h: int, w: int) -> torch.Tensor:
        """[h*w, E] added to the keys: the sin-cos code of the piece's grid."""
        return sincos_2d(self.E, h, w)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """feats [h*w, D] -> [Q, E]."""
        kv = self.ln["ln_kv"](feats @ self.kv_proj.T)  # [L, E]
        q = self.ln["ln_q"](self.query)  # [Q, E]
        if self.query_pos is not None:
            q = q + self.query_pos
        pos = self.key_positions(h, w)
        out, _ = self.attn(q[:, None], (kv + pos)[:, None], kv[:, None], need_weights=False)
        return self.ln["ln_post"](out[:, 0]) @ self.proj


class ReferenceVision(torch.nn.Module):
    def __init__(self, hf_dir: Path) -> None:
        # imported here: the transformers 4.36 that the 1.0/2.0 references run under has no Idefics2
        from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
        from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

        super().__init__()
        cfg = load_config(hf_dir)
        vc = cfg["vision_config"]
        n_layers = vc["num_hidden_layers"] - (1 if cfg.get("drop_vision_last_layer", True) else 0)
        self.vcfg = Idefics2VisionConfig(
            hidden_size=vc["hidden_size"], intermediate_size=vc["intermediate_size"], num_hidden_layers=n_layers,
            num_attention_heads=vc["num_attention_heads"], patch_size=vc["patch_size"], image_size=vc["image_size"],
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
        self.vcfg._attn_implementation = "eager"
        self.vpm = Idefics2VisionTransformer(self.vcfg)
        state = load_state(hf_dir)
        vpm = {k.removeprefix("vpm."): v for k, v in state.items() if k.startswith("vpm.")}
        self.vpm.load_state_dict({k: v for k, v in vpm.items() if k in self.vpm.state_dict()}, strict=True)
        self.side = vc["image_size"] // vc["patch_size"]
        self.resampler = ReferenceResampler(state, cfg["hidden_size"])
        self.eval()

    @torch.no_grad()
    def tower(self, pixels: np.ndarray, rule: str = "hf") -> torch.Tensor:
        """pixels: [3, H, W] normalised float32 -> [(H/14)*(W/14), D] after post-LN.

        rule "hf": 2.6, transformers' own embeddings on the 2-D piece with an all-true (1, h, w) mask;
        "flat": 2.5's original quirk, the piece as a patch strip with a (1, 1, L) mask (the original 2.5
        `get_vllm_embedding`);
        "floor": llama.cpp's exact floor(70 i / n) ids.
        """
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
        p = self.vcfg.patch_size
        h, w = x.shape[2] // p, x.shape[3] // p
        if rule == "hf":
            emb = self.vpm.embeddings(pixel_values=x, patch_attention_mask=torch.ones(1, h, w, dtype=torch.bool))
        elif rule == "flat":
            strip = reshape_by_patch(x[0], p)[None]  # [1, 3, p, h*w*p]
            emb = self.vpm.embeddings(pixel_values=strip,
                                      patch_attention_mask=torch.ones(1, 1, h * w, dtype=torch.bool))
        else:
            emb = self.vpm.embeddings.patch_embedding(x).flatten(2).transpose(1, 2)
            emb = emb + self.vpm.embeddings.position_embedding(position_ids_floor(h, w, self.side))[None]
        out = self.vpm.encoder(inputs_embeds=emb, attention_mask=None).last_hidden_state
        return self.vpm.post_layernorm(out)[0]

    def encode(self, pixels: np.ndarray, rule: str = "hf") -> np.ndarray:
        h, w = pixels.shape[1] // 14, pixels.shape[2] // 14
        return self.resampler(self.tower(pixels, rule), h, w).numpy()

    @torch.no_grad()
    def encode_padded_batch(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """MiniCPM-Llama3-V 2.5 with `batch_vision_input` (the original `get_vllm_embedding`), step by step: every
        piece as a patch strip, flattened to [n*p, 3*p] rows, `pad_sequence` with 0.0 to the longest, back to
        [B, 3, p, L*p]; the patch mask (B, 1, max_patches) filled with `mask[i, :n_i] = True`, which indexes the
        size-1 axis and so sets every row all true; the tower on the whole batch with that mask; the resampler on
        each piece's own n_i outputs (the original masks the padded keys there) and its own grid."""
        p = self.vcfg.patch_size
        xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in pieces]
        tgt = [(x.shape[1] // p, x.shape[2] // p) for x in xs]
        rows = [reshape_by_patch(x, p).flatten(end_dim=1).permute(1, 0) for x in xs]  # [n*p, 3*p]
        batch = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0.0)
        B, L, _ = batch.shape
        batch = batch.permute(0, 2, 1).reshape(B, 3, -1, L)
        max_patches = max(h * w for h, w in tgt)
        mask = torch.zeros((B, 1, max_patches), dtype=torch.bool)
        for i, (h, w) in enumerate(tgt):
            mask[i, : h * w] = True  # the original's line: the whole row, whatever h * w is
        assert bool(mask.all())
        out = self.vpm(pixel_values=batch, patch_attention_mask=mask).last_hidden_state  # post-LN included
        return [self.resampler(out[i, : h * w], h, w).numpy() for i, (h, w) in enumerate(tgt)]


def reference_vision(hf_dir: Path) -> torch.nn.Module:
    """The reference tower + resampler of a checkpoint: Idefics2 for 2.5/2.6, timm for 2.0 (no `version` key) and
    1.0 (no slicing keys either: its resampler's stored key table)."""
    cfg = load_config(hf_dir)
    if "version" in cfg:
        return ReferenceVision(hf_dir)
    if "slice_mode" not in cfg:
        from .minicpmv1 import ReferenceVision10

        return ReferenceVision10(hf_dir)
    from .timm_vision import ReferenceVision20

    return ReferenceVision20(hf_dir)
