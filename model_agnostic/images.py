"""Opening images safely: every failure becomes an :class:`ImageDecodeError` naming the input."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError

__all__ = ["DEFAULT_MAX_PIXELS", "load_image"]

#: Images above this many pixels are refused from the header, before decoding.
DEFAULT_MAX_PIXELS = 64_000_000

ImageSource = str | os.PathLike[str] | bytes | bytearray | IO[bytes] | Image.Image | np.ndarray


def load_image(
    source: ImageSource, *, mode: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image from a path, bytes, a binary file, a PIL image or an array.

    Args:
        source: the image.
        mode: convert to this PIL mode (e.g. ``"RGB"``) after decoding.
        max_pixels: refuse larger images (checked from the header, before decoding).
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        name, stream = _open(source)
        image = _decode(stream, name, max_pixels)
    if mode and image.mode != mode:
        if image.mode in ("P", "PA") and "transparency" in image.info and mode != "RGBA":
            image = image.convert("RGBA")  # Pillow warns converting such a palette directly
        return image.convert(mode)
    return image


def _open(source: Any) -> tuple[str, IO[bytes]]:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageDecodeError("image bytes are empty (0 bytes); expected an encoded image")
        return "image bytes", io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"image file {str(path)!r} does not exist")
        data = path.read_bytes()
        if not data:
            raise ImageDecodeError(f"image file {str(path)!r} is empty (0 bytes)")
        return repr(str(path)), io.BytesIO(data)
    if hasattr(source, "read"):
        return "image stream", source
    raise ImageDecodeError(
        f"cannot read an image from {type(source).__name__}; expected a path, bytes, "
        "a binary file object, a PIL image or a numpy array"
    )


def _decode(stream: IO[bytes], name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"{name} is {width}x{height} = {width * height:,} pixels, over the "
                    f"limit of {max_pixels:,}; send a smaller image"
                )
            image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"{name} is not a recognised image (expected JPEG, PNG, BMP, TIFF, WebP, ...)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            f"{name} was refused before decoding, as a possible decompression bomb: {exc}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{name} is corrupt or truncated: {exc}") from None
    except Exception as exc:  # Pillow's rarer decoders fail on bad headers in many ways
        raise ImageDecodeError(
            f"{name} could not be decoded ({type(exc).__name__}: {exc}); it is corrupt or "
            "uses an unsupported variant of its format"
        ) from None
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (1, 3, 4))
    ):
        raise ImageDecodeError(
            f"cannot use an array of shape {array.shape} and dtype {array.dtype} as an "
            "image; expected uint8 HxW or HxWxC with C in (1, 3, 4)"
        )
    return Image.fromarray(array.squeeze(2) if array.ndim == 3 and array.shape[2] == 1 else array)
