"""The convenience endpoint's body: raw image bytes, or one file in a multipart upload."""

from __future__ import annotations

import io
import warnings
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP

from PIL import Image

from ..dicom import is_dicom
from ..errors import ServingError

__all__ = ["MAX_PARTS", "check_pixels", "read_upload"]

#: More parts than this in one multipart upload is refused (413).
MAX_PARTS = 16


def read_upload(body: bytes, content_type: str | None) -> bytes:
    """The uploaded file's bytes.

    A ``multipart/form-data`` body must hold exactly one file part (its field name does
    not matter; plain fields are ignored); any other content type is the file itself.
    """
    if not body:
        raise ServingError(
            "empty request body; send the image bytes, or a multipart form with one file field", 400
        )
    if not content_type or not content_type.lower().startswith("multipart/"):
        return body
    if not content_type.lower().startswith("multipart/form-data"):
        raise ServingError(
            f"unsupported content type {content_type!r}; send image bytes or multipart/form-data",
            415,
        )
    _check_part_count(body, content_type)
    message = _parse(body, content_type)
    parts = list(message.iter_parts())
    if len(parts) > MAX_PARTS:
        raise ServingError(
            f"multipart upload has {len(parts)} parts, more than the limit "
            f"of {MAX_PARTS}; send one file",
            413,
        )
    files = [part for part in parts if part.get_filename() is not None]
    if len(files) != 1:
        raise ServingError(
            f"multipart upload has {len(files)} file parts; expected exactly "
            "one (e.g. a form field 'file')",
            400,
        )
    payload = files[0].get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise ServingError(f"the uploaded file {files[0].get_filename()!r} is empty", 400)
    return payload


def _check_part_count(body: bytes, content_type: str) -> None:
    """Refuse too many parts by counting boundaries, before the (slow) MIME parser runs."""
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.strip().partition("=")
        if key.lower() == "boundary" and value:
            delimiters = body.count(b"--" + value.strip('"').encode("latin-1", "replace"))
            if delimiters - 1 > MAX_PARTS:
                raise ServingError(
                    f"multipart upload has {delimiters - 1} parts, more than "
                    f"the limit of {MAX_PARTS}; send one file",
                    413,
                )


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse (413) an image whose header declares more than ``max_pixels`` pixels, before
    anything is decoded. Data that is not a recognisable image is left to the model's
    ``preprocessing``, which says what is wrong with it."""
    if is_dicom(data[:132]):
        width, height = _dicom_size(data)
        if width * height <= max_pixels:
            return
        raise ServingError(
            f"the uploaded DICOM image is {width}x{height} = {width * height:,} pixels, over "
            f"the limit of {max_pixels:,}; send a smaller image",
            413,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning: we decide below
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Image.DecompressionBombError as exc:
            raise ServingError(
                f"the uploaded image was refused from its header as a "
                f"possible decompression bomb ({exc}); the limit here is "
                f"{max_pixels:,} pixels",
                413,
            ) from None
        except Exception:  # not an image: preprocessing says what is wrong with it
            return
    if width * height > max_pixels:
        raise ServingError(
            f"the uploaded image is {width}x{height} = {width * height:,} "
            f"pixels, over the limit of {max_pixels:,}; send a smaller image",
            413,
        )


def _parse(body: bytes, content_type: str) -> EmailMessage:
    if "boundary=" not in content_type.lower():
        raise ServingError("multipart/form-data without a boundary parameter", 400)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(EmailMessage, policy=HTTP).parsebytes(head + body)
    assert isinstance(message, EmailMessage)
    if not message.is_multipart() or message.defects:
        raise ServingError(
            "malformed multipart/form-data body "
            f"({', '.join(type(d).__name__ for d in message.defects) or 'no parts'})",
            400,
        )
    return message


def _dicom_size(data: bytes) -> tuple[int, int]:
    """Columns and Rows from a DICOM header (0, 0 when it cannot be read: preprocessing
    then says why)."""
    try:
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        return int(dataset.get("Columns", 0) or 0), int(dataset.get("Rows", 0) or 0)
    except Exception:  # no pydicom, or not readable: left to the model's preprocessing
        return 0, 0
