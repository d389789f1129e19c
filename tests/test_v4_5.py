"""MiniCPM-V 4.5 images and language model against its original (reference/v4_5.py: written from the original chat()
and run under transformers 4.51 with transformers' own Qwen3ForCausalLM, in a process of its own). The tiny
checkpoint has unusual dimensions: a head size of 48 with a 256-wide model of 4 heads (not 64), grouped queries
(4 / 2), 2 resampler heads, 3 vision heads of 32 and a vision MLP of 200, and copies the released tokenizer's
settings (`<unk>` inside the BPE range, `<think>` not special, no BOS). Each scenario is checked for our files and
for llama.cpp-layout files: the language model made by llama.cpp's own converter from the legacy surgery's
Qwen3ForCausalLM folder (reference/llamacpp_convert.py), and our mmproj without any of our keys (as llama.cpp's
legacy image-encoder converter writes it: `clip.minicpmv_version` 6 says the rest): the prompt's ids, every image's
embeddings within 1e-4 (relative to their largest) and greedy decoding's ids and text. (Video: test_v4_5_video.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import message_images
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.chat_options import chat_params
from minicpmv_edge.convert.gguf_out import GGUFFile, PlannedTensor
from minicpmv_edge.families import FAMILIES
from reference import isolated, llamacpp_convert

N_TOKENS = 16
GREEDY = {"sampling": False, "num_beams": 1, "repetition_penalty": 1.0}


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (7 + seed)), 128 + 90 * np.cos(yy / 11), 255 * yy / max(h, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


SCENARIOS = {  # name: (messages, keywords for chat() and the reference)
    "small image": ([{"role": "user", "content": [_image(300, 200, 1), "What is in the image?"]}], {}),
    "wide image, chinese question": (
        [{"role": "user", "content": [_image(4000, 500, 2), "图片里有什么？请详细描述。"]}], {}),
    "two images": ([{"role": "user", "content": [_image(640, 480, 3), _image(200, 900, 4),
                                                 "Which image has more stripes?"]}], {}),
    "two turns, earlier think part": (
        [{"role": "user", "content": [_image(777, 333, 5), "What is this?"]},
         {"role": "assistant", "content": "<think>\nStripes, I see.\n</think>\n\nA test pattern with stripes."},
         {"role": "user", "content": "How many stripes are there?"}], {}),
    "text only": ([{"role": "user", "content": "Tell me about the weather, please."}], {}),
    "thinking on": ([{"role": "user", "content": [_image(449, 449, 6), "Think about it."]}],
                    {"enable_thinking": True}),
    "thinking off": ([{"role": "user", "content": [_image(449, 449, 6), "Think about it."]}],
                     {"enable_thinking": False}),
    "sliced 1344x1344": ([{"role": "user", "content": [_image(1344, 1344, 7), "What colour dominates?"]}], {}),
}
FILES = ("ours", "llama.cpp's")


@pytest.fixture(scope="module")
def original(tiny_hf, request) -> dict[str, dict]:
    """The original's results for the scenarios the selected tests use, in one transformers 4.51 process."""
    names = sorted({item.callspec.params["scenario"] for item in request.session.items
                    if item.module is request.module and hasattr(item, "callspec")
                    and "scenario" in item.callspec.params})
    cases = [(SCENARIOS[s][0], {**SCENARIOS[s][1], "max_new_tokens": N_TOKENS}) for s in names]
    results = isolated.call("reference.v4_5:original_runs", str(tiny_hf["4.5"]), cases,
                            env=isolated.TRANSFORMERS_4_51, version="4.51.0", timeout=3600)
    return dict(zip(names, results, strict=True))


def _surgery(hf: Path, out: Path) -> Path:
    """The legacy surgery's language-model folder: `llm.*` as a Qwen3ForCausalLM checkpoint with the tokenizer
    files (the tokenizer class named as transformers' own: the remote class needs the original's code)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    cfg = json.loads((hf / "config.json").read_text())
    vision_keys = ("auto_map", "version", "query_num", "image_size", "patch_size", "batch_vision_input",
                   "drop_vision_last_layer", "slice_mode", "slice_config", "vision_config", "use_image_id",
                   "vision_batch_size", "batch_3d_resampler", "_name_or_path")
    llm = {k: v for k, v in cfg.items() if k not in vision_keys}
    llm.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3")
    (out / "config.json").write_text(json.dumps(llm, indent=2))
    tc = json.loads((hf / "tokenizer_config.json").read_text())
    tc.pop("auto_map")
    tc["tokenizer_class"] = "Qwen2TokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    for name in ("tokenizer.json", "generation_config.json"):
        shutil.copy(hf / name, out / name)
    state = load_file(hf / "model.safetensors")
    save_file({k.removeprefix("llm."): v.contiguous() for k, v in state.items() if k.startswith("llm.")},
              out / "model.safetensors", metadata={"format": "pt"})
    return out


def _without_our_keys(src: Path, dst: Path) -> Path:
    """An mmproj with only llama.cpp's keys (no `minicpmv_edge.*`)."""
    r = gguf.GGUFReader(src)
    out = GGUFFile(dst, "clip")
    for name, field in r.fields.items():
        if name.startswith(("GGUF.", "minicpmv_edge.")) or name == "general.architecture":
            continue
        vtype = field.types[0]
        out.writer.add_key_value(name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
    plan = []
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        data = np.asarray(t.data).reshape(shape)
        plan.append(PlannedTensor(t.name, shape, t.tensor_type, lambda d=data: d))
    out.write_tensors(plan)
    out.commit()
    return dst


@pytest.fixture(scope="module")
def files(tiny_hf, converted, tmp_path_factory) -> dict[str, tuple]:
    ours = converted("4.5", "f32")
    out = tmp_path_factory.mktemp("llamacpp-4.5")
    folder = _surgery(tiny_hf["4.5"], out / "llm")
    model = llamacpp_convert.convert(folder, out / "model-f32.gguf", "--outtype", "f32", pre="qwen2")
    mmproj = _without_our_keys(ours.mmproj, out / "mmproj-f32.gguf")
    return {"ours": (ours.model, ours.mmproj), "llama.cpp's": (model, mmproj)}


@pytest.fixture(scope="module", params=FILES)
def runtime(request, files):
    model, mmproj = files[request.param]
    with MiniCPMV(model, mmproj, n_ctx=4096, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


@pytest.mark.arm64(scenario=("small image", "thinking on"))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_prompt_and_embeddings_equal_the_originals(original, runtime, scenario: str) -> None:
    msgs, kw = SCENARIOS[scenario]
    want = original[scenario]
    assert runtime.prompt_ids(msgs, **kw) == want["ids"]
    images = message_images(msgs)
    assert len(images) == len(want["pieces"])
    for img, ref in zip(images, want["pieces"], strict=True):
        _, _, got = runtime.encoder.encode_image(np.asarray(img.convert("RGB")), 9)
        assert got.shape == ref.shape
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, rel


@pytest.mark.arm64(scenario=("small image", "thinking on"))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_answers_equal_the_originals(original, runtime, scenario: str) -> None:
    """Greedy search (sampling=False, one beam, no penalty): the same ids, and the same text as chat() returns
    (`<think>\\n` before a thinking answer, also first in the stream)."""
    msgs, kw = SCENARIOS[scenario]
    want = original[scenario]
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, **GREEDY, **kw)
    assert runtime.last.tokens == want["tokens"]
    assert text == want["text"]
    if kw.get("enable_thinking"):
        pieces = list(runtime.chat(msgs, stream=True, max_new_tokens=N_TOKENS, **GREEDY, **kw))
        assert pieces[0] == "<think>\n"
        assert "".join(pieces).strip() == text.strip()


def test_files_say_what_llamacpp_reads(files) -> None:
    """Our language model is llama.cpp's `qwen3` with the explicit head size and the per-head norms; our mmproj is
    llama.cpp's resampler version 6."""
    model, mmproj = files["ours"]
    kv = {k: f.contents() for k, f in gguf.GGUFReader(model).fields.items() if not k.startswith("GGUF.")}
    assert kv["general.architecture"] == "qwen3"
    assert (kv["qwen3.attention.key_length"], kv["qwen3.attention.value_length"]) == (48, 48)
    assert kv["qwen3.rope.dimension_count"] == 48
    names = {t.name for t in gguf.GGUFReader(model).tensors}
    assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
    assert not any(n.endswith(("attn_q.bias", "attn_k.bias", "attn_v.bias")) for n in names)
    mm = {k: f.contents() for k, f in gguf.GGUFReader(mmproj).fields.items() if k.startswith("clip.")}
    assert mm["clip.minicpmv_version"] == 6 and mm["clip.projector_type"] == "resampler"


@pytest.mark.parametrize(("sampling", "thinking", "want"), [
    # the original chat()'s generation dicts (fact sheet §8): penalty 1.03, top_p .8, top_k 100 only without thinking;
    # with thinking, transformers' defaults (top_k 50, top_p 1.0, no penalty) at temperature 0.7
    (True, False, {"temperature": 0.7, "top_p": 0.8, "top_k": 100, "repetition_penalty": 1.03}),
    (True, True, {"temperature": 0.7, "top_p": 1.0, "top_k": 50, "repetition_penalty": 1.0}),
    (False, False, {"num_beams": 3, "repetition_penalty": 1.2}),
    (False, True, {"num_beams": 3, "repetition_penalty": 1.2}),
])
def test_chat_defaults_per_mode(sampling: bool, thinking: bool, want: dict) -> None:
    gp, pp = chat_params(FAMILIES["4.5"].chat, sampling=sampling, enable_thinking=thinking)
    assert {k: getattr(gp, k) for k in want} == want
    assert gp.prefix == ("<think>\n" if thinking else "")
    assert pp.template_kwargs == {"enable_thinking": thinking}
    gp, pp = chat_params(FAMILIES["4.5"].chat)  # not told: sampling, no thinking, and the template is told so
    assert gp.sampling and gp.repetition_penalty == 1.03 and pp.template_kwargs == {"enable_thinking": False}
