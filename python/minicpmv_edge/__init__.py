"""minicpmv-edge: MiniCPM-V vision-language models on CPU/edge, on llama.cpp's ggml."""

from __future__ import annotations

from .chat import MiniCPMV
from .convert import CheckpointError, ConvertResult, convert_checkpoint
from .image import ImageError, load_rgb
from .slicer import SliceConfig, SlicedImage, slice_image
from .versions import VERSIONS, ModelVersion, UnsupportedVersionError

__all__ = [
    "VERSIONS",
    "CheckpointError",
    "ConvertResult",
    "ImageError",
    "MiniCPMV",
    "ModelVersion",
    "SliceConfig",
    "SlicedImage",
    "UnsupportedVersionError",
    "convert_checkpoint",
    "load_rgb",
    "slice_image",
]
__version__ = "0.1.0"
