"""Library-level cases of the bad-input catalogue (shared/docs/bad-inputs.md) that the feature tests do not already cover.

Already covered elsewhere: empty, truncated, text and SVG images and the bomb header
(test_images.py); malicious pickles, whole pickled models, TorchScript archives and a garbled
safetensors header (test_checkpoints.py); ONNX external data (test_onnx_safety.py); artifact
checksums (test_artifact.py); repository names and links (test_repository.py); the remote
backend's faults (test_remote.py).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from model_agnostic import ImageDecodeError, load_image
from model_agnostic.errors import CheckpointError, UnsafeCheckpointError
from model_agnostic.protocol import json_depth
from tests.tiny_models import TinyNet

PILLOW_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- images
def test_pillows_bomb_warning_is_an_error_whatever_the_callers_warning_filters() -> None:
    bomb = png_header_only(10_000, 10_000)  # above Pillow's warning size, under its error size
    assert PILLOW_MAX_PIXELS is not None and PILLOW_MAX_PIXELS < 10_000 ** 2 < 2 * PILLOW_MAX_PIXELS
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a caller for whom warnings are only printed
        with pytest.raises(ImageDecodeError, match="decompression bomb") as excinfo:
            load_image(bomb, max_pixels=10 ** 12)
    assert caught == []
    assert "10000x10000" in str(excinfo.value) or "100000000" in str(excinfo.value)
    assert warnings.filters == filters  # nothing changed for the rest of the process


def test_pillows_process_wide_settings_are_left_alone() -> None:
    from model_agnostic.serving import uploads

    # importing every image path changes nothing: compared in a fresh process, where
    # Pillow's own values are known before any of ours is imported
    code = ("from PIL import Image, ImageFile\n"
            "before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)\n"
            "import model_agnostic.images, model_agnostic.transforms\n"
            "import model_agnostic.serving.server, model_agnostic.serving.uploads\n"
            "print(before, (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    before, after = done.stdout.strip().split(") (")
    assert before + ")" == "(" + after and "False" in after, done.stdout

    truncated = png_bytes(7)[:-30]
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_image(truncated)
    uploads.check_pixels(truncated, 1000)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_PIXELS


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def image_in_mode(mode: str, fmt: str) -> bytes:
    rgb = Image.open(io.BytesIO(png_bytes(7)))
    buffer = io.BytesIO()
    if mode.startswith("P"):
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        alpha = bytes([0, 128] + [255] * 14) if mode == "P+tRNS" else 0
        image.save(buffer, fmt, transparency=alpha)
    else:
        rgb.convert(mode).save(buffer, fmt)
    return buffer.getvalue()


SOURCES = [
    ("L", "PNG"), ("LA", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("P", "GIF"),
    ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("1", "PNG"), ("I", "TIFF"),
    ("F", "TIFF"),
]


def reference(data: bytes, mode: str) -> np.ndarray:
    """Pillow's own conversion (as load_image documents), palette transparency via RGBA;
    16- and 32-bit integer images scaled by their bit depth first (bit_depth="scale":
    v * 255 / (2**bits - 1), rounded), never clipped as Pillow's conversion would."""
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I"):
        bits = 16 if image.mode == "I;16" else int(image.tag_v2[258][0])  # TIFF BitsPerSample
        values = np.asarray(image, dtype=np.float64) * 255 / (2**bits - 1)
        image = Image.fromarray(np.rint(values).astype(np.uint8))
    return np.asarray(image.convert(mode))


@pytest.mark.parametrize(("mode", "fmt"), SOURCES)
@pytest.mark.parametrize(("target", "channels"), [("RGB", 3), ("L", None), ("RGBA", 4)])
def test_every_image_mode_converts_to_the_mode_asked_for(
    mode: str, fmt: str, target: str, channels: int | None
) -> None:
    data = image_in_mode(mode, fmt)
    image = load_image(data, mode=target)
    pixels = np.asarray(image)
    assert image.mode == target and image.size == (12, 10)
    assert pixels.shape == ((10, 12) if channels is None else (10, 12, channels))
    np.testing.assert_array_equal(pixels, reference(data, target))


@pytest.mark.parametrize("target", ["RGB", "L", "RGBA"])
def test_palette_image_with_transparency_bytes_converts_without_a_warning(target: str) -> None:
    data = image_in_mode("P+tRNS", "PNG")  # a PNG palette with per-entry alpha (tRNS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(data, mode=target)
    np.testing.assert_array_equal(np.asarray(image), reference(data, target))


@pytest.mark.parametrize(("mode", "fmt"),
                         [*SOURCES, ("P+tRNS", "PNG")])
def test_every_image_mode_gives_the_model_the_channels_it_expects(mode: str, fmt: str) -> None:
    class Pipeline(TinyNet):
        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            raise AssertionError("not used")

    arrays = Pipeline().prepare(image_in_mode(mode, fmt))
    assert list(arrays) == ["image"]
    assert arrays["image"].shape == (1, 3, 8, 8) and arrays["image"].dtype == np.float32
    assert 0.0 <= arrays["image"].min() and arrays["image"].max() <= 1.0


# ------------------------------------------------------------------------- checkpoints
def safetensors_file(header: Any, data: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


GOOD_TENSOR = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("content", [
    safetensors_file(GOOD_TENSOR, bytes(8), length=10 ** 6),
    safetensors_file(GOOD_TENSOR, bytes(8), length=2 ** 64 - 1),
    safetensors_file([1, 2, 3]),
    safetensors_file(b"{not json}"),
    safetensors_file(GOOD_TENSOR, bytes(4)),
    safetensors_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}, bytes(8)),
    safetensors_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, bytes(8)),
    safetensors_file({"w": {"dtype": "NOPE", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    safetensors_file(GOOD_TENSOR, bytes(8))[:5],
], ids=["length-past-the-file", "length-2**64-1", "header-array", "header-not-json",
        "data-cut-short", "offsets-past-the-data", "shape-unlike-the-offsets",
        "unknown-dtype", "cut-inside-the-length"])
def test_corrupt_safetensors_files_are_checkpoint_errors_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from model_agnostic.checkpoints import load_state_dict

    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(path)
    assert not isinstance(excinfo.value, UnsafeCheckpointError)
    message = str(excinfo.value)
    assert str(path) in message and "Supported checkpoint formats" in message
    assert "safetensors" in message


def test_torchscript_archive_is_refused_even_with_the_trust_opt_in(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from model_agnostic.checkpoints import load_state_dict

    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2).eval(), torch.zeros(1, 2)),
                       str(path))
    for trust in (False, True):
        with pytest.raises(CheckpointError) as excinfo:
            load_state_dict(path, trust_checkpoint=trust)
        message = str(excinfo.value)
        assert "TorchScript" in message and "ONNX" in message and "state_dict" in message
        assert "Supported checkpoint formats" in message and ".safetensors" in message


def test_zip_that_is_not_a_torch_save_file_is_refused_naming_the_formats(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    from model_agnostic.checkpoints import load_state_dict

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.onnx", b"not really")
    with pytest.raises(CheckpointError, match="not a torch.save file") as excinfo:
        load_state_dict(path, trust_checkpoint=True)
    assert "Supported checkpoint formats" in str(excinfo.value)


# --------------------------------------------------------------------------- protocol
def test_json_depth_check_needs_less_memory_than_the_body_itself() -> None:
    body = b"[0.5, " * ((4 << 20) // 6) + b"]"
    tracemalloc.start()
    try:
        assert json_depth(body) == (4 << 20) // 6
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(body), f"{peak >> 20} MiB to scan a {len(body) >> 20} MiB body"
