"""MiniCPM-V 4.5's video recipe (the model card's `encode_video`, fact sheet §9): frames chosen at `choose_fps` up
to 180 frames *after* packing, consecutive frames packed by up to 3 into one resampler unit (64 tokens per group),
every frame one unsliced piece (max_slice_nums 1) without image ids, and each frame's time id on a 0.1 s grid.

The time id of a frame is its timestamp snapped to the nearest value of numpy's `arange(0, duration, 0.1)`, that
value divided by 0.1 in float64 and truncated to an integer: the division often lands just below an integer, so
the id is then one less than the grid index (4.3 s -> 42). The original does exactly this; a port must too.

choose_fps: the model card's example calls encode_video with 5 (its function default is 3). We default to 5, what
the published usage runs, so a `Video(path)` answer matches the card's; `PackedSeconds(choose_fps=3)` gives the
function default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..family import VideoPlan


@dataclass(frozen=True)
class PackedSeconds:
    choose_fps: float = 5
    force_packing: int | None = None  # the card's force_packing (capped at max_num_packing)
    max_num_frames: int = 180  # frames after packing, i.e. groups
    max_num_packing: int = 3
    time_scale: float = 0.1
    use_image_id: bool = False

    def plan(self, n_frames: int, fps: float) -> VideoPlan:
        if n_frames <= 0 or fps <= 0:
            return VideoPlan([], 1, [])
        duration = n_frames / fps
        if self.choose_fps * int(duration) <= self.max_num_frames:
            packing = 1
            count = round(min(self.choose_fps, round(fps)) * min(self.max_num_frames, duration))
        else:
            packing = math.ceil(duration * self.choose_fps / self.max_num_frames)
            if packing <= self.max_num_packing:
                count = round(duration * self.choose_fps)
            else:
                count, packing = self.max_num_frames * self.max_num_packing, self.max_num_packing
        if self.force_packing:
            packing = min(self.force_packing, self.max_num_packing)
        count = max(1, min(count, n_frames))
        gap = n_frames / count
        frames = [int(i * gap + gap / 2) for i in range(count)]
        ids = self.time_ids([f / fps for f in frames], duration)
        return VideoPlan(frames, packing, [ids[i:i + packing] for i in range(0, len(ids), packing)])

    def time_ids(self, seconds: list[float], duration: float) -> list[int]:
        """Each timestamp snapped to the nearest point of arange(0, duration, time_scale) (a tie: the later one),
        divided by time_scale in float64 and truncated (the original's int32 cast)."""
        grid = np.arange(0, duration, self.time_scale)
        if not len(grid):
            return [0 for _ in seconds]
        t = np.asarray(seconds, dtype=np.float64)
        right = np.clip(np.searchsorted(grid, t), 0, len(grid) - 1)
        left = np.clip(right - 1, 0, len(grid) - 1)
        nearest = np.where(np.abs(t - grid[left]) < np.abs(t - grid[right]), grid[left], grid[right])
        return [int(v) for v in (nearest / self.time_scale).astype(np.int32)]

    def frame_indices(self, n_frames: int, fps: float) -> list[int]:
        return self.plan(n_frames, fps).frames

    def max_slices(self, n_sampled: int) -> int:
        return 1


VIDEO = PackedSeconds()
