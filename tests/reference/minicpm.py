"""MiniCPM-V 2.0's language model in PyTorch, written from the original `modeling_minicpm.py` semantics
(transformers has no MiniCPM class): Llama blocks with three scalings. Token embeddings are multiplied by
scale_emb when they come from ids; each residual branch by scale_depth / sqrt(layers); the final hidden state is
divided by hidden_size / dim_model_base before the (untied) head. RMSNorm with the variance in float32, rotate-half
RoPE, causal attention with repeated kv heads. float32 throughout; no cache (every call runs the whole sequence)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .checkpoint import load_config, load_state


class MiniCPM(torch.nn.Module):
    def __init__(self, hf_dir: Path) -> None:
        super().__init__()
        c = load_config(hf_dir)
        self.E, self.L = c["hidden_size"], c["num_hidden_layers"]
        self.H, self.KV = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        self.hd = self.E // self.H
        self.eps, self.theta = c["rms_norm_eps"], c.get("rope_theta", 10000.0)
        self.scale_emb = float(c.get("scale_emb", 1))
        self.residual = float(c.get("scale_depth", 1)) / math.sqrt(self.L)
        self.logit_div = self.E / float(c.get("dim_model_base", 1))
        self.w = {k.removeprefix("llm."): v for k, v in load_state(hf_dir).items() if k.startswith("llm.")}

    def embed(self, ids: list[int]) -> torch.Tensor:
        """Token embeddings as the model's own embedding layer gives them (x scale_emb)."""
        return self.w["model.embed_tokens.weight"][torch.tensor(ids)] * self.scale_emb

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        """x [heads, L, hd]: rotate-half pairs (i, i + hd/2), angle pos * theta^(-2i/hd)."""
        n = x.shape[1]
        inv = 1.0 / self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd)
        ang = torch.outer(torch.arange(n, dtype=torch.float32), inv)
        cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
        rot = torch.cat([-x[..., self.hd // 2:], x[..., : self.hd // 2]], -1)
        return x * cos + rot * sin

    @torch.no_grad()
    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds [L, E] (already scaled where they came from ids) -> logits [L, vocab]."""
        x, n = embeds.float(), embeds.shape[0]
        mask = torch.full((n, n), float("-inf")).triu(1)
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = self._norm(x, self.w[p + "input_layernorm.weight"])
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).view(n, self.H, self.hd).transpose(0, 1)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).view(n, self.KV, self.hd).transpose(0, 1)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).view(n, self.KV, self.hd).transpose(0, 1)
            q, k = self._rope(q), self._rope(k)
            k = k.repeat_interleave(self.H // self.KV, 0)
            v = v.repeat_interleave(self.H // self.KV, 0)
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.hd) + mask, -1) @ v
            x = x + (att.transpose(0, 1).reshape(n, self.E) @ self.w[p + "self_attn.o_proj.weight"].T) * self.residual
            h = self._norm(x, self.w[p + "post_attention_layernorm.weight"])
            gate, up = h @ self.w[p + "mlp.gate_proj.weight"].T, h @ self.w[p + "mlp.up_proj.weight"].T
            mlp = torch.nn.functional.silu(gate) * up
            x = x + (mlp @ self.w[p + "mlp.down_proj.weight"].T) * self.residual
        x = self._norm(x, self.w["model.norm.weight"]) / self.logit_div
        return x @ self.w["lm_head.weight"].T
