"""The one place that talks to llama-cpp-python's low-level API (llama.h through ctypes).

It owns the model, the context and the sampler, builds `llama_batch`es of tokens or of embeddings, splits them
into n_batch pieces with contiguous positions, and keeps `n_past`. Nothing else in the package touches llama_cpp.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import llama_cpp as L
import numpy as np


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int = 0  # 0: all cores
    kv_type: str = "f16"  # "f32" for bit-faithful comparisons, "f16" (llama.cpp's default), "q8_0"
    flash_attn: bool | None = None  # None: llama.cpp decides


_KV_TYPES = {"f32": L.GGML_TYPE_F32, "f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0}


@L.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp logs every tensor at load; errors reach the user as exceptions instead."""


class LlamaModel:
    """A loaded language model GGUF and its vocabulary."""

    def __init__(self, path: str | os.PathLike[str], n_gpu_layers: int = 0, verbose: bool = False) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: file not found")
        L.llama_backend_init()
        if not verbose:
            L.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.path = str(path)
        self.ptr = L.llama_model_load_from_file(os.fsencode(path), params)
        if not self.ptr:
            raise ValueError(f"{path}: llama.cpp could not load this model (not a language-model GGUF?)")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_embd = int(L.llama_model_n_embd(self.ptr))
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self.ptr))

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = L.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8")

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), out, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            out = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), out, cap, add_special, parse_special)
        return list(out[:n])

    def token_id(self, text: str) -> int:
        """The id of a special token written as text (it must be a single token)."""
        ids = self.tokenize(text)
        if len(ids) != 1:
            raise ValueError(f"{self.path}: {text!r} is not a single token in this vocabulary")
        return ids[0]

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            L.llama_model_free(self.ptr)
            self.ptr = None


@dataclass(frozen=True)
class SamplerParams:
    temperature: float = 0.7  # 0: greedy
    top_p: float = 0.8
    top_k: int = 100
    repetition_penalty: float = 1.05
    seed: int = 0
    penalty_window: int = 2048  # generated tokens the repetition penalty looks back over


class Sampler:
    """llama.cpp's sampler chain, in the original generate()'s order: repetition penalty, temperature, top-k,
    top-p, then a draw (or greedy when the temperature is 0)."""

    def __init__(self, model: LlamaModel, p: SamplerParams) -> None:
        self.ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        add = lambda s: L.llama_sampler_chain_add(self.ptr, s)  # noqa: E731
        if p.repetition_penalty != 1.0:
            add(L.llama_sampler_init_penalties(model.n_vocab, p.penalty_window, p.repetition_penalty, 0.0, 0.0))
        if p.temperature <= 0:
            add(L.llama_sampler_init_greedy())
        else:
            add(L.llama_sampler_init_temp(p.temperature))
            if p.top_k > 0:
                add(L.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                add(L.llama_sampler_init_top_p(p.top_p, 1))
            add(L.llama_sampler_init_dist(p.seed & 0xFFFFFFFF))

    def sample(self, ctx: L.llama_context_p) -> int:
        return int(L.llama_sampler_sample(self.ptr, ctx, -1))  # samples and accepts

    def close(self) -> None:
        if self.ptr:
            L.llama_sampler_free(self.ptr)
            self.ptr = None


class LlamaSession:
    """A context on a model: decodes tokens and embeddings at consecutive positions, tracking n_past."""

    def __init__(self, model: LlamaModel, p: ContextParams) -> None:
        cp = L.llama_context_default_params()
        cp.n_ctx = p.n_ctx
        cp.n_batch = p.n_batch
        cp.n_ubatch = p.n_batch
        threads = p.n_threads or (os.cpu_count() or 1)
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.type_k = cp.type_v = _KV_TYPES[p.kv_type]
        cp.no_perf = False  # keep llama.cpp's timing counters (perf())
        if p.flash_attn is not None:
            cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.model = model
        self.ptr = L.llama_init_from_model(model.ptr, cp)
        if not self.ptr:
            raise RuntimeError(f"llama.cpp could not create a context of {p.n_ctx} tokens")
        self.n_ctx = int(L.llama_n_ctx(self.ptr))
        self.n_batch = p.n_batch
        self.n_past = 0
        n = self.n_batch
        self._tok = L.llama_batch_init(n, 0, 1)
        self._emb = L.llama_batch_init(n, model.n_embd, 1)

    def clear(self) -> None:
        L.llama_memory_clear(L.llama_get_memory(self.ptr), True)
        self.n_past = 0

    def truncate(self, n_keep: int) -> None:
        """Forget everything from position n_keep on (the KV cache keeps the prefix)."""
        if n_keep < self.n_past:
            L.llama_memory_seq_rm(L.llama_get_memory(self.ptr), 0, n_keep, -1)
            self.n_past = n_keep

    def _run(self, batch: L.llama_batch, n: int, want_logits: bool) -> None:
        batch.n_tokens = n
        for i in range(n):
            batch.pos[i] = self.n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if (want_logits and i == n - 1) else 0
        rc = L.llama_decode(self.ptr, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) at position {self.n_past}")
        self.n_past += n

    def decode_tokens(self, tokens: list[int], logits_last: bool = True) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            for i, t in enumerate(chunk):
                self._tok.token[i] = t
            self._run(self._tok, len(chunk), logits_last and start + len(chunk) == len(tokens))

    def decode_embeddings(self, embd: np.ndarray, logits_last: bool = False) -> None:
        """embd: float32 [n, n_embd], one row per position."""
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        if embd.ndim != 2 or embd.shape[1] != self.model.n_embd:
            raise ValueError(f"embeddings of shape {embd.shape} do not fit a model of width {self.model.n_embd}")
        dst = np.ctypeslib.as_array(self._emb.embd, shape=(self.n_batch * self.model.n_embd,))
        for start in range(0, embd.shape[0], self.n_batch):
            chunk = embd[start : start + self.n_batch]
            dst[: chunk.size] = chunk.reshape(-1)
            self._run(self._emb, chunk.shape[0], logits_last and start + chunk.shape[0] == embd.shape[0])

    def suppress(self, tokens: set[int]) -> None:
        """Make `tokens` impossible for the next sample (in the context's own logits)."""
        ptr = L.llama_get_logits_ith(self.ptr, -1)
        view = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))
        view[list(tokens)] = -np.inf

    def logits(self) -> np.ndarray:
        """float32 [n_vocab] of the last decoded position that asked for logits."""
        ptr = L.llama_get_logits_ith(self.ptr, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters: prompt (batched) and generation (one token) decodes and their times."""
        p = L.llama_perf_context(self.ptr)
        return {"prompt_tokens": p.n_p_eval, "prompt_ms": p.t_p_eval_ms, "tokens": p.n_eval, "decode_ms": p.t_eval_ms}

    def close(self) -> None:
        if self.ptr:
            L.llama_batch_free(self._tok)
            L.llama_batch_free(self._emb)
            L.llama_free(self.ptr)
            self.ptr = None
