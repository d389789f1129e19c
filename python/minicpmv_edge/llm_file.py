"""The language-model GGUF, checked before llama.cpp reads it.

llama.cpp trusts a file's hyper-parameters: some bad values make it throw (a clean failed load), others reach a
GGML_ASSERT or divide by zero and kill the process. Every key llama.cpp uses to size or build the graph of the
architectures we run (`qwen2`, `llama`) is read here with ggml's own gguf parser and range-checked, so a damaged
file is a ValueError naming the file and the key. Tensor shapes are left to llama.cpp, which checks them itself.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ._native import _core

LLAMA_MAX_LAYERS = 512  # llama.cpp's hard limit on block_count (hparams arrays are sized by it)
# llama.cpp's token types (llama_token_type): strings of these kinds are matched as special tokens in text
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
_TOKEN_TYPES = range(0, 7)


class ModelFileError(ValueError):
    """A language-model GGUF this runtime will not hand to llama.cpp."""


@dataclass(frozen=True)
class LlmFile:
    path: str
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    chat_template: str | None
    specials: dict[str, int]  # special-token text -> id (control, user-defined and unknown tokens)
    embedding_scale: float  # llama.cpp multiplies every input row by it, embeddings given as rows included
    pieces: tuple[str, ...] = ()  # the token texts of a SentencePiece ("llama") vocabulary, for its legacy decode
    # the longest token text, in characters: no token stands for more characters of text than this (byte-level BPE
    # writes a byte as one character, SentencePiece a space as one), so text of n characters takes at least
    # n / max_token_chars tokens, known without tokenizing it
    max_token_chars: int = 1
    # SentencePiece: the normaliser puts a "▁" before each text run (llama.cpp's default when the key is missing)
    add_space_prefix: bool = False


def check_llm_file(path: str | os.PathLike[str], archs: tuple[str, ...]) -> LlmFile:
    """Parse and check the header of a language-model GGUF of one of `archs` (FileNotFoundError, ModelFileError)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{p}: file not found")
    try:
        info = _core.read_gguf_info(p)
    except ValueError as e:
        raise ModelFileError(str(e)) from e
    kv = dict(info.kv)

    def fail(what: str) -> ModelFileError:
        return ModelFileError(f"{p}: {what}")

    def get(key: str, kind: type | tuple[type, ...], required: bool = True) -> object:
        if key not in kv:
            if required:
                raise fail(f"missing key '{key}'")
            return None
        v = kv[key]
        if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
            raise fail(f"key '{key}' has a value of the wrong type ({type(v).__name__})")
        return v

    def integer(key: str, lo: int, hi: int, required: bool = True) -> int | None:
        v = get(key, int, required)
        if v is None:
            return None
        if not lo <= v <= hi:
            raise fail(f"key '{key}' = {v} is outside [{lo}, {hi}]")
        return int(v)

    def real(key: str, lo: float, hi: float, required: bool = True) -> float | None:
        v = get(key, (int, float), required)
        if v is None:
            return None
        if not (math.isfinite(v) and lo < v <= hi):
            raise fail(f"key '{key}' = {v} is outside ({lo}, {hi}]")
        return float(v)

    arch = get("general.architecture", str)
    if arch not in archs:
        raise fail(f"general.architecture is {arch!r}; this runtime runs {', '.join(archs)} language models")
    n_layer = integer(f"{arch}.block_count", 1, LLAMA_MAX_LAYERS)
    n_embd = integer(f"{arch}.embedding_length", 1, 1 << 16)
    integer(f"{arch}.feed_forward_length", 1, 1 << 20)
    integer(f"{arch}.context_length", 1, 1 << 24)
    n_head = integer(f"{arch}.attention.head_count", 1, 4096)
    if n_embd % n_head:
        raise fail(f"{arch}.embedding_length {n_embd} is not a multiple of {arch}.attention.head_count {n_head}")
    n_head_kv = integer(f"{arch}.attention.head_count_kv", 1, n_head, required=False) or n_head
    if n_head % n_head_kv:
        raise fail(f"{arch}.attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    head_dim = n_embd // n_head
    n_rot = integer(f"{arch}.rope.dimension_count", 1, 1 << 16, required=False)
    if n_rot is not None and n_rot != head_dim:
        raise fail(f"{arch}.rope.dimension_count is {n_rot}; the head size is {head_dim}")
    if head_dim % 2:
        raise fail(f"the head size {head_dim} is odd (RoPE rotates pairs)")
    real(f"{arch}.attention.layer_norm_rms_epsilon", 0.0, 1.0)
    real(f"{arch}.rope.freq_base", 0.0, 1e12, required=False)
    real(f"{arch}.rope.freq_scale", 0.0, 1e6, required=False)
    real(f"{arch}.rope.scaling.factor", 0.0, 1e6, required=False)
    embedding_scale = real(f"{arch}.embedding_scale", 0.0, 1e6, required=False) or 1.0
    real(f"{arch}.residual_scale", 0.0, 1e6, required=False)
    real(f"{arch}.logit_scale", 0.0, 1e6, required=False)

    model = get("tokenizer.ggml.model", str)
    if model not in ("gpt2", "llama"):
        raise fail(f"tokenizer.ggml.model is {model!r} (expected 'gpt2' or 'llama')")
    tokens = get("tokenizer.ggml.tokens", list)
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise fail("tokenizer.ggml.tokens must be a non-empty list of strings")
    n_vocab = len(tokens)
    if len(set(tokens)) != n_vocab:
        seen: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise fail(f"tokenizer.ggml.tokens holds {t!r} twice (ids {seen[t]} and {i})")
            seen[t] = i
    types = get("tokenizer.ggml.token_type", list, required=False)
    if types is not None and (len(types) != n_vocab or any(not isinstance(t, int) or t not in _TOKEN_TYPES
                                                           for t in types)):
        raise fail(f"tokenizer.ggml.token_type must hold {n_vocab} token types (0-6)")
    scores = get("tokenizer.ggml.scores", list, required=False)
    if scores is not None and (len(scores) != n_vocab or not all(math.isfinite(s) for s in scores)):
        raise fail(f"tokenizer.ggml.scores must hold {n_vocab} finite numbers")
    if model == "gpt2":
        merges = get("tokenizer.ggml.merges", list)
        if not all(isinstance(m, str) for m in merges):
            raise fail("tokenizer.ggml.merges must be a list of strings")
    for key in kv:
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            integer(key, 0, n_vocab - 1)
    for key, value in kv.items():  # everything else llama.cpp might size an array by
        if key.startswith(f"{arch}.") and isinstance(value, list) and len(value) not in (0, n_layer):
            raise fail(f"key '{key}' holds {len(value)} values for {n_layer} layers")

    space_prefix = get("tokenizer.ggml.add_space_prefix", bool, required=False)
    template = get("tokenizer.chat_template", str, required=False)
    specials = {}
    if types is not None:
        for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
            if kind in (_UNKNOWN, _CONTROL, _USER_DEFINED):
                specials.setdefault(text, i)
    return LlmFile(p, arch, n_vocab, n_embd, n_layer, template, specials, embedding_scale,
                   tuple(tokens) if model == "llama" else (), max(1, *map(len, tokens)),
                   model == "llama" if space_prefix is None else bool(space_prefix))
