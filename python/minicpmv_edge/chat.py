"""MiniCPMV: the runtime's public face (the original `modeling_minicpmv.py` `chat()`): the weights (model.py) and
one conversation on them (session.py), with the original chat()'s keywords and defaults. `slot()` gives another
conversation on the same weights, for serving several at once.

Threads: one MiniCPMV may be shared. Calls are serialised: a chat() holds the object until it returns, a stream
from its creation until it is exhausted, closed or dropped; a chat() from another thread meanwhile waits, one from
the thread that holds an open stream raises BusyError (it would wait for itself). After close(), every call raises
ClosedError.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .cache import EmbeddingCache
from .chat_options import PromptParams, chat_params
from .encoder import VisionEncoder
from .errors import ClosedError
from .families import Family
from .llama_adapter import ContextParams
from .messages import MessageError, normalize
from .model import Model
from .session import Session
from .stats import ChatStats
from .stream import ChatStream

__all__ = ["ChatStats", "ChatStream", "MessageError", "MiniCPMV"]


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
        self.model: Model | None = None
        self.session: Session | None = None
        self._origin: MiniCPMV | None = None  # a slot's origin: it owns the model; once it is closed, so is the slot
        ContextParams(n_ctx=n_ctx, n_batch=n_batch, kv_type=kv_type, flash_attn=flash_attn)  # checked before loading
        self.model = Model(model_path, mmproj_path, n_threads=n_threads, device=device, n_gpu_layers=n_gpu_layers,
                           cache=cache, verbose=verbose)
        self._reuse_kv = reuse_kv
        self._ctx_params = ContextParams(n_ctx=n_ctx, n_batch=n_batch, n_threads=self.model.n_threads,
                                         kv_type=kv_type, flash_attn=flash_attn)
        try:
            self.session = Session(self.model, self._ctx_params, reuse_kv)
        except BaseException:
            self.model.close()
            raise

    @classmethod
    def from_pretrained(cls, repo: str, quant: str | None = None, *, mmproj: str | os.PathLike[str] | None = None,
                        revision: str | None = None, **kwargs: object) -> MiniCPMV:
        """A model named on the Hugging Face Hub, as `-hf` on the command line: 'OWNER/NAME' or 'OWNER/NAME:QUANT'
        (`quant` overrides the tag; default Q4_K_M as llama.cpp's). A GGUF repository gives that quantization's
        language model and its mmproj (`mmproj`: a local file instead); an original one is converted once. Files
        are downloaded through huggingface_hub (its cache, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE, tokens) and
        checked before loading; the other keywords are the constructor's."""
        from .hub import resolve

        files = resolve(repo, quant, mmproj=mmproj, revision=revision)
        return cls(files.model, files.mmproj, **kwargs)  # type: ignore[arg-type]

    def slot(self) -> MiniCPMV:
        """Another conversation on the same weights, for serving several at once: its own llama.cpp context, KV
        state and lock; the language model, the vision encoder and the embedding cache are shared (each is safe to
        use from several threads). Close slots before their origin; a slot of a closed origin raises ClosedError."""
        if self.closed:
            raise ClosedError("this MiniCPMV is closed")
        other = object.__new__(MiniCPMV)
        other.model, other._origin = self._weights, self
        other._reuse_kv, other._ctx_params = self._reuse_kv, self._ctx_params
        other.session = Session(self._weights, self._ctx_params, self._reuse_kv)
        return other

    @property
    def _weights(self) -> Model:
        if self.model is None:
            raise ClosedError("this MiniCPMV is closed")
        return self.model

    @property
    def _session(self) -> Session:
        if self.session is None:
            raise ClosedError("this MiniCPMV is closed")
        return self.session

    # ---- chat ----

    def chat(self, msgs: list[dict], stream: bool = False, *, max_new_tokens: int | None = None,
             min_new_tokens: int = 0, sampling: bool | None = None, temperature: float | None = None,
             top_p: float | None = None, top_k: int | None = None, repetition_penalty: float | None = None,
             num_beams: int | None = None, seed: int | None = None, system_prompt: str = "",
             max_slice_nums: int | None = None, use_image_id: bool | None = None,
             skip_special_tokens: bool | None = None, parse_special: bool = False, stop: Sequence[str] | str = (),
             progress: Callable[[int], None] | None = None, downsample_mode: str | None = None,
             enable_thinking: bool | None = None, temporal_ids: Sequence[Sequence[int]] | None = None
             ) -> str | ChatStream:
        """Answer the conversation `msgs` with the original `model.chat()` keywords and defaults.

        `sampling=True` samples (temperature 0 = greedy; top_p, top_k (0: off), repetition_penalty, seed);
        `sampling=False` is the original's beam search (num_beams 3, repetition_penalty 1.2), not streamable, or for a
        family without an original chat() (4.6: transformers' generate()) greedy decoding; a keyword the mode's
        original settings lack is ignored, as the original ignores it. Not given: the model's defaults (the
        checkpoint's generation_config.json where the GGUF carries it, else the family's original chat(): sampling,
        but beam search for 1.0), and sampling for a stream. Generation ends at a stop token, a `stop` string (the
        text ends before it), `max_new_tokens` (the family's default, e.g. 2048 or 1024) or the end of the context
        (`last.finish_reason`). Special tokens the model writes (`<ref>`, `<box>`, ...) are in the text unless
        `skip_special_tokens` (None: as the family's original decodes: 4.6 skips them, keeping its plain `<think>`
        tokens). Text typed in messages is plain text; `parse_special=True` turns special-token strings in it into
        control tokens, as the original tokenizer does. `downsample_mode` "16x" or "4x": image tokens per piece for
        an encoder that has the choice (4.6; None: the mmproj's default), a ValueError for the others.
        `enable_thinking`: passed to the chat template when given, or as the family's original chat() passes it (4.6
        thinks only when it is True; 4.5's always passes it, False by default, and prepends `<think>\n` to a
        thinking answer). `temporal_ids` (4.5, as its original chat()): the conversation's images are video frames,
        packed by consecutive groups, one integer time id each (the model card's encode_video gives them; a
        `Video(path)` part gets its recipe's own): each group is one placeholder of 64 rows per piece; the group
        lengths must add up to the number of images (ValueError otherwise), and a family without the temporal
        resampler refuses them (ValueError: its original chat() has no such argument). Returns the
        text (stripped, as the original), or with stream=True a ChatStream of text pieces."""
        if not isinstance(stream, bool):
            raise TypeError(f"stream must be True or False, not {type(stream).__name__}")
        session = self._session
        gp, pp = chat_params(self._weights.chat_defaults, max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens, sampling=sampling, stream=stream,
                             temperature=temperature, top_p=top_p, top_k=top_k,
                             repetition_penalty=repetition_penalty, num_beams=num_beams, seed=seed,
                             system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                             skip_special_tokens=skip_special_tokens, parse_special=parse_special, stop=stop,
                             downsample_mode=downsample_mode, enable_thinking=enable_thinking,
                             temporal_ids=temporal_ids)
        if isinstance(msgs, (list, tuple)) and len(msgs) > session.n_ctx:
            raise MessageError(f"{len(msgs)} messages cannot fit in n_ctx {session.n_ctx} tokens")
        turns = normalize(msgs, pp.system_prompt)
        return session.chat(turns, gp, pp, stream, progress)

    def prompt_ids(self, msgs: list[dict], *, system_prompt: str = "", max_slice_nums: int | None = None,
                   use_image_id: bool | None = None, parse_special: bool = False, downsample_mode: str | None = None,
                   enable_thinking: bool | None = None, temporal_ids: Sequence[Sequence[int]] | None = None
                   ) -> list[int]:
        """The token ids of the prompt chat() would build for `msgs` with these keywords, each image row as the
        placeholder token the original processor writes (2.6: `<unk>`, 4.6: `<|image_pad|>`): what the original's
        input_ids hold. Images are encoded (through the cache); nothing is decoded."""
        pp = PromptParams(system_prompt=system_prompt, max_slice_nums=max_slice_nums, use_image_id=use_image_id,
                          parse_special=parse_special, downsample_mode=downsample_mode,
                          enable_thinking=self._weights.chat_defaults.enable_thinking if enable_thinking is None
                          else enable_thinking, temporal_ids=temporal_ids)  # type: ignore[arg-type]
        return self._session.prompt_ids(normalize(msgs, pp.system_prompt), pp)

    # ---- the parts, for callers that need them ----

    @property
    def family(self) -> Family:
        return self._weights.family

    @property
    def version(self) -> Family:
        """The model family (the name of earlier releases)."""
        return self.family

    @property
    def encoder(self) -> VisionEncoder:
        enc = self._weights.encoder
        assert enc is not None
        return enc

    @property
    def cache(self) -> EmbeddingCache:
        return self._weights.cache

    @property
    def last(self) -> ChatStats:
        """The statistics of the latest call (a stream's fill in as it runs)."""
        return self._session.last

    # ---- life cycle ----

    def close(self) -> None:
        """Free the context, and (not a slot) the model and the encoder, now (an open stream of this thread is
        closed first; one of another thread is waited for). Idempotent."""
        if self.session is not None:
            self.session.close()
        if self.model is not None and self._origin is None:
            self.model.close()

    @property
    def closed(self) -> bool:
        return self.session is None or self.session.closed or self.model is None or self.model.closed

    def __enter__(self) -> MiniCPMV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
