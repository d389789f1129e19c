"""The chat runtime: conversations with images in, streamed text out (shared/spec/hf-reference.md §6, §8).

Images are sliced and encoded by our vision encoder; the prompt is the model's chat template with each image's
placeholder; llama.cpp decodes text tokens and, at every `<unk>` run, the image embeddings in their place.
"""

from __future__ import annotations

import codecs
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .cache import EmbeddingCache, Encoded, file_identity, pixels_key
from .encoder import VisionEncoder
from .image import load_rgb
from .llama_adapter import ContextParams, LlamaModel, LlamaSession, Sampler, SamplerParams
from .prompt import MessageError, Turn, expand, image_placeholder, normalize, render_template
from .versions import VERSIONS, UnsupportedVersionError
from .video import Video, max_slices_for, sampled_frames

__all__ = ["ChatStats", "MessageError", "MiniCPMV"]


@dataclass
class ChatStats:
    """What the last chat() did, and how long each stage took."""

    images: int = 0  # images and video frames in the prompt
    pieces: int = 0
    pieces_encoded: int = 0  # pieces that went through the vision encoder (the rest came from the cache)
    encode_ms: float = 0.0
    reused_tokens: int = 0  # prompt positions whose KV cache entries were kept from the previous call
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)  # generated ids (stop token excluded)
    decode_ms: float = 0.0
    ttft_ms: float = 0.0  # from the call to the first sampled token (images, prompt, prefill, first sample)
    token_times: list[float] = field(default_factory=list)  # perf_counter() when each token was sampled
    first_logits: np.ndarray | None = None  # the logits the first generated token was chosen from

    def summary(self) -> str:
        pf = self.prompt_tokens / max(self.prefill_ms, 1e-9) * 1e3
        dc = len(self.tokens) / max(self.decode_ms, 1e-9) * 1e3
        return (f"{self.images} image(s), {self.pieces} pieces encoded in {self.encode_ms:.0f} ms "
                f"({self.pieces - self.pieces_encoded} cached); prefill {self.prompt_tokens} tokens "
                f"({self.reused_tokens} reused) in {self.prefill_ms:.0f} ms ({pf:.1f} tok/s); decode "
                f"{len(self.tokens)} tokens in {self.decode_ms:.0f} ms ({dc:.1f} tok/s)")


class Utf8Stream:
    """Token bytes in, whole characters out: a character split over several tokens is held back until complete;
    bytes that can never be valid UTF-8 become U+FFFD."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._dec.decode(data)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


class MiniCPMV:
    """A MiniCPM-V model: the language model GGUF through llama.cpp, the mmproj through our encoder."""

    def __init__(self, model_path: str | os.PathLike[str], mmproj_path: str | os.PathLike[str], *,
                 n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512, kv_type: str = "f16",
                 flash_attn: bool | None = None, device: str = "cpu", n_gpu_layers: int = 0,
                 cache: EmbeddingCache | None = None, reuse_kv: bool = True, verbose: bool = False) -> None:
        """`cache`: where image embeddings are kept between calls (default: 512 MiB in memory; pass
        EmbeddingCache(max_bytes=0) to turn it off). `reuse_kv`: keep the KV cache of the common prefix of
        consecutive prompts (a multi-turn chat only prefills what changed)."""
        threads = n_threads or (os.cpu_count() or 1)
        self.encoder = VisionEncoder(mmproj_path, n_threads=threads, device=device)
        proj = self.encoder.projector
        if proj.chat is None:
            raise UnsupportedVersionError(f"{mmproj_path}: {proj.model} is supported by the encoder only, not chat")
        self.version = VERSIONS[proj.chat]
        self.model = LlamaModel(model_path, n_gpu_layers=n_gpu_layers, verbose=verbose)
        arch = self.model.meta("general.architecture")
        if arch != self.version.llm_arch:
            raise ValueError(f"{model_path}: architecture {arch!r} does not go with {mmproj_path} "
                             f"({self.version.display} needs {self.version.llm_arch!r})")
        if self.encoder.hidden != self.model.n_embd:
            raise ValueError(f"{mmproj_path} outputs width {self.encoder.hidden} but {model_path} has n_embd "
                             f"{self.model.n_embd}: they are not the same model")
        self.template = self.model.meta("tokenizer.chat_template") or self.version.chat_template
        self.unk_id = self.model.token_id("<unk>")
        self.stop_ids = {self.model.token_id(t) for t in self.version.stop_tokens}
        self.bos = self.version.bos_token
        self.session = LlamaSession(self.model, ContextParams(n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
                                                              kv_type=kv_type, flash_attn=flash_attn))
        self.n_threads = threads
        self.cache = cache if cache is not None else EmbeddingCache()
        self.model_id = file_identity(mmproj_path)
        self.reuse_kv = reuse_kv
        self._kv_items: list[object] = []  # what the KV cache holds: token ids, or (image key, row) per image row
        self.last = ChatStats()

    # ---- prompt ----

    def _prompt(self, turns: list[Turn], encoded: list[Encoded], use_image_id: bool) -> list[int]:
        q = self.encoder.query_num
        text = render_template(self.template, turns, self.bos, self.version.eos_token)
        text = expand(text, [image_placeholder(self.version, q, e.grid, i, use_image_id)
                             for i, e in enumerate(encoded)])
        ids = self.model.tokenize(text, add_special=False, parse_special=True)
        n_slots = sum(1 for t in ids if t == self.unk_id)
        want = q * sum(e.n_pieces for e in encoded)
        if n_slots != want:
            raise MessageError(f"the prompt has {n_slots} image slots for {want} image tokens "
                               "(does a message contain the literal text '<unk>'?)")
        return ids

    def _encode_one(self, rgb: np.ndarray, max_slices: int, stats: ChatStats,
                    progress: Callable[[int], None] | None) -> Encoded:
        key = pixels_key(rgb, max_slices, self.model_id)
        hit = self.cache.get(key)
        if hit is None:
            sliced = self.encoder.slice(rgb, max_slices, self.n_threads)
            emb = self.encoder.encode(sliced).reshape(-1, self.encoder.hidden)
            hit = Encoded(key, sliced.grid, len(sliced.pieces_u8), emb)
            self.cache.put(hit)
            stats.pieces_encoded += hit.n_pieces
        if progress:
            progress(hit.n_pieces)
        return hit

    def _encode_visuals(self, turns: list[Turn], max_slices: int, stats: ChatStats,
                        progress: Callable[[int], None] | None) -> tuple[list[Turn], list[Encoded]]:
        """Encode every image and video frame in prompt order; a video becomes its sampled frames in place."""
        out_turns, encoded = [], []
        for t in turns:
            parts: list = []
            for p in t.parts:
                if isinstance(p, str):
                    parts.append(p)
                elif isinstance(p, Video):
                    n, frames = sampled_frames(p.path)
                    for frame in frames:  # decoded one at a time, encoded, then dropped
                        encoded.append(self._encode_one(frame, max_slices_for(n), stats, progress))
                        parts.append(p)  # one image tag per frame in the template
                else:
                    encoded.append(self._encode_one(load_rgb(p, self.encoder.slice_config.max_pixels), max_slices,
                                                    stats, progress))
                    parts.append(p)
            out_turns.append(Turn(t.role, parts))
        return out_turns, encoded

    def _prefill(self, ids: list[int], encoded: list[Encoded], stats: ChatStats) -> None:
        """Text runs as tokens, `<unk>` runs as the next image rows; the KV cache of the longest prefix shared with
        the previous call is kept (at least the last position is decoded again, for its logits)."""
        q_rows = [(e.key, r) for e in encoded for r in range(e.emb.shape[0])]
        rows = np.concatenate([e.emb for e in encoded]) if encoded else np.zeros((0, self.model.n_embd), np.float32)
        items: list[object] = []
        k = 0
        for t in ids:
            if t == self.unk_id:
                items.append(q_rows[k])
                k += 1
            else:
                items.append(t)
        keep = 0
        if self.reuse_kv:
            old = self._kv_items[: self.session.n_past]
            while keep < min(len(old), len(items) - 1) and old[keep] == items[keep]:
                keep += 1
        if keep:
            self.session.truncate(keep)
        else:
            self.session.clear()
        stats.reused_tokens = keep
        row = sum(1 for t in ids[:keep] if t == self.unk_id)
        i, n = keep, len(ids)
        while i < n:
            j = i
            is_img = ids[i] == self.unk_id
            while j < n and (ids[j] == self.unk_id) == is_img:
                j += 1
            last = j == n
            if is_img:
                self.session.decode_embeddings(rows[row : row + j - i], logits_last=last)
                row += j - i
            else:
                self.session.decode_tokens(ids[i:j], logits_last=last)
            i = j
        self._kv_items = items

    # ---- chat ----

    def chat(self, msgs: list[dict], stream: bool = False, *, max_new_tokens: int | None = None,
             temperature: float = 0.7, top_p: float = 0.8, top_k: int = 100, repetition_penalty: float = 1.05,
             seed: int | None = None, system_prompt: str = "", max_slice_nums: int | None = None,
             use_image_id: bool | None = None, min_new_tokens: int = 0,
             progress: Callable[[int], None] | None = None) -> str | Iterator[str]:
        """Answer the conversation `msgs`, with the original `model.chat()` keywords (temperature 0 = greedy;
        min_new_tokens > 0 forbids the stop tokens before that many tokens).
        Returns the text, or with stream=True an iterator of text pieces (never a split UTF-8 character)."""
        it = self._generate(msgs, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty, seed=seed,
                            system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                            min_new_tokens=min_new_tokens, progress=progress)
        if stream:
            return it
        return "".join(it).strip()

    def _generate(self, msgs: list[dict], *, max_new_tokens: int | None, temperature: float, top_p: float,
                  top_k: int, repetition_penalty: float, seed: int | None, system_prompt: str,
                  max_slice_nums: int | None, use_image_id: bool | None, min_new_tokens: int,
                  progress: Callable[[int], None] | None) -> Iterator[str]:
        v = self.version
        n_new = v.max_new_tokens if max_new_tokens is None else max_new_tokens
        if n_new < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {n_new}")
        turns = normalize(msgs, system_prompt)
        stats = self.last = ChatStats()
        t0 = self._t_call = time.perf_counter()
        has_video = any(isinstance(p, Video) for t in turns for p in t.parts)
        if use_image_id is None:  # the original video recipe turns image ids off
            use_image_id = v.use_image_id and not has_video
        turns, encoded = self._encode_visuals(turns, max_slice_nums or v.max_slice_nums, stats, progress)
        stats.images, stats.pieces = len(encoded), sum(e.n_pieces for e in encoded)
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        ids = self._prompt(turns, encoded, use_image_id)
        stats.prompt_tokens = len(ids)
        if len(ids) + n_new > self.session.n_ctx:
            raise ValueError(f"the prompt is {len(ids)} tokens and max_new_tokens {n_new}: {len(ids) + n_new} is "
                             f"more than n_ctx {self.session.n_ctx}")
        return self._stream(ids, encoded, n_new, SamplerParams(
            temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty,
            seed=secrets.randbits(32) if seed is None else seed, penalty_window=n_new), min_new_tokens, stats)

    def _stream(self, ids: list[int], encoded: list[Encoded], n_new: int, sp: SamplerParams, n_min: int,
                stats: ChatStats) -> Iterator[str]:
        t0 = time.perf_counter()
        try:
            self._prefill(ids, encoded, stats)
        except BaseException:
            self._kv_items = []  # the KV cache is in an unknown state: start afresh next time
            raise
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        sampler = Sampler(self.model, sp)
        utf8 = Utf8Stream()
        t1 = time.perf_counter()
        try:
            for step in range(n_new):
                if step == 0:
                    stats.first_logits = self.session.logits()
                if step < n_min:  # the original's min_new_tokens: no stop before that many tokens
                    self.session.suppress(self.stop_ids)
                tok = sampler.sample(self.session.ptr)
                stats.token_times.append(time.perf_counter())
                if step == 0:
                    stats.ttft_ms = (stats.token_times[0] - self._t_call) * 1e3
                if tok in self.stop_ids or (step >= n_min and self.model.is_eog(tok)):
                    break
                stats.tokens.append(tok)
                text = utf8.push(self.model.piece(tok))
                if step + 1 < n_new:
                    self.session.decode_tokens([tok])
                    self._kv_items.append(tok)
                if text:
                    yield text
            tail = utf8.flush()
            if tail:
                yield tail
        except GeneratorExit:  # the caller stopped reading: the KV cache matches _kv_items, nothing to undo
            raise
        except BaseException:
            self._kv_items = []  # a decode failed or was interrupted midway: do not trust the KV cache
            raise
        finally:
            sampler.close()
            stats.decode_ms = (time.perf_counter() - t1) * 1e3

    def close(self) -> None:
        self.session.close()
        self.model.close()
        self.encoder.close()

    def __enter__(self) -> MiniCPMV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
