"""MiniCPM-V 1.0 against its original, run under transformers 4.36 (the version its model card pins) in a process
of its own (reference/isolated.py): the reference (reference/minicpmv1.py) computes what the original chat() does,
and transformers 4.36 runs the generation (its greedy and beam search, the dummy BOS its repetition penalty counts)
and the slow tokenizer's decode. The tiny checkpoint has unusual dimensions: a 420 x 420 square (30 x 30 tokens), a
resampler of width 320 (2 heads of 160)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import message_images, prompt_ids
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from reference import isolated

N_TOKENS = 24


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (7 + seed)), 128 + 90 * np.cos(yy / 11), 255 * yy / max(h, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


SCENARIOS = {  # name: (messages, chat() keywords beyond max_new_tokens); "greedy": num_beams 1, no penalty
    "small image": ([{"role": "user", "content": [_image(120, 90, 1), "What is in the image?"]}], {}),
    "wide image": ([{"role": "user", "content": [_image(1600, 240, 2), "Describe it."]}], {}),
    "tall image": ([{"role": "user", "content": [_image(200, 1300, 3), "What is shown?"]}], {}),
    "two turns": ([{"role": "user", "content": [_image(640, 480, 4), "What is this?"]},
                   {"role": "assistant", "content": "A test pattern with stripes."},
                   {"role": "user", "content": "How many stripes are there?"}], {}),
    "chinese prompt": ([{"role": "user", "content": [_image(333, 500, 5), "图片里有什么？请详细描述。"]}], {}),
    "large photo": ([{"role": "user", "content": [_image(2000, 1500, 6), "What colour dominates?"]}], {}),
}
MODES = {"beam search (the default)": {}, "greedy": {"num_beams": 1, "repetition_penalty": 1.0},
         # a penalty below 1 favours what the penalty has seen: 4.36's dummy BOS, which the decode then keeps
         "beam search, penalty 0.5": {"repetition_penalty": 0.5}}


@pytest.fixture(scope="module")
def original(tiny_hf, request):
    """What the original computes for each (scenario, mode) the selected tests use, in one transformers 4.36
    process (under emulation, scripts/arm64-test.sh, only the arm64-marked few)."""
    keys = sorted({(item.callspec.params["scenario"], item.callspec.params.get("mode", "greedy"))
                   for item in request.session.items
                   if item.module is request.module and hasattr(item, "callspec")})
    cases = [(SCENARIOS[s][0], {**SCENARIOS[s][1], **MODES[m], "max_new_tokens": N_TOKENS}) for s, m in keys]
    results = isolated.call("reference.minicpmv1:original_chats", tiny_hf["1.0"], cases, timeout=3600)
    return dict(zip(keys, results, strict=True))


@pytest.fixture(scope="module")
def runtime(converted):
    res = converted("1.0", "f32")
    with MiniCPMV(res.model, res.mmproj, n_ctx=2048, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


@pytest.mark.arm64(scenario=("small image", "chinese prompt"))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_prompt_and_embeddings_equal_the_originals(original, runtime, scenario: str) -> None:
    """The prompt's ids, and each image's embeddings within 1e-4 of the original's (relative to their largest)."""
    msgs, _ = SCENARIOS[scenario]
    want = original[scenario, "greedy"]
    assert prompt_ids(runtime, msgs) == want["ids"]
    images = message_images(msgs)
    assert len(images) == len(want["pieces"])
    for img, ref in zip(images, want["pieces"], strict=True):
        grid, n, got = runtime.encoder.encode_image(np.asarray(img.convert("RGB")), 9)
        assert grid is None and n == 1
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, rel


@pytest.mark.arm64(scenario="small image")
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_answers_equal_the_originals(original, runtime, scenario: str, mode: str) -> None:
    """chat() with the original's defaults (sampling=False: beam search, 3 beams, repetition penalty 1.2 over the
    dummy BOS and the generated ids) and greedy: the same ids and the same text as the original chat() returns."""
    msgs, kw = SCENARIOS[scenario]
    want = original[scenario, mode]
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, **kw, **MODES[mode])
    assert want["tokens"][0] == 1  # transformers 4.36's dummy BOS
    tokens = want["tokens"][1:]
    assert runtime.last.tokens == (tokens[:-1] if tokens and tokens[-1] == 2 else tokens)
    assert text == want["text"]
