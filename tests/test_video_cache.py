"""Video input, the image-embedding cache and KV-prefix reuse."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from minicpmv_edge.cache import EmbeddingCache, Encoded
from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.families.v2_6.video import RECIPE
from minicpmv_edge.video import Video, VideoError, sampled_frames
from reference.pipeline import ReferencePipeline

frame_indices = RECIPE.frame_indices


def make_clip(path: Path, seconds: float, fps: int, w: int, h: int, seed: int = 0) -> Path:
    """A generated clip (moving stripes and noise), MPEG-4 part 2 in MP4."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(int(seconds * fps)):
            img = np.stack([128 + 100 * np.sin((xx + 7 * i) / 17), 128 + 100 * np.cos((yy - 5 * i) / 23),
                            np.full_like(xx, (40 * i) % 256)], -1) + rng.normal(0, 8, (h, w, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def reference_frames(path: Path) -> list[Image.Image]:
    """Every frame as PyAV decodes it, then the original recipe's choice (docs/sources.md), written here
    independently of minicpmv_edge.video."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = list(range(0, len(frames), max(1, round(fps))))
    if len(idx) > 64:
        gap = len(idx) / 64
        idx = [idx[int(i * gap + gap / 2)] for i in range(64)]
    return [Image.fromarray(frames[i]) for i in idx]


@pytest.fixture(scope="module")
def rt26(converted):
    res = converted("2.6", "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


def test_frame_indices_follow_the_recipe() -> None:
    assert frame_indices(100, 29.97) == [0, 30, 60, 90]
    assert frame_indices(10, 2.5) == [0, 2, 4, 6, 8]  # Python's round: 2.5 -> 2
    assert frame_indices(5, 0.4) == [0, 1, 2, 3, 4]  # below 1 fps: every frame
    long = frame_indices(7200 * 25, 25)
    assert len(long) == 64 and long[0] == 25 * 56 and long == sorted(long)


@pytest.mark.parametrize("version", ["2.6", "2.5"])
def test_video_parity_with_the_reference(converted, tiny_hf, tmp_path: Path, version: str) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=5, w=672, h=448)
    frames = reference_frames(clip)
    assert len(frames) == 4
    ref = ReferencePipeline(tiny_hf[version])
    want, _ = ref.generate([{"role": "user", "content": [*frames, "What happens in the video?"]}], n_tokens=32,
                           use_image_id=False, max_slice_nums=2)
    res = converted(version, "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2, kv_type="f32", flash_attn=False) as m:
        m.chat([{"role": "user", "content": [clip, "What happens in the video?"]}], temperature=0,
               repetition_penalty=1.0, max_new_tokens=32)
        assert m.last.images == 4 and m.last.pieces == 12  # 672x448 with max_slice_nums 2: overview + 2 slices
        assert m.last.tokens == want


def test_video_is_refused_for_2_0(converted, tmp_path: Path) -> None:
    """The original 2.0 has no video recipe: a clear error before anything is decoded."""
    from minicpmv_edge import MessageError

    clip = make_clip(tmp_path / "c.mp4", seconds=2, fps=2, w=64, h=48)
    res = converted("2.0", "f16")
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m:
        with pytest.raises(MessageError, match=r"MiniCPM-V 2\.0 has no video recipe"):
            m.chat([{"role": "user", "content": [Video(clip), "What happens?"]}])
        assert m.last.images == 0


def test_many_frames_are_single_pieces(rt26, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", seconds=20, fps=2, w=672, h=448)
    rt26.chat([{"role": "user", "content": [Video(clip), "Summarise."]}], max_new_tokens=4, seed=0)
    assert rt26.last.images == 20 and rt26.last.pieces == 20  # more than 16 frames: max_slice_nums 1


def test_bad_videos_raise(rt26, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "ok.mp4", seconds=2, fps=5, w=64, h=48).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(clip[: len(clip) // 3])
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(0).bytes(20000))
    for name in ("cut.mp4", "text.mp4", "noise.mkv", "missing.mp4"):
        with pytest.raises(VideoError):
            rt26.chat([{"role": "user", "content": [Video(tmp_path / name), "?"]}], max_new_tokens=2)
    import wave

    with wave.open(str(tmp_path / "sound.wav"), "wb") as w:  # audio only, behind a video suffix
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    (tmp_path / "sound.wav").rename(tmp_path / "sound.mp4")
    with pytest.raises(VideoError, match="not a video file this runtime reads"):  # WAV is no video container
        sampled_frames(tmp_path / "sound.mp4", frame_indices)
    with av.open(str(tmp_path / "sound.mkv"), "w") as out:  # audio only, in a video container
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pkt in [*stream.encode(frame), *stream.encode()]:
            out.mux(pkt)
    with pytest.raises(VideoError, match="has no video stream"):
        sampled_frames(tmp_path / "sound.mkv", frame_indices)


_FRAMES_CHILD = r"""
import sys
from minicpmv_edge.families.v2_6.video import RECIPE
from minicpmv_edge.video import sampled_frames
n, frames = sampled_frames(sys.argv[1], RECIPE.frame_indices)
print(n, sum(1 for f in frames if f.shape == (120, 160, 3)))
"""


def test_two_hour_video_is_streamed(tmp_path: Path) -> None:
    from helpers import run_measured

    clip = make_clip(tmp_path / "two_hours.mp4", seconds=7200, fps=1, w=160, h=120)
    base, base_mb = run_measured([sys.executable, "-c", "import minicpmv_edge.video, av, numpy"], timeout=120)
    out, peak_mb = run_measured([sys.executable, "-c", _FRAMES_CHILD, str(clip)], timeout=600)
    assert base.returncode == 0 and out.returncode == 0, out.stderr
    n, count = (int(v) for v in out.stdout.split())
    assert n == count == 64
    assert 0 < base_mb and peak_mb - base_mb < 100, (base_mb, peak_mb)  # all 7200 frames would be 415 MB


# ---- the embedding cache and KV reuse ----

def _img(seed: int, w: int = 600, h: int = 450) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _conversation(a: Image.Image, b: Image.Image) -> list[list[dict]]:
    """Five user turns with two images; each turn's prompt holds the whole history so far (answers filled in)."""
    return [[{"role": "user", "content": [a, "What is in this picture?"]}],
            [{"role": "user", "content": "What colours dominate?"}],
            [{"role": "user", "content": [b, "And in this second one?"]}],
            [{"role": "user", "content": "Which of the two is brighter?"}],
            [{"role": "user", "content": "Describe the first picture again."}]]


def _run(m: MiniCPMV, a: Image.Image, b: Image.Image) -> tuple[list[str], list[int], list[int]]:
    history: list[dict] = []
    answers, encoded, reused = [], [], []
    for turn in _conversation(a, b):
        history += turn
        answers.append(m.chat(history, temperature=0, max_new_tokens=12))
        encoded.append(m.last.pieces_encoded)
        reused.append(m.last.reused_tokens)
        history.append({"role": "assistant", "content": answers[-1]})
    return answers, encoded, reused


@pytest.mark.parametrize("version", ["2.6", "2.0"])
def test_cache_and_kv_reuse_change_nothing_but_time(converted, version: str) -> None:
    res = converted(version, "f32")
    a, b = _img(1), _img(2, 900, 500)
    kw = {"n_threads": 2, "kv_type": "f32", "flash_attn": False}
    with MiniCPMV(res.model, res.mmproj, cache=EmbeddingCache(max_bytes=0), reuse_kv=False, **kw) as plain:
        want, enc_plain, reused_plain = _run(plain, a, b)
    with MiniCPMV(res.model, res.mmproj, **kw) as fast:
        got, enc_fast, reused_fast = _run(fast, a, b)
    assert got == want
    assert reused_plain == [0] * 5 and all(r > 0 for r in reused_fast[1:])
    # each picture's pieces went through the encoder exactly once
    pieces_a, pieces_b = enc_plain[0], enc_plain[2] - enc_plain[0]
    assert enc_fast == [pieces_a, 0, pieces_b, 0, 0]
    assert enc_plain[1] == pieces_a  # without the cache the same image is encoded again


def test_editing_an_earlier_turn_invalidates_the_kv_cache(converted) -> None:
    res = converted("2.6", "f32")
    kw = {"n_threads": 2, "kv_type": "f32", "flash_attn": False}
    a = _img(3)
    first = [{"role": "user", "content": [a, "Describe it."]}, {"role": "assistant", "content": "Noise."},
             {"role": "user", "content": "Really?"}]
    edited = [{"role": "user", "content": [a, "Describe it briefly."]}, {"role": "assistant", "content": "Noise."},
              {"role": "user", "content": "Really?"}]
    with MiniCPMV(res.model, res.mmproj, **kw) as m:
        m.chat(first, temperature=0, max_new_tokens=8)
        got = m.chat(edited, temperature=0, max_new_tokens=8)
        reused = m.last.reused_tokens
    with MiniCPMV(res.model, res.mmproj, reuse_kv=False, **kw) as fresh:
        want = fresh.chat(edited, temperature=0, max_new_tokens=8)
        total = fresh.last.prompt_tokens
    assert got == want
    assert 0 < reused < total - 10  # only the unchanged beginning was kept


def test_disk_cache_is_reused_by_a_later_process(converted, tmp_path: Path) -> None:
    res = converted("2.6", "f16")
    msgs = [{"role": "user", "content": [_img(4), "What is it?"]}]
    with MiniCPMV(res.model, res.mmproj, n_threads=2, cache=EmbeddingCache(directory=tmp_path / "c")) as m:
        first = m.chat(msgs, temperature=0, max_new_tokens=8)
        assert m.last.pieces_encoded == m.last.pieces > 0
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1
    with MiniCPMV(res.model, res.mmproj, n_threads=2, cache=EmbeddingCache(directory=tmp_path / "c")) as m:
        assert m.chat(msgs, temperature=0, max_new_tokens=8) == first
        assert m.last.pieces_encoded == 0
    (next((tmp_path / "c").glob("*.npz"))).write_bytes(b"damaged")
    with MiniCPMV(res.model, res.mmproj, n_threads=2, cache=EmbeddingCache(directory=tmp_path / "c")) as m:
        assert m.chat(msgs, temperature=0, max_new_tokens=8) == first  # a damaged entry is recomputed
        assert m.last.pieces_encoded == m.last.pieces


def test_cache_is_bounded_lru() -> None:
    c = EmbeddingCache(max_bytes=3 * 400)
    items = [Encoded(f"k{i}", None, 1, np.zeros((10, 10), np.float32), (10,)) for i in range(5)]  # 400 bytes each
    for it in items[:3]:
        c.put(it)
    assert c.get("k0") is not None  # k0 is now the most recent
    c.put(items[3])  # evicts k1, the least recently used
    assert c.get("k1") is None and c.get("k0") is not None and c.get("k3") is not None
    assert len(c) == 3 and c.nbytes == 1200
    c.put(Encoded("huge", None, 1, np.zeros((100, 100), np.float32), (100,)))  # larger than the bound: not kept
    assert c.get("huge") is None and len(c) == 3


def test_a_stream_abandoned_midway_leaves_a_usable_session(converted) -> None:
    res = converted("2.6", "f32")
    kw = {"n_threads": 2, "kv_type": "f32", "flash_attn": False}
    a = _img(5)
    msgs = [{"role": "user", "content": [a, "Describe it."]}]
    follow = [*msgs, {"role": "assistant", "content": "Noise."}, {"role": "user", "content": "More?"}]
    with MiniCPMV(res.model, res.mmproj, **kw) as m:
        stream = m.chat(msgs, stream=True, temperature=0, max_new_tokens=20, min_new_tokens=20)
        next(stream)
        next(stream)
        stream.close()  # the caller stops reading after two pieces
        got = m.chat(follow, temperature=0, max_new_tokens=8)
        assert m.last.reused_tokens > 0
    with MiniCPMV(res.model, res.mmproj, reuse_kv=False, **kw) as fresh:
        assert fresh.chat(follow, temperature=0, max_new_tokens=8) == got
