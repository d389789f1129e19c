"""MiniCPMV: the runtime's façade (the original `modeling_minicpmv.py` `chat()`). It loads the two files and
delegates along the data path: messages (messages.py) -> images and video frames encoded (visuals.py) -> prompt
positions (prompt.py) -> KV state with prefix reuse (kv.py) -> tokens by sampling or beam search (generate.py) ->
text as the original decodes it (text.py).

Threads: one MiniCPMV may be shared. Calls are serialised: a chat() holds the object until it returns, a stream
from its creation until it is exhausted, closed or dropped; a chat() from another thread meanwhile waits, one from
the thread that holds an open stream raises BusyError (it would wait for itself). After close(), every call raises
ClosedError.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from . import logs
from .cache import EmbeddingCache, file_identity
from .cpus import available_cpus
from .encoder import VisionEncoder
from .errors import BusyError, ClosedError
from .families import Family, family_of_files, llm_architectures
from .generate import Progress, beam_search, sample
from .kv import KVState
from .llama_adapter import ContextParams, LlamaModel, LlamaSession
from .messages import MessageError, normalize
from .model_check import ModelFileError, check_llm_file
from .params import BEAM_DEFAULTS, SAMPLING_DEFAULTS, GenerationParams, PromptParams, check_bool, check_int
from .prompt import build_prompt, check_template, min_text_tokens
from .text import AnswerText
from .video import Video
from .visuals import EncodeStats, Visuals

__all__ = ["ChatStats", "ChatStream", "MessageError", "MiniCPMV"]


@dataclass
class ChatStats(EncodeStats):
    """What a chat() did, and how long each stage took (the images' part is visuals.EncodeStats)."""

    reused_tokens: int = 0  # prompt positions whose KV cache entries were kept from the previous call
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)  # generated ids (stop token excluded)
    decode_ms: float = 0.0
    ttft_ms: float = 0.0  # from the call to the first chosen token (images, prompt, prefill, first sample)
    token_times: list[float] = field(default_factory=list)  # perf_counter() when each token was chosen
    first_logits: np.ndarray | None = None  # the logits the first generated token was chosen from
    finish_reason: str | None = None  # "stop": a stop token; "length": max_new_tokens or the end of the context
    text: str = ""  # the answer as the original chat() returns it (set when generation ends)

    def summary(self) -> str:
        pf = self.prompt_tokens / max(self.prefill_ms, 1e-9) * 1e3
        dc = len(self.tokens) / max(self.decode_ms, 1e-9) * 1e3
        return (f"{self.images} image(s), {self.pieces} pieces encoded in {self.encode_ms:.0f} ms "
                f"({self.pieces - self.pieces_encoded} cached); prefill {self.prompt_tokens} tokens "
                f"({self.reused_tokens} reused) in {self.prefill_ms:.0f} ms ({pf:.1f} tok/s); decode "
                f"{len(self.tokens)} tokens in {self.decode_ms:.0f} ms ({dc:.1f} tok/s); "
                f"finish: {self.finish_reason}")


class _Gate:
    """Who holds a MiniCPMV: one chat() call, or one open stream (weakly: a dropped stream releases it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holder: int | None = None  # thread ident
        self._stream: weakref.ref[ChatStream] | None = None

    @property
    def stream(self) -> ChatStream | None:
        ref = self._stream
        return ref() if ref is not None else None

    @stream.setter
    def stream(self, s: ChatStream | None) -> None:
        self._stream = weakref.ref(s) if s is not None else None

    def enter(self) -> None:
        if self.stream is not None and self.holder == threading.get_ident():
            raise BusyError("this thread holds an open stream of this MiniCPMV: read it to the end or close() it "
                            "before the next chat()")
        self._lock.acquire()
        self.holder = threading.get_ident()

    def leave(self) -> None:
        self.holder, self.stream = None, None
        self._lock.release()


class ChatStream:
    """The answer while it is generated: iterate for text pieces (never a split character). It holds its MiniCPMV
    until exhausted, closed or dropped; `stats` fills in as it goes (finish_reason once it ends)."""

    def __init__(self, pieces: Iterator[str], gate: _Gate, stats: ChatStats) -> None:
        self._pieces = pieces
        self._gate = gate
        self._lock = threading.RLock()
        self._open = True
        self.stats = stats
        gate.stream = self

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        with self._lock:
            if not self._open:
                raise StopIteration
            try:
                return next(self._pieces)
            except BaseException:
                self._end()
                raise

    def close(self) -> None:
        """Stop generating now and release the model."""
        with self._lock:
            if self._open:
                try:
                    self._pieces.close()  # type: ignore[attr-defined]
                finally:
                    self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._gate.leave()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class MiniCPMV:
    """A MiniCPM-V model: the language model GGUF through llama.cpp, the mmproj through our encoder."""

    def __init__(self, model_path: str | os.PathLike[str], mmproj_path: str | os.PathLike[str], *,
                 n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512, kv_type: str = "f16",
                 flash_attn: bool | None = None, device: str = "cpu", n_gpu_layers: int = 0,
                 cache: EmbeddingCache | None = None, reuse_kv: bool = True, verbose: bool = False) -> None:
        """`cache`: where image embeddings are kept between calls (default: 512 MiB in memory; pass
        EmbeddingCache(max_bytes=0) to turn it off). `reuse_kv`: keep the KV cache of the common prefix of
        consecutive prompts (a multi-turn chat only prefills what changed). `n_gpu_layers`: language-model layers
        offloaded to the GPU llama.cpp was built for; `device`: the vision encoder's ("cpu", "auto" or a name).
        `verbose`: show llama.cpp's log lines (they go to the `minicpmv_edge` logger either way)."""
        self._closed = True
        self._gate = _Gate()
        check_int("n_ctx", n_ctx, 16)
        check_int("n_batch", n_batch, 1)
        check_int("n_gpu_layers", n_gpu_layers, -1)
        if kv_type not in ("f32", "f16", "q8_0"):
            raise ValueError(f"kv_type must be 'f32', 'f16' or 'q8_0', got {kv_type!r}")
        threads = available_cpus() if n_threads is None else check_int("n_threads", n_threads, 1)
        logs.set_verbose(check_bool("verbose", verbose))
        self.encoder = self.model = self.session = None  # type: ignore[assignment]
        try:
            self.encoder = VisionEncoder(mmproj_path, n_threads=threads, device=device)
            llm = check_llm_file(model_path, llm_architectures())
            self.family = family_of_files(self.encoder.projector, llm.arch, mmproj_path, model_path)
            if self.encoder.hidden != llm.n_embd:
                raise ValueError(f"{mmproj_path} outputs width {self.encoder.hidden} but {model_path} has n_embd "
                                 f"{llm.n_embd}: they are not the same model")
            missing = [t for t in self.family.layout_tokens if t not in llm.specials]
            if missing:
                raise ModelFileError(f"{model_path}: the vocabulary has no special token {missing[0]!r}, which "
                                     f"{self.family.display} prompts need")
            self.template = llm.chat_template or self.family.chat_template
            try:
                check_template(self.template, self.family)
            except MessageError as e:
                raise ModelFileError(f"{model_path}: tokenizer.chat_template does not render: {e}") from e
            self.model = LlamaModel(llm, n_gpu_layers=n_gpu_layers)
            self._ctx_params = ContextParams(n_ctx=n_ctx, n_batch=n_batch, n_threads=threads, kv_type=kv_type,
                                             flash_attn=flash_attn)
            self.session = LlamaSession(self.model, self._ctx_params)
            self.stop_ids = {self.model.token_id(t) for t in self.family.stop_tokens}
        except BaseException:
            self._free()
            raise
        self.n_threads = threads
        self.cache = cache if cache is not None else EmbeddingCache()
        self.visuals = Visuals(self.encoder, self.cache, file_identity(mmproj_path), threads, self.family)
        self.kv = KVState(self.session, reuse_kv, llm.embedding_scale)
        self.last = ChatStats()
        self._owner = True  # frees the model and the encoder on close (a slot() frees its own context only)
        self._origin: MiniCPMV | None = None  # a slot's origin: once it is closed, so is the slot
        self._closed = False

    def slot(self) -> MiniCPMV:
        """Another conversation on the same weights, for serving several at once: its own llama.cpp context, KV
        state and lock; the language model, the vision encoder and the embedding cache are shared (each is safe to
        use from several threads). Close slots before their origin; a slot of a closed origin raises ClosedError."""
        self._gate.enter()
        try:
            if self._closed:
                raise ClosedError("this MiniCPMV is closed")
            other = object.__new__(MiniCPMV)
            other.__dict__.update({k: v for k, v in vars(self).items()
                                   if k not in ("session", "kv", "last", "_gate")})
            other._gate = _Gate()
            other._owner = False
            other._origin = self
            other.session = LlamaSession(self.model, self._ctx_params)
            other.kv = KVState(other.session, self.kv.reuse, self.kv.embedding_scale)
            other.last = ChatStats()
            return other
        finally:
            self._gate.leave()

    # ---- chat ----

    def chat(self, msgs: list[dict], stream: bool = False, *, max_new_tokens: int | None = None,
             min_new_tokens: int = 0, sampling: bool = True, temperature: float | None = None,
             top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
             num_beams: int | None = None, seed: int | None = None, system_prompt: str = "",
             max_slice_nums: int | None = None, use_image_id: bool | None = None, skip_special_tokens: bool = False,
             parse_special: bool = False, progress: Callable[[int], None] | None = None) -> str | ChatStream:
        """Answer the conversation `msgs` with the original `model.chat()` keywords and defaults.

        `sampling=True` samples (temperature 0 = greedy; top_p, top_k, repetition_penalty, seed); `sampling=False`
        is the original's beam search (num_beams 3, repetition_penalty 1.2), not streamable; keywords of the other
        mode are ignored, as the original ignores them. Generation ends at a stop token, `max_new_tokens` (the
        model's default: 2048 for 2.6, 1024 for 2.5) or the end of the context (`last.finish_reason`). Special
        tokens the model writes (`<ref>`, `<box>`, ...) are in the text unless `skip_special_tokens`. Text typed
        in messages is plain text; `parse_special=True` turns special-token strings in it into control tokens, as
        the original tokenizer does. Returns the text (stripped, as the original), or with stream=True a
        ChatStream of text pieces."""
        check_bool("stream", stream)
        check_bool("sampling", sampling)
        if stream and not sampling:
            raise ValueError("stream=True needs sampling=True (the original chat() streams sampled answers only)")
        mode = SAMPLING_DEFAULTS if sampling else BEAM_DEFAULTS
        gp = GenerationParams(
            max_new_tokens=self.family.max_new_tokens if max_new_tokens is None else max_new_tokens,
            min_new_tokens=min_new_tokens, sampling=sampling,
            temperature=mode.get("temperature", 0.0) if temperature is None or not sampling else temperature,
            top_p=mode.get("top_p", 1.0) if top_p is None or not sampling else top_p,
            top_k=mode.get("top_k", 0) if top_k is None or not sampling else top_k,
            repetition_penalty=mode["repetition_penalty"] if repetition_penalty is None else repetition_penalty,
            num_beams=BEAM_DEFAULTS["num_beams"] if num_beams is None or sampling else num_beams,
            seed=secrets.randbits(32) if seed is None else seed, skip_special_tokens=skip_special_tokens)
        pp = PromptParams(system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                          parse_special=parse_special)
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        if isinstance(msgs, (list, tuple)) and len(msgs) > self.session.n_ctx:
            raise MessageError(f"{len(msgs)} messages cannot fit in n_ctx {self.session.n_ctx} tokens")
        turns = normalize(msgs, pp.system_prompt)
        self._gate.enter()
        try:
            if self.closed:
                raise ClosedError("this MiniCPMV is closed")
            pieces = self._answer(turns, gp, pp, progress)
            stats = self.last
            if stream:
                return ChatStream(pieces, self._gate, stats)
            for _ in pieces:
                pass
            text = stats.text
        except BaseException:
            if self._gate.stream is None:
                self._gate.leave()
            raise
        self._gate.leave()
        return text

    def _answer(self, turns: list, gp: GenerationParams, pp: PromptParams,
                progress: Callable[[int], None] | None) -> Iterator[str]:
        """Encode the images and build the prompt now (bad input fails here); prefill and generate lazily."""
        v = self.family
        t_call = time.perf_counter()
        self.last = ChatStats()
        has_video = any(isinstance(p, Video) for t in turns for p in t.parts)
        if has_video and not v.video:
            raise MessageError(f"{v.display} has no video recipe (the original takes images only); pass the frames "
                               "you want as images")
        use_image_id = (v.use_image_id and not has_video) if pp.use_image_id is None else pp.use_image_id
        max_slices = pp.max_slice_nums or v.max_slice_nums
        media = self.visuals.plan(turns, max_slices)
        rows = media.pieces * self.encoder.query_num
        least = rows + min_text_tokens(turns, self.model.file.max_token_chars)
        if least > self.session.n_ctx:  # refused before any image is decoded or any text tokenized
            raise ValueError(f"the prompt is at least {least} tokens ({rows} of them image rows), more than n_ctx "
                             f"{self.session.n_ctx}")
        turns, encoded, es = self.visuals.encode(turns, max_slices, progress, media)
        prompt = build_prompt(self.template, turns, v, self.model, self.encoder.query_num, [e.grid for e in encoded],
                              use_image_id, pp.parse_special)
        stats = self.last = ChatStats(**vars(es), prompt_tokens=len(prompt))
        if len(prompt) > self.session.n_ctx:
            raise ValueError(f"the prompt is {len(prompt)} tokens ({prompt.image_rows} of them image rows), more "
                             f"than n_ctx {self.session.n_ctx}")
        return self._generate(prompt, encoded, gp, stats, t_call)

    def _generate(self, prompt, encoded, gp: GenerationParams, stats: ChatStats, t_call: float) -> Iterator[str]:
        t0 = time.perf_counter()
        stats.reused_tokens = self.kv.prefill(prompt, encoded)
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        text = AnswerText(self.model.piece, self.family, self.model.specials, self.model.file.pieces,
                          gp.skip_special_tokens)
        progress = Progress(token_times=stats.token_times)
        prefix = tuple(self.model.token_id(t) for t in self.family.penalty_history)
        t1 = time.perf_counter()
        try:
            if gp.sampling or gp.num_beams == 1:  # one beam is transformers' greedy search: temperature 0
                tokens = sample(self.kv, self.model, gp if gp.sampling else replace(gp, temperature=0.0), self.stop_ids,
                                progress, prefix)
            else:
                tokens = iter(beam_search(self.kv, gp, self.stop_ids, progress, prefix))
            for i, tok in enumerate(tokens):
                if i == 0:
                    stats.ttft_ms = (time.perf_counter() - t_call) * 1e3
                piece = text.push(tok)
                if piece:
                    yield piece
            tail = text.flush()
            if tail:
                yield tail
            stats.text = text.final
        finally:
            stats.tokens = progress.tokens
            stats.first_logits = progress.first_logits
            stats.finish_reason = progress.finish_reason
            stats.decode_ms = (time.perf_counter() - t1) * 1e3

    # ---- life cycle ----

    def _free(self) -> None:
        for part in (self.session, self.model, self.encoder) if getattr(self, "_owner", True) else (self.session,):
            if part is not None:
                part.close()

    def close(self) -> None:
        """Free the model, the context and the encoder now (an open stream of this thread is closed first; one
        of another thread is waited for). Idempotent."""
        if self._gate.holder == threading.get_ident():
            own = self._gate.stream  # a stream of another thread must stay droppable while we wait: no reference
            if own is not None:
                own.close()
            del own
        self._gate.enter()
        try:
            if not self._closed:
                self._closed = True
                self._free()
        finally:
            self._gate.leave()

    @property
    def version(self) -> Family:
        """The model family (the name of earlier releases)."""
        return self.family

    @property
    def closed(self) -> bool:
        return self._closed or (self._origin is not None and self._origin._closed)

    def __enter__(self) -> MiniCPMV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
