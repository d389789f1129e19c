"""minicpmv-edge: MiniCPM-V vision-language models on CPU/edge, on llama.cpp's ggml."""

from __future__ import annotations

from .convert import CheckpointError, ConvertResult, convert_checkpoint
from .versions import VERSIONS, ModelVersion, UnsupportedVersionError

__all__ = [
    "VERSIONS",
    "CheckpointError",
    "ConvertResult",
    "ModelVersion",
    "UnsupportedVersionError",
    "convert_checkpoint",
]
__version__ = "0.1.0"
