"""The original video recipe of MiniCPM-V 2.6 (docs/sources.md: `docs/minicpm_v2dot6_en.md`,
`web_demos/web_demo_2.6.py`): about one frame per second (every round(fps)-th frame), at most 64 frames (uniform
sub-sampling beyond that), all in one user turn, each frame sliced with max_slice_nums 2 (1 when there are more than
16 frames) and no image ids."""

from __future__ import annotations

from dataclasses import dataclass

from ..family import VideoPlan


@dataclass(frozen=True)
class OneFramePerSecond:
    max_frames: int = 64
    many_frames: int = 16  # above this many frames, each frame is a single piece
    use_image_id: bool = False

    def frame_indices(self, n_frames: int, fps: float) -> list[int]:
        """Every round(fps)-th frame; beyond max_frames, the middle of max_frames equal runs of those. Computed
        without listing every round(fps)-th frame: the list never holds more than max_frames entries (the frame
        count comes from the file and may be huge)."""
        step = max(1, round(fps))
        count = -(-n_frames // step)  # len(range(0, n_frames, step))
        if count <= self.max_frames:
            return list(range(0, n_frames, step))
        gap = count / self.max_frames
        return [step * int(i * gap + gap / 2) for i in range(self.max_frames)]

    def plan(self, n_frames: int, fps: float) -> VideoPlan:
        return VideoPlan(self.frame_indices(n_frames, fps))  # each frame an image of its own

    def max_slices(self, n_sampled: int) -> int:
        return 1 if n_sampled > self.many_frames else 2


RECIPE = OneFramePerSecond()
