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

from .encoder import VisionEncoder
from .llama_adapter import ContextParams, LlamaModel, LlamaSession, Sampler, SamplerParams
from .prompt import MessageError, Turn, expand, image_placeholder, images_of, normalize, render_template
from .slicer import SlicedImage
from .versions import VERSIONS, UnsupportedVersionError

__all__ = ["ChatStats", "MessageError", "MiniCPMV"]


@dataclass
class ChatStats:
    """What the last chat() did, and how long each stage took."""

    images: int = 0
    pieces: int = 0
    encode_ms: float = 0.0
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)  # generated ids (stop token excluded)
    decode_ms: float = 0.0
    first_logits: np.ndarray | None = None  # the logits the first generated token was chosen from

    def summary(self) -> str:
        pf = self.prompt_tokens / max(self.prefill_ms, 1e-9) * 1e3
        dc = len(self.tokens) / max(self.decode_ms, 1e-9) * 1e3
        return (f"{self.images} image(s), {self.pieces} pieces encoded in {self.encode_ms:.0f} ms; prefill "
                f"{self.prompt_tokens} tokens in {self.prefill_ms:.0f} ms ({pf:.1f} tok/s); decode "
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
                 verbose: bool = False) -> None:
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
        self.last = ChatStats()

    # ---- prompt ----

    def _prompt(self, turns: list[Turn], sliced: list[SlicedImage], use_image_id: bool) -> list[int]:
        q = self.encoder.query_num
        text = render_template(self.template, turns, self.bos, self.version.eos_token)
        text = expand(text, [image_placeholder(self.version, q, s.grid, i, use_image_id)
                             for i, s in enumerate(sliced)])
        ids = self.model.tokenize(text, add_special=False, parse_special=True)
        n_slots = sum(1 for t in ids if t == self.unk_id)
        want = q * sum(len(s.pieces_u8) for s in sliced)
        if n_slots != want:
            raise MessageError(f"the prompt has {n_slots} image slots for {want} image tokens "
                               "(does a message contain the literal text '<unk>'?)")
        return ids

    def encode_images(self, images: list, max_slice_nums: int,
                      progress: Callable[[int], None] | None = None) -> tuple[list[SlicedImage], np.ndarray]:
        sliced = [self.encoder.slice(im, max_slice_nums, self.n_threads) for im in images]
        embs = []
        for s in sliced:
            embs.append(self.encoder.encode(s))
            if progress:
                progress(len(s.pieces_u8))
        e = self.encoder.hidden
        return sliced, np.concatenate(embs).reshape(-1, e) if embs else np.zeros((0, e), np.float32)

    def _prefill(self, ids: list[int], emb: np.ndarray) -> None:
        """Text runs as tokens, `<unk>` runs as the next rows of `emb`; logits for the last position."""
        self.session.clear()
        row, i, n = 0, 0, len(ids)
        while i < n:
            j = i
            is_img = ids[i] == self.unk_id
            while j < n and (ids[j] == self.unk_id) == is_img:
                j += 1
            last = j == n
            if is_img:
                self.session.decode_embeddings(emb[row : row + j - i], logits_last=last)
                row += j - i
            else:
                self.session.decode_tokens(ids[i:j], logits_last=last)
            i = j

    # ---- chat ----

    def chat(self, msgs: list[dict], stream: bool = False, *, max_new_tokens: int | None = None,
             temperature: float = 0.7, top_p: float = 0.8, top_k: int = 100, repetition_penalty: float = 1.05,
             seed: int | None = None, system_prompt: str = "", max_slice_nums: int | None = None,
             use_image_id: bool | None = None,
             progress: Callable[[int], None] | None = None) -> str | Iterator[str]:
        """Answer the conversation `msgs`, with the original `model.chat()` keywords (temperature 0 = greedy).
        Returns the text, or with stream=True an iterator of text pieces (never a split UTF-8 character)."""
        it = self._generate(msgs, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            top_k=top_k, repetition_penalty=repetition_penalty, seed=seed,
                            system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                            progress=progress)
        if stream:
            return it
        return "".join(it).strip()

    def _generate(self, msgs: list[dict], *, max_new_tokens: int | None, temperature: float, top_p: float,
                  top_k: int, repetition_penalty: float, seed: int | None, system_prompt: str,
                  max_slice_nums: int | None, use_image_id: bool | None,
                  progress: Callable[[int], None] | None) -> Iterator[str]:
        v = self.version
        n_new = v.max_new_tokens if max_new_tokens is None else max_new_tokens
        if n_new < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {n_new}")
        turns = normalize(msgs, system_prompt)
        stats = self.last = ChatStats()
        t0 = time.perf_counter()
        images = images_of(turns)
        sliced, emb = self.encode_images(images, max_slice_nums or v.max_slice_nums, progress)
        stats.images, stats.pieces = len(images), sum(len(s.pieces_u8) for s in sliced)
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        ids = self._prompt(turns, sliced, v.use_image_id if use_image_id is None else use_image_id)
        stats.prompt_tokens = len(ids)
        if len(ids) + n_new > self.session.n_ctx:
            raise ValueError(f"the prompt is {len(ids)} tokens and max_new_tokens {n_new}: {len(ids) + n_new} is "
                             f"more than n_ctx {self.session.n_ctx}")
        return self._stream(ids, emb, n_new, SamplerParams(
            temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty,
            seed=secrets.randbits(32) if seed is None else seed, penalty_window=n_new), stats)

    def _stream(self, ids: list[int], emb: np.ndarray, n_new: int, sp: SamplerParams,
                stats: ChatStats) -> Iterator[str]:
        t0 = time.perf_counter()
        self._prefill(ids, emb)
        stats.prefill_ms = (time.perf_counter() - t0) * 1e3
        sampler = Sampler(self.model, sp)
        utf8 = Utf8Stream()
        t1 = time.perf_counter()
        try:
            for step in range(n_new):
                if step == 0:
                    stats.first_logits = self.session.logits()
                tok = sampler.sample(self.session.ptr)
                if tok in self.stop_ids or self.model.is_eog(tok):
                    break
                stats.tokens.append(tok)
                text = utf8.push(self.model.piece(tok))
                if step + 1 < n_new:
                    self.session.decode_tokens([tok])
                stats.decode_ms = (time.perf_counter() - t1) * 1e3
                if text:
                    yield text
            tail = utf8.flush()
            if tail:
                yield tail
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
