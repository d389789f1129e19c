"""OmniLMM-12B against its original (reference/omnilmm.py: the original code's steps on timm 0.9.10's own EVA02-E
builder and transformers 4.36's own Mistral, generate() and fast tokenizer), run under transformers 4.36 in a process
of its own. The tiny checkpoint is a torch pickle with unusual dimensions: a 5-head tower of width 80 on a 336 x 336
square (its 16 x 16 table resized up to 24 x 24), a resampler of width 256 with 64 queries (its 8 x 8 key table
resized to 24 x 24), a GQA language model."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import message_images, prompt_ids
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from reference import isolated

N_TOKENS = 24


def _image(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (7 + seed)), 128 + 90 * np.cos(yy / 11), 255 * yy / max(h, 1)], -1)
    if mode == "RGBA":
        base = np.concatenate([base, 255 * (xx > w / 2)[..., None]], -1)  # half transparent: the original drops alpha
    return Image.fromarray(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8), mode)


# name: (our messages, the original's messages (its chat() takes the image apart), parse_special)
SCENARIOS = {
    "small image": ([{"role": "user", "content": [_image(120, 90, 1), "What is in the image?"]}],
                    [{"role": "user", "content": "What is in the image?"}], False),
    "4000x500, Chinese": ([{"role": "user", "content": [_image(4000, 500, 2), "图片里有什么？请详细描述。"]}],
                          [{"role": "user", "content": "图片里有什么？请详细描述。"}], False),
    "two turns": ([{"role": "user", "content": [_image(640, 480, 3), "What is this?"]},
                   {"role": "assistant", "content": "A test pattern with stripes."},
                   {"role": "user", "content": "How many stripes are there?"}],
                  [{"role": "user", "content": "What is this?"},
                   {"role": "assistant", "content": "A test pattern with stripes."},
                   {"role": "user", "content": "How many stripes are there?"}], False),
    "<image> in the question": ([{"role": "user", "content": [_image(300, 400, 4), "Look at <image> and describe."]}],
                                [{"role": "user", "content": "Look at <image> and describe."}], True),
    "transparent, emoji": ([{"role": "user", "content": [_image(300, 200, 5, "RGBA"), "Describe 😀 ünïcode."]}],
                           [{"role": "user", "content": "Describe 😀 ünïcode."}], False),
    "large photo": ([{"role": "user", "content": [_image(2000, 1500, 6), "What colour dominates?"]}],
                    [{"role": "user", "content": "What colour dominates?"}], False),
    "text only": ([{"role": "user", "content": "Tell me a story."}], [{"role": "user", "content": "Tell me a story."}],
                  False),
}


@pytest.fixture(scope="module")
def original(tiny_hf):
    cases = []
    for msgs, theirs, _ in SCENARIOS.values():
        images = message_images(msgs)
        cases.append((images[0] if images else None, theirs, N_TOKENS))
    results = isolated.call("reference.omnilmm:original_chats", tiny_hf["omnilmm"], cases, timeout=3600)
    return dict(zip(SCENARIOS, results, strict=True))


@pytest.fixture(scope="module")
def runtime(converted):
    res = converted("omnilmm", "f32")
    with MiniCPMV(res.model, res.mmproj, n_ctx=2048, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_prompt_and_embeddings_equal_the_originals(original, runtime, scenario: str) -> None:
    """The prompt's ids (placeholder rows as <im_patch>) and the image's embeddings within 1e-4 of the original's
    (relative to their largest)."""
    msgs, _, parse_special = SCENARIOS[scenario]
    want = original[scenario]
    patch = runtime.model.llm.specials["<im_patch>"]
    got = prompt_ids(runtime, msgs, parse_special)
    assert [patch if a == 0 else a for a in got] == want["ids"]  # (no <unk> in these prompts but the rows)
    images = message_images(msgs)
    if not images:
        return
    grid, n, rows = runtime.encoder.encode_image(np.asarray(images[0].convert("RGB")), 1)
    assert grid is None and n == 1
    ref = want["embeddings"]
    rel = np.abs(rows - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, rel


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_answers_equal_the_originals(original, runtime, scenario: str) -> None:
    """chat(sampling=False): the original's generate() with do_sample=False (its only other setting dropped): the
    same ids, and the same text as its decode (special tokens skipped, byte runs as the fast tokenizer, stripped)."""
    msgs, _, parse_special = SCENARIOS[scenario]
    want = original[scenario]
    text = runtime.chat(msgs, sampling=False, max_new_tokens=N_TOKENS, parse_special=parse_special)
    assert want["tokens"][0] == 1  # transformers 4.36's dummy BOS
    tokens = want["tokens"][1:]
    assert runtime.last.tokens == (tokens[:-1] if tokens and tokens[-1] == 2 else tokens)
    assert text == want["text"]


def test_tower_table_is_timms(tiny_hf, converted) -> None:
    """The tower's position table the converter stores at the square's grid equals timm's own
    resample_abs_pos_embed (antialiased bicubic), class row included."""
    import gguf

    ref = isolated.call("reference.omnilmm:tower_positions", tiny_hf["omnilmm"], 24)
    r = gguf.GGUFReader(converted("omnilmm", "f32").mmproj)
    t = {x.name: np.array(x.data) for x in r.tensors}
    np.testing.assert_allclose(t["v.class_position_embd"], ref[0], rtol=0, atol=1e-6)
    # (torch weighs the taps in float32: 4e-6 apart on values near 2; a = -0.75, the plain bicubic, is 0.36 apart)
    np.testing.assert_allclose(t["v.position_embd.weight"].reshape(ref[1:].shape), ref[1:], rtol=0, atol=1e-5)


@pytest.mark.arm64(int8="auto")
@pytest.mark.parametrize("int8", ["auto", "avx2", "ggml", "off"])
def test_q8_0_tower_rows_against_the_original(original, converted, int8: str) -> None:
    """A q8_0 file on each matrix path (our int8 kernel, with our int8 attention over the tower's 577 tokens where
    "auto" takes it: on x86, while the NEON kernel keeps f32 attention; our AVX2 kernel; ggml's int8 kernels;
    dequantized for OpenBLAS): every embedding row of every scenario's image against the original's float32 rows,
    cosine >= 0.999. The NEON kernel computes the exact GELU with std::erfc, the x86 ones with their own erfc."""
    from minicpmv_edge import _core
    from minicpmv_edge.encoder import VisionEncoder

    if int8 == "avx2" and "avx2" not in _core.int8_kernels():
        pytest.skip("this CPU cannot run our AVX2 int8 kernel")
    enc = VisionEncoder(converted("omnilmm", "q8_0").mmproj, n_threads=2, int8=int8)
    assert enc.native.uses_int8 == (int8 != "off")
    if int8 == "auto" and _core.int8_kernels():
        ours = _core.int8_kernels()[0]
        assert enc.native.int8_kernel == ours
        assert enc.native.attention_kernel == (ours if ours in ("vnni", "avx2") else "f32")
    for msgs, _, _ in SCENARIOS.values():
        for img in message_images(msgs):
            _, _, rows = enc.encode_image(np.asarray(img.convert("RGB")), 1)
            ref = original[next(k for k, v in SCENARIOS.items() if v[0] is msgs)]["embeddings"]
            cos = (rows * ref).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(ref, axis=1)
            assert cos.min() >= 0.999, cos.min()
