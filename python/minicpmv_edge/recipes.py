"""Deterministic MiniCPM-V checkpoints in the original Hugging Face layout, for tests, the demo and benchmarks.

Each preset writes `config.json`, `generation_config.json`, `model.safetensors` (`vpm.` / `resampler.` / `llm.`
names and shapes of the original checkpoints, as the family's recipe says: HF SigLIP or timm names), the tokenizer
files and the family's config files. The tokenizer is trained here on a fixed corpus: a byte-level BPE with the real
model's pre-tokenizer split, or a SentencePiece model (the real file's settings and user-defined pieces), as the
family's tokenizer is, each with every special token of the original tokenizers as one token. Weights are seeded per
tensor name, so the files are identical on every machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .convert.safetensors_io import to_storage, write_safetensors
from .families import FAMILIES, PRESETS, Family, Preset

__all__ = ["PRESETS", "Preset", "write_checkpoint"]


_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A picture is worth a thousand words.",
    "What is in the image? Describe the scene in detail, including colours, objects and people.",
    "The image shows a red car parked next to a tall green tree on a sunny afternoon.",
    "图片里有什么？请详细描述这张图片。这是一只在草地上奔跑的小狗。",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "def main(argv: list[str]) -> int:\n    for i in range(10):\n        print(f\"{i}: {argv[i]}\")\n    return 0\n",
    "if (x == nullptr) { return -1; }  // guard\n\tstd::vector<int> v{1, 2, 3};\n",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1e-6 and dates like 2026-11-26.",
    "Emoji 😀 🎉 🚀 ❤️ 👍🏽 and symbols © ® ™ → ∞ ≤ ≥ µ.",
    "Line one\nLine two\n\nParagraph after a blank line.\r\nWindows line end.    Trailing spaces   \n",
    "Il était une fois une petite fille. Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "안녕하세요. こんにちは、世界。Привет, мир! مرحبا بالعالم",
    "<html><body><p class=\"x\">Hello</p></body></html> {\"key\": [1, 2, {\"nested\": true}]}",
]


def _train_spm(family: Family, vocab: int) -> tuple[bytes, dict[str, int]]:
    """Train a SentencePiece BPE model with the real file's settings (byte fallback, identity normalisation, split
    digits, its user-defined pieces and its dummy-prefix flag: `Recipe.spm`) and return (tokenizer.model bytes,
    special token -> id): <unk> <s> </s> are 0 1 2, the user-defined pieces next; an added token that takes a
    piece's id (`SpmSettings.aliases`) gets that id."""
    import io

    import sentencepiece as spm

    assert family.recipe is not None and family.recipe.spm is not None
    settings = family.recipe.spm
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((_CORPUS + list(family.recipe.tokenizer_corpus)) * 4), model_writer=f,
        vocab_size=vocab, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, user_defined_symbols=list(settings.pieces),
        num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=settings.dummy_prefix, split_digits=True,
        allow_whitespace_only_pieces=True, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    alias = dict(settings.aliases)
    ids = {t: sp.piece_to_id(alias.get(t, t)) for t in ("<unk>", "<s>", "</s>", *family.special_tokens)}
    return f.getvalue(), ids


def _train_tokenizer(family: Family, bpe_vocab: int,
                     extra: tuple[str, ...] = ()) -> tuple[str, dict[str, int]]:
    """Train the byte-level BPE and return (tokenizer.json text, special token -> id)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(family.pretokenize_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator((_CORPUS + list(family.recipe.tokenizer_corpus)) * 4 + list(extra) * 20, trainer)
    trained = json.loads(tok.to_str())
    vocab, merges = trained["model"]["vocab"], trained["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    # as the family's real tokenizer: whole words looked up before merging (ignore_merges), an NFC normaliser
    tok.model = models.BPE(vocab, merges, ignore_merges=family.recipe.ignore_merges)
    if family.recipe.nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    for t in family.special_tokens:  # one at a time, so ids follow the family's order; plain ones are not special
        if t in family.plain_tokens:
            tok.add_tokens([AddedToken(t, special=False, normalized=False)])
        else:
            tok.add_special_tokens([AddedToken(t, special=True, normalized=False)])
    ids = {t: tok.token_to_id(t) for t in family.special_tokens}
    if family.add_bos:
        bos = family.bos_token
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str(pretty=True), ids


def _shapes(p: Preset, v: Family, vocab_size: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init kind) of every tensor, in the original checkpoint's names."""
    assert v.recipe is not None
    model_shapes = getattr(v.recipe, "model_shapes", None)
    if model_shapes is not None:  # a layout of its own (4.6): the recipe lists every tensor
        return model_shapes(p, v, vocab_size)
    D, E = p.vision_width, p.llm_width
    head_dim = getattr(p, "head_dim", 0) or E // p.llm_heads  # a preset with an explicit head size (4.5)
    kv, qd = p.llm_kv_heads * head_dim, p.llm_heads * head_dim
    assert v.recipe is not None
    out = v.recipe.vision_shapes(p, v)
    out += [("resampler.query", (p.queries(v), E), "embed"), ("resampler.kv_proj.weight", (E, D), "linear"),
            ("resampler.attn.in_proj_weight", (3 * E, E), "linear"), ("resampler.attn.in_proj_bias", (3 * E,), "bias"),
            ("resampler.attn.out_proj.weight", (E, E), "linear"), ("resampler.attn.out_proj.bias", (E,), "bias")]
    for n in ("ln_q", "ln_kv", "ln_post"):
        out += [(f"resampler.{n}.weight", (E,), "norm"), (f"resampler.{n}.bias", (E,), "bias")]
    out += [("resampler.proj", (E, E), "linear")]
    if v.resampler_query_pos:  # a stored 8 x 8 sin-cos query table
        out += [("resampler.pos_embed", (p.queries(v), E), "sincos")]
    out += [("llm.model.embed_tokens.weight", (vocab_size, E), "embed")]
    for i in range(p.llm_layers):
        b = f"llm.model.layers.{i}."
        out += [(f"{b}self_attn.q_proj.weight", (qd, E), "linear"), (f"{b}self_attn.k_proj.weight", (kv, E), "linear"),
                (f"{b}self_attn.v_proj.weight", (kv, E), "linear"), (f"{b}self_attn.o_proj.weight", (E, qd), "linear")]
        if v.llm_qkv_bias:
            out += [(f"{b}self_attn.q_proj.bias", (qd,), "bias"), (f"{b}self_attn.k_proj.bias", (kv,), "bias"),
                    (f"{b}self_attn.v_proj.bias", (kv,), "bias")]
        if v.llm_qk_norm:
            out += [(f"{b}self_attn.q_norm.weight", (head_dim,), "norm"),
                    (f"{b}self_attn.k_norm.weight", (head_dim,), "norm")]
        out += [(f"{b}mlp.gate_proj.weight", (p.llm_ffn, E), "linear"),
                (f"{b}mlp.up_proj.weight", (p.llm_ffn, E), "linear"),
                (f"{b}mlp.down_proj.weight", (E, p.llm_ffn), "linear"),
                (f"{b}input_layernorm.weight", (E,), "norm"), (f"{b}post_attention_layernorm.weight", (E,), "norm")]
    out += [("llm.model.norm.weight", (E,), "norm"), ("llm.lm_head.weight", (vocab_size, E), "linear")]
    return out


def _init(name: str, shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if kind == "sincos":  # a square grid of queries, [sin col, cos col, sin row, cos row] as the original builds it
        from .convert.mmproj import sincos_2d

        side = round(float(np.sqrt(shape[0])))
        return sincos_2d(shape[1], side, side)
    if kind == "linear":  # unit-variance activations: std 1/sqrt(fan_in)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        a = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
    elif kind == "embed":
        a = rng.standard_normal(shape, dtype=np.float32)
    elif kind == "norm":
        a = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    elif kind == "tied_embed":  # an embedding that is also the output head: small, so that what the layers add
        a = 0.3 * rng.standard_normal(shape, dtype=np.float32)  # (not the token itself) decides the next token
    elif kind == "zero_norm":  # a zero-centred RMSNorm's weight (the scale is 1 + w)
        a = 0.1 * rng.standard_normal(shape, dtype=np.float32)
    elif kind == "log_decay":  # GatedDeltaNet's A_log: decay rates between 1 and 16, as its initialisation
        a = np.log(rng.uniform(1.0, 16.0, shape)).astype(np.float32)
    else:
        a = 0.1 * rng.standard_normal(shape, dtype=np.float32)
    return a.astype(np.float32)


def write_checkpoint(preset: str | Preset, out_dir: str | os.PathLike[str]) -> Path:
    """Write a preset checkpoint folder (atomically: the folder appears only once complete)."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    v = FAMILIES[p.family]
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        assert v.recipe is not None
        if v.tokenizer == "spm":
            model, ids = _train_spm(v, p.vocab)
            vocab_size = p.vocab
            appended = tuple(getattr(v.recipe, "appended_tokens", ()))  # added after the pieces (OmniLMM's)
            if appended:
                import sentencepiece as spm

                vocab_size = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
                ids.update({t: vocab_size + k for k, t in enumerate(appended)})
                vocab_size += len(appended)
            (tmp / "tokenizer.model").write_bytes(model)
            configs = v.recipe.configs(p, v, ids, vocab_size)
        else:
            tok_json, ids = _train_tokenizer(v, p.vocab, p.corpus)
            placed = getattr(v.recipe, "place_tokens", None)
            if placed is not None:  # added tokens at the real file's places (4.5's <unk> inside the BPE range)
                tok_json, ids = placed(tok_json, ids)
            vocab_size = max(ids.values()) + 1
            (tmp / "tokenizer.json").write_text(tok_json, encoding="utf-8")
            configs = v.recipe.configs(p, v, ids, vocab_size)
        for fname, obj in configs.items():
            (tmp / fname).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        text_files = getattr(v.recipe, "text_files", None)
        for fname, text in (text_files(v) if text_files else {}).items():  # e.g. chat_template.jinja
            (tmp / fname).write_text(text, encoding="utf-8")
        write_weights = getattr(v.recipe, "write_weights", None)
        if write_weights is not None:  # the family's own weights file (OmniLMM's torch pickle), made lazily
            write_weights(tmp, [(n, s, lambda n=n, s=s, k=k: to_storage(_init(n, s, k, p.seed), p.dtype))
                                for n, s, k in _shapes(p, v, vocab_size)], p.dtype)
        else:
            tensors = [(n, to_storage(_init(n, s, k, p.seed), p.dtype)) for n, s, k in _shapes(p, v, vocab_size)]
            write_safetensors(tmp / "model.safetensors", tensors, p.dtype)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="minicpmv-edge make-model", description=__doc__.splitlines()[0])
    ap.add_argument("preset", choices=sorted(PRESETS), help="which checkpoint to write")
    ap.add_argument("-o", "--out", required=True, help="output folder (replaced if it exists)")
    args = ap.parse_args(argv)
    path = write_checkpoint(args.preset, args.out)
    print(path)
    return 0
