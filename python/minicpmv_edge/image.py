"""Image input: whatever the user has (PIL image, numpy array, path, bytes) -> RGB uint8 [H, W, 3].

Decoding is Pillow's, honouring the EXIF orientation tag; colour modes are converted exactly as
`Image.convert("RGB")` does (alpha dropped, not composited), which is what the original processor does.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

ImageInput = PILImage.Image | np.ndarray | str | os.PathLike | bytes | bytearray

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's MAX_IMAGE_PIXELS (about 0.25 GB of RGBA at 8 bits)


class ImageError(ValueError):
    """An image that cannot be used: unreadable, corrupt, empty or too large."""


class Image:
    """An image in a message's content, said explicitly: a path (str or Path), encoded bytes, a PIL image or a
    uint8 array. In messages a plain string is always text (as in the original chat()); a PIL image, an array or a
    Path is an image by itself."""

    __slots__ = ("source",)

    def __init__(self, source: ImageInput | Image) -> None:
        if isinstance(source, Image):
            source = source.source
        if not isinstance(source, (PILImage.Image, np.ndarray, str, os.PathLike, bytes, bytearray)):
            raise TypeError(f"Image() takes a path, bytes, a PIL image or an array, not {type(source).__name__}")
        self.source: ImageInput = source

    def __repr__(self) -> str:
        s = self.source
        what = repr(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else type(s).__name__
        return f"Image({what})"


def _checked(img: PILImage.Image, name: str, max_pixels: int | None) -> PILImage.Image:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: empty image ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h} pixels is more than the limit of {max_pixels} (max_pixels)")
    return img


def _decode(fp: io.BufferedIOBase | str | os.PathLike, name: str, max_pixels: int | None) -> PILImage.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # our own limit applies below
            img = PILImage.open(fp)
            _checked(img, name, max_pixels)  # from the header, before the pixels are decoded
            img.load()
        img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image Pillow can read (unknown format or corrupt header)") from e
    except PILImage.DecompressionBombError as e:  # Pillow's own guard (2x its limit) fires before ours
        raise ImageError(f"{name}: more pixels than the limit of {max_pixels} (max_pixels): {e}") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name}: file not found") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{name}: cannot decode image (truncated or corrupt: {e})") from e
    return img


def _to_rgb(img: PILImage.Image, name: str) -> np.ndarray:
    try:
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a lazily loaded PIL image may fail only here
        raise ImageError(f"{name}: cannot read mode {img.mode} pixels as RGB ({e})") from e


def load_rgb(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array [H, W, 3] (C-contiguous) of any supported input."""
    if isinstance(image, Image):
        image = image.source
    if isinstance(image, PILImage.Image):
        return _to_rgb(_checked(image, "image", max_pixels), "image")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, max_pixels)
    if isinstance(image, (bytes, bytearray)):
        return _to_rgb(_decode(io.BytesIO(bytes(image)), "image bytes", max_pixels), "image bytes")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, not an image file")
        return _to_rgb(_decode(path, str(path), max_pixels), str(path))
    raise TypeError(f"unsupported image input of type {type(image).__name__} "
                    "(expected a PIL image, a numpy array, a path or bytes)")


def _array_to_rgb(a: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ImageError(f"image array: dtype {a.dtype} is not supported (expected uint8)")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
        h, w = a.shape[:2]
        if h == 0 or w == 0:
            raise ImageError(f"image array: empty image ({w}x{h})")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"image array: {w}x{h} = {w * h} pixels is more than the limit of {max_pixels}")
        if a.ndim == 3 and a.shape[2] == 3:
            return np.ascontiguousarray(a)
        if a.ndim == 3 and a.shape[2] == 4:
            return np.ascontiguousarray(a[:, :, :3])  # RGBA -> RGB drops alpha, as Image.convert does
        gray = a if a.ndim == 2 else a[:, :, 0]
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    raise ImageError(f"image array: shape {a.shape} is not [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
