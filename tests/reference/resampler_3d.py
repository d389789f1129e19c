"""MiniCPM-V 4.5's "3-D" resampler in PyTorch, written from the fact sheet (spec/minicpmv-4.0-4.5.md §5.2, §5.3), the
way the original `resampler.py` computes it: every frame-piece padded to the longest one, keys = LN_kv(kv_proj(x))
+ its 2-D sin-cos code (zero on padding) + the temporal code of its time id, values = LN_kv(kv_proj(x)); the
frame-pieces of one packed unit concatenated along the key axis with their padding rows (masked), units padded to
the longest concatenation (masked), one batched torch MultiheadAttention from LN_q(query); LN_post, `@ proj`.

`arrangement="vllm"` is vLLM's `Resampler4_5` instead (the 2-D code on the values, the temporal code alone on the
keys), which the original does not do: a test shows it is told apart.
"""

from __future__ import annotations

import numpy as np
import torch

from .vision import ReferenceResampler, sincos_2d


def temporal_table(dim: int, n: int) -> np.ndarray:
    """[n, dim] float32 as the original's numpy: omega_k = 1 / 10000^(k / (dim/2)), k < dim/2; row t =
    [sin(t omega) | cos(t omega)]."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    pos = np.arange(n, dtype=np.float32)
    out = np.einsum("m,d->md", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1).astype(np.float32)


class Reference3DResampler(ReferenceResampler):
    @torch.no_grad()
    def units(self, feats: list[torch.Tensor], sizes: list[tuple[int, int]], units: list[list[int]],
              temporal_ids: list[list[int]], arrangement: str = "hf") -> list[np.ndarray]:
        """feats[i]: frame-piece i's tower output [h_i * w_i, D] (sizes[i] = (h_i, w_i)); units[u]: the frame-piece
        indices of packed unit u, temporal_ids[u] their time ids (-1: none) -> one [Q, E] block per unit."""
        E = self.E
        order = [i for unit in units for i in unit]  # frame-pieces in unit order, as the processor emits them
        flat_ids = [t for ids in temporal_ids for t in ids]
        L = max(h * w for h, w in sizes)
        n = len(order)
        x = torch.zeros(n, L, feats[0].shape[1])
        pos = torch.zeros(n, L, E)
        pad = torch.ones(n, L, dtype=torch.bool)  # True: a padding row (masked)
        for j, i in enumerate(order):
            h, w = sizes[i]
            x[j, : h * w] = feats[i]
            pos[j, : h * w] = sincos_2d(E, h, w)
            pad[j, : h * w] = False
        kv = self.ln["ln_kv"](x @ self.kv_proj.T)  # [n, L, E], padding rows included (masked below)
        table = torch.from_numpy(temporal_table(E, max(max(flat_ids) + 1, 1)))
        time = torch.stack([table[t] if t >= 0 else torch.zeros(E) for t in flat_ids])[:, None, :]  # [n, 1, E]
        if arrangement == "hf":
            keys, values = kv + pos + time, kv
        elif arrangement == "vllm":
            keys, values = kv + time, kv + pos
        else:
            raise ValueError(arrangement)
        # concatenate each unit's frame-pieces (L rows each, padding kept) along the key axis; pad units
        longest = max(len(u) for u in units) * L
        K = torch.zeros(len(units), longest, E)
        V = torch.zeros(len(units), longest, E)
        mask = torch.ones(len(units), longest, dtype=torch.bool)
        j = 0
        for u, unit in enumerate(units):
            for f in range(len(unit)):
                K[u, f * L:(f + 1) * L] = keys[j]
                V[u, f * L:(f + 1) * L] = values[j]
                mask[u, f * L:(f + 1) * L] = pad[j]
                j += 1
        q = self.ln["ln_q"](self.query)[:, None].expand(-1, len(units), -1)  # [Q, B, E]
        out, _ = self.attn(q, K.transpose(0, 1), V.transpose(0, 1), key_padding_mask=mask, need_weights=False)
        out = self.ln["ln_post"](out.transpose(0, 1)) @ self.proj  # [B, Q, E]
        return [o.numpy() for o in out]
