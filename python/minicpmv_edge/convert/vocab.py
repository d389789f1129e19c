"""The byte-level BPE vocabulary of a checkpoint as llama.cpp's `tokenizer.ggml.*` keys.

Reads `tokenizer.json` (vocabulary, merges, added tokens) and `tokenizer_config.json` (chat template, BOS
handling) directly, with no tokenizer class: MiniCPM-V ships its tokenizer as remote code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from ..versions import ModelVersion
from .safetensors_io import CheckpointError, load_json

# llama.cpp token types
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    ids: dict[str, int]  # token text -> id, added tokens included
    chat_template: str
    add_bos: bool


def read_vocab(folder: Path, version: ModelVersion, vocab_size: int) -> Vocab:
    tj = load_json(folder / "tokenizer.json")
    tc = load_json(folder / "tokenizer_config.json")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
        raise CheckpointError(f"{folder / 'tokenizer.json'}: expected a BPE model with 'vocab' and 'merges'")
    vocab: dict[str, int] = dict(model["vocab"])
    special: set[str] = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = int(t["id"])  # added tokens may reuse an id inside the BPE range (2.6's <unk>)
        if t.get("special", False):
            special.add(t["content"])
    n = max(max(vocab.values()) + 1, vocab_size)
    if n != vocab_size:
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: tokenizer has ids up to {n - 1}, config.json vocab_size is {vocab_size}")
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [_USER_DEFINED] * n  # ids the tokenizer never produces stay unused pads
    for tok, i in vocab.items():
        tokens[i] = tok
        types[i] = _NORMAL
    for t in tj.get("added_tokens", []):
        types[int(t["id"])] = _CONTROL if t["content"] in special else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    template = tc.get("chat_template")
    if not isinstance(template, str):
        raise CheckpointError(f"{folder / 'tokenizer_config.json'}: no 'chat_template' string")
    missing = [t for t in (version.bos_token, version.eos_token, *version.stop_tokens) if t not in vocab]
    if missing:
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: {version.display} token {missing[0]!r} is not in the vocabulary")
    return Vocab(tokens, types, merges, vocab, template, bool(tc.get("add_bos_token", version.add_bos)))


def write_vocab(w: gguf.GGUFWriter, v: Vocab, version: ModelVersion) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(version.tokenizer_pre)
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    w.add_token_merges(v.merges)
    w.add_bos_token_id(v.ids[version.bos_token])
    w.add_eos_token_id(v.ids[version.eos_token])
    if version.pad_token in v.ids:
        w.add_pad_token_id(v.ids[version.pad_token])
    w.add_add_bos_token(v.add_bos)
    w.add_chat_template(v.chat_template)
