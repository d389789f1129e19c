"""MiniCPM-V 4.6 against transformers 5.23, which implements it natively (reference/v4_6.py, run in a process of its
own under that release: reference/isolated.py). The tiny checkpoint has unusual dimensions: a 42 x 42 position grid
(not 70), the window merger after layer 2 (not 6), 3 vision heads of 32, a vision MLP of 200 (not a multiple of 32),
a language model with irregular layer types (linear, linear, full, linear, full) and twice as many linear value
heads as key heads. Each scenario is checked for our files and for the files llama.cpp's own converter makes
(reference/llamacpp_convert.py): the prompt's ids, every image's embeddings within 1e-4 (relative to their largest;
the fact sheet shows a looser bound hides real mistakes) and greedy decoding's ids and text."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import message_images
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.image import load_rgb
from reference import isolated, llamacpp_convert

N_TOKENS = 16


def _image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (7 + seed)), 128 + 90 * np.cos(yy / 11), 255 * yy / max(h, 1)], -1)
    rgb = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    if mode == "RGBA":  # a soft alpha ramp: compositing onto white (not dropping alpha) changes every pixel
        alpha = (255 * xx / max(w - 1, 1)).astype(np.uint8)[..., None]
        return Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA")
    return Image.fromarray(rgb)


SCENARIOS = {  # name: (messages, keywords for chat() and the reference)
    "small image": ([{"role": "user", "content": [_image(300, 200, 1), "What is in the image?"]}], {}),
    "wide image, chinese question": (
        [{"role": "user", "content": [_image(4000, 500, 2), "图片里有什么？请详细描述。"]}], {}),
    "two images": ([{"role": "user", "content": [_image(640, 480, 3), _image(200, 900, 4),
                                                 "Which image has more stripes?"]}], {}),
    "two turns": ([{"role": "user", "content": [_image(777, 333, 5), "What is this?"]},
                   {"role": "assistant", "content": "A test pattern with stripes."},
                   {"role": "user", "content": "How many stripes are there?"}], {}),
    "text only": ([{"role": "user", "content": "Tell me about the weather, please."}], {}),
    "4x mode": ([{"role": "user", "content": [_image(640, 480, 6), "Describe it."]}], {"downsample_mode": "4x"}),
    "sliced 1344x1344": ([{"role": "user", "content": [_image(1344, 1344, 7), "What colour dominates?"]}], {}),
    "transparent image": ([{"role": "user", "content": [_image(500, 300, 8, "RGBA"), "What is shown?"]}], {}),
    "thinking": ([{"role": "user", "content": [_image(449, 449, 9), "Think about it."]}], {"enable_thinking": True}),
}
FILES = ("ours", "llama.cpp's")


@pytest.fixture(scope="module")
def original(tiny_hf, request) -> dict[str, dict]:
    """transformers' results for the scenarios the selected tests use, in one process (under emulation,
    scripts/arm64-test.sh, only the arm64-marked few)."""
    names = sorted({item.callspec.params["scenario"] for item in request.session.items
                    if item.module is request.module and hasattr(item, "callspec")})
    cases = [(SCENARIOS[s][0], {**SCENARIOS[s][1], "max_new_tokens": N_TOKENS}) for s in names]
    results = isolated.call("reference.v4_6:original_runs", str(tiny_hf["4.6"]), cases,
                            env=isolated.TRANSFORMERS_5_23, version="5.23.0", timeout=3600)
    return dict(zip(names, results, strict=True))


@pytest.fixture(scope="module")
def files(tiny_hf, converted, tmp_path_factory) -> dict[str, tuple]:
    ours = converted("4.6", "f32")
    out = tmp_path_factory.mktemp("llamacpp-4.6")
    model = llamacpp_convert.convert(tiny_hf["4.6"], out / "model-f32.gguf", "--outtype", "f32", "--no-mtp")
    mmproj = llamacpp_convert.convert(tiny_hf["4.6"], out / "mmproj-f32.gguf", "--outtype", "f32", "--mmproj")
    return {"ours": (ours.model, ours.mmproj), "llama.cpp's": (model, mmproj)}


@pytest.fixture(scope="module", params=FILES)
def runtime(request, files):
    model, mmproj = files[request.param]
    with MiniCPMV(model, mmproj, n_ctx=4096, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


@pytest.mark.arm64(scenario=("small image", "4x mode"))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_prompt_and_embeddings_equal_transformers(original, runtime, scenario: str) -> None:
    msgs, kw = SCENARIOS[scenario]
    want = original[scenario]
    assert runtime.prompt_ids(msgs, **kw) == want["ids"]
    images = message_images(msgs)
    assert len(images) == len(want["pieces"])
    mode = kw.get("downsample_mode")
    for img, ref in zip(images, want["pieces"], strict=True):
        _, _, got = runtime.encoder.encode_image(load_rgb(img, alpha="white"), 9, downsample=mode)
        assert got.shape == ref.shape
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, rel


@pytest.mark.arm64(scenario="small image")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_answers_equal_transformers(original, runtime, scenario: str) -> None:
    """sampling=False is generate()'s greedy decoding for 4.6: the same ids, and the same text as
    post_process_image_text_to_text (special tokens skipped, plain added tokens kept, stripped)."""
    msgs, kw = SCENARIOS[scenario]
    want = original[scenario]
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, sampling=False, **kw)
    tokens = want["tokens"]
    stops = {runtime.model.llm.token_id(t) for t in ("<|im_end|>", "<|endoftext|>")}
    assert runtime.last.tokens == (tokens[:-1] if tokens and tokens[-1] in stops else tokens)
    assert text == want["text"]
