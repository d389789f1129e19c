"""MiniCPM-V 4.6's video sampling (transformers 5.23.0 `video_processing_minicpmv4_6.py`): a clip of at most
`max_num_frames` (128) seconds gives one frame per second, at frame int(i * fps); a longer one gives frames every 0.1 s
(frame min(int(t * fps), n - 1)) subsampled to 128 with numpy's linspace, cast to int. Every frame is sliced as an
image (the processor's video max_slice_nums, 9 by default) and one `<image_id>` precedes the whole video."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..family import VideoPlan


@dataclass(frozen=True)
class SecondsThenSpread:
    max_num_frames: int = 128
    slices: int = 9
    use_image_id: bool = True

    def frame_indices(self, n_frames: int, fps: float) -> list[int]:
        if n_frames <= 0 or fps <= 0:
            return []
        duration = n_frames / fps
        if duration <= self.max_num_frames:
            return [min(int(i * fps), n_frames - 1) for i in range(math.ceil(duration))]
        times = np.arange(0.0, duration, 0.1)
        frames = [min(int(t * fps), n_frames - 1) for t in times]
        picks = np.linspace(0, len(frames) - 1, self.max_num_frames).astype(int)
        return [frames[i] for i in picks]

    def plan(self, n_frames: int, fps: float) -> VideoPlan:
        return VideoPlan(self.frame_indices(n_frames, fps))  # each frame an image of its own

    def max_slices(self, n_sampled: int) -> int:
        return self.slices


VIDEO = SecondsThenSpread()
