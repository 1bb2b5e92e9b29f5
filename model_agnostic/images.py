"""Opening images safely: every failure becomes an :class:`ImageDecodeError` naming the input.

Beyond what Pillow reads: DICOM files (:mod:`.dicom`, the ``dicom`` extra), and images of
more than 8 bits per sample (16-bit PNG and TIFF, ``I;16``, ``I;16B``, ``I``), which Pillow
would clip to white when converting to an 8-bit mode. Here they are scaled by their bit
depth instead (``bit_depth``), and EXIF orientation is applied or not as asked (``exif``).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import is_dicom, read_dicom
from .errors import ConfigError, ImageDecodeError

__all__ = ["BIT_DEPTH_POLICIES", "DEFAULT_MAX_PIXELS", "EXIF_POLICIES", "load_image"]

#: Images above this many pixels are refused from the header, before decoding.
DEFAULT_MAX_PIXELS = 64_000_000
#: How an image of more than 8 bits per sample becomes 8-bit (docs/transforms.md):
#: "scale" by the container's bit depth (16 for I;16, v * 255 / 65535, rounded);
#: "significant" by the significant bits the file declares (PNG sBIT, TIFF BitsPerSample),
#: else as "scale"; "minmax" the image's own range stretched to 0..255; "clip" Pillow's
#: conversion, which clips everything above 255 to white (what torchvision pipelines that
#: call ``Image.convert`` do).
BIT_DEPTH_POLICIES = ("scale", "significant", "minmax", "clip")
#: "ignore" the EXIF orientation tag (what PIL and torchvision do), or "apply" it.
EXIF_POLICIES = ("ignore", "apply")
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EIGHT_BIT = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")

ImageSource = str | os.PathLike[str] | bytes | bytearray | IO[bytes] | Image.Image | np.ndarray


def load_image(
    source: ImageSource,
    *,
    mode: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bit_depth: str = "scale",
    exif: str = "ignore",
) -> Image.Image:
    """Open and fully decode an image from a path, bytes, a binary file, a PIL image or an array.

    Args:
        source: the image; DICOM (``.dcm`` or the ``DICM`` preamble) needs the ``dicom``
            extra and comes out as 8-bit (:mod:`model_agnostic.dicom`).
        mode: convert to this PIL mode (e.g. ``"RGB"``) after decoding.
        max_pixels: refuse larger images (checked from the header, before decoding).
        bit_depth: how a 16-bit (or 32-bit integer) image becomes 8-bit when ``mode`` is an
            8-bit mode: one of :data:`BIT_DEPTH_POLICIES`.
        exif: ``"ignore"`` the EXIF orientation, or ``"apply"`` it (:data:`EXIF_POLICIES`).
    """
    if bit_depth not in BIT_DEPTH_POLICIES:
        raise ConfigError(f"bit_depth must be one of {BIT_DEPTH_POLICIES}, got {bit_depth!r}")
    if exif not in EXIF_POLICIES:
        raise ConfigError(f"exif must be one of {EXIF_POLICIES}, got {exif!r}")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        name, stream = _open(source)
        image = _decode(stream, name, max_pixels)
    if exif == "apply":
        image = ImageOps.exif_transpose(image)
    if mode and image.mode in _HIGH_DEPTH and mode in _EIGHT_BIT and bit_depth != "clip":
        image = _to_8bit(image, bit_depth)
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
        seekable = getattr(source, "seekable", None)
        if callable(seekable) and seekable():
            return "image stream", source
        data = source.read()  # a socket or pipe: read it whole, then decode from memory
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise ImageDecodeError(
                f"the image stream gave {'no bytes' if not data else type(data).__name__}; "
                "expected a binary stream holding an encoded image"
            )
        return "image stream", io.BytesIO(data)
    raise ImageDecodeError(
        f"cannot read an image from {type(source).__name__}; expected a path, bytes, "
        "a binary file object, a PIL image or a numpy array"
    )


def _decode(stream: IO[bytes], name: str, max_pixels: int) -> Image.Image:
    head = stream.read(132)
    stream.seek(0)
    if is_dicom(head, name.strip("'\"")):
        return read_dicom(stream, name, max_pixels)
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
            if image.format == "PNG" and image.mode in _HIGH_DEPTH and "sbit" not in image.info:
                sbit = _png_sbit(stream)
                if sbit:
                    image.info["sbit"] = sbit
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


def _png_sbit(stream: IO[bytes]) -> bytes | None:
    """The PNG's sBIT chunk (significant bits per channel), which Pillow does not read.

    Only the chunk headers before the image data are visited (sBIT must precede it)."""
    stream.seek(8)  # past the signature
    for _ in range(64):
        header = stream.read(8)
        if len(header) < 8:
            return None
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        if kind == b"sBIT":
            data = stream.read(length)
            return data if len(data) == length and length <= 4 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        stream.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    return None


def _to_8bit(image: Image.Image, policy: str) -> Image.Image:
    """A high-bit-depth grayscale image as ``L``, scaled by its bit depth (never clipped)."""
    values = np.asarray(image, dtype=np.float64)
    if policy == "minmax":
        low, high = float(values.min()), float(values.max())
    else:
        low, high = 0.0, float(2 ** _bits(image, policy) - 1)
    scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # mode L


def _bits(image: Image.Image, policy: str) -> int:
    """The bit depth to scale by: the container's, or the file's significant bits."""
    if policy == "significant":
        sbit = image.info.get("sbit")  # PNG sBIT, read by _decode (Pillow skips it)
        if isinstance(sbit, (bytes, tuple)) and len(sbit) >= 1:
            return int(sbit[0])
        tiff_bits = getattr(image, "tag_v2", {}).get(258)  # TIFF BitsPerSample
        if tiff_bits:
            return int(tiff_bits[0] if isinstance(tiff_bits, tuple) else tiff_bits)
    if image.mode.startswith("I;16"):
        return 16
    tiff_bits = getattr(image, "tag_v2", {}).get(258)
    if tiff_bits:
        return int(tiff_bits[0] if isinstance(tiff_bits, tuple) else tiff_bits)
    return 16 if np.asarray(image).max(initial=0) <= 65535 else 32


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
