"""Image rows per piece through the media stage (media.py), with a stand-in encoder: an encoder whose merger has a
downsample mode (MiniCPM-V 4.6: a piece's patches / 16 or / 4) gives every piece its own row count, which the
encodings carry, the n_ctx check counts and the cache key tells apart by mode; a resampler encoder refuses a mode.
The counts are checked against the fact sheet's examples (300x200, 640x480 and 449x449 in 16x)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from minicpmv_edge.cache import EmbeddingCache
from minicpmv_edge.families import FAMILIES
from minicpmv_edge.media import Media
from minicpmv_edge.messages import Turn
from minicpmv_edge.slicer import SliceConfig, plan
from minicpmv_edge.stats import ChatStats

WIDTH = 8  # embedding width of the stand-in


class Merger:
    """The encoder API media.py uses, for a 4.6-like mmproj (piece sides in multiples of 56 or 28 by mode)."""

    query_num = 0
    padded_batch = False
    downsample_modes: tuple[str, ...] = ("16x", "4x")
    default_downsample: str | None = "16x"
    slice_config = SliceConfig(preprocess="torchvision", size_unit=56)

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def slice_config_for(self, max_slice_nums: int, n_threads: int | None = None,
                         downsample: str | None = None) -> SliceConfig:
        unit = 56 if (downsample or "16x") == "16x" else 28
        return replace(self.slice_config, max_slice_nums=max_slice_nums, size_unit=unit)

    def piece_tokens(self, width: int, height: int, downsample: str | None = None) -> int:
        return (width // 14) * (height // 14) // (16 if (downsample or "16x") == "16x" else 4)

    def encode_image(self, rgb: np.ndarray, max_slice_nums: int, pad_to: int = 0, n_threads: int | None = None,
                     downsample: str | None = None):
        self.calls.append(downsample)
        grid, pieces = plan(rgb.shape[1], rgb.shape[0], self.slice_config_for(max_slice_nums, None, downsample))
        rows = sum(self.piece_tokens(w, h, downsample) for w, h in pieces)
        return grid, len(pieces), np.zeros((rows, WIDTH), np.float32)


class Resampler(Merger):
    query_num = 5
    downsample_modes = ()
    default_downsample = None
    slice_config = SliceConfig()

    def slice_config_for(self, max_slice_nums: int, n_threads: int | None = None,
                         downsample: str | None = None) -> SliceConfig:
        return replace(self.slice_config, max_slice_nums=max_slice_nums)

    def piece_tokens(self, width: int, height: int, downsample: str | None = None) -> int:
        return self.query_num


def _media(enc: Merger, family: str = "4.6") -> Media:
    return Media(enc, EmbeddingCache(), "model", 1, FAMILIES[family])  # type: ignore[arg-type]


def _turns(*sizes: tuple[int, int]) -> list[Turn]:
    return [Turn("user", [*(np.full((h, w, 3), 100, np.uint8) for w, h in sizes), "What?"])]


@pytest.mark.parametrize(("size", "tokens"), [((300, 200), (70,)), ((640, 480), (63, 70, 70)),
                                              ((449, 449), (64, 66, 66))])
def test_each_piece_has_its_own_rows(size: tuple[int, int], tokens: tuple[int, ...]) -> None:
    enc = Merger()
    out = _media(enc).encode_turns(_turns(size), 9, ChatStats(), downsample="16x")
    image = out[0].parts[0]
    assert image.tokens == tokens and image.emb.shape == (sum(tokens), WIDTH) and enc.calls == ["16x"]


def test_modes_are_cached_apart_and_counted_for_n_ctx() -> None:
    enc = Merger()
    media = _media(enc)
    a = media.encode_turns(_turns((640, 480)), 9, ChatStats(), downsample="16x")[0].parts[0]
    b = media.encode_turns(_turns((640, 480)), 9, ChatStats(), downsample="4x")[0].parts[0]
    assert a.key != b.key and b.tokens == (252, 260, 260) and len(media.cache) == 2
    media.encode_turns(_turns((640, 480)), 9, ChatStats(), downsample="4x")  # a cache hit
    assert enc.calls == ["16x", "4x"]
    with pytest.raises(ValueError, match=r"at least 776 tokens \(772 of them image rows\), more than n_ctx 775"):
        media.encode_turns(_turns((640, 480)), 9, ChatStats(), n_ctx=775, text_tokens=4, downsample="4x")
    media.encode_turns(_turns((640, 480)), 9, ChatStats(), n_ctx=776, text_tokens=4, downsample="4x")


def test_downsample_mode_defaults_and_refusals() -> None:
    merger = _media(Merger())
    assert merger.downsample_mode(None) == "16x" and merger.downsample_mode("4x") == "4x"
    resampler = _media(Resampler(), "2.6")
    assert resampler.downsample_mode(None) is None
    with pytest.raises(ValueError, match=r"MiniCPM-V 2\.6.s encoder gives every image piece a fixed 5 tokens"):
        resampler.downsample_mode("4x")
    out = resampler.encode_turns(_turns((640, 480)), 9, ChatStats())
    assert out[0].parts[0].tokens == (5, 5, 5)
