"""The images and video frames of a conversation, encoded in prompt order (through the embedding cache).

A video becomes its sampled frames in place (the video recipe, docs/sources.md); each frame is decoded, sliced,
encoded and dropped before the next is decoded. In the turns returned, every image is replaced by its `Encoded`
entry (grid, pieces, embedding rows), which is all the prompt layout needs.

MiniCPM-Llama3-V 2.5 (encoder.padded_batch): the original encodes all pieces of all images of the call as one batch
zero-padded to the longest piece, padding attended, so a piece's embedding depends on that length L. The images are
decoded first (all of the prompt's, as uint8 RGB; of a video only its first frame, which gives every frame's size),
L is taken from the slicing plans, then each image and frame is sliced and encoded with pad_to=L; its cache key
includes L, so an image whose L changed (a larger image joined the chat) is encoded again, and the KV cache keeps
nothing from it on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .cache import EmbeddingCache, Encoded, pixels_key
from .encoder import VisionEncoder
from .image import Image, load_rgb
from .messages import Turn
from .slicer import check_plan, plan
from .video import Video, max_slices_for, sampled_frames


@dataclass
class EncodeStats:
    images: int = 0  # images and video frames in the prompt
    pieces: int = 0
    pieces_encoded: int = 0  # pieces that went through the vision encoder (the rest came from the cache)
    encode_ms: float = 0.0


class Visuals:
    def __init__(self, encoder: VisionEncoder, cache: EmbeddingCache, model_id: str, n_threads: int) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model_id = model_id
        self.n_threads = n_threads

    def _encode(self, rgb: np.ndarray, max_slices: int, stats: EncodeStats,
                progress: Callable[[int], None] | None, pad_to: int = 0) -> Encoded:
        key = pixels_key(rgb, max_slices, self.model_id + (f"|padded to {pad_to}" if pad_to else ""))
        hit = self.cache.get(key)
        if hit is None:
            try:
                sliced = self.encoder.slice(rgb, max_slices, self.n_threads)
                emb = self.encoder.encode(sliced, pad_to=pad_to).reshape(-1, self.encoder.hidden)
            except MemoryError as e:
                h, w = rgb.shape[:2]
                raise MemoryError(f"out of memory while slicing and encoding a {w}x{h} image"
                                  + (f": {e}" if str(e) else "")) from e
            hit = Encoded(key, sliced.grid, len(sliced.pieces_u8), emb)
            self.cache.put(hit)
            stats.pieces_encoded += hit.n_pieces
        stats.images += 1
        stats.pieces += hit.n_pieces
        if progress:
            progress(hit.n_pieces)
        return hit

    def _longest_piece(self, rgb: np.ndarray, max_slices: int) -> int:
        """Patches in the largest piece slicing this image makes (from the plan: no pixel is touched)."""
        cfg = self.encoder.slice_config_for(max_slices, n_threads=1)
        check_plan(rgb.shape[1], rgb.shape[0], cfg)
        _, sizes = plan(rgb.shape[1], rgb.shape[0], cfg)
        return max((w // cfg.patch_size) * (h // cfg.patch_size) for w, h in sizes)

    def encode(self, turns: list[Turn], max_slices: int, progress: Callable[[int], None] | None = None
               ) -> tuple[list[Turn], list[Encoded], EncodeStats]:
        """(turns with each image part replaced by its encoding, the encodings in order, what it cost)."""
        t0 = time.perf_counter()
        stats = EncodeStats()
        out_turns, encoded = [], []
        max_pixels = self.encoder.slice_config.max_pixels
        decoded: dict[int, np.ndarray] = {}  # padded batch: every image decoded before any is encoded
        videos: dict[int, tuple[int, Iterator[np.ndarray]]] = {}  # and every video opened, its first frame read
        pad_to = 0
        if self.encoder.padded_batch:
            longest = []
            for p in (p for t in turns for p in t.parts):
                if isinstance(p, Image) and id(p) not in decoded:
                    decoded[id(p)] = load_rgb(p, max_pixels)
                    longest.append(self._longest_piece(decoded[id(p)], max_slices))
                elif isinstance(p, Video) and id(p) not in videos:
                    n, frames = sampled_frames(p.path)
                    first = next(frames, None)
                    if first is not None:  # every frame of a video has the first one's size
                        longest.append(self._longest_piece(first, max_slices_for(n)))
                        frames = itertools.chain([first], frames)
                    videos[id(p)] = n, frames
            pad_to = max(longest, default=0)
        for t in turns:
            parts: list = []
            for p in t.parts:
                if isinstance(p, str):
                    parts.append(p)
                elif isinstance(p, Video):
                    n, frames = videos.pop(id(p)) if id(p) in videos else sampled_frames(p.path)
                    for frame in frames:
                        encoded.append(self._encode(frame, max_slices_for(n), stats, progress, pad_to))
                        parts.append(encoded[-1])
                elif isinstance(p, Image):
                    rgb = decoded.pop(id(p)) if id(p) in decoded else load_rgb(p, max_pixels)
                    encoded.append(self._encode(rgb, max_slices, stats, progress, pad_to))
                    parts.append(encoded[-1])
                else:
                    raise TypeError(f"internal: unexpected part {type(p).__name__}")
            out_turns.append(Turn(t.role, parts))
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        return out_turns, encoded, stats
