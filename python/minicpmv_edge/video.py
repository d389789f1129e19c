"""Video input, as the original recipe feeds MiniCPM-V 2.6 (docs/sources.md): about one frame
per second (every round(fps)-th frame), at most 64 frames (uniform sub-sampling beyond that), all in one user turn,
each frame sliced with max_slice_nums 2 (1 when there are more than 16 frames) and no image ids.

Files are decoded with PyAV as a stream: frames are converted to RGB only when sampled, and a sampled frame is
handed on (to be sliced and encoded) before the next one is decoded, so a long video never sits in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".ts"}
MAX_NUM_FRAMES = 64
MANY_FRAMES = 16  # above this many frames, each frame is a single piece


class VideoError(ValueError):
    """A video file that cannot be read: missing, corrupt, without a video stream, or undecodable."""


@dataclass(frozen=True)
class Video:
    """A video in a message's content (a path with a video suffix is recognised too)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))


def is_video_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and Path(value).suffix.lower() in VIDEO_SUFFIXES


def frame_indices(n_frames: int, fps: float, max_frames: int = MAX_NUM_FRAMES) -> list[int]:
    """Every round(fps)-th frame; beyond max_frames, the middle of max_frames equal runs of those."""
    step = max(1, round(fps))
    idx = list(range(0, n_frames, step))
    if len(idx) > max_frames:
        gap = len(idx) / max_frames
        idx = [idx[int(i * gap + gap / 2)] for i in range(max_frames)]
    return idx


def max_slices_for(n_frames: int) -> int:
    return 1 if n_frames > MANY_FRAMES else 2


def _open(path: Path):
    import av

    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except MemoryError:
        raise
    except Exception as e:  # PyAV raises FFmpegError, but also IndexError, ValueError, ... on damaged files
        raise VideoError(f"{path}: not a video file PyAV can read ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def probe(path: str | os.PathLike[str]) -> tuple[int, float]:
    """(frame count, average frame rate); counts packets when the container does not say."""
    p = Path(path)
    container = _open(p)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        n = int(stream.frames or 0)
        if n <= 0:
            n = sum(1 for pkt in container.demux(stream) if pkt.size)
    except MemoryError:
        raise
    except Exception as e:
        raise VideoError(f"{p}: cannot read the video stream ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if n <= 0 or fps <= 0:
        raise VideoError(f"{p}: no frames (or no frame rate) in the video stream")
    return n, fps


def sampled_frames(path: str | os.PathLike[str]) -> tuple[int, Iterator[np.ndarray]]:
    """(number of sampled frames, iterator of RGB uint8 [H, W, 3] frames in order)."""
    n, fps = probe(path)
    wanted = frame_indices(n, fps)
    return len(wanted), _decode(Path(path), wanted)


def _decode(path: Path, wanted: list[int]) -> Iterator[np.ndarray]:
    container = _open(path)
    targets = iter(wanted)
    nxt = next(targets, None)
    got = 0
    try:
        for i, frame in enumerate(container.decode(video=0)):
            if nxt is None:
                break
            if i == nxt:
                got += 1
                yield frame.to_ndarray(format="rgb24")
                nxt = next(targets, None)
    except MemoryError:
        raise
    except Exception as e:  # any failure inside PyAV's demuxer or decoder is a damaged video
        raise VideoError(f"{path}: decoding failed at frame {got} ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if got == 0:
        raise VideoError(f"{path}: no frame could be decoded")
