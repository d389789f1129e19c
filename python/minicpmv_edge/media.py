"""The images and video frames of a conversation, encoded in prompt order (through the embedding cache).

`encode_turns()` first reads only headers (a video's packets and frame size, an image's size) and counts the
pieces the encoder will get, so a prompt that cannot fit the context is refused before any pixel is decoded. Then
each video becomes the frames its family's recipe samples, in place, and each image and frame is decoded, sliced,
encoded and dropped before the next is decoded. In the turns returned, every image is replaced by its `Encoded`
entry (grid, pieces, each piece's embedding rows) and every video by an `EncodedVideo` of its frames' entries, which
is all the prompt layout needs.

Tokens per piece are the encoder's: a resampler's fixed query_num, or for MiniCPM-V 4.6's merger the piece's patches
/ 16 or / 4, its `downsample_mode` chosen per call (the mmproj's default otherwise); the mode is part of the slicing
(piece sides in multiples of 56 or 28) and of the cache key.

A family with a padded vision batch (`Family.vision_batch`, where the mmproj runs one: encoder.padded_batch) has
every piece of the call encoded as a member of one batch padded to a length the family derives from all pieces'
patch counts, taken from the slicing plans of the header sizes. Should a decoded image or frame differ from its
header (an EXIF orientation stored after a PNG's pixels, a frame resized mid-stream), the length is derived again
and the images encoded again. The cache key includes the length, so an image whose length changed (a larger image
joined the chat) is encoded again, and the KV cache keeps nothing from it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from .cache import EmbeddingCache, Encoded, EncodedVideo, PackedFrame, group_key, pixels_key
from .chat_options import DOWNSAMPLE_MODES
from .encoder import VisionEncoder
from .families import Family
from .image import Image, image_size, load_rgb
from .messages import Turn
from .slicer import SliceConfig, plan
from .stats import ChatStats
from .video import Video, frames_at, probe


class _SizeChanged(Exception):
    """A decoded image is not the size its header said (padded batch: the batch length is derived again)."""


class Media:
    def __init__(self, encoder: VisionEncoder, cache: EmbeddingCache, model_id: str, n_threads: int,
                 family: Family) -> None:
        self.encoder = encoder
        self.cache = cache
        self.model_id = model_id
        self.n_threads = n_threads
        self.family = family
        self.batch = family.vision_batch if encoder.padded_batch else None

    def downsample_mode(self, requested: str | None) -> str | None:
        """The merger mode of this call's images: `requested` ("16x" or "4x"), else the mmproj's default
        (`minicpmv_edge.vision.downsample_mode`, else 16x); None for an encoder without the choice (a resampler gives
        every piece its query_num rows), which refuses a requested one (ValueError)."""
        modes = self.encoder.downsample_modes
        if requested is None:
            return (self.encoder.default_downsample or DOWNSAMPLE_MODES[0]) if modes else None
        if requested in modes:
            return requested
        if not modes:
            raise ValueError(f"downsample_mode {requested!r}: {self.family.display}'s encoder gives every image piece "
                             f"a fixed {self.encoder.query_num} tokens (a resampler) and has no downsample mode; leave "
                             "downsample_mode unset")
        raise ValueError(f"downsample_mode {requested!r}: this mmproj runs {', '.join(map(repr, modes))} only")

    def _config(self, max_slice_nums: int, downsample: str | None) -> SliceConfig:
        return self.encoder.slice_config_for(max_slice_nums, downsample=downsample)

    def _tokens(self, pieces: list[tuple[int, int]], downsample: str | None) -> tuple[int, ...]:
        """Embedding rows of each planned piece ((width, height) in pixels)."""
        return tuple(self.encoder.piece_tokens(w, h, downsample) for w, h in pieces)

    def encode_turns(self, turns: list[Turn], max_slices: int, stats: ChatStats, n_ctx: int | None = None,
                     text_tokens: int = 0, progress: Callable[[int], None] | None = None,
                     downsample: str | None = None, temporal_ids: Sequence[Sequence[int]] | None = None
                     ) -> list[Turn]:
        """The turns with each image part replaced by its encoding (a video by its frames'); `stats` gets what it
        cost. A prompt whose image rows and `text_tokens` (a lower bound of its text) exceed `n_ctx` is refused
        (ValueError) before any image is decoded. `downsample`: the merger mode (downsample_mode(); None for a
        resampler). `temporal_ids`: the image parts are frames packed in these groups of time ids (4.5): the first
        frame of each group becomes the group's encoding, the others PackedFrame; a video whose recipe packs its
        frames (VideoPlan.groups) is laid out the same way."""
        t0 = time.perf_counter()
        recipe, limits = self.family.video, self._config(max_slices, downsample)
        media = [p for t in turns for p in t.parts if not isinstance(p, str)]
        videos = {k: probe(p, limits.max_pixels, limits.max_side)  # each video once, however often it appears
                  for k, p in {id(p): p for p in media if isinstance(p, Video)}.items()}
        if videos and recipe is None:
            raise TypeError(f"internal: {self.family.display} has no video recipe")
        plans = {k: recipe.plan(v.n_frames, v.fps) for k, v in videos.items()} if recipe else {}
        images = sum(1 for p in media if not isinstance(p, Video))
        image_groups = self._image_groups(images, temporal_ids)
        if (temporal_ids is not None or any(p.groups for p in plans.values())) and not self.encoder.temporal:
            raise ValueError(f"{'temporal_ids' if temporal_ids is not None else 'this video recipe'}: packed "
                             f"frames need the temporal resampler (MiniCPM-V 4.5's), which this "
                             f"{self.family.display} mmproj does not have; pass the frames as images without "
                             "temporal_ids")
        # id(part) -> [width, height, max_slice_nums, images it makes], from the headers
        sizes = {**{k: [v.width, v.height, 0, len(plans[k].frames)] for k, v in videos.items()},
                 **{id(p): [*image_size(p, limits.max_pixels, limits.max_side), max_slices, 1]
                    for p in media if not isinstance(p, Video)}}
        for k in videos:
            sizes[k][2] = recipe.max_slices(sizes[k][3])  # type: ignore[union-attr]
        # placeholders of each media part in order: a packed group has one (its first frame's)
        holders = [len(plans[id(p)].groups or plans[id(p)].frames) if isinstance(p, Video) else 1 for p in media]
        at = 0
        for i, p in enumerate(media):
            if not isinstance(p, Video):
                holders[i] = 1 if image_groups is None or image_groups[at][1] == 0 else 0
                at += 1
        for attempt in (1, 2):  # again, once, if a decoded size differs from its header's in a padded batch
            planned = {k: plan(w, h, self._config(n, downsample))[1] for k, (w, h, n, _) in sizes.items()}
            rows = sum(sum(self._tokens(planned[id(p)], downsample)) * n for p, n in zip(media, holders, strict=True))
            if n_ctx is not None and rows + text_tokens > n_ctx:
                raise ValueError(f"the prompt is at least {rows + text_tokens} tokens ({rows} of them image rows), "
                                 f"more than n_ctx {n_ctx}")
            ps = limits.patch_size
            pad_to = 0 if self.batch is None else self.batch.pad_length(  # the longest piece of the call
                [max((a // ps) * (b // ps) for a, b in pieces) for pieces in planned.values()])
            suffix = f"|padded to {pad_to}" if pad_to else ""
            stats.images = stats.pieces = stats.pieces_encoded = 0
            out: list[Turn] = []
            packer = _Packer(self, stats, progress)
            image_at = 0
            try:
                for t in turns:
                    parts: list = []
                    for p in t.parts:
                        if isinstance(p, str):
                            parts.append(p)
                            continue
                        w, h, n_slices, _ = sizes[id(p)]
                        if isinstance(p, Video):
                            vplan = plans[id(p)]
                            frames: list = []
                            packs = [(g, j) for g, ids in enumerate(vplan.groups or ()) for j in range(len(ids))]
                            vpacker = _Packer(self, stats, progress)
                            rgbs = frames_at(p, vplan.frames, limits.max_pixels, limits.max_side)
                            for k, f in enumerate(rgbs):
                                rgb = load_rgb(Image(f, name=f"{p.name}: frame"), limits.max_pixels,
                                               limits.max_side, alpha=limits.alpha)
                                if vplan.groups:
                                    g, j = packs[k]
                                    vpacker.add(g, vplan.groups[g], j, rgb, frames, n_slices)
                                    continue
                                if self.batch and attempt == 1 and (rgb.shape[1], rgb.shape[0]) != (w, h):
                                    sizes[id(p)][:2] = rgb.shape[1], rgb.shape[0]
                                    raise _SizeChanged
                                frames.append(self._image(rgb, n_slices, pad_to, suffix, downsample, stats, progress))
                            vpacker.finish()  # a group cut short (fewer frames decoded than the file counts)
                            parts.append(EncodedVideo(tuple(frames)))
                            continue
                        rgb = load_rgb(p, limits.max_pixels, limits.max_side, alpha=limits.alpha)
                        group = image_groups[image_at] if image_groups is not None else None
                        image_at += 1
                        if group is not None:
                            g, j = group
                            packer.add(("images", g), temporal_ids[g], j, rgb, parts, n_slices)  # type: ignore
                            continue
                        if self.batch and attempt == 1 and (rgb.shape[1], rgb.shape[0]) != (w, h):
                            sizes[id(p)][:2] = rgb.shape[1], rgb.shape[0]
                            raise _SizeChanged
                        parts.append(self._image(rgb, n_slices, pad_to, suffix, downsample, stats, progress))
                    out.append(Turn(t.role, parts))
                if packer.pending:
                    raise RuntimeError("internal: a packed group of images was left unfinished")
            except _SizeChanged:
                continue
            break
        stats.encode_ms = (time.perf_counter() - t0) * 1e3
        return out

    @staticmethod
    def _image_groups(images: int, temporal_ids: Sequence[Sequence[int]] | None) -> list[tuple[int, int]] | None:
        """(group, place in the group) of each image part, for temporal_ids that cover exactly the images."""
        if temporal_ids is None:
            return None
        lengths = [len(g) for g in temporal_ids]
        if sum(lengths) != images:
            raise ValueError(f"temporal_ids: {len(lengths)} group(s) of {'+'.join(map(str, lengths))} = {sum(lengths)} "
                             f"time ids, but the conversation has {images} image(s) (each image, in order, needs one "
                             "id; a Video part gets its own from the video recipe)")
        return [(g, j) for g, n in enumerate(lengths) for j in range(n)]

    def _image(self, rgb: np.ndarray, n_slices: int, pad_to: int, suffix: str, downsample: str | None,
               stats: ChatStats, progress: Callable[[int], None] | None) -> Encoded:
        hit = self._encode(rgb, n_slices, pad_to, suffix, downsample, stats)
        stats.images += 1
        stats.pieces += hit.n_pieces
        if progress:
            progress(hit.n_pieces)
        return hit

    def encode_group(self, frames: list[np.ndarray], time_ids: Sequence[int], n_slices: int,
                     stats: ChatStats) -> Encoded:
        """A packed group's encoding (its units' rows, in the layout of its first frame's pieces), from the cache or
        the encoder (then cached)."""
        key = group_key(frames, list(time_ids), n_slices, self.model_id)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        try:
            grid, n, emb = self.encoder.encode_group(frames, time_ids, n_slices, self.n_threads)
        except MemoryError as e:
            raise MemoryError(f"out of memory while encoding a packed group of {len(frames)} frames"
                              + (f": {e}" if str(e) else "")) from e
        hit = Encoded(key, grid, n, emb, (self.encoder.query_num,) * n)
        self.cache.put(hit)
        stats.pieces_encoded += n
        return hit

    def _encode(self, rgb: np.ndarray, n_slices: int, pad_to: int, suffix: str, downsample: str | None,
                stats: ChatStats) -> Encoded:
        """One image's encoding, from the cache or the encoder (then cached), with each piece's rows."""
        key = pixels_key(rgb, n_slices, self.model_id + suffix, downsample)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        try:
            grid, n, emb = self.encoder.encode_image(rgb, n_slices, pad_to, self.n_threads, downsample=downsample)
        except MemoryError as e:
            raise MemoryError(f"out of memory while slicing and encoding a {rgb.shape[1]}x{rgb.shape[0]} image"
                              + (f": {e}" if str(e) else "")) from e
        tokens = self._tokens(plan(rgb.shape[1], rgb.shape[0], self._config(n_slices, downsample))[1], downsample)
        if len(tokens) != n or sum(tokens) != len(emb):
            raise RuntimeError(f"internal: the encoder gave {n} pieces of {len(emb)} rows in all for a "
                               f"{rgb.shape[1]}x{rgb.shape[0]} image whose plan has {len(tokens)} pieces of "
                               f"{sum(tokens)} rows")
        hit = Encoded(key, grid, n, emb, tokens)
        self.cache.put(hit)
        stats.pieces_encoded += hit.n_pieces
        return hit


class _Packer:
    """Frames of packed groups as they are decoded: each group is encoded once its last frame arrives, and its
    encoding takes the place its first frame holds (the later frames hold PackedFrame)."""

    def __init__(self, media: Media, stats: ChatStats, progress: Callable[[int], None] | None) -> None:
        self.media, self.stats, self.progress = media, stats, progress
        self.pending: dict[object, tuple[list, int, list[np.ndarray]]] = {}
        self.ids: dict[object, Sequence[int]] = {}
        self.slices = 1

    def add(self, group: object, time_ids: Sequence[int], j: int, rgb: np.ndarray, dest: list, n_slices: int
            ) -> None:
        """Frame `j` of `group` (time ids `time_ids`), whose place is the next one in `dest`."""
        if j == 0:
            self.pending[group] = (dest, len(dest), [])
            self.ids[group], self.slices = time_ids, n_slices
            dest.append(None)  # the group's encoding, once its last frame is here
        else:
            dest.append(PackedFrame())
        holder, at, frames = self.pending[group]
        frames.append(rgb)
        self.stats.images += 1
        if len(frames) < len(time_ids):
            return
        del self.pending[group]
        self._encode(holder, at, frames, time_ids, n_slices)

    def finish(self) -> None:
        """Encode the groups still waiting for frames with the frames they have (their first time ids)."""
        for group, (holder, at, frames) in list(self.pending.items()):
            del self.pending[group]
            self._encode(holder, at, frames, self.ids[group][:len(frames)], self.slices)

    def _encode(self, holder: list, at: int, frames: list[np.ndarray], time_ids: Sequence[int], n_slices: int
                ) -> None:
        hit = self.media.encode_group(frames, time_ids, n_slices, self.stats)
        holder[at] = hit
        self.stats.pieces += hit.n_pieces
        if self.progress:
            self.progress(hit.n_pieces)
