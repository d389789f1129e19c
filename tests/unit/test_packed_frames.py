"""MiniCPM-V 4.5's packed video frames (chat()'s `temporal_ids`), without a model: the prompt layout against the fact
sheet's worked examples (spec/minicpmv-4.0-4.5.md §5.3: only a group's first frame keeps a placeholder, built from
its size, numbered among all images; the text before every other frame's tag stripped), the order of the packed
units the encoder gets (the sheet's 4 frames of 640x480, max_slice_nums 2, groups of 2), the media stage's grouping
(a stand-in encoder), and the errors for bad temporal_ids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_prompt_layout import ROWS, CharVocab, Picture, expected

from minicpmv_edge.cache import EmbeddingCache, EncodedVideo, PackedFrame
from minicpmv_edge.chat_options import PromptParams, check_temporal_ids
from minicpmv_edge.encoder import VisionEncoder
from minicpmv_edge.families import FAMILIES
from minicpmv_edge.media import Media
from minicpmv_edge.messages import Turn
from minicpmv_edge.prompt import build_prompt
from minicpmv_edge.slicer import SliceConfig, plan
from minicpmv_edge.stats import ChatStats

F = FAMILIES["4.5"]
Q = 3
OFF = {"enable_thinking": False}  # what 4.5's chat() passes by default


def _vocab() -> CharVocab:
    return CharVocab([*F.special_tokens, F.bos_token, F.eos_token, *F.stop_tokens])


def _chat(content: str) -> str:
    """4.5's one-turn prompt (§7): no system turn, the empty think block of enable_thinking=False."""
    return f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _ph(grid: tuple[int, int] | None, image_id: int | None) -> str:
    """One placeholder as 2.6's get_slice_image_placeholder writes it (4.5 keeps it)."""
    s = (f"<image_id>{image_id}</image_id>" if image_id is not None else "") + f"<image>{ROWS}</image>"
    if grid:
        s += "\n".join("".join(f"<slice>{ROWS}</slice>" for _ in range(grid[0])) for _ in range(grid[1]))
    return s


def _frames(groups: list[int], grid: tuple[int, int] | None = None) -> list:
    """The encodings media.py hands the prompt for frames packed in groups of these lengths."""
    return [Picture(grid) if j == 0 else PackedFrame() for n in groups for j in range(n)]


def _positions(parts: list, use_image_id: bool) -> list:
    return build_prompt(F.chat_template, [Turn("user", parts)], F, _vocab(), Q, use_image_id,
                        template_kwargs=OFF).positions


def test_six_frames_in_groups_of_three() -> None:
    """The sheet's example: P(f0)\\nP(f3)\\nDescribe the video."""
    frames = _frames([3, 3])
    got = _positions([*frames, "Describe the video."], False)
    firsts = [frames[0], frames[3]]
    assert got == expected(_chat(f"{_ph(None, None)}\n{_ph(None, None)}\nDescribe the video."), _vocab(), firsts)


def test_image_ids_count_every_frame() -> None:
    """image_id is the first frame's index among all images: 0 and 3 for groups of 3, and a later image goes on
    from there."""
    frames = _frames([3, 3])
    image = Picture(None)
    got = _positions([*frames, image, "Describe."], True)
    want = _chat("\n".join([_ph(None, 0), _ph(None, 3), _ph(None, 6), "Describe."]))
    assert got == expected(want, _vocab(), [frames[0], frames[3], image])


def test_sliced_frames_in_groups_of_two() -> None:
    """The sheet's 4 frames of 640x480 with max_slice_nums 2 (grid 2x1), groups of 2: a placeholder of 1 + 2 pieces
    per group, built from its first frame."""
    frames = _frames([2, 2], (2, 1))
    got = _positions([*frames, "What happens?"], True)
    want = _chat(f"{_ph((2, 1), 0)}\n{_ph((2, 1), 2)}\nWhat happens?")
    assert got == expected(want, _vocab(), [frames[0], frames[2]])


def test_text_before_a_packed_frame_is_stripped() -> None:
    """The chunk between the previous tag and a packed frame's is `.strip()`ed (inner text stays), and what
    follows joins it; a chunk before a group's first frame is kept."""
    frames = _frames([3, 1])
    got = _positions([frames[0], " a b ", frames[1], frames[2], "then", frames[3], "Q"], False)
    # "TAG\n a b \nTAG\nTAG\nthen\nTAG\nQ": the chunks before frames 1 and 2 stripped, the one before frame 3 kept
    want = _chat(f"{_ph(None, None)}a b\nthen\n{_ph(None, None)}\nQ")
    assert got == expected(want, _vocab(), [frames[0], frames[3]])


def test_a_video_of_packed_frames() -> None:
    """A Video part is its frames as images (4.5 has no video tag), packed as its recipe's groups say."""
    frames = _frames([3, 2])
    got = _positions([EncodedVideo(tuple(frames)), "Describe the video."], False)
    assert got == expected(_chat(f"{_ph(None, None)}\n{_ph(None, None)}\nDescribe the video."), _vocab(),
                           [frames[0], frames[3]])


# ---- the packed units the encoder gets ----

class _Recorder(VisionEncoder):
    """VisionEncoder.encode_group with the slicing and the native call replaced: each frame gives pieces named
    (frame, piece) as the sheet's 640x480 frame does with max_slice_nums 2 (an overview and 2 slices)."""

    def __init__(self) -> None:  # no file
        self.query_num, self.hidden = 2, 4
        self.calls: list = []

    def pieces_of(self, rgb, max_slice_nums, n_threads=None, downsample=None):
        f = int(rgb[0, 0, 0])
        return (2, 1), [np.full((3, 14, 14), f * 10 + s, np.float32) for s in range(3)]

    def encode_units(self, pieces, units):
        self.calls.append(([int(p[0, 0, 0]) for p in pieces], [list(i) for i, _ in units], [list(t) for _, t in units]))
        return np.zeros((len(units), self.query_num, self.hidden), np.float32)


def test_units_are_piece_major_within_a_group() -> None:
    enc = _Recorder()
    frames = [np.full((480, 640, 3), f, np.uint8) for f in range(4)]
    for g, ids in enumerate([[0, 5], [10, 15]]):
        grid, n, rows = enc.encode_group(frames[2 * g:2 * g + 2], ids, 2)
        assert (grid, n, rows.shape) == ((2, 1), 3, (3 * 2, 4))
    order = [f"f{v // 10} {'ov' if v % 10 == 0 else f's{v % 10}'}" for pieces, _, _ in enc.calls for v in pieces]
    assert order == ["f0 ov", "f1 ov", "f0 s1", "f1 s1", "f0 s2", "f1 s2",
                     "f2 ov", "f3 ov", "f2 s1", "f3 s1", "f2 s2", "f3 s2"]  # the sheet's 12 pieces
    assert [t for _, _, ts in enc.calls for t in ts] == [[0, 5], [0, 5], [0, 5], [10, 15], [10, 15], [10, 15]]
    assert all(units == [[0, 1], [2, 3], [4, 5]] for _, units, _ in enc.calls)


def test_frames_of_a_group_must_slice_alike() -> None:
    enc = _Recorder()
    enc.pieces_of = lambda rgb, *a, **k: ((2, 1) if rgb[0, 0, 0] == 0 else None,  # type: ignore[method-assign]
                                          [np.zeros((3, 14, 14), np.float32)] * (3 if rgb[0, 0, 0] == 0 else 1))
    frames = [np.full((48, 64, 3), f, np.uint8) for f in range(2)]
    with pytest.raises(ValueError, match=r"frame 1 of a packed group is sliced into 1 pieces.*one size"):
        enc.encode_group(frames, [0, 1], 2)
    with pytest.raises(ValueError, match="one time id per frame"):
        enc.encode_group(frames, [0], 2)


# ---- the media stage, with a stand-in encoder ----

class _Temporal:
    """The encoder API media.py uses, for a 4.5-like mmproj: query_num rows per piece or packed unit."""

    query_num = 5
    padded_batch = False
    temporal = True
    downsample_modes: tuple[str, ...] = ()
    default_downsample = None
    slice_config = SliceConfig()

    def __init__(self) -> None:
        self.groups: list[tuple[int, list[int]]] = []
        self.images = 0

    def slice_config_for(self, max_slice_nums: int, n_threads: int | None = None, downsample: str | None = None):
        return replace(self.slice_config, max_slice_nums=max_slice_nums)

    def piece_tokens(self, width: int, height: int, downsample: str | None = None) -> int:
        return self.query_num

    def encode_image(self, rgb, max_slice_nums, pad_to=0, n_threads=None, downsample=None):
        self.images += 1
        grid, pieces = plan(rgb.shape[1], rgb.shape[0], self.slice_config_for(max_slice_nums))
        return grid, len(pieces), np.zeros((len(pieces) * self.query_num, 8), np.float32)

    def encode_group(self, frames, time_ids, max_slice_nums, n_threads=None):
        self.groups.append((len(frames), list(time_ids)))
        grid, pieces = plan(frames[0].shape[1], frames[0].shape[0], self.slice_config_for(max_slice_nums))
        return grid, len(pieces), np.zeros((len(pieces) * self.query_num, 8), np.float32)


def _frame(v: int, w: int = 640, h: int = 480) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def test_media_packs_images_by_temporal_ids() -> None:
    enc = _Temporal()
    media = Media(enc, EmbeddingCache(), "m", 1, F)  # type: ignore[arg-type]
    turns = [Turn("user", [*(_frame(v) for v in range(5)), "What happens?"])]
    stats = ChatStats()
    out = media.encode_turns(turns, 2, stats, temporal_ids=((0, 5), (10, 15), (20,)))
    parts = out[0].parts
    assert [type(p).__name__ for p in parts] == ["Encoded", "PackedFrame", "Encoded", "PackedFrame", "Encoded", "str"]
    assert enc.groups == [(2, [0, 5]), (2, [10, 15]), (1, [20])] and enc.images == 0
    assert parts[0].grid == (2, 1) and parts[0].tokens == (5, 5, 5)
    assert (stats.images, stats.pieces, stats.pieces_encoded) == (5, 9, 9)
    # the n_ctx check counts one placeholder per group: 3 x 3 pieces x 5 rows
    with pytest.raises(ValueError, match=r"\(45 of them image rows\), more than n_ctx 46"):
        media.encode_turns(turns, 2, ChatStats(), n_ctx=46, text_tokens=2, temporal_ids=((0, 5), (10, 15), (20,)))
    # cached per group: its frames' pixels and time ids
    again = ChatStats()
    media.encode_turns(turns, 2, again, temporal_ids=((0, 5), (10, 15), (20,)))
    assert again.pieces_encoded == 0 and len(enc.groups) == 3
    other = ChatStats()
    media.encode_turns(turns, 2, other, temporal_ids=((0, 5), (10, 16), (20,)))
    assert other.pieces_encoded == 3 and enc.groups[-1] == (2, [10, 16])


def test_groups_may_span_messages() -> None:
    enc = _Temporal()
    media = Media(enc, EmbeddingCache(), "m", 1, F)  # type: ignore[arg-type]
    turns = [Turn("user", [_frame(1), "first"]), Turn("assistant", ["ok"]), Turn("user", [_frame(2), "next?"])]
    out = media.encode_turns(turns, 1, ChatStats(), temporal_ids=[[3, 4]])
    assert type(out[0].parts[0]).__name__ == "Encoded" and isinstance(out[2].parts[0], PackedFrame)
    assert enc.groups == [(2, [3, 4])]


def test_temporal_ids_must_cover_the_images() -> None:
    media = Media(_Temporal(), EmbeddingCache(), "m", 1, F)  # type: ignore[arg-type]
    turns = [Turn("user", [_frame(1), _frame(2), _frame(3), "?"])]
    with pytest.raises(ValueError, match=r"temporal_ids: 2 group\(s\) of 2\+2 = 4 time ids, but the conversation "
                                         r"has 3 image\(s\)"):
        media.encode_turns(turns, 1, ChatStats(), temporal_ids=((0, 1), (2, 3)))
    no_temporal = _Temporal()
    no_temporal.temporal = False
    media = Media(no_temporal, EmbeddingCache(), "m", 1, FAMILIES["2.6"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"temporal_ids: packed frames need the temporal resampler .*MiniCPM-V 2\.6"):
        media.encode_turns(turns, 1, ChatStats(), temporal_ids=((0, 1, 2),))


@pytest.mark.parametrize(("value", "error", "match"), [
    ([0, 1, 2], TypeError, r"temporal_ids\[0\] must be a group .*a flat list is one group"),
    ("0,1", TypeError, "temporal_ids must be a list of groups"),
    (5, TypeError, "temporal_ids must be a list of groups"),
    ([[0, 1], []], ValueError, r"temporal_ids\[1\] is an empty group"),
    ([], ValueError, "temporal_ids is empty"),
    ([[0, 1.5]], TypeError, r"temporal_ids\[0\]\[1\] must be an integer"),
    ([[0, -2]], ValueError, r"temporal_ids\[0\]\[1\] must be between -1 and 2147483647, got -2"),
    ([[0, 1 << 31]], ValueError, r"temporal_ids\[0\]\[1\] must be between -1 and 2147483647, got 2147483648"),
    ([[0, True]], TypeError, r"temporal_ids\[0\]\[1\] must be an integer"),
])
def test_bad_temporal_ids(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PromptParams(temporal_ids=value)  # type: ignore[arg-type]


def test_temporal_ids_as_the_model_card_passes_them() -> None:
    """Numpy groups (the card's encode_video returns int32 arrays) and tuples are taken as lists."""
    groups = [np.array([0, 3, 7], np.int32), np.array([10, 13], np.int32)]
    assert check_temporal_ids(groups) == ((0, 3, 7), (10, 13))
    assert PromptParams(temporal_ids=np.array([[1, 2], [3, 4]])).temporal_ids == ((1, 2), (3, 4))  # type: ignore
