"""X-rays as hospitals store them: 16-bit PNG/TIFF scaled, not clipped; DICOM read through
its pixel pipeline or refused with the reason; EXIF orientation as asked."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_agnostic import ConfigError, ImageDecodeError, load_image
from tests.conftest import ROOT, XRAY
from tests.dicom_fixtures import (
    PATIENT_ID,
    PATIENT_NAME,
    Case,
    readable_cases,
    unreadable_cases,
    xray8,
)

pydicom = pytest.importorskip("pydicom")
DATA = ROOT / "examples" / "chexnet" / "data"


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _sixteen_bit(fmt: str) -> bytes:
    """The sample X-ray's very pixels x 257, as many DICOM-to-PNG exports write them."""
    return _encoded(Image.fromarray(xray8().astype(np.uint16) * 257), fmt)


# ------------------------------------------------------------------------ bit depth
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_image_is_scaled_by_its_bit_depth_not_clipped(fmt: str) -> None:
    data = _sixteen_bit(fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert np.array_equal(np.asarray(load_image(data, mode="L")), xray8())
    clipped = np.asarray(load_image(data, mode="L", bit_depth="clip"))  # Pillow's conversion
    assert (clipped == 255).mean() > 0.9  # what happened before: almost all white


def test_bit_depth_policies() -> None:
    ramp = Image.fromarray(np.arange(1000, 5096, dtype=np.uint16).reshape(64, 64))
    assert np.asarray(load_image(ramp, mode="L", bit_depth="minmax")).tolist()[0][:2] == [0, 0]
    assert np.asarray(load_image(ramp, mode="L", bit_depth="minmax")).max() == 255
    assert np.asarray(load_image(ramp, mode="L")).max() == round(5095 * 255 / 65535)
    with pytest.raises(ConfigError, match="bit_depth must be one of"):
        load_image(ramp, mode="L", bit_depth="stretch")
    with pytest.raises(ConfigError, match="exif must be one of"):
        load_image(ramp, mode="L", exif="rotate")


def _with_sbit(png: bytes, bits: int) -> bytes:
    """``png`` with an sBIT chunk after IHDR: a 12-bit image in a 16-bit container."""
    chunk = b"sBIT" + bytes([bits])
    after_ihdr = 8 + 8 + 13 + 4  # signature, IHDR's length+type, data, CRC
    return (png[:after_ihdr] + (1).to_bytes(4, "big") + chunk
            + zlib.crc32(chunk).to_bytes(4, "big") + png[after_ihdr:])


def test_significant_bits_come_from_the_pngs_sbit_chunk() -> None:
    ramp = np.arange(1000, 5096, dtype=np.uint16).reshape(64, 64)
    png = _with_sbit(_encoded(Image.fromarray(ramp), "PNG"), 12)
    assert b"sBIT" in png and Image.open(io.BytesIO(png)).mode == "I;16"
    significant = np.asarray(load_image(png, mode="L", bit_depth="significant"))
    assert significant.max() == 255 and significant.min() == round(1000 * 255 / 4095)
    assert np.array_equal(significant, np.clip(np.rint(ramp * (255 / 4095)), 0, 255))
    # without sBIT, "significant" falls back to the container's 16 bits, like "scale"
    plain = _encoded(Image.fromarray(ramp), "PNG")
    assert np.array_equal(load_image(plain, mode="L", bit_depth="significant"),
                          load_image(plain, mode="L"))


def test_a_non_seekable_stream_is_read_whole() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: Any) -> int:
            chunk = self.data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    data = _sixteen_bit("PNG")
    assert np.array_equal(np.asarray(load_image(Pipe(data), mode="L")), xray8())
    with pytest.raises(ImageDecodeError, match="gave no bytes"):
        load_image(Pipe(b""))


def test_the_same_xray_as_8_bit_png_16_bit_png_and_16_bit_tiff_gets_the_same_findings(
    chexnet_onnx_config: Path,
) -> None:
    """Before, the 16-bit files were clipped to white and got other findings (issue 13)."""
    from model_agnostic import load_model

    model = load_model(chexnet_onnx_config)
    eight = model.predict(_encoded(Image.fromarray(xray8()), "PNG"))
    for fmt in ("PNG", "TIFF"):
        assert model.predict(_sixteen_bit(fmt)) == eight


# ------------------------------------------------------------------------------ EXIF
def test_exif_orientation_is_ignored_by_default_and_applied_when_asked() -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, "JPEG", exif=exif.tobytes(), quality=95)
    ignored = load_image(data.getvalue(), mode="RGB")
    applied = load_image(data.getvalue(), mode="RGB", exif="apply")
    assert ignored.size == (40, 20) and applied.size == (20, 40)
    assert np.asarray(applied)[:10].mean() > 200  # the band is now at the top


# ----------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("case", readable_cases(), ids=lambda c: c.name)
def test_each_readable_dicom_gives_the_documented_8_bit_pixels(case: Case) -> None:
    image = load_image(case.data, mode="L")
    assert np.array_equal(np.asarray(image), case.expected)


def test_dicom_gets_the_findings_of_the_8_bit_png_of_the_same_pixels(
    chexnet_onnx_config: Path,
) -> None:
    from model_agnostic import load_model

    model = load_model(chexnet_onnx_config)
    real = [("RSNA CR, JPEG Baseline", (DATA / "rsna_pneumonia_cr_jpeg_baseline.dcm").read_bytes(),
             None),
            ("RSNA CR, MONOCHROME1", (DATA / "rsna_pneumonia_cr_monochrome1.dcm").read_bytes(),
             "invert")]
    baseline = np.asarray(pydicom.dcmread(DATA / "rsna_pneumonia_cr_jpeg_baseline.dcm").pixel_array)
    for name, data, how in real:
        pixels = 255 - baseline if how == "invert" else baseline
        _same_findings(model, name, data, pixels)
    for case in readable_cases():
        _same_findings(model, case.name, case.data, case.expected)


def _same_findings(model: Any, name: str, data: bytes, pixels: np.ndarray) -> None:
    want = model.predict(_encoded(Image.fromarray(pixels), "PNG"))
    got = model.predict(data)
    assert [f["finding"] for f in got] == [f["finding"] for f in want], name
    assert np.allclose([f["probability"] for f in got], [f["probability"] for f in want],
                       atol=1e-5, rtol=0), name


@pytest.mark.parametrize(("name", "data", "words"), unreadable_cases(),
                         ids=[case[0] for case in unreadable_cases()])
def test_an_unreadable_dicom_is_refused_with_the_reason_and_no_patient_data(
    name: str, data: bytes, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ImageDecodeError) as error:
        load_image(data, mode="RGB")
    assert words in str(error.value)
    for secret in (PATIENT_NAME, PATIENT_ID, "Doe", "Jane"):
        assert secret not in str(error.value) and secret not in caplog.text


def test_the_server_answers_400_for_an_unreadable_dicom_and_reads_a_good_one(
    chexnet_onnx_config: Path,
) -> None:
    pytest.importorskip("waitress")
    import urllib.error
    import urllib.request

    from model_agnostic import load_model
    from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane

    good = (DATA / "rsna_pneumonia_cr_jpeg_baseline.dcm").read_bytes()
    expected = load_model(chexnet_onnx_config).predict(good)
    with BackgroundServer(build_dataplane(chexnet_onnx_config), ServerOptions(port=0)) as server:
        url = server.url + "/v2/models/chexnet/predict"
        for name, data, words in unreadable_cases():
            request = urllib.request.Request(url, data, {"Content-Type": "application/dicom"})
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=60)
            assert answer.value.code == 400, name
            message = json.loads(answer.value.read())["error"]
            assert words in message and PATIENT_NAME not in message, name
        request = urllib.request.Request(url, good, {"Content-Type": "application/dicom"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            result = json.loads(answer.read())["result"]
    assert [f["finding"] for f in result] == [f["finding"] for f in expected]


def test_without_pydicom_a_dicom_names_the_extra_to_install() -> None:
    code = ("import sys; sys.modules['pydicom'] = None\n"
            "from model_agnostic import load_image, MissingDependencyError\n"
            f"try:\n    load_image({str(DATA / 'rsna_pneumonia_cr_jpeg_baseline.dcm')!r})\n"
            "except MissingDependencyError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert "pip install 'model-agnostic[dicom]'" in done.stdout, done.stderr


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_the_lookup_table_maps_every_stored_value_like_the_direct_formula(
    dtype: str, photometric: str
) -> None:
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset

    from model_agnostic.dicom import _map_to_8bit, _to_8bit

    info = np.iinfo(dtype)
    pixels = np.random.default_rng(0).integers(info.min, info.max, (64, 80), endpoint=True)
    pixels = pixels.astype(dtype)
    dataset = Dataset()
    dataset.BitsStored = dataset.BitsAllocated = info.bits
    dataset.PixelRepresentation = int(info.min < 0)
    dataset.RescaleSlope, dataset.RescaleIntercept = 0.5, -100
    dataset.WindowCenter, dataset.WindowWidth = 40, 400
    np.testing.assert_array_equal(_to_8bit(dataset, pixels, photometric),
                                  _map_to_8bit(dataset, pixels, photometric))
