"""Small files that cost a lot: the reproducers of hostile-input reports, built here (a few kB each)."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def mjpeg_file(path: Path, fmt: str, frames: int = 10, w: int = 64, h: int = 48) -> bytes:
    """A Motion-JPEG video (grey frames getting lighter) in the container `fmt` ("avi", "matroska")."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("mjpeg", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuvj420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 20 * i % 256, np.uint8), format="rgb24")
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path.read_bytes()


def with_frame_count(avi: bytes, count: int) -> bytes:
    """The AVI with the frame count of its main header and of its video stream header (`strh` length) replaced."""
    data = bytearray(avi)
    avih = data.index(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, count)  # dwTotalFrames
    strh = data.index(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, count)  # after type, handler, flags, priority+language, initial
    return bytes(data)  # frames, scale, rate, start: dwLength


def huge_frame_mkv(path: Path, side: int = 16000) -> bytes:
    """One Motion-JPEG frame in Matroska whose track and JPEG headers both say side x side."""
    data = bytearray(mjpeg_file(path, "matroska", frames=1, w=256, h=256))
    for element in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight: 2-byte values (256)
        i = data.index(element + b"\x82\x01\x00")
        struct.pack_into(">H", data, i + 2, side)
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def png(w: int, h: int) -> bytes:
    """A black 8-bit greyscale PNG of w x h, compressed in a stream (an 80,000,000 x 1 one is 78 kB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    idat = bytearray()
    left = (1 + w) * h  # every row: filter byte 0, then w black pixels; all zeros
    zeros = bytes(1 << 20)
    while left:
        idat += z.compress(zeros[: min(left, len(zeros))])
        left -= min(left, len(zeros))
    idat += z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b""))


def ffconcat(name: str) -> bytes:
    """An FFmpeg concat script naming one file (relative names are taken from the reader's directory)."""
    return f"ffconcat version 1.0\nfile '{name}'\n".encode()


def playlist(target: Path) -> bytes:
    """An HLS playlist whose one segment is `target`."""
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n".encode()
