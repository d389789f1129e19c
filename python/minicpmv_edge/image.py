"""Image input: whatever the user has (PIL image, numpy array, path, bytes) -> RGB uint8 [H, W, 3].

Decoding is Pillow's, honouring the EXIF orientation tag. Transparency is handled one of two ways (`alpha`):
"drop" (the default) converts colour modes exactly as `Image.convert("RGB")` does (alpha dropped, not composited),
which is what the original processors of MiniCPM-V 2.6 and older do; "white" composites images with alpha (or a
transparency key) onto white first, as MiniCPM-V 4.6's processor does (transformers 5.23.0 `convert_to_rgb`):
PIL images and files with Pillow's `alpha_composite`, RGBA arrays with the float32 arithmetic of transformers'
torchvision backend (which rounds differently from Pillow's by one step in about 30 % of (value, alpha) pairs).

Every input is bounded before its pixels exist: the size in a file's header (both sides and their product) is
checked before Pillow decodes it, and only the formats in ALLOWED_FORMATS are opened (Pillow's in-process decoders
for the formats cameras, phones and browsers write; none that runs an external program, such as EPS).
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

ImageInput = PILImage.Image | np.ndarray | str | os.PathLike | bytes | bytearray

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's MAX_IMAGE_PIXELS (about 0.25 GB of RGBA at 8 bits)
# The longest side accepted (JPEG's own limit). Resampling a strip costs scratch in proportion to its length, and
# beyond about 1000:1 a strip is sliced into pieces of a few patches: a 80,000,000 x 1 image, 10 kB as a PNG,
# would cost gigabytes to turn into ten 14 x 14 pieces.
DEFAULT_MAX_SIDE = 65_535
ALPHA_MODES = ("drop", "white")
ALLOWED_FORMATS = ("AVIF", "BMP", "DIB", "GIF", "ICO", "JPEG", "JPEG2000", "PNG", "PPM", "QOI", "TGA", "TIFF", "WEBP")
# Pillow imports its format plugins on the first open: done here, once, so that opening an image never imports
# modules (under a tight address-space limit, that import is what fails, in a cascade of MemoryErrors)
PILImage.init()


class ImageError(ValueError):
    """An image that cannot be used: unreadable, corrupt, empty or too large."""


class Image:
    """An image in a message's content, said explicitly: a path (str or Path), encoded bytes, a PIL image or a
    uint8 array. In messages a plain string is always text (as in the original chat()); a PIL image, an array or a
    Path is an image by itself. `name` is what error messages call it (default: the path, or the kind of input)."""

    __slots__ = ("name", "source")

    def __init__(self, source: ImageInput | Image, name: str | None = None) -> None:
        if isinstance(source, Image):
            name = name or source.name
            source = source.source
        if not isinstance(source, (PILImage.Image, np.ndarray, str, os.PathLike, bytes, bytearray)):
            raise TypeError(f"Image() takes a path, bytes, a PIL image or an array, not {type(source).__name__}")
        self.source: ImageInput = source
        self.name: str = name or _default_name(source)

    def __repr__(self) -> str:
        return f"Image({self.name!r})"


def _default_name(source: ImageInput) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)  # type: ignore[return-value]
    if isinstance(source, (bytes, bytearray)):
        return "image bytes"
    return "image array" if isinstance(source, np.ndarray) else "image"


def check_size(w: int, h: int, name: str, max_pixels: int | None, max_side: int | None) -> None:
    """ImageError unless a w x h image is non-empty and within the limits (both sides and their product)."""
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: empty image ({w}x{h})")
    if max_side is not None and max(w, h) > max_side:
        raise ImageError(f"{name}: {w}x{h} has a side longer than the limit of {max_side} pixels (max_side)")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{name}: {w}x{h} = {w * h} pixels is more than the limit of {max_pixels} (max_pixels)")


def _open(fp: io.BufferedIOBase | str | os.PathLike, name: str, max_pixels: int | None) -> PILImage.Image:
    """The image with its header read; no pixel decoded (use it in a `with` block: it may hold the file open)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # our own limit applies below
            return PILImage.open(fp, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image this runtime reads (unknown format or corrupt header; formats: "
                         f"{', '.join(ALLOWED_FORMATS)})") from e
    except PILImage.DecompressionBombError as e:  # Pillow's own guard (2x its limit) fires before ours
        raise ImageError(f"{name}: more pixels than the limit of {max_pixels} (max_pixels)") from e
    except FileNotFoundError as e:
        raise ImageError(f"{name}: file not found") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot read the image header ({_reason(e)})") from e


def _reason(e: BaseException) -> str:
    """An exception's text without a file name (OSError's strerror where it has one)."""
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or type(e).__name__


def _decode(fp: io.BufferedIOBase | str | os.PathLike, name: str, max_pixels: int | None,
            max_side: int | None) -> PILImage.Image:
    with _open(fp, name, max_pixels) as img:
        check_size(*img.size, name, max_pixels, max_side)  # from the header, before the pixels are decoded
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
                img.load()
            return ImageOps.exif_transpose(img)  # a new image: the file closes with this block
        except PILImage.DecompressionBombError as e:
            raise ImageError(f"{name}: more pixels than the limit of {max_pixels} (max_pixels)") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{name}: cannot decode image (truncated or corrupt: {_reason(e)})") from e


def _has_alpha(img: PILImage.Image) -> bool:
    """An alpha band or a transparency key: what transformers' convert_to_rgb composites onto white."""
    return "A" in img.getbands() or img.info.get("transparency") is not None


def _to_rgb(img: PILImage.Image, name: str, alpha: str = "drop") -> np.ndarray:
    try:
        if alpha == "white" and _has_alpha(img):
            rgba = img.convert("RGBA")  # a palette or a transparency key becomes an alpha band
            white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgb = PILImage.alpha_composite(white, rgba).convert("RGB")
        else:
            rgb = img if img.mode == "RGB" else img.convert("RGB")
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # a lazily loaded PIL image may fail only here
        raise ImageError(f"{name}: cannot read mode {img.mode} pixels as RGB ({_reason(e)})") from e


def _source(image: ImageInput | Image) -> tuple[ImageInput, str]:
    if isinstance(image, Image):
        return image.source, image.name
    return image, _default_name(image)


def _file(source: str | os.PathLike, name: str) -> Path:
    path = Path(source)
    if path.is_dir():
        raise ImageError(f"{name}: is a directory, not an image file")
    return path


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _header_size(img: PILImage.Image) -> tuple[int, int]:
    """The size load_rgb() will give, from what Pillow read of the header: the EXIF orientation is applied where
    the header holds it (a PNG's eXIf chunk after the pixels is only read with them: load_rgb's size is then the
    truth)."""
    w, h = img.size
    orientation = PILImage.Image.getexif(img).get(0x0112)  # the base method: a PNG's own would decode the pixels
    return (h, w) if orientation in _TRANSPOSED else (w, h)


def image_size(image: ImageInput | Image, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """(width, height) from a file's header (no pixel is decoded, the EXIF orientation applied), checked against
    the limits."""
    source, name = _source(image)
    if isinstance(source, PILImage.Image):
        w, h = source.size
    elif isinstance(source, np.ndarray):
        h, w = (source.shape[:2] if source.ndim >= 2 else (0, 0))
    elif isinstance(source, (bytes, bytearray)):
        with _open(io.BytesIO(bytes(source)), name, max_pixels) as img:
            w, h = _header_size(img)
    elif isinstance(source, (str, os.PathLike)):
        with _open(_file(source, name), name, max_pixels) as img:
            w, h = _header_size(img)
    else:
        raise TypeError(f"unsupported image input of type {type(source).__name__}")
    check_size(w, h, name, max_pixels, max_side)
    return w, h


def load_rgb(image: ImageInput | Image, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             max_side: int | None = DEFAULT_MAX_SIDE, alpha: str = "drop") -> np.ndarray:
    """RGB uint8 array [H, W, 3] (C-contiguous) of any supported input. `alpha`: "drop" discards transparency
    (`Image.convert("RGB")`, MiniCPM-V 2.6 and older), "white" composites it onto white (MiniCPM-V 4.6's processor)
    for PIL images, files and RGBA arrays alike (see the module's notes)."""
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {', '.join(map(repr, ALPHA_MODES))}, not {alpha!r}")
    source, name = _source(image)
    if isinstance(source, PILImage.Image):
        check_size(*source.size, name, max_pixels, max_side)
        return _to_rgb(source, name, alpha)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name, max_pixels, max_side, alpha)
    if isinstance(source, (bytes, bytearray)):
        return _to_rgb(_decode(io.BytesIO(bytes(source)), name, max_pixels, max_side), name, alpha)
    if isinstance(source, (str, os.PathLike)):
        return _to_rgb(_decode(_file(source, name), name, max_pixels, max_side), name, alpha)
    raise TypeError(f"unsupported image input of type {type(source).__name__} "
                    "(expected a PIL image, a numpy array, a path or bytes)")


@functools.cache
def _white_composite_lut() -> np.ndarray:
    """[alpha, value] -> the composited uint8, as transformers 5.23.0's torchvision backend (convert_to_rgb in
    image_processing_backends.py) computes it for an RGBA tensor, all in float32: x = v / 255 and a = alpha / 255
    (each a multiplication by 1/255), x * a + (1 - a), then back to uint8 by torchvision's to_dtype, which
    multiplies by 255.999 and truncates."""
    f = np.float32
    scaled = np.arange(256, dtype=f) * f(1 / 255)
    a, x = scaled[:, None], scaled[None, :]
    lut = ((x * a + (f(1) - a)) * f(255 + 1 - 1e-3)).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _white_composite(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] uint8 -> [H, W, 3] composited onto white, a band of rows at a time (the table lookup's index
    arrays are 8 bytes a value)."""
    lut = _white_composite_lut()
    h, w = rgba.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (1 << 20) // w)
    for y in range(0, h, step):
        band = rgba[y: y + step]
        out[y: y + step] = lut[band[:, :, 3:], band[:, :, :3]]
    return out


def _array_to_rgb(a: np.ndarray, name: str, max_pixels: int | None, max_side: int | None,
                  alpha: str = "drop") -> np.ndarray:
    if a.dtype != np.uint8:
        raise ImageError(f"{name}: dtype {a.dtype} is not supported (expected uint8)")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
        h, w = a.shape[:2]
        check_size(w, h, name, max_pixels, max_side)
        if a.ndim == 3 and a.shape[2] == 3:
            return np.ascontiguousarray(a)
        if a.ndim == 3 and a.shape[2] == 4:
            if alpha == "white":
                return _white_composite(a)
            return np.ascontiguousarray(a[:, :, :3])  # RGBA -> RGB drops alpha, as Image.convert does
        gray = a if a.ndim == 2 else a[:, :, 0]
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    raise ImageError(f"{name}: shape {a.shape} is not [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
