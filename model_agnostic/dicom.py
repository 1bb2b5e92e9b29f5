"""Chest X-rays as hospitals store them: a DICOM file to the 8-bit image a model was
trained on, or a clear refusal.

The pixel pipeline follows the DICOM standard's order (PS3.4, "grayscale pipeline"):

1. the stored values through the Modality LUT, or Rescale Slope and Intercept;
2. the VOI LUT, or Window Center and Width (the first pair when several are given);
3. ``MONOCHROME1`` (white is low) inverted, so high is always white;
4. linearly to 0..255: the VOI window's range when there is one, else the range the
   modality output can take (from Bits Stored, pixel representation and the rescale), so
   an 8-bit image comes out unchanged and a 12-bit one keeps its full contrast.

That is how the NIH ChestX-ray14 PNGs CheXNet was trained on relate to their DICOMs: 8-bit,
MONOCHROME2 (docs/chexnet.md). Refused, with the reason: several frames, colour
photometric interpretations other than RGB, a transfer syntax whose decoder is not
installed (naming the package). Patient-identifying tags are never read into a message
or a log: errors name the file only by what the caller passed.
"""

from __future__ import annotations

from typing import IO, Any

import numpy as np
from PIL import Image

from ._deps import require
from .errors import ImageDecodeError

__all__ = ["is_dicom", "read_dicom"]

#: Decoders pydicom needs for compressed transfer syntaxes, by UID: what to install.
_DECODER_HINT = {
    "1.2.840.10008.1.2.4.50": "Pillow with JPEG support (JPEG Baseline)",
    "1.2.840.10008.1.2.4.51": "Pillow with JPEG support (JPEG Extended)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg and pylibjpeg-libjpeg (JPEG Lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg and pylibjpeg-libjpeg (JPEG Lossless SV1)",
    "1.2.840.10008.1.2.4.80": "pyjpegls (JPEG-LS Lossless)",
    "1.2.840.10008.1.2.4.81": "pyjpegls (JPEG-LS Near-Lossless)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg and pylibjpeg-openjpeg (JPEG 2000 Lossless)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg and pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg and pylibjpeg-openjpeg (HTJ2K Lossless)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg and pylibjpeg-openjpeg (HTJ2K Lossless RPCL)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg and pylibjpeg-openjpeg (HTJ2K)",
}
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def is_dicom(head: bytes, name: str = "") -> bool:
    """A DICOM file: the ``DICM`` magic after the 128-byte preamble, or a ``.dcm`` name."""
    return head[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom"))


def read_dicom(stream: IO[bytes], name: str, max_pixels: int) -> Image.Image:
    """The 8-bit image (``L``, or ``RGB`` for RGB data) of a single-frame DICOM."""
    pydicom = require("pydicom", "Reading DICOM images")
    try:
        dataset = pydicom.dcmread(stream, force=True)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ...
        raise ImageDecodeError(
            f"{name} is not a readable DICOM file ({type(exc).__name__})"
        ) from None
    if "PixelData" not in dataset:
        raise ImageDecodeError(f"{name} is a DICOM file without pixel data (no image)")
    try:
        return _image(dataset, name, max_pixels)
    except ImageDecodeError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        # a malformed tag (a window centre that is not a number, an empty LUT sequence):
        # name the kind of problem, never the value (it could be anything the file holds)
        raise ImageDecodeError(
            f"{name} has a malformed DICOM attribute needed to display it ({type(exc).__name__})"
        ) from None


def _image(dataset: Any, name: str, max_pixels: int) -> Image.Image:
    _check_layout(dataset, name, max_pixels)
    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # a missing decoder plugin, or corrupt pixel data
        raise ImageDecodeError(_decode_failure(name, syntax, exc)) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "RGB":
        if pixels.dtype != np.uint8:
            raise ImageDecodeError(
                f"{name} is RGB with {pixels.dtype.itemsize * 8}-bit samples; expected 8-bit "
                "RGB (convert it first)"
            )
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    return Image.fromarray(_to_8bit(dataset, pixels, photometric), "L")


def _check_layout(dataset: Any, name: str, max_pixels: int) -> None:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(
            f"{name} is a multi-frame DICOM ({frames} frames); expected "
            "one image (send each frame as its own file)"
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in (*_MONOCHROME, "RGB"):
        raise ImageDecodeError(
            f"{name} has PhotometricInterpretation {photometric}; expected "
            "MONOCHROME1, MONOCHROME2 or RGB (convert it first)"
        )
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows * columns > max_pixels:
        raise ImageDecodeError(
            f"{name} is {columns}x{rows} = {rows * columns:,} pixels, over "
            f"the limit of {max_pixels:,}; send a smaller image"
        )


def _decode_failure(name: str, syntax: str, exc: Exception) -> str:
    text = str(exc)
    missing = (
        "no pixel data decoders" in text.lower()
        or "plugin" in text.lower()
        or "unable to decode" in text.lower()
        or "missing required dependencies" in text.lower()
    )
    hint = _DECODER_HINT.get(syntax, "")
    if missing and hint:
        return (
            f"{name} uses transfer syntax {syntax}, whose decoder is not installed; install {hint}"
        )
    return (
        f"{name}: its pixel data cannot be decoded (transfer syntax {syntax or 'unknown'}): "
        f"{type(exc).__name__}"
    )


def _to_8bit(dataset: Any, pixels: np.ndarray, photometric: str) -> np.ndarray:
    """Stored values -> 8-bit display values. Integer pixels of up to 16 bits go through a
    table of every possible stored value (the same mapping, computed once per file: 65,536
    entries at most), then one lookup per pixel."""
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        info = np.iinfo(pixels.dtype)
        table = _map_to_8bit(
            dataset, np.arange(info.min, info.max + 1).astype(pixels.dtype), photometric
        )
        if pixels.dtype.kind == "i":  # int v -> index v - min, by flipping the sign bit
            unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
            return table[pixels.view(unsigned) ^ unsigned.type(-info.min)]
        return table[pixels]
    return _map_to_8bit(dataset, pixels, photometric)


def _map_to_8bit(dataset: Any, pixels: np.ndarray, photometric: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if "VOILUTSequence" in dataset:  # a table: its entries span 0 .. 2**bits - 1
        values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        scaled = values / float(2**bits - 1)
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        scaled = _window(
            values,
            float(_first(dataset.WindowCenter)),
            float(_first(dataset.WindowWidth)),
            str(dataset.get("VOILUTFunction", "LINEAR")).upper(),
        )
    else:
        low, high = _modality_range(dataset)
        scaled = (values - low) / max(high - low, 1e-12)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The VOI window as 0..1, per the standard (PS3.3 C.11.2.1.2): LINEAR (the default),
    LINEAR_EXACT or SIGMOID."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-12)))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / max(width, 1e-12) + 0.5, 0.0, 1.0)
    span = max(width - 1.0, 1e-12)
    return np.clip((values - (center - 0.5)) / span + 0.5, 0.0, 1.0)


def _modality_range(dataset: Any) -> tuple[float, float]:
    """The range the Modality LUT's output can take, from Bits Stored and the rescale."""
    bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 8)) or 8)
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _first(value: Any) -> Any:
    """The first of a multi-valued attribute (several windows), or the value itself."""
    try:
        return value[0]
    except (TypeError, IndexError):
        return value
