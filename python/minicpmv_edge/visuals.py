"""The images and video frames of a conversation, encoded in prompt order (through the embedding cache).

A video becomes its sampled frames in place (the video recipe, docs/sources.md); each frame is decoded, sliced,
encoded and dropped before the next is decoded. In the turns returned, every image is replaced by its `Encoded`
entry (grid, pieces, embedding rows), which is all the prompt layout needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cache import EmbeddingCache, Encoded, pixels_key
from .encoder import VisionEncoder
from .image import Image, load_rgb
from .messages import Turn
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
                progress: Callable[[int], None] | None) -> Encoded:
        key = pixels_key(rgb, max_slices, self.model_id)
        hit = self.cache.get(key)
        if hit is None:
            try:
                sliced = self.encoder.slice(rgb, max_slices, self.n_threads)
                emb = self.encoder.encode(sliced).reshape(-1, self.encoder.hidden)
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

    def encode(self, turns: list[Turn], max_slices: int, progress: Callable[[int], None] | None = None
               ) -> tuple[list[Turn], list[Encoded], EncodeStats]:
        """(turns with each image part replaced by its encoding, the encodings in order, what it cost)."""
        t0 = time.perf_counter()
        stats = EncodeStats()
        out_turns, encoded = [], []
        max_pixels = self.encoder.slice_config.max_pixels
        for t in turns:
            parts: list = []
            for p in t.parts:
                if isinstance(p, str):
                    parts.append(p)
                elif isinstance(p, Video):
                    n, frames = sampled_frames(p.path)
                    for frame in frames:
                        encoded.append(self._encode(frame, max_slices_for(n), stats, progress))
                        parts.append(encoded[-1])
                elif isinstance(p, Image):
                    encoded.append(self._encode(load_rgb(p, max_pixels), max_slices, stats, progress))
                    parts.append(encoded[-1])
                else:
                    raise TypeError(f"internal: unexpected part {type(p).__name__}")
            out_turns.append(Turn(t.role, parts))
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        return out_turns, encoded, stats
