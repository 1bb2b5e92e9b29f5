"""DICOM files made from a real X-ray with pydicom, no downloads: modalities, bit depths,
photometric interpretations, windows and transfer syntaxes, each with the 8-bit pixels the
documented mapping must give (model_agnostic/dicom.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.conftest import XRAY

SOP_CLASSES = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}
#: Written into every file: must never appear in an error message or a log.
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-7723901"


def xray8() -> np.ndarray:
    """The sample X-ray's 8-bit gray pixels (512x512)."""
    return np.asarray(Image.open(XRAY).convert("L"))


@dataclass(frozen=True)
class Case:
    """A DICOM file and the 8-bit pixels its documented mapping gives."""

    name: str
    data: bytes
    expected: np.ndarray


def dicom(pixels: np.ndarray, *, modality: str = "CR", photometric: str = "MONOCHROME2",
          bits_stored: int = 8, window: tuple[float, float] | None = None,
          rescale: tuple[float, float] | None = None, frames: int = 1,
          syntax: str = "1.2.840.10008.1.2.1", samples: int = 1,
          encapsulated: list[bytes] | None = None, compress: str | None = None) -> bytes:
    """A complete DICOM file (Part 10) holding ``pixels`` as stored values."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = modality, PATIENT_NAME, PATIENT_ID
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1] if samples == 1 else pixels.shape[-2]
    if samples == 3:
        ds.Rows, ds.Columns = pixels.shape[-3], pixels.shape[-2]
        ds.PlanarConfiguration = 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    dtype = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    if encapsulated is not None:
        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
    if compress is not None:  # pydicom's own encoder (RLE Lossless is native)
        ds.compress(UID(compress))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def readable_cases() -> list[Case]:
    """Files that must read as ``expected``: each the sample X-ray's pixels, or their
    inversion for MONOCHROME1."""
    x = xray8()
    x12 = np.rint(x.astype(np.float64) * 4095 / 255).astype(np.uint16)
    x16 = x.astype(np.uint16) * 257
    j2k = io.BytesIO()
    Image.fromarray(x).save(j2k, "JPEG2000", irreversible=False)
    return [
        Case("CR 8-bit MONOCHROME2", dicom(x), x),
        Case("CR 8-bit MONOCHROME1", dicom(255 - x, photometric="MONOCHROME1"), x),
        Case("DX 12-bit", dicom(x12, modality="DX", bits_stored=12), x),
        Case("DX 16-bit", dicom(x16, modality="DX", bits_stored=16), x),
        Case("DX 16-bit MONOCHROME1", dicom(65535 - x16, modality="DX", bits_stored=16,
                                            photometric="MONOCHROME1"), x),
        # a window covering the whole range maps like no window; LINEAR per PS3.3 C.11.2.1.2
        Case("CR 16-bit, full window", dicom(x16, bits_stored=16, window=(32768.0, 65536.0)),
             x),
        Case("CR 12-bit with rescale and window",
             dicom(x12, bits_stored=12, rescale=(2.0, -1024.0), window=(3071.0, 8191.0)),
             np.asarray(np.clip(np.rint(((x12 * 2.0 - 1024.0 - 3070.5) / 8190.0 + 0.5) * 255),
                                0, 255), np.uint8)),
        Case("Secondary Capture 8-bit", dicom(x, modality="OT"), x),
        Case("CR 8-bit RLE Lossless", dicom(x, compress="1.2.840.10008.1.2.5"), x),
        Case("CR 8-bit JPEG 2000 Lossless", dicom(x, syntax="1.2.840.10008.1.2.4.90",
                                                  encapsulated=[j2k.getvalue()]), x),
    ]


def unreadable_cases() -> list[tuple[str, bytes, str]]:
    """(name, file, words the refusal must contain)."""
    x = xray8()
    rgb = np.stack([x, x, x], axis=-1)
    return [
        ("multi-frame", dicom(np.stack([x, x]), frames=2), "multi-frame DICOM (2 frames)"),
        ("YBR colour", dicom(rgb, photometric="YBR_FULL", samples=3),
         "PhotometricInterpretation YBR_FULL"),
        ("JPEG Lossless without its decoder",
         dicom(x, syntax="1.2.840.10008.1.2.4.70", encapsulated=[b"\xff\xd8\xff\xc3" + b"\0" * 64]),
         "install pylibjpeg and pylibjpeg-libjpeg"),
        ("no pixel data", _without_pixels(dicom(x)), "without pixel data"),
        ("a window centre that is not a number", _malformed_window(dicom(x, window=(40.0, 400.0))),
         "malformed DICOM attribute"),
        ("16-bit RGB", dicom((np.stack([x, x, x], axis=-1).astype(np.uint16) * 257),
                             photometric="RGB", samples=3, bits_stored=16),
         "RGB with 16-bit samples"),
        ("JPEG Lossless (process 14) without its decoder",
         dicom(x, syntax="1.2.840.10008.1.2.4.57", encapsulated=[b"\xff\xd8\xff\xc3" + b"\0" * 64]),
         "install pylibjpeg and pylibjpeg-libjpeg (JPEG Lossless)"),
        ("not DICOM after the preamble", b"\0" * 128 + b"DICM" + b"\x07" * 40, "DICOM"),
    ]


def _malformed_window(data: bytes) -> bytes:
    """``data`` with its Window Center's text replaced by letters (pydicom will not write
    such a file, but files like it exist)."""
    tag = b"\x28\x00\x50\x10DS"  # (0028,1050) in explicit VR little endian
    start = data.index(tag) + 8
    length = int.from_bytes(data[start - 2:start], "little")
    return data[:start] + b"ab".ljust(length, b" ") + data[start + length:]


def _without_pixels(data: bytes) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
