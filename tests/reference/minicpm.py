"""MiniCPM-V 2.0's language model in PyTorch, written from the original `modeling_minicpm.py` semantics
(transformers has no MiniCPM class): Llama blocks with three scalings. Token embeddings are multiplied by
scale_emb when they come from ids; each residual branch by scale_depth / sqrt(layers); the final hidden state is
divided by hidden_size / dim_model_base before the (untied) head. RMSNorm with the variance in float32, rotate-half
RoPE, causal attention with repeated kv heads. float32 throughout; no cache (every call runs the whole sequence)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import transformers

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


class Generator(transformers.PreTrainedModel, transformers.GenerationMixin):
    """transformers' own `generate()` (greedy search, beam search and their logits processors, as the original
    chat() calls `llm.generate(inputs_embeds=...)`) over a model that takes embeddings: each sequence is the prompt's
    embeddings, then the embeddings of the tokens generated so far. No cache: every step runs the whole sequence.
    Whatever `input_ids` generate() starts from (transformers 4.36: a dummy [BOS]) is not fed to the model, as in
    the original, but its logits processors see it."""

    main_input_name = "input_ids"

    def __init__(self, lm: MiniCPM, vocab_size: int, bos: int, eos: int, pad: int) -> None:
        super().__init__(transformers.PretrainedConfig(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos,
                                                       pad_token_id=pad))
        self.lm = lm
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device and dtype
        self.start: int | None = None

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None,
                                      **kwargs) -> dict:
        return {"input_ids": input_ids, "inputs_embeds": inputs_embeds}

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if self.start is None:  # the first step: what generate() started from is not generated
            self.start = input_ids.shape[1]
        rows = []
        for b in range(input_ids.shape[0]):
            new = input_ids[b, self.start:].tolist()
            emb = torch.cat([inputs_embeds[b], self.lm.embed(new)]) if new else inputs_embeds[b]
            rows.append(self.lm(emb)[-1])
        return CausalLMOutputWithPast(logits=torch.stack(rows)[:, None])

    def run(self, prompt: torch.Tensor, max_new_tokens: int, start: list[int] | None = None, **kw) -> list[int]:
        """generate() from the prompt's embeddings [L, E] (and `start` ids: what generate() begins with; None: its
        own choice), as the original chat() calls it; the ids generate() returns, `start` included."""
        self.start = None
        extra = {"input_ids": torch.tensor([start])} if start is not None else {}
        out = self.generate(inputs_embeds=prompt[None], max_new_tokens=max_new_tokens,
                            pad_token_id=self.config.pad_token_id, eos_token_id=self.config.eos_token_id, **extra,
                            **kw)
        return out[0].tolist()
