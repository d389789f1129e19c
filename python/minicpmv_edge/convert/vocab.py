"""A checkpoint's vocabulary as llama.cpp's `tokenizer.ggml.*` keys (`Family.tokenizer` says which kind).

"bpe": the byte-level BPE of `tokenizer.json` (vocabulary, merges, added tokens), read directly with no tokenizer
class (MiniCPM-V ships its tokenizer as remote code). "spm": the SentencePiece `tokenizer.model`, read with the
sentencepiece package's model description (pieces, scores, types, the normaliser's `add_dummy_prefix`, which
llama.cpp's converter leaves out and then assumes true), then the added tokens of `tokenizer_config.json`. The
chat template and BOS handling come from `tokenizer_config.json`, or for a family whose chat() builds its prompt in
code, from its data row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from ..families import Family
from .safetensors_io import CheckpointError, load_json

# llama.cpp token types (the same numbers as SentencePiece's piece types)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPM_TYPES = (_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE)


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]  # BPE only
    ids: dict[str, int]  # token text -> id, added tokens included
    chat_template: str
    add_bos: bool
    scores: list[float] | None = None  # SentencePiece only
    add_space_prefix: bool = False  # SentencePiece: the normaliser's add_dummy_prefix (a "▁" before each text run)


def read_vocab(folder: Path, family: Family, vocab_size: int) -> Vocab:
    if family.tokenizer == "spm":
        return _read_spm(folder, family, vocab_size)
    return _read_bpe(folder, family, vocab_size)


def _added_tokens(tc: dict, where: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of tokenizer_config.json's added_tokens_decoder."""
    out = []
    for key, t in (tc.get("added_tokens_decoder") or {}).items():
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or not str(key).isdigit():
            raise CheckpointError(f"{where}: malformed added_tokens_decoder entry {key!r}")
        out.append((int(key), t["content"], bool(t.get("special", False))))
    return out


def _read_spm(folder: Path, family: Family, vocab_size: int) -> Vocab:
    """Pieces, scores and types as the model file holds them (SentencePiece's piece types are llama.cpp's token
    types: its user-defined pieces stay whole tokens in llama.cpp too), and the normaliser's `add_dummy_prefix`."""
    import sentencepiece as spm
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    model = folder / "tokenizer.model"
    tc_path = folder / "tokenizer_config.json"
    tc = load_json(tc_path)
    if not model.exists():
        raise CheckpointError(f"{model}: file not found")
    data = model.read_bytes()
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        spm.SentencePieceProcessor().LoadFromSerializedProto(data)  # the library's own checks first
        proto.ParseFromString(data)
    except (RuntimeError, OSError, DecodeError) as e:
        raise CheckpointError(f"{model}: not a SentencePiece model ({e})") from e
    n = len(proto.pieces)
    if n > vocab_size:
        raise CheckpointError(f"{model}: {n} pieces, more than config.json's vocab_size {vocab_size}")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [_USER_DEFINED] * vocab_size
    scores = [-1000.0] * vocab_size
    for i, piece in enumerate(proto.pieces):
        tokens[i] = piece.piece
        scores[i] = piece.score
        if piece.type not in _SPM_TYPES:
            raise CheckpointError(f"{model}: piece {i} ({piece.piece!r}) has unknown type {piece.type}")
        types[i] = piece.type
    for i, text, special in _added_tokens(tc, tc_path):
        if i >= vocab_size:
            raise CheckpointError(f"{tc_path}: added token {text!r} has id {i}, beyond vocab_size {vocab_size}")
        tokens[i] = text
        types[i] = _CONTROL if special else _USER_DEFINED
    ids = {t: i for i, t in enumerate(tokens)}
    missing = [t for t in (family.bos_token, family.eos_token, *family.stop_tokens, *family.special_tokens)
               if t not in ids]
    if missing:
        raise CheckpointError(f"{model}: {family.display} token {missing[0]!r} is not in the vocabulary")
    return Vocab(tokens, types, [], ids, family.chat_template, bool(tc.get("add_bos_token", family.add_bos)),
                 scores, proto.normalizer_spec.add_dummy_prefix)


def _read_bpe(folder: Path, family: Family, vocab_size: int) -> Vocab:
    tj = load_json(folder / "tokenizer.json")
    tc = load_json(folder / "tokenizer_config.json")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
        raise CheckpointError(f"{folder / 'tokenizer.json'}: expected a BPE model with 'vocab' and 'merges'")
    vocab: dict[str, int] = dict(model["vocab"])
    special: set[str] = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = int(t["id"])  # added tokens may reuse an id inside the BPE range (<unk>)
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
    jinja = folder / "chat_template.jinja"  # transformers 5 keeps the template in a file of its own
    if not isinstance(template, str) and jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    if not isinstance(template, str):
        raise CheckpointError(f"{folder / 'tokenizer_config.json'}: no 'chat_template' string (and no "
                              "chat_template.jinja)")
    missing = [t for t in (family.bos_token, family.eos_token, *family.stop_tokens) if t not in vocab]
    if missing:
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: {family.display} token {missing[0]!r} is not in the vocabulary")
    return Vocab(tokens, types, merges, vocab, template, bool(tc.get("add_bos_token", family.add_bos)))


def write_vocab(w: gguf.GGUFWriter, v: Vocab, family: Family) -> None:
    if family.tokenizer == "spm":
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(v.tokens)
        w.add_token_scores(v.scores or [0.0] * len(v.tokens))
        w.add_token_types(v.types)
        w.add_unk_token_id(v.ids["<unk>"])
        # the model file's own normaliser flag (llama.cpp assumes true without the key; MiniCPM's file says false)
        w.add_add_space_prefix(v.add_space_prefix)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(family.tokenizer_pre)
        w.add_token_list(v.tokens)
        w.add_token_types(v.types)
        w.add_token_merges(v.merges)
    w.add_bos_token_id(v.ids[family.bos_token])
    w.add_eos_token_id(v.ids[family.eos_token])
    if family.pad_token in v.ids:
        w.add_pad_token_id(v.ids[family.pad_token])
    w.add_add_bos_token(v.add_bos)
    w.add_chat_template(v.chat_template)
