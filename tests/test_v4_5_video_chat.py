"""MiniCPM-V 4.5's packed video frames through chat() against the original (reference/v4_5.py's PackedPipeline45:
the processor's layout and the 3-D resampler written from the fact sheet §5.3, transformers 4.51's Qwen3, in a
process of its own): frames as images with `temporal_ids`, (a) six frames packed by three, use_image_id False,
max_slice_nums 1 (the model card's call), (b) four sliced frames (max_slice_nums 2) packed by two with image ids;
and a `Video(path)` part through 4.5's recipe. Each: the prompt's ids, every packed unit's embeddings within 1e-4
(relative to their largest), greedy ids and text. Then the embedding cache and KV reuse on packed groups, and the
refusals. (Layout rules without a model: tests/unit/test_packed_frames.py.)"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_v4_5 import FILES, GREEDY, _image, files  # noqa: F401  (files: a fixture)
from test_v4_5_video import _card_time_ids
from test_video_cache import make_clip

from minicpmv_edge.cache import EmbeddingCache
from minicpmv_edge.chat import MiniCPMV
from minicpmv_edge.video import Video
from reference import isolated

N_TOKENS = 16


def _frames(n: int, w: int, h: int, seed: int) -> list[Image.Image]:
    """Frames of one size that change a little from one to the next (a video's)."""
    return [_image(w, h, seed + (i % 3)) for i in range(n)]


FRAMES_A = _frames(6, 640, 360, 1)
FRAMES_B = _frames(4, 640, 480, 4)
SCENARIOS = {  # name: (messages, temporal_ids, max_slice_nums, use_image_id)
    "packed by 3": ([{"role": "user", "content": [*FRAMES_A, "Describe the video."]}],
                    [[0, 3, 7], [10, 13, 17]], 1, False),
    "sliced, packed by 2, image ids": ([{"role": "user", "content": [*FRAMES_B, "What happens?"]}],
                                       [[0, 5], [10, 15]], 2, True),
}
CLIP = (4, 10, 160, 120)  # seconds, fps, width, height: 20 frames at choose_fps 5, packing 1


def _clip_frames(path: Path) -> tuple[list[Image.Image], list[list[int]]]:
    """The model card's encode_video on every frame PyAV decodes (test_v4_5_video's transcription of §9)."""
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx, ids, packing = _card_time_ids(len(frames), fps, 5)
    return [Image.fromarray(frames[i]) for i in idx], [ids[i:i + packing] for i in range(0, len(ids), packing)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    seconds, fps, w, h = CLIP
    return make_clip(tmp_path_factory.mktemp("clip45") / "clip.mp4", seconds=seconds, fps=fps, w=w, h=h)


@pytest.fixture(scope="module")
def original(tiny_hf, clip) -> dict[str, dict]:
    frames, groups = _clip_frames(clip)
    cases = [(msgs, {"temporal_ids": ids, "max_slice_nums": slices, "use_image_id": image_id,
                     "max_new_tokens": N_TOKENS}) for msgs, ids, slices, image_id in SCENARIOS.values()]
    cases.append(([{"role": "user", "content": [*frames, "What happens in the video?"]}],
                  {"temporal_ids": groups, "max_slice_nums": 1, "use_image_id": False, "max_new_tokens": N_TOKENS}))
    results = isolated.call("reference.v4_5:packed_runs", str(tiny_hf["4.5"]), cases,
                            env=isolated.TRANSFORMERS_4_51, version="4.51.0", timeout=3600)
    return dict(zip([*SCENARIOS, "video"], results, strict=True))


@pytest.fixture(scope="module", params=FILES)
def runtime(request, files):  # noqa: F811
    model, mmproj = files[request.param]
    with MiniCPMV(model, mmproj, n_ctx=4096, n_threads=2, kv_type="f32", flash_attn=False) as m:
        yield m


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_packed_frames_equal_the_originals(original, runtime, scenario: str) -> None:
    msgs, groups, slices, image_id = SCENARIOS[scenario]
    want = original[scenario]
    kw = {"temporal_ids": groups, "max_slice_nums": slices, "use_image_id": image_id}
    assert runtime.prompt_ids(msgs, **kw) == want["ids"]
    frames = [np.asarray(c.convert("RGB")) for c in msgs[0]["content"] if isinstance(c, Image.Image)]
    blocks, at = [], 0
    for ids in groups:
        _, n, rows = runtime.encoder.encode_group(frames[at:at + len(ids)], ids, slices)
        blocks += list(rows.reshape(n, -1, rows.shape[1]))
        at += len(ids)
    assert len(blocks) == len(want["units"])
    for got, ref in zip(blocks, want["units"], strict=True):
        assert got.shape == ref.shape and _rel(got, ref) <= 1e-4, _rel(got, ref)
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, **GREEDY, **kw)
    assert runtime.last.tokens == want["tokens"]
    assert text == want["text"]
    assert runtime.last.images == len(frames) and runtime.last.pieces == len(want["units"])


def test_video_goes_through_the_recipe(original, runtime, clip: Path) -> None:
    """Video(path): the recipe's frames and time ids, max_slice_nums 1 and no image ids, as the model card calls
    chat()."""
    want = original["video"]
    msgs = [{"role": "user", "content": [Video(clip), "What happens in the video?"]}]
    assert runtime.prompt_ids(msgs) == want["ids"]
    text = runtime.chat(msgs, max_new_tokens=N_TOKENS, **GREEDY)
    assert runtime.last.tokens == want["tokens"] and text == want["text"]
    assert runtime.last.images == 20 and runtime.last.pieces == len(want["units"]) == 20


def test_cache_and_kv_reuse_on_packed_groups(files) -> None:  # noqa: F811
    """A second turn about the same packed frames encodes nothing and prefills only the new turn; the answers are
    the ones a run without cache and KV reuse gives. Other time ids are another encoding."""
    model, mmproj = files["ours"]
    msgs, groups, slices, image_id = SCENARIOS["sliced, packed by 2, image ids"]
    kw = {"temporal_ids": groups, "max_slice_nums": slices, "use_image_id": image_id, "max_new_tokens": 8, **GREEDY}
    opts = {"n_ctx": 4096, "n_threads": 2, "kv_type": "f32", "flash_attn": False}

    def run(m: MiniCPMV) -> tuple[list[str], list[int], list[int]]:
        history, answers, encoded, reused = list(msgs), [], [], []
        for follow in ("And then?", "Anything else?"):
            answers.append(m.chat(history, **kw))
            encoded.append(m.last.pieces_encoded)
            reused.append(m.last.reused_tokens)
            history += [{"role": "assistant", "content": answers[-1]}, {"role": "user", "content": follow}]
        return answers, encoded, reused

    with MiniCPMV(model, mmproj, cache=EmbeddingCache(max_bytes=0), reuse_kv=False, **opts) as plain:
        want, enc_plain, reused_plain = run(plain)
    with MiniCPMV(model, mmproj, **opts) as fast:
        got, enc_fast, reused_fast = run(fast)
        fast.chat(msgs, **{**kw, "temporal_ids": [[0, 5], [10, 16]]})
        assert fast.last.pieces_encoded == 3  # the second group's units again: its time ids changed
    assert got == want
    assert enc_plain == [6, 6] and enc_fast == [6, 0]  # 2 groups x (overview + 2 slices)
    assert reused_plain == [0, 0] and reused_fast[1] > 0


def test_bad_temporal_ids_are_refused(files, converted) -> None:  # noqa: F811
    model, mmproj = files["ours"]
    msgs = [{"role": "user", "content": [*FRAMES_A[:3], "?"]}]
    with MiniCPMV(model, mmproj, n_threads=2) as m:
        with pytest.raises(ValueError, match=r"2\+2 = 4 time ids, but the conversation has 3 image"):
            m.chat(msgs, temporal_ids=[[0, 1], [2, 3]], max_new_tokens=2)
        with pytest.raises(TypeError, match="a flat list is one group"):
            m.chat(msgs, temporal_ids=[0, 1, 2], max_new_tokens=2)
        assert m.last.images == 0
    res = converted("2.6", "f32")
    with MiniCPMV(res.model, res.mmproj, n_threads=2) as m26:
        with pytest.raises(ValueError, match=r"need the temporal resampler \(MiniCPM-V 4\.5's\).*MiniCPM-V 2\.6"):
            m26.chat(msgs, temporal_ids=[[0, 1, 2]], max_new_tokens=2)


def test_the_server_takes_temporal_ids(original, files, tmp_path: Path) -> None:  # noqa: F811
    """`temporal_ids`, `max_slice_nums` and `use_image_id` as extra request fields (the official client's
    extra_body): the frames as image parts give the original's greedy answer; a count that does not fit is a 400."""
    import openai
    from test_server import KEY, Server, data_url, png

    msgs, groups, slices, image_id = SCENARIOS["packed by 3"]  # 1 slice and no image ids: not the defaults
    parts = [{"type": "image_url", "image_url": {"url": data_url(png(c))}} if isinstance(c, Image.Image)
             else {"type": "text", "text": c} for c in msgs[0]["content"]]
    server = Server(*files["ours"], tmp_path / "server.log", "--api-key", KEY, "-c", "4096", "-t", "2")
    try:
        client = server.client()
        extra = {"temporal_ids": groups, "max_slice_nums": slices, "use_image_id": image_id, "repetition_penalty": 1.0}
        got = client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}], temperature=0,
                                             max_tokens=N_TOKENS, extra_body=extra)
        assert got.choices[0].message.content == original["packed by 3"]["text"]
        with pytest.raises(openai.BadRequestError, match=r"2\+2\+1 = 5 time ids, but the conversation has 6 image"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}], max_tokens=2,
                                           extra_body={**extra, "temporal_ids": [[0, 1], [2, 3], [4]]})
    finally:
        server.stop()
