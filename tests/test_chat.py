"""The chat runtime end to end against the PyTorch reference pipeline (tests/reference/pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicpmv_edge.chat import MiniCPMV
from reference.pipeline import ReferencePipeline

VERSIONS = ["2.6", "2.5"]


def _image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / (9 + seed)), 128 + 100 * np.cos(yy / 13), 255 * xx / max(w, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))


SCENARIOS = {
    "small image": lambda: [{"role": "user", "content": [_image(300, 200, 1), "What is in the image?"]}],
    "sliced 1344x1344": lambda: [{"role": "user", "content": [_image(1344, 1344, 2), "Describe it."]}],
    "two images": lambda: [{"role": "user", "content": [_image(320, 240, 3), _image(500, 700, 4),
                                                          "Compare the two pictures."]}],
    "few-shot": lambda: [
        {"role": "user", "content": [_image(200, 200, 5), "What colour dominates?"]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [_image(260, 180, 6), "What colour dominates?"]},
        {"role": "assistant", "content": "Blue, mostly."},
        {"role": "user", "content": [_image(240, 240, 7), "What colour dominates?"]},
    ],
    "two turns": lambda: [
        {"role": "user", "content": [_image(640, 480, 8), "What is this?"]},
        {"role": "assistant", "content": "A test pattern with stripes."},
        {"role": "user", "content": "How many stripes are there?"},
    ],
}


@pytest.fixture(scope="module")
def runtimes(converted):
    rts = {v: MiniCPMV(converted(v, "f32").model, converted(v, "f32").mmproj, n_ctx=4096, n_threads=2,
                       kv_type="f32", flash_attn=False) for v in VERSIONS}
    yield rts
    for r in rts.values():
        r.close()


@pytest.fixture(scope="module")
def references(tiny_hf):
    return {v: ReferencePipeline(tiny_hf[v]) for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_parity_with_the_reference(runtimes, references, version: str, scenario: str) -> None:
    msgs = SCENARIOS[scenario]()
    want_ids, want_logits = references[version].generate(msgs, n_tokens=32)
    rt = runtimes[version]
    rt.chat(msgs, temperature=0, repetition_penalty=1.0, max_new_tokens=32)
    assert rt.last.prompt_tokens == len(references[version].prompt(msgs)[0])
    got = rt.last.first_logits
    rel = np.abs(got - want_logits).max() / np.abs(want_logits).max()
    assert rel <= 1e-3, rel
    assert rt.last.tokens == want_ids


# ---- API behaviour ----

def test_openai_shape_and_paths_equal_the_original_shape(runtimes, tmp_path: Path) -> None:
    import base64
    import io

    img = _image(400, 300, 11)
    img.save(tmp_path / "x.png")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    rt = runtimes["2.6"]
    kw = {"temperature": 0, "max_new_tokens": 12}
    a = rt.chat([{"role": "user", "content": [img, "What is it?"]}], **kw)
    b = rt.chat([{"role": "user", "content": [str(tmp_path / "x.png"), "What is it?"]}], **kw)
    c = rt.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                {"type": "text", "text": "What is it?"}]}], **kw)
    d = rt.chat([{"role": "user", "content": [{"type": "image_url", "image_url": str(tmp_path / "x.png")},
                                                {"type": "text", "text": "What is it?"}]}], **kw)
    assert a == b == c == d


def test_stream_pieces_join_to_the_text(runtimes) -> None:
    rt = runtimes["2.6"]
    msgs = SCENARIOS["small image"]()
    full = rt.chat(msgs, temperature=0.9, seed=7, max_new_tokens=40)
    pieces = list(rt.chat(msgs, stream=True, temperature=0.9, seed=7, max_new_tokens=40))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces).strip() == full


def test_utf8_stream_never_splits_a_character(runtimes) -> None:
    from minicpmv_edge.chat import Utf8Stream

    model = runtimes["2.6"].model
    text = "emoji 😀👍🏽 and 世界, ünïcödé"
    ids = model.tokenize(text)
    pieces = [model.piece(t) for t in ids]
    assert any(len(p) and not _is_utf8(p) for p in pieces)  # some tokens hold part of a character
    s = Utf8Stream()
    out = [s.push(p) for p in pieces] + [s.flush()]
    assert "".join(out) == text
    assert all(_is_utf8(o.encode()) for o in out)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_sampling_follows_the_seed(runtimes) -> None:
    rt = runtimes["2.6"]
    msgs = [{"role": "user", "content": "Tell me a story."}]
    runs = {s: rt.chat(msgs, temperature=1.0, top_k=0, top_p=1.0, seed=s, max_new_tokens=24) for s in (1, 1, 2)}
    again = rt.chat(msgs, temperature=1.0, top_k=0, top_p=1.0, seed=1, max_new_tokens=24)
    assert runs[1] == again and runs[1] != runs[2]


def test_system_prompt_and_image_ids(runtimes, references) -> None:
    msgs = SCENARIOS["two images"]()
    rt, ref = runtimes["2.6"], references["2.6"]
    for kw in ({"system_prompt": "Answer in one word."}, {"use_image_id": False}, {"max_slice_nums": 1}):
        want_ids, _ = ref.generate(msgs, n_tokens=8, **kw)
        rt.chat(msgs, temperature=0, repetition_penalty=1.0, max_new_tokens=8, **kw)
        assert rt.last.prompt_tokens == len(ref.prompt(msgs, **kw)[0]), kw
        assert rt.last.tokens == want_ids, kw


def test_context_overflow_is_refused_before_decoding(converted) -> None:
    res = converted("2.6", "f16")
    with MiniCPMV(res.model, res.mmproj, n_ctx=256, n_threads=2) as rt:
        with pytest.raises(ValueError, match=r"the prompt is \d+ tokens and max_new_tokens 200: \d+ is more than "
                                             r"n_ctx 256"):
            rt.chat(SCENARIOS["small image"](), max_new_tokens=200)
        assert rt.session.n_past == 0


def test_mismatched_files_are_refused(converted) -> None:
    with pytest.raises(ValueError, match="architecture 'llama' does not go with"):
        MiniCPMV(converted("2.5", "f16").model, converted("2.6", "f16").mmproj)
    with pytest.raises(FileNotFoundError):
        MiniCPMV("/nonexistent/model.gguf", converted("2.6", "f16").mmproj)


@pytest.mark.parametrize(("msgs", "message"), [
    ([], "non-empty list"),
    ([{"role": "user"}], "must have 'role' and 'content'"),
    ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message must be from the user"),
    ([{"role": "user", "content": [{"type": "audio", "audio": "x"}]}], "unsupported content part type 'audio'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}],
     "does not download"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "invalid base64"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/no/such/image.png"}}]}],
     "file not found"),
    ([{"role": "user", "content": "a literal <unk> token"}], "literal text '<unk>'"),
])
def test_bad_conversations_raise(runtimes, msgs, message) -> None:
    with pytest.raises(ValueError, match=message):
        runtimes["2.6"].chat(msgs, max_new_tokens=4)


def test_soak_memory_is_flat(runtimes) -> None:
    """200 chats with images in one process: resident memory grows by less than 5 %."""
    import resource  # noqa: F401  (Linux: /proc gives the current RSS, which is what matters here)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1])

    rt = runtimes["2.6"]
    imgs = [_image(200 + 13 * i, 150 + 7 * i, i) for i in range(8)]
    for i in range(20):  # warm-up: buffers and caches reach their working size
        rt.chat([{"role": "user", "content": [imgs[i % 8], "What is it?"]}], max_new_tokens=8, seed=i)
    before = rss()
    for i in range(200):
        rt.chat([{"role": "user", "content": [imgs[i % 8], "What is it?"]}], max_new_tokens=8, seed=i)
    after = rss()
    assert after < before * 1.05, (before, after)


def test_min_new_tokens_forbids_early_stops(runtimes) -> None:
    rt = runtimes["2.6"]
    msgs = [{"role": "user", "content": "hi"}]
    for seed in range(6):
        rt.chat(msgs, temperature=1.5, top_k=0, top_p=1.0, seed=seed, max_new_tokens=30, min_new_tokens=30)
        assert len(rt.last.tokens) == 30 and not set(rt.last.tokens) & rt.stop_ids
