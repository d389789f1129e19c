"""The images and video frames of a conversation: planned from their headers, then encoded in prompt order
(through the embedding cache).

`encode()` first reads only file headers (image sizes, a video's packets and frame size) and counts the pieces the
encoder will get, so a prompt that cannot fit the context is refused before any pixel is decoded; then it turns each
video into the frames its family's recipe samples, in place; each image and frame is decoded, sliced, encoded and
dropped before the next is decoded. In the turns returned, every image is replaced by its `Encoded` entry (grid,
pieces, embedding rows), which is all the prompt layout needs.

A family with a padded vision batch (`Family.vision_batch`, where the mmproj runs one: encoder.padded_batch) has
every piece of the call encoded as a member of one batch padded to a length the family derives from all pieces'
patch counts. The counts come from the slicing plans of the decoded sizes (EXIF orientation applied), so every image
is decoded once to measure it (and dropped: the prompt's images are never all in memory at once) and a video's
first frame is read, which gives every frame's size; then each image and frame is sliced and encoded with that
length. The cache key includes it, so an image whose length changed (a larger image joined the chat) is encoded
again, and the KV cache keeps nothing from it on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .cache import EmbeddingCache, Encoded, pixels_key
from .encoder import VisionEncoder
from .families import Family
from .image import Image, image_size, load_rgb
from .messages import Turn
from .slicer import check_plan, plan
from .stats import ChatStats
from .video import Video, VideoInfo, probe, sampled_frames


@dataclass
class MediaPlan:
    """What a conversation's images and videos will cost, from their headers alone."""

    pieces: int = 0  # pieces the vision encoder gets, query_num embedding rows each
    videos: dict[int, VideoInfo] = field(default_factory=dict)  # id(Video part) -> its probe


class Media:
    def __init__(self, encoder: VisionEncoder, cache: EmbeddingCache, model_id: str, n_threads: int,
                 family: Family) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model_id = model_id
        self.n_threads = n_threads
        self.family = family
        self.batch = family.vision_batch if encoder.padded_batch else None

    def _video_slices(self, n_sampled: int) -> int:
        recipe = self.family.video
        if recipe is None:
            raise TypeError(f"internal: {self.family.display} has no video recipe")
        return recipe.max_slices(n_sampled)

    def plan(self, turns: list[Turn], max_slices: int) -> MediaPlan:
        """Every image's and video's size from its header, checked against the limits, and the pieces they make."""
        out = MediaPlan()
        cfg = self.encoder.slice_config_for(max_slices, n_threads=1)
        for p in (p for t in turns for p in t.parts):
            if isinstance(p, Image):
                w, h = image_size(p, cfg.max_pixels, cfg.max_side)
                out.pieces += len(plan(w, h, cfg)[1])
            elif isinstance(p, Video):
                info = out.videos.get(id(p)) or probe(p, cfg.max_pixels, cfg.max_side)
                out.videos[id(p)] = info
                n = len(self.family.video.frame_indices(info.n_frames, info.fps)) if self.family.video else 0
                out.pieces += n * len(plan(info.width, info.height,
                                           self.encoder.slice_config_for(self._video_slices(n), n_threads=1))[1])
        return out

    def _encode(self, rgb: np.ndarray, max_slices: int, stats: ChatStats,
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

    def _frames(self, video: Video, media: MediaPlan) -> tuple[int, Iterator[np.ndarray]]:
        cfg = self.encoder.slice_config
        recipe = self.family.video
        if recipe is None:
            raise TypeError(f"internal: {self.family.display} has no video recipe")
        return sampled_frames(video, recipe.frame_indices, media.videos.get(id(video)), cfg.max_pixels, cfg.max_side)

    def encode(self, turns: list[Turn], max_slices: int, stats: ChatStats, n_ctx: int | None = None,
               text_tokens: int = 0, progress: Callable[[int], None] | None = None) -> list[Turn]:
        """The turns with each image part replaced by its encoding (a video by its frames'); `stats` gets what it
        cost. A prompt whose image rows and `text_tokens` (a lower bound of its text) exceed `n_ctx` is refused
        (ValueError) before any image is decoded."""
        t0 = time.perf_counter()
        media = self.plan(turns, max_slices)
        rows = media.pieces * self.encoder.query_num
        if n_ctx is not None and rows + text_tokens > n_ctx:
            raise ValueError(f"the prompt is at least {rows + text_tokens} tokens ({rows} of them image rows), more "
                             f"than n_ctx {n_ctx}")
        out_turns = []
        cfg = self.encoder.slice_config
        videos: dict[int, tuple[int, Iterator[np.ndarray]]] = {}  # padded batch: every video opened, 1st frame read
        pad_to = 0
        if self.batch is not None:
            longest, seen = [], set()
            for p in (p for t in turns for p in t.parts):
                if isinstance(p, Image) and id(p) not in seen:
                    seen.add(id(p))
                    longest.append(self._longest_piece(load_rgb(p, cfg.max_pixels, cfg.max_side), max_slices))
                elif isinstance(p, Video) and id(p) not in videos:
                    n, frames = self._frames(p, media)
                    first = next(frames, None)
                    if first is not None:  # every frame of a video has the first one's size
                        longest.append(self._longest_piece(first, self._video_slices(n)))
                        frames = itertools.chain([first], frames)
                    videos[id(p)] = n, frames
            pad_to = self.batch.pad_length(longest)
        for t in turns:
            parts: list = []
            for p in t.parts:
                if isinstance(p, str):
                    parts.append(p)
                elif isinstance(p, Video):
                    n, frames = videos.pop(id(p)) if id(p) in videos else self._frames(p, media)
                    parts += [self._encode(frame, self._video_slices(n), stats, progress, pad_to) for frame in frames]
                elif isinstance(p, Image):
                    parts.append(self._encode(load_rgb(p, cfg.max_pixels, cfg.max_side), max_slices, stats, progress,
                                              pad_to))
                else:
                    raise TypeError(f"internal: unexpected part {type(p).__name__}")
            out_turns.append(Turn(t.role, parts))
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        return out_turns
