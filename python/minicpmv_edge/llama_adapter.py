"""The one place that talks to llama-cpp-python's low-level API (llama.h through ctypes).

It owns the model, the context and the sampler, builds `llama_batch`es of tokens or of embeddings (split into
n_batch pieces with contiguous positions), runs several sequences of one context side by side (beam search), and
keeps `n_past` of sequence 0. Nothing else in the package touches llama_cpp. Every owner frees its native memory
when closed or dropped; a model outlives the contexts made from it.

Two things follow from the model, never from its family's name. Its rope type: llama.cpp reads 4 positions per row
of an embedding batch for M-RoPE models (Qwen3.5's interleaved IMROPE, `qwen35`), section-major
[t0..tn-1 | h.. | w.. | e..], and one per token of a token batch; the families here use 1-D positions (MiniCPM-V
4.6's generate() feeds every section the token's index), so every section gets the same position. And its memory: a
recurrent or hybrid model (GatedDeltaNet layers) keeps a state that cannot be rolled back, so llama.cpp refuses to
remove the tail of a sequence; truncate() says so and the caller decodes the prompt again from the start.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import llama_cpp as L
import llama_cpp.llama_cpp as _llama_h
import numpy as np

from . import logs
from ._native import _core
from .chat_options import MAX_BEAMS, GenerationParams, check_int
from .cpus import available_cpus
from .llm_file import LlmFile

N_SEQ = 2 * MAX_BEAMS + 1  # sequence 0 holds the prompt; beams alternate between two sets of MAX_BEAMS
# llama.cpp's rope types whose embedding batches carry 4 positions per row (llama_hparams::n_pos_per_embd: M-RoPE and
# IMROPE; the vision type too, to be safe: a reader of one position per row sees section 0, which is that position)
MULTI_POSITION_ROPES = (L.LLAMA_ROPE_TYPE_MROPE, L.LLAMA_ROPE_TYPE_IMROPE, L.LLAMA_ROPE_TYPE_VISION)
ROPE_SECTIONS = 4  # GGML_MROPE_SECTIONS


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int = 0  # 0: the CPUs this process may use
    kv_type: str = "f16"  # "f32" for bit-faithful comparisons, "f16" (llama.cpp's default), "q8_0"
    flash_attn: bool | None = None  # None: llama.cpp decides

    def __post_init__(self) -> None:
        check_int("n_ctx", self.n_ctx, 16)
        # llama.cpp keeps room for at least one output per sequence in a batch and aborts (GGML_ASSERT) at context
        # creation when n_batch is smaller than the sequences it holds
        check_int("n_batch", self.n_batch, N_SEQ)
        check_int("n_threads", self.n_threads, 0)
        if self.kv_type not in ("f32", "f16", "q8_0"):
            raise ValueError(f"kv_type must be 'f32', 'f16' or 'q8_0', got {self.kv_type!r}")


_KV_TYPES = {"f32": L.GGML_TYPE_F32, "f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0}

# llama.h's llama_attach_threadpool(ctx, threadpool, threadpool_batch), which llama-cpp-python does not wrap
_attach_threadpool = _llama_h._lib.llama_attach_threadpool
_attach_threadpool.argtypes = [L.llama_context_p_ctypes, ctypes.c_void_p, ctypes.c_void_p]
_attach_threadpool.restype = None
_init_lock = threading.Lock()
_initialised = False


def _backend_init() -> None:
    global _initialised
    with _init_lock:
        if not _initialised:
            logs.install()
            L.llama_backend_init()
            _initialised = True


class LlamaModel:
    """A loaded language model GGUF (checked beforehand by llm_file) and its vocabulary."""

    def __init__(self, file: LlmFile, n_gpu_layers: int = 0) -> None:
        _backend_init()
        self.ptr = None
        self._lock = threading.Lock()
        self._contexts = 0
        self._closing = False
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.path = file.path
        self.file = file
        bridge = logs.install()
        mark = bridge.serial
        self.ptr = L.llama_model_load_from_file(os.fsencode(file.path), params)
        if not self.ptr:
            why = "; ".join(bridge.since(mark)[-3:]) or "no reason given"
            raise ValueError(f"{file.path}: llama.cpp could not load this model: {why}")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_embd = int(L.llama_model_n_embd(self.ptr))
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self.ptr))
        self.specials = file.specials
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.rope_type = int(L.llama_model_rope_type(self.ptr))
        # positions per row of an embedding batch
        self.pos_per_embd = ROPE_SECTIONS if self.rope_type in MULTI_POSITION_ROPES else 1
        # a recurrent state (Mamba-like or GatedDeltaNet layers): a sequence's tail cannot be removed
        self.recurrent = bool(L.llama_model_is_recurrent(self.ptr) or L.llama_model_is_hybrid(self.ptr))

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
        if text in self.specials:
            return self.specials[text]
        ids = self.tokenize(text)
        if len(ids) != 1:
            raise ValueError(f"{self.path}: {text!r} is not a single token in this vocabulary")
        return ids[0]

    def piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes; `special`: control tokens as their text (otherwise they are empty)."""
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def _attach(self) -> None:
        with self._lock:
            if not self.ptr:
                raise ValueError(f"{self.path}: the model is closed")
            self._contexts += 1

    def _detach(self) -> None:
        with self._lock:
            self._contexts -= 1
        self._free_if_done()

    def _free_if_done(self) -> None:
        with self._lock:
            if self._closing and self._contexts == 0 and self.ptr:
                L.llama_model_free(self.ptr)
                self.ptr = None

    def close(self) -> None:
        """Free the weights (once every context made from the model is closed)."""
        if getattr(self, "_lock", None) is None:
            return
        with self._lock:
            self._closing = True
        self._free_if_done()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: llama_cpp may be half torn down
            pass


class Sampler:
    """llama.cpp's sampler chain, in the original generate()'s order: repetition penalty, temperature, top-k,
    top-p, then a draw (or greedy when the temperature is 0)."""

    def __init__(self, model: LlamaModel, p: GenerationParams) -> None:
        """The penalty looks back over every generated token (at most max_new_tokens), never the prompt."""
        self.ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        add = lambda s: L.llama_sampler_chain_add(self.ptr, s)  # noqa: E731
        if p.repetition_penalty != 1.0:
            add(L.llama_sampler_init_penalties(model.n_vocab, p.max_new_tokens, p.repetition_penalty, 0.0, 0.0))
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

    def accept(self, token: int) -> None:
        """Count a token as already generated (for the repetition penalty)."""
        L.llama_sampler_accept(self.ptr, token)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            L.llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ContextFull(RuntimeError):
    """llama_decode found no room in the KV cache for the batch."""


class LlamaSession:
    """A context on a model: decodes tokens and embeddings at given positions and sequences; tracks n_past of
    sequence 0 (the conversation)."""

    def __init__(self, model: LlamaModel, p: ContextParams) -> None:
        self.ptr = None
        self.model = model
        cp = L.llama_context_default_params()
        cp.n_ctx = p.n_ctx
        cp.n_batch = p.n_batch
        cp.n_ubatch = p.n_batch
        threads = p.n_threads or available_cpus()
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.n_seq_max = N_SEQ
        cp.kv_unified = True  # beams share the prompt's cells
        cp.type_k = cp.type_v = _KV_TYPES[p.kv_type]
        cp.no_perf = False  # keep llama.cpp's timing counters (perf())
        if p.flash_attn is not None:
            cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        model._attach()
        bridge = logs.install()
        mark = bridge.serial
        try:
            self._pool = _core.CpuThreadPool(threads)  # started once: no thread creation per decode
        except BaseException:
            model._detach()
            raise
        self.ptr = L.llama_init_from_model(model.ptr, cp)
        if not self.ptr:
            model._detach()
            why = "; ".join(bridge.since(mark)[-3:]) or "no reason given"
            raise MemoryError(f"llama.cpp could not create a context of {p.n_ctx} tokens: {why}")
        if self._pool.address:
            _attach_threadpool(self.ptr, self._pool.address, self._pool.address)
        self.n_ctx = int(L.llama_n_ctx(self.ptr))
        self.n_batch = p.n_batch
        self.n_past = 0
        self._tok = L.llama_batch_init(self.n_batch, 0, 1)
        # room for pos_per_embd positions per row (llama_batch_init sizes `pos` by its first argument, and llama.cpp
        # reads pos[j * n_tokens + i] for section j of row i); n_tokens never exceeds n_batch
        self._emb = L.llama_batch_init(self.n_batch * model.pos_per_embd, model.n_embd, 1)
        self._mem = L.llama_get_memory(self.ptr)

    # ---- the KV cache ----

    def clear(self) -> None:
        L.llama_memory_clear(self._mem, True)
        self.n_past = 0

    def truncate(self, n_keep: int) -> bool:
        """Forget sequence 0 from position n_keep on (the KV cache keeps the prefix). False, with nothing changed,
        where llama.cpp refuses: a recurrent state cannot be rolled back to an earlier position (the caller must
        clear and decode from the start). Keeping every position always succeeds."""
        if n_keep >= self.n_past:
            return True
        if not L.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
            return False
        # what is left must end where we think: a memory that accepted the removal but dropped more (a recurrent
        # state cleared as a whole) is cleared for good, and the caller decodes from the start
        if int(L.llama_memory_seq_pos_max(self._mem, 0)) != n_keep - 1:
            self.clear()
            return False
        self.n_past = n_keep
        return True

    def seq_copy(self, src: int, dst: int) -> None:
        """Sequence dst becomes a copy of src (their cells are shared, nothing is recomputed; a recurrent state is
        copied when one of them is next decoded)."""
        self.seq_drop(dst)
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        have, want = (int(L.llama_memory_seq_pos_max(self._mem, s)) for s in (dst, src))
        if have != want:
            raise RuntimeError(f"llama.cpp copied sequence {src} (up to position {want}) to {dst} only up to {have}")

    def seq_drop(self, seq: int) -> None:
        if not L.llama_memory_seq_rm(self._mem, seq, -1, -1):  # removing a whole sequence never fails in llama.cpp
            raise RuntimeError(f"llama.cpp could not drop sequence {seq}")

    # ---- decoding ----

    def _run(self, batch: L.llama_batch, n: int, positions: list[int], seqs: list[int], logits: list[bool],
             sections: int = 1) -> None:
        """Decode the first n entries of `batch` at `positions`; `sections`: positions per entry (the same 1-D
        position in each section, section-major)."""
        batch.n_tokens = n
        pos = np.ctypeslib.as_array(batch.pos, shape=(sections * n,))
        pos[:] = np.tile(np.asarray(positions[:n], dtype=pos.dtype), sections)
        for i in range(n):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seqs[i]
            batch.logits[i] = 1 if logits[i] else 0
        rc = L.llama_decode(self.ptr, batch)
        if rc == 1:
            raise ContextFull(f"the KV cache of {self.n_ctx} cells has no room for {n} more positions")
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) at position {positions[0]}")

    def decode_tokens(self, tokens: list[int], logits_last: bool = True) -> None:
        """Tokens at the end of sequence 0."""
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            for i, t in enumerate(chunk):
                self._tok.token[i] = t
            n = len(chunk)
            last = logits_last and start + n == len(tokens)
            self._run(self._tok, n, list(range(self.n_past, self.n_past + n)), [0] * n,
                      [last and i == n - 1 for i in range(n)])
            self.n_past += n

    def decode_embeddings(self, embd: np.ndarray, logits_last: bool = False) -> None:
        """Embedding rows (float32 [n, n_embd]) at the end of sequence 0."""
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        if embd.ndim != 2 or embd.shape[1] != self.model.n_embd:
            raise ValueError(f"embeddings of shape {embd.shape} do not fit a model of width {self.model.n_embd}")
        dst = np.ctypeslib.as_array(self._emb.embd, shape=(self.n_batch * self.model.n_embd,))
        for start in range(0, embd.shape[0], self.n_batch):
            chunk = embd[start : start + self.n_batch]
            dst[: chunk.size] = chunk.reshape(-1)
            n = chunk.shape[0]
            last = logits_last and start + n == embd.shape[0]
            self._run(self._emb, n, list(range(self.n_past, self.n_past + n)), [0] * n,
                      [last and i == n - 1 for i in range(n)], self.model.pos_per_embd)
            self.n_past += n

    def decode_side_by_side(self, tokens: list[int], seqs: list[int], pos: int) -> np.ndarray:
        """One token for each of several sequences, all at position pos: float32 [len(tokens), n_vocab] logits."""
        n = len(tokens)
        for i, t in enumerate(tokens):
            self._tok.token[i] = t
        self._run(self._tok, n, [pos] * n, seqs, [True] * n)
        return np.stack([self.logits(i) for i in range(n)])

    def suppress(self, tokens: set[int]) -> None:
        """Make `tokens` impossible for the next sample (in the context's own logits)."""
        ptr = L.llama_get_logits_ith(self.ptr, -1)
        view = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))
        view[list(tokens)] = -np.inf

    def logits(self, i: int = -1) -> np.ndarray:
        """float32 [n_vocab] of the i-th output of the last decode (-1: the last)."""
        ptr = L.llama_get_logits_ith(self.ptr, i)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters: prompt (batched) and generation (one token) decodes and their times."""
        p = L.llama_perf_context(self.ptr)
        return {"prompt_tokens": p.n_p_eval, "prompt_ms": p.t_p_eval_ms, "tokens": p.n_eval, "decode_ms": p.t_eval_ms}

    def close(self) -> None:
        if getattr(self, "ptr", None):
            L.llama_batch_free(self._tok)
            L.llama_batch_free(self._emb)
            L.llama_free(self.ptr)
            self.ptr = None
            self._pool = None  # after the context that computed on it
            self.model._detach()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
