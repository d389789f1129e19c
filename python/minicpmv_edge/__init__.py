"""minicpmv-edge: MiniCPM-V vision-language models on CPU/edge, on llama.cpp's ggml."""

from __future__ import annotations

from .cache import EmbeddingCache
from .chat import ChatStats, ChatStream, MiniCPMV
from .convert import CheckpointError, ConvertResult, convert_checkpoint
from .errors import BusyError, ClosedError
from .families import FAMILIES, Family, UnsupportedVersionError
from .image import Image, ImageError, load_rgb
from .llm_file import ModelFileError
from .messages import MessageError
from .slicer import SliceConfig, SlicedImage, slice_image
from .video import Video, VideoError

VERSIONS = FAMILIES  # the names of earlier releases
ModelVersion = Family

__all__ = [
    "FAMILIES",
    "VERSIONS",
    "BusyError",
    "ChatStats",
    "ChatStream",
    "CheckpointError",
    "ClosedError",
    "ConvertResult",
    "EmbeddingCache",
    "Family",
    "Image",
    "ImageError",
    "MessageError",
    "MiniCPMV",
    "ModelFileError",
    "ModelVersion",
    "SliceConfig",
    "SlicedImage",
    "UnsupportedVersionError",
    "Video",
    "VideoError",
    "convert_checkpoint",
    "load_rgb",
    "slice_image",
]
__version__ = "0.1.0"
