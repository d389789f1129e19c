"""Deterministic MiniCPM-V checkpoints in the original Hugging Face layout, for tests, the demo and benchmarks.

Each preset writes `config.json`, `generation_config.json`, `model.safetensors` (`vpm.` / `resampler.` / `llm.`
names and shapes of the original checkpoints: HF SigLIP names for 2.5/2.6, timm names for 2.0), the tokenizer files
and, for 2.5/2.6, `preprocessor_config.json`. The tokenizer is trained here on a fixed corpus: a byte-level BPE
with the real model's pre-tokenizer split for 2.5/2.6, a SentencePiece model (byte fallback, Llama's settings) for
2.0, each with every special token of the original tokenizers as one token. Weights are seeded per tensor name, so
the files are identical on every machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .convert.safetensors_io import to_storage, write_safetensors
from .versions import VERSIONS, ModelVersion


@dataclass(frozen=True)
class Preset:
    version: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    llm_width: int  # multiple of 128: resampler heads = width / 128
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_ffn: int
    vocab: int  # BPE tokens before the special tokens; for SentencePiece the whole vocabulary
    dtype: str  # safetensors storage dtype, as the real checkpoints ("BF16" for 2.6 and 2.0, "F16" for 2.5)
    seed: int = 0
    query_num: int = 0  # resampler queries (tokens per piece); 0: the version's (64 for 2.6)
    corpus: tuple[str, ...] = ()  # more tokenizer training text (the demo model's words become whole tokens)

    def queries(self, v: ModelVersion) -> int:
        return self.query_num or v.query_num


# the demo task's words (shapes_task.py), so that its answers are a few whole-word tokens, not spelt out
_SHAPES_WORDS = ("What shape is in the image? A red circle. A green square. A blue triangle. A yellow circle.",
                 "What color is the square? Purple. Orange. An orange square. A purple triangle. Red. Green. Blue.",
                 "How many shapes are there? One. Two. Three. Four. Which image has more shapes?",
                 "The first image. The second image. Describe the image. Yellow. Two shapes: a red circle, a blue "
                 "square. One shape: a green triangle. Three shapes: a yellow square, an orange circle, a purple "
                 "triangle. Four shapes:")

PRESETS: dict[str, Preset] = {
    # vision FFN 200 is, like SigLIP's 4304, not a multiple of 32 (quantization blocks)
    "tiny-2.6": Preset("2.6", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "BF16"),
    "tiny-2.5": Preset("2.5", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "F16"),
    # vision layers as config.json counts them: 2.0 drops (and does not store) the last one
    "tiny-2.0": Preset("2.0", 96, 3, 3, 384, 256, 2, 4, 2, 512, 600, "BF16"),
    # the starting point of the trained demo model (models/train_demo.py): 32 queries per piece
    "demo-2.6": Preset("2.6", 64, 2, 2, 128, 256, 2, 4, 2, 768, 1024, "BF16", seed=11, query_num=32,
                       corpus=_SHAPES_WORDS),
    # the real MiniCPM-V 2.6 vision tower and resampler (1152 wide, 27 layers, 64 x 3584), with a small LLM
    "real-2.6": Preset("2.6", 1152, 27, 16, 4304, 3584, 2, 28, 4, 4864, 1024, "BF16"),
    # the real MiniCPM-V 2.0 tower (so400m, 26 of 27 blocks run) and resampler (64 x 2304), the real LLM width
    "real-2.0": Preset("2.0", 1152, 27, 16, 4304, 2304, 2, 36, 36, 5760, 600, "BF16"),
}
# MiniCPM-V 2.0's LLM scalings (config.json), its timm tower (vit_so400m_patch14_siglip_384: 27 x 27 positions)
_MINICPM2 = {"scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 64}  # 64: logits / 4 on the tiny widths
_TIMM_TOWER = "vit_so400m_patch14_siglip_384.webli"
_TIMM_GRID = 27

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
_CHAT_2_0 = ["<用户>What is in the image?<AI>A red car. <用户>图片里有什么？<AI>一只小狗。"]  # 2.0's turn tags


def _train_spm(version: ModelVersion, vocab: int) -> tuple[bytes, dict[str, int]]:
    """Train a SentencePiece BPE model with Llama's settings (byte fallback, identity normalisation, dummy prefix)
    and return (tokenizer.model bytes, special token -> id): <unk> <s> </s> are 0 1 2, the added tokens next."""
    import io

    import sentencepiece as spm

    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((_CORPUS + _CHAT_2_0) * 4), model_writer=f, vocab_size=vocab, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, user_defined_symbols=list(version.special_tokens),
        num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
        hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    ids = {t: sp.piece_to_id(t) for t in ("<unk>", "<s>", "</s>", *version.special_tokens)}
    return f.getvalue(), ids


def _train_tokenizer(version: ModelVersion, bpe_vocab: int,
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
        pre_tokenizers.Split(Regex(version.pretokenize_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(_CORPUS * 4 + list(extra) * 20, trainer)
    trained = json.loads(tok.to_str())
    vocab, merges = trained["model"]["vocab"], trained["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    # the real Llama-3 tokenizer looks whole words up before merging (ignore_merges); Qwen2's does not
    tok.model = models.BPE(vocab, merges, ignore_merges=version.llm_arch == "llama")
    if version.llm_arch == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in version.special_tokens])
    ids = {t: tok.token_to_id(t) for t in version.special_tokens}
    if version.add_bos:
        bos = version.bos_token
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str(pretty=True), ids


def _configs(p: Preset, v: ModelVersion, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
    vision = {
        "hidden_size": p.vision_width, "image_size": 980, "intermediate_size": p.vision_ffn,
        "model_type": "siglip" if v.name == "2.6" else "idefics2", "num_attention_heads": p.vision_heads,
        "num_hidden_layers": p.vision_layers, "patch_size": 14,
    }
    llm: dict[str, object] = {
        "hidden_act": "silu", "hidden_size": p.llm_width, "intermediate_size": p.llm_ffn,
        "num_attention_heads": p.llm_heads, "num_hidden_layers": p.llm_layers, "num_key_value_heads": p.llm_kv_heads,
        "initializer_range": 0.02, "vocab_size": vocab_size, "tie_word_embeddings": False,
        "bos_token_id": ids[v.bos_token], "eos_token_id": ids[v.eos_token], "rope_scaling": None,
    }
    if v.llm_arch == "qwen2":
        llm.update({"rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
                    "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": p.llm_layers,
                    "attention_dropout": 0.0})
    else:
        llm.update({"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 8192,
                    "attention_bias": False, "pretraining_tp": 1})
    config = {
        "_name_or_path": f"minicpmv-edge/{'tiny' if p.llm_layers < 8 else 'preset'}-{v.name}",
        "architectures": ["MiniCPMV"],
        "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMVConfig",
                     "AutoModel": "modeling_minicpmv.MiniCPMV",
                     "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"},
        "model_type": "minicpmv",
        "version": 2.6 if v.name == "2.6" else "2.5",
        **llm,
        "query_num": p.queries(v), "image_size": v.scale_resolution, "patch_size": v.patch_size,
        "batch_vision_input": True, "drop_vision_last_layer": False, "slice_mode": True,
        "slice_config": {"max_slice_nums": v.max_slice_nums, "patch_size": v.patch_size, "model_type": "minicpmv"},
        "vision_config": vision,
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[p.dtype],
        "transformers_version": "4.40.0", "use_cache": True,
    }
    if v.use_image_id:
        config["use_image_id"] = True
        config["vision_batch_size"] = 16
    pre: dict[str, object] = {
        "image_processor_type": "MiniCPMVImageProcessor",
        "auto_map": {"AutoProcessor": "processing_minicpmv.MiniCPMVProcessor",
                     "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor"},
        "processor_class": "MiniCPMVProcessor",
        "max_slice_nums": v.max_slice_nums, "scale_resolution": v.scale_resolution, "patch_size": v.patch_size,
        "image_feature_size": p.queries(v), "im_start": "<image>", "im_end": "</image>",
        "slice_start": "<slice>", "slice_end": "</slice>", "unk": "<unk>",
        "norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5], "version": float(v.name),
    }
    if v.use_image_id:
        pre.update({"use_image_id": True, "im_id_start": "<image_id>", "im_id_end": "</image_id>",
                    "slice_mode": True})
    gen = {"bos_token_id": ids[v.bos_token], "eos_token_id": [ids[t] for t in v.stop_tokens],
           "pad_token_id": 0, "transformers_version": "4.40.0"}
    tok_cfg = {
        "add_bos_token": v.add_bos, "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True} for t, i in ids.items()},
        "bos_token": v.bos_token, "eos_token": v.eos_token, "pad_token": v.pad_token, "unk_token": "<unk>",
        "chat_template": v.chat_template, "clean_up_tokenization_spaces": v.clean_up_spaces,
        "model_max_length": int(llm["max_position_embeddings"]),  # type: ignore[call-overload]
        "tokenizer_class": "MiniCPMVTokenizerFast",
        "auto_map": {"AutoTokenizer": [None, "tokenization_minicpmv_fast.MiniCPMVTokenizerFast"]},
    }
    return {"config.json": config, "preprocessor_config.json": pre, "generation_config.json": gen,
            "tokenizer_config.json": tok_cfg}


def _configs_2_0(p: Preset, v: ModelVersion, ids: dict[str, int], vocab_size: int) -> dict[str, dict[str, object]]:
    """The files of openbmb/MiniCPM-V-2 (no `version` key, no preprocessor_config.json, a slow Llama tokenizer in
    legacy mode). `vision_config` is our addition: the original reads its tower from the timm name alone, which
    cannot say a tiny tower's width or heads."""
    config = {
        "_name_or_path": f"minicpmv-edge/{'tiny' if p.llm_layers < 8 else 'preset'}-{v.name}",
        "architectures": ["MiniCPMV"],
        "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMVConfig", "AutoModel": "modeling_minicpmv.MiniCPMV",
                     "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV"},
        "model_type": "minicpmv", "bos_token_id": ids[v.bos_token], "eos_token_id": ids[v.eos_token],
        "hidden_act": "silu", "hidden_size": p.llm_width, "initializer_range": 0.1, "intermediate_size": p.llm_ffn,
        "max_position_embeddings": 4096, "num_attention_heads": p.llm_heads, "num_hidden_layers": p.llm_layers,
        "num_key_value_heads": p.llm_kv_heads, "rms_norm_eps": 1e-5, "rope_scaling": None, "rope_theta": 10000.0,
        **_MINICPM2, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.36.0",
        "use_cache": True, "vocab_size": vocab_size, "vision_encoder": _TIMM_TOWER, "query_num": p.queries(v),
        "image_size": v.scale_resolution, "patch_size": v.patch_size, "max_slice_nums": v.max_slice_nums,
        "scale_resolution": v.scale_resolution, "slice_mode": True, "drop_vision_last_layer": True,
        "mm_use_im_start_end": True,
        "vision_config": {"hidden_size": p.vision_width, "num_attention_heads": p.vision_heads,
                          "intermediate_size": p.vision_ffn, "num_hidden_layers": p.vision_layers,
                          "patch_size": v.patch_size, "image_size": _TIMM_GRID * v.patch_size},
    }
    gen = {"bos_token_id": ids[v.bos_token], "eos_token_id": ids[v.eos_token], "transformers_version": "4.36.0"}
    tok_cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True} for t, i in sorted(ids.items(), key=lambda kv: kv[1])},
        "bos_token": v.bos_token, "eos_token": v.eos_token, "pad_token": v.pad_token, "unk_token": "<unk>",
        "clean_up_tokenization_spaces": v.clean_up_spaces, "legacy": True, "model_max_length": 1000000000000000,
        "sp_model_kwargs": {}, "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizerWrapper",
        "use_default_system_prompt": False,
    }
    special_map = {"bos_token": v.bos_token, "eos_token": v.eos_token, "unk_token": "<unk>", "pad_token": v.pad_token}
    return {"config.json": config, "generation_config.json": gen, "tokenizer_config.json": tok_cfg,
            "special_tokens_map.json": special_map}


def _vision_shapes(p: Preset, v: ModelVersion) -> list[tuple[str, tuple[int, ...], str]]:
    """The tower in its original names: HF SigLIP (2.5, 2.6) or timm (2.0: fused qkv, the dropped last block
    not stored)."""
    D, F = p.vision_width, p.vision_ffn
    if v.vision_layout == "timm":
        out: list[tuple[str, tuple[int, ...], str]] = [
            ("vpm.patch_embed.proj.weight", (D, 3, 14, 14), "linear"), ("vpm.patch_embed.proj.bias", (D,), "bias"),
            ("vpm.pos_embed", (1, _TIMM_GRID * _TIMM_GRID, D), "embed")]
        for i in range(p.vision_layers - 1):
            b = f"vpm.blocks.{i}."
            out += [(f"{b}norm1.weight", (D,), "norm"), (f"{b}norm1.bias", (D,), "bias"),
                    (f"{b}attn.qkv.weight", (3 * D, D), "linear"), (f"{b}attn.qkv.bias", (3 * D,), "bias"),
                    (f"{b}attn.proj.weight", (D, D), "linear"), (f"{b}attn.proj.bias", (D,), "bias"),
                    (f"{b}norm2.weight", (D,), "norm"), (f"{b}norm2.bias", (D,), "bias"),
                    (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                    (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
        return [*out, ("vpm.norm.weight", (D,), "norm"), ("vpm.norm.bias", (D,), "bias")]
    out = [
        ("vpm.embeddings.patch_embedding.weight", (D, 3, 14, 14), "linear"),
        ("vpm.embeddings.patch_embedding.bias", (D,), "bias"),
        ("vpm.embeddings.position_embedding.weight", (4900, D), "embed"),
    ]
    for i in range(p.vision_layers):
        b = f"vpm.encoder.layers.{i}."
        for n in ("q", "k", "v", "out"):
            out += [(f"{b}self_attn.{n}_proj.weight", (D, D), "linear"), (f"{b}self_attn.{n}_proj.bias", (D,), "bias")]
        out += [(f"{b}layer_norm1.weight", (D,), "norm"), (f"{b}layer_norm1.bias", (D,), "bias"),
                (f"{b}layer_norm2.weight", (D,), "norm"), (f"{b}layer_norm2.bias", (D,), "bias"),
                (f"{b}mlp.fc1.weight", (F, D), "linear"), (f"{b}mlp.fc1.bias", (F,), "bias"),
                (f"{b}mlp.fc2.weight", (D, F), "linear"), (f"{b}mlp.fc2.bias", (D,), "bias")]
    return [*out, ("vpm.post_layernorm.weight", (D,), "norm"), ("vpm.post_layernorm.bias", (D,), "bias")]


def _shapes(p: Preset, v: ModelVersion, vocab_size: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init kind) of every tensor, in the original checkpoint's names."""
    D, E = p.vision_width, p.llm_width
    head_dim = E // p.llm_heads
    kv = p.llm_kv_heads * head_dim
    out = _vision_shapes(p, v)
    out += [("resampler.query", (p.queries(v), E), "embed"), ("resampler.kv_proj.weight", (E, D), "linear"),
            ("resampler.attn.in_proj_weight", (3 * E, E), "linear"), ("resampler.attn.in_proj_bias", (3 * E,), "bias"),
            ("resampler.attn.out_proj.weight", (E, E), "linear"), ("resampler.attn.out_proj.bias", (E,), "bias")]
    for n in ("ln_q", "ln_kv", "ln_post"):
        out += [(f"resampler.{n}.weight", (E,), "norm"), (f"resampler.{n}.bias", (E,), "bias")]
    out += [("resampler.proj", (E, E), "linear")]
    if v.resampler_query_pos:  # 2.0 stores its 8 x 8 sin-cos query table
        out += [("resampler.pos_embed", (p.queries(v), E), "sincos")]
    out += [("llm.model.embed_tokens.weight", (vocab_size, E), "embed")]
    for i in range(p.llm_layers):
        b = f"llm.model.layers.{i}."
        out += [(f"{b}self_attn.q_proj.weight", (E, E), "linear"), (f"{b}self_attn.k_proj.weight", (kv, E), "linear"),
                (f"{b}self_attn.v_proj.weight", (kv, E), "linear"), (f"{b}self_attn.o_proj.weight", (E, E), "linear")]
        if v.llm_arch == "qwen2":
            out += [(f"{b}self_attn.q_proj.bias", (E,), "bias"), (f"{b}self_attn.k_proj.bias", (kv,), "bias"),
                    (f"{b}self_attn.v_proj.bias", (kv,), "bias")]
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
    else:
        a = 0.1 * rng.standard_normal(shape, dtype=np.float32)
    return a.astype(np.float32)


def write_checkpoint(preset: str | Preset, out_dir: str | os.PathLike[str]) -> Path:
    """Write a preset checkpoint folder (atomically: the folder appears only once complete)."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    v = VERSIONS[p.version]
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        if v.tokenizer == "spm":
            model, ids = _train_spm(v, p.vocab)
            vocab_size = p.vocab
            (tmp / "tokenizer.model").write_bytes(model)
            configs = _configs_2_0(p, v, ids, vocab_size)
        else:
            tok_json, ids = _train_tokenizer(v, p.vocab, p.corpus)
            vocab_size = max(ids.values()) + 1
            (tmp / "tokenizer.json").write_text(tok_json, encoding="utf-8")
            configs = _configs(p, v, ids, vocab_size)
        for fname, obj in configs.items():
            (tmp / fname).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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
