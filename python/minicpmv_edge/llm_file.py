"""The language-model GGUF, checked before llama.cpp reads it.

llama.cpp trusts a file's hyper-parameters: some bad values make it throw (a clean failed load), others reach a
GGML_ASSERT or divide by zero and kill the process. Every key llama.cpp uses to size or build the graph of the
architectures we run (`qwen2`, `llama`, `minicpm`, `qwen35`) is read here with ggml's own gguf parser and
range-checked, so a damaged file is a ValueError naming the file and the key. Tensor shapes are left to llama.cpp,
which checks them itself.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ._native import _core

LLAMA_MAX_LAYERS = 512  # llama.cpp's hard limit on block_count (hparams arrays are sized by it)
# llama.cpp's token types (llama_token_type): strings of these kinds are matched as special tokens in text
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
_TOKEN_TYPES = range(0, 7)
_ROPE_SECTIONS = 4  # llama.cpp's M-RoPE sections (t, h, w, e)
_RECURRENT_ARCHS = ("qwen35",)  # hybrid architectures we run: their ssm.* keys are required


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
    # the checkpoint's generation_config.json (minicpmv_edge.generation.*): do_sample, temperature, top_p, top_k,
    # repetition_penalty, where the converter wrote them; chat()'s defaults (chat_options.with_generation_config)
    generation: dict[str, float | bool] = field(default_factory=dict)


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
    n_head_kv = integer(f"{arch}.attention.head_count_kv", 1, n_head, required=False) or n_head
    if n_head % n_head_kv:
        raise fail(f"{arch}.attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    # the head size: its own keys where the file has them (qwen35: 256 with a 1024-wide model), else n_embd / n_head
    head_k = integer(f"{arch}.attention.key_length", 1, 1 << 16, required=False)
    head_v = integer(f"{arch}.attention.value_length", 1, 1 << 16, required=False)
    if head_k is None and n_embd % n_head:
        raise fail(f"{arch}.embedding_length {n_embd} is not a multiple of {arch}.attention.head_count {n_head}")
    head_dim = head_k or n_embd // n_head
    if head_v is not None and head_k is None:
        raise fail(f"{arch}.attention.value_length without {arch}.attention.key_length")
    # RoPE rotates the first n_rot dimensions of a head: all of them, or a part (qwen35: 64 of 256)
    n_rot = integer(f"{arch}.rope.dimension_count", 1, 1 << 16, required=False) or head_dim
    if n_rot > head_dim:
        raise fail(f"{arch}.rope.dimension_count is {n_rot}; the head size is only {head_dim}")
    if n_rot % 2:
        raise fail(f"RoPE would rotate {n_rot} dimensions, an odd number (it rotates pairs)")
    # M-RoPE's sections (t, h, w, e): ggml takes each rotated pair's section modulo their sum, and asserts that the
    # sum is at most the head size
    sections = get(f"{arch}.rope.dimension_sections", list, required=False)
    if sections is not None and (len(sections) != _ROPE_SECTIONS or any(
            isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 16 for v in sections)
            or not 0 < sum(sections) <= head_dim):
        raise fail(f"{arch}.rope.dimension_sections must be {_ROPE_SECTIONS} non-negative integers adding up to 1 .. "
                   f"{head_dim} (the head size)")
    _check_recurrent(arch, kv, integer, fail)
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
        if key.startswith(f"{arch}.") and isinstance(value, list) and len(value) not in (0, n_layer) \
                and key != f"{arch}.rope.dimension_sections":
            raise fail(f"key '{key}' holds {len(value)} values for {n_layer} layers")

    _warn_missing_rope_factors(p, arch, kv, {t.name for t in info.tensors})
    space_prefix = get("tokenizer.ggml.add_space_prefix", bool, required=False)
    template = get("tokenizer.chat_template", str, required=False)
    specials = {}
    if types is not None:
        for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
            if kind in (_UNKNOWN, _CONTROL, _USER_DEFINED):
                specials.setdefault(text, i)
    return LlmFile(p, arch, n_vocab, n_embd, n_layer, template, specials, embedding_scale,
                   tuple(tokens) if model == "llama" else (), max(1, *map(len, tokens)),
                   model == "llama" if space_prefix is None else bool(space_prefix), _generation(kv, fail))


# the prefix of the checkpoint's generation_config.json settings as our converter carries them
# (families/v4_6/convert.py write_generation_kv)
GENERATION_KEYS = "minicpmv_edge.generation."


def _generation(kv: dict, fail: Callable[[str], ModelFileError]) -> dict[str, float | bool]:
    """The file's generation settings, checked (chat()'s defaults where present)."""
    out: dict[str, float | bool] = {}
    for key, value in kv.items():
        if not key.startswith(GENERATION_KEYS):
            continue
        name = key[len(GENERATION_KEYS):]
        if name == "do_sample":
            if not isinstance(value, bool):
                raise fail(f"key '{key}' must be true or false")
            out[name] = value
            continue
        if name not in ("temperature", "top_p", "top_k", "repetition_penalty"):
            continue  # a setting this runtime does not use
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"key '{key}' must be a finite number")
        v = float(value)
        bad = {"temperature": v < 0, "top_p": not 0 < v <= 1, "top_k": v < 0 or v != int(v),
               "repetition_penalty": v <= 0}[name]
        if bad:
            raise fail(f"key '{key}' = {value} is out of range")
        out[name] = int(v) if name == "top_k" else v
    return out


def _check_recurrent(arch: str, kv: dict, integer: Callable[..., int | None],
                     fail: Callable[[str], ModelFileError]) -> None:
    """A hybrid model's linear-attention (GatedDeltaNet) sizes, which llama.cpp's qwen35 reads unchecked: its key
    and value heads share one head size (state_size), value heads are a multiple of key heads, and the inner size
    is their product."""
    if f"{arch}.ssm.state_size" not in kv and arch not in _RECURRENT_ARCHS:
        return
    integer(f"{arch}.ssm.conv_kernel", 1, 64)
    state = integer(f"{arch}.ssm.state_size", 1, 1 << 12)
    groups = integer(f"{arch}.ssm.group_count", 1, 1 << 12)
    heads = integer(f"{arch}.ssm.time_step_rank", 1, 1 << 16)
    inner = integer(f"{arch}.ssm.inner_size", 1, 1 << 24)
    assert state is not None and groups is not None and heads is not None
    if heads % groups:
        raise fail(f"{arch}.ssm.time_step_rank {heads} (value heads) is not a multiple of {arch}.ssm.group_count "
                   f"{groups} (key heads)")
    if inner != state * heads:
        raise fail(f"{arch}.ssm.inner_size is {inner}, not state_size x time_step_rank = {state * heads}")
    integer(f"{arch}.full_attention_interval", 1, 1 << 16, required=False)
    layers = kv.get(f"{arch}.attention.recurrent_layers")
    if layers is not None and (not isinstance(layers, list) or not all(isinstance(v, bool) for v in layers)):
        raise fail(f"key '{arch}.attention.recurrent_layers' must be a list of true / false, one per layer")


def _warn_missing_rope_factors(p: str, arch: str, kv: dict, tensors: set[str]) -> None:
    """A file that says its RoPE is LongRoPE but carries no factor tensors runs plain RoPE in llama.cpp (its loader
    reads only `rope_factors_long/short` then, not `rope_freqs`): llama.cpp's own converter writes such files (it has
    no LongRoPE branch for the `llama` architecture, e.g. for MiniCPM-V 4.0's language model). Loaded, with a
    warning."""
    if kv.get(f"{arch}.rope.scaling.type") != "longrope":
        return
    if tensors & {"rope_factors_long.weight", "rope_factors_short.weight"}:
        return
    logging.getLogger("minicpmv_edge").warning(
        "%s: says its RoPE is LongRoPE but holds no factors (rope_factors_long/short): llama.cpp runs "
        "plain RoPE, so answers differ from the original model's (llama.cpp's converter writes such files; convert "
        "the original checkpoint with `minicpmv-edge convert` to carry the factors)", p)
