"""Deterministic MiniCPM-V checkpoints in the original Hugging Face layout, for tests, the demo and benchmarks.

Each preset writes `config.json`, `preprocessor_config.json`, `generation_config.json`, `model.safetensors`
(`vpm.` / `resampler.` / `llm.` names and shapes of the original checkpoints) and tokenizer files. The
tokenizer is a real byte-level BPE trained here on a fixed corpus, with the real model's pre-tokenizer split and
every special token of the original tokenizers as one token. Weights are seeded per tensor name, so the files are
identical on every machine.
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
    bpe_vocab: int  # BPE tokens before the special tokens
    dtype: str  # safetensors storage dtype, as the real checkpoints ("BF16" for 2.6, "F16" for 2.5)
    seed: int = 0


PRESETS: dict[str, Preset] = {
    # vision FFN 200 is, like SigLIP's 4304, not a multiple of 32 (quantization blocks)
    "tiny-2.6": Preset("2.6", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "BF16"),
    "tiny-2.5": Preset("2.5", 96, 2, 3, 200, 256, 2, 4, 2, 512, 1024, "F16"),
    # the real MiniCPM-V 2.6 vision tower and resampler (1152 wide, 27 layers, 64 x 3584), with a small LLM
    "real-2.6": Preset("2.6", 1152, 27, 16, 4304, 3584, 2, 28, 4, 4864, 1024, "BF16"),
}

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


def _train_tokenizer(version: ModelVersion, bpe_vocab: int) -> tuple[str, dict[str, int]]:
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
    tok.train_from_iterator(_CORPUS * 4, trainer)
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
        "query_num": v.query_num, "image_size": v.scale_resolution, "patch_size": v.patch_size,
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
        "image_feature_size": v.query_num, "im_start": "<image>", "im_end": "</image>",
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


def _shapes(p: Preset, v: ModelVersion, vocab_size: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init kind) of every tensor, in the original checkpoint's names."""
    D, F, E = p.vision_width, p.vision_ffn, p.llm_width
    head_dim = E // p.llm_heads
    kv = p.llm_kv_heads * head_dim
    out: list[tuple[str, tuple[int, ...], str]] = [
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
    out += [("vpm.post_layernorm.weight", (D,), "norm"), ("vpm.post_layernorm.bias", (D,), "bias")]
    out += [("resampler.query", (v.query_num, E), "embed"), ("resampler.kv_proj.weight", (E, D), "linear"),
            ("resampler.attn.in_proj_weight", (3 * E, E), "linear"), ("resampler.attn.in_proj_bias", (3 * E,), "bias"),
            ("resampler.attn.out_proj.weight", (E, E), "linear"), ("resampler.attn.out_proj.bias", (E,), "bias")]
    for n in ("ln_q", "ln_kv", "ln_post"):
        out += [(f"resampler.{n}.weight", (E,), "norm"), (f"resampler.{n}.bias", (E,), "bias")]
    out += [("resampler.proj", (E, E), "linear")]
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
        tok_json, ids = _train_tokenizer(v, p.bpe_vocab)
        vocab_size = max(ids.values()) + 1
        (tmp / "tokenizer.json").write_text(tok_json, encoding="utf-8")
        for fname, obj in _configs(p, v, ids, vocab_size).items():
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
