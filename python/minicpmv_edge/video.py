"""Video input: a file (or its bytes) decoded with PyAV as a stream, frames converted to RGB only when sampled; a
sampled frame is handed on (to be sliced and encoded) before the next one is decoded, so a long video never sits in
memory. Which frames are sampled is the model family's video recipe (families/*/).

A video file is untrusted input. The frame count is the number of the stream's packets, counted as the original's
decord counts them when it indexes the file (a header's frame count or duration is never used, so a patched header
costs nothing). Frame sizes are checked against the image limits from the stream header before anything is
decoded, by FFmpeg's decoder (`max_pixels`) for every frame, and again for each sampled frame. FFmpeg reads the file
through a Python file object and may only use the container formats in ALLOWED_FORMATS, with no protocol at all: a
playlist, an `ffconcat` script or a reference inside the file cannot make it open anything else.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .image import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageError, check_size

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".ts"}
# FFmpeg's demuxers for those suffixes (their names as FFmpeg lists them); nothing that reads other files
ALLOWED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpeg", "mpegts", "flv",
                   "asf", "ogg")
_CONTAINER_OPTIONS = {"format_whitelist": ",".join(ALLOWED_FORMATS), "protocol_whitelist": "none"}


class VideoError(ValueError):
    """A video that cannot be read: missing, corrupt, without a video stream, undecodable or too large."""


@dataclass(frozen=True)
class Video:
    """A video in a message's content: a file path or the file's bytes (a path with a video suffix is recognised
    too). `name` is what error messages call it (default: the path, or "video bytes")."""

    source: Path | bytes
    name: str

    def __init__(self, source: str | os.PathLike[str] | bytes | bytearray, name: str | None = None) -> None:
        if isinstance(source, (bytes, bytearray)):
            src: Path | bytes = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            src = Path(source)
        else:
            raise TypeError(f"Video() takes a path or bytes, not {type(source).__name__}")
        object.__setattr__(self, "source", src)
        object.__setattr__(self, "name", name or (str(src) if isinstance(src, Path) else "video bytes"))

    def __repr__(self) -> str:
        return f"Video({self.name!r})"


@dataclass(frozen=True)
class VideoInfo:
    """What a video costs, known before any frame is decoded."""

    n_frames: int  # packets of the video stream
    fps: float  # the stream's average frame rate
    width: int  # frame size in the stream header
    height: int


def is_video_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike)) and Path(value).suffix.lower() in VIDEO_SUFFIXES


def _as_video(video: Video | str | os.PathLike[str]) -> Video:
    return video if isinstance(video, Video) else Video(video)


def _ffmpeg_reason(e: Exception) -> str:
    """An FFmpeg error without the file name PyAV appends to it."""
    reason = getattr(e, "strerror", None)
    return f"{type(e).__name__}: {reason or e}"


@contextmanager
def _opened(video: Video, max_pixels: int | None) -> Iterator[Any]:
    """The container, read by FFmpeg through a Python file object, closed (with the file) when the block ends."""
    import av

    src = video.source
    if isinstance(src, Path) and not src.is_file():
        raise VideoError(f"{video.name}: file not found")
    try:
        f = io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")  # closed with the block below
    except OSError as e:
        raise VideoError(f"{video.name}: cannot open ({e.strerror})") from None
    with f:
        try:
            # `options` also reach the probing decoder (avformat_find_stream_info decodes a frame of some streams)
            opts = {"max_pixels": str(max_pixels)} if max_pixels else None
            container = av.open(f, container_options=_CONTAINER_OPTIONS, options=opts)
        except MemoryError:
            raise
        except Exception as e:  # PyAV raises FFmpegError, but also IndexError, ValueError, ... on damaged files
            raise VideoError(f"{video.name}: not a video file this runtime reads (formats: "
                             f"{', '.join(ALLOWED_FORMATS)}; {_ffmpeg_reason(e)})") from None
        with container:
            if not container.streams.video:
                raise VideoError(f"{video.name}: has no video stream")
            if max_pixels:
                container.streams.video[0].codec_context.options = {"max_pixels": str(max_pixels)}
            yield container


def probe(video: Video | str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS,
          max_side: int | None = DEFAULT_MAX_SIDE) -> VideoInfo:
    """Frame count, frame rate and frame size, from the file's packets and stream header (nothing is decoded)."""
    v = _as_video(video)
    with _opened(v, max_pixels) as container:
        try:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            w, h = stream.codec_context.width, stream.codec_context.height
            if w <= 0 or h <= 0:
                raise VideoError(f"{v.name}: the video stream's frame size is unknown or over the limit of "
                                 f"{max_pixels} pixels (max_pixels)")
            check_size(w, h, v.name, max_pixels, max_side)
            n = sum(1 for pkt in container.demux(stream) if pkt.size)
        except (MemoryError, VideoError):
            raise
        except ImageError as e:
            raise VideoError(str(e)) from None
        except Exception as e:
            raise VideoError(f"{v.name}: cannot read the video stream ({_ffmpeg_reason(e)})") from None
    if n <= 0 or fps <= 0:
        raise VideoError(f"{v.name}: no frames (or no frame rate) in the video stream")
    return VideoInfo(n, fps, w, h)


def sampled_frames(video: Video | str | os.PathLike[str], pick: Callable[[int, float], list[int]],
                   info: VideoInfo | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[int, Iterator[np.ndarray]]:
    """(number of sampled frames, iterator of RGB uint8 [H, W, 3] frames in order). `pick(n_frames, fps)`: the
    indices a recipe samples; `info`: the video's probe(), when the caller has it already."""
    v = _as_video(video)
    info = info or probe(v, max_pixels, max_side)
    wanted = pick(info.n_frames, info.fps)
    return len(wanted), frames_at(v, wanted, max_pixels, max_side)


def frames_at(video: Video, wanted: list[int], max_pixels: int | None = DEFAULT_MAX_PIXELS,
              max_side: int | None = DEFAULT_MAX_SIDE) -> Iterator[np.ndarray]:
    """RGB uint8 [H, W, 3] frames at the ascending indices `wanted`, decoded as a stream (each one converted only
    when its turn comes)."""
    got = 0
    with _opened(video, max_pixels) as container:
        targets = iter(wanted)
        nxt = next(targets, None)
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if nxt is None:
                    break
                if i == nxt:
                    check_size(frame.width, frame.height, f"{video.name}: frame {i}", max_pixels, max_side)
                    got += 1
                    yield frame.to_ndarray(format="rgb24")
                    nxt = next(targets, None)
        except MemoryError:
            raise
        except ImageError as e:  # a frame larger than the limits
            raise VideoError(str(e)) from None
        except Exception as e:  # any failure inside PyAV's demuxer or decoder is a damaged video
            raise VideoError(f"{video.name}: decoding failed at frame {got} ({_ffmpeg_reason(e)})") from None
    if got == 0:
        raise VideoError(f"{video.name}: no frame could be decoded")
