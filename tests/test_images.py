"""Opening images: every source type, and every bad file becomes an ImageDecodeError naming it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_agnostic import ImageDecodeError, load_image


def test_paths_bytes_streams_pil_and_arrays_all_load(jpeg_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes)
    sources = [path, str(path), jpeg_bytes, bytearray(jpeg_bytes), io.BytesIO(jpeg_bytes)]
    arrays = [np.asarray(load_image(s)) for s in sources]
    for array in arrays:
        np.testing.assert_array_equal(array, arrays[0])
    assert load_image(Image.fromarray(arrays[0])).size == (40, 30)
    assert load_image(arrays[0]).size == (40, 30)


def test_mode_conversion(jpeg_bytes: bytes) -> None:
    assert load_image(jpeg_bytes, mode="L").mode == "L"
    assert load_image(jpeg_bytes, mode="RGB").mode == "RGB"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"'.*nope\.jpg' does not exist"):
        load_image(tmp_path / "nope.jpg")


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.jpg' is empty \(0 bytes\)"):
        load_image(path)
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image(b"")


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am not a JPEG\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg' is not a recognised image"):
        load_image(path)


def test_svg_is_not_a_supported_image() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        load_image(svg)


def test_truncated_jpeg_is_reported_as_truncated(jpeg_bytes: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_image(jpeg_bytes[: len(jpeg_bytes) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(ImageDecodeError, match=r"refused before decoding.*2500000000 pixels"):
        load_image(_png_header_only(50000, 50000))
    with pytest.raises(ImageDecodeError, match=r"9000x9000 = 81,000,000 pixels, over the limit"):
        load_image(_png_header_only(9000, 9000))


def test_pixel_limit_is_configurable(jpeg_bytes: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="over the limit of 100"):
        load_image(jpeg_bytes, max_pixels=100)


@pytest.mark.parametrize("shape,dtype", [((4, 4, 2), np.uint8), ((4, 4), np.float32), ((4,), np.uint8)])
def test_unusable_arrays_say_what_is_expected(shape: tuple[int, ...], dtype: type) -> None:
    with pytest.raises(ImageDecodeError, match="expected uint8 HxW or HxWxC"):
        load_image(np.zeros(shape, dtype))


def test_unsupported_source_type_is_explained() -> None:
    with pytest.raises(ImageDecodeError, match="cannot read an image from int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_common_mode_converts_to_rgb(mode: str) -> None:
    image = Image.new("RGB", (5, 3), (200, 100, 50)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    assert load_image(buffer.getvalue(), mode="RGB").size == (5, 3)
