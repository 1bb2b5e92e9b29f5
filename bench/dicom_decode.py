"""DICOM decoding cost: a 2048x2048 16-bit CR image through ``load_image`` (pydicom's
parse, then Modality LUT, window and the 8-bit mapping of ``model_agnostic/dicom.py``)
against ``load_image`` of the same 8-bit pixels as a PNG, both to an 8-bit gray image,
interleaved. The pixels are the sample X-ray upscaled to 2048x2048 and spread over 12 bits
(stored uncompressed, Explicit VR Little Endian, a window that spans them).
Target: DICOM <= 1.5x PNG. Results: ``bench/results/dicom_decode.json``.

Usage: python bench/dicom_decode.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from PIL import Image

from common import ROOT, interleaved_samples, machine, medians, write_result

sys.path.insert(0, str(ROOT))
from tests.dicom_fixtures import dicom, xray8  # noqa: E402

SIDE = 2048


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    from model_agnostic import load_image

    gray = Image.fromarray(xray8()).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    stored = (np.asarray(gray, dtype=np.uint16) * 16).astype(np.uint16)  # 12 bits stored
    data = dicom(stored, bits_stored=12, window=(2048, 4096))
    expected = np.asarray(load_image(data, mode="L"))
    buffer = io.BytesIO()
    Image.fromarray(expected).save(buffer, "PNG")
    png = buffer.getvalue()
    assert np.array_equal(np.asarray(load_image(png, mode="L")), expected)
    samples = interleaved_samples({
        "dicom": lambda: load_image(data, mode="L"),
        "png": lambda: load_image(png, mode="L"),
    }, args.repeats)
    median = medians(samples)
    ratio = median["dicom"] / median["png"]
    write_result("dicom_decode", {
        "side": SIDE, "bits_stored": 12, "dicom_bytes": len(data), "png_bytes": len(png),
        "repeats": args.repeats, "samples_s": samples, "median_s": median,
        "dicom_over_png": ratio, "target": {"dicom_over_png": "<= 1.5"},
    })
    print(f"Machine: {machine()}")
    print(f"DICOM {median['dicom'] * 1e3:.1f} ms ({len(data)} bytes), PNG "
          f"{median['png'] * 1e3:.1f} ms ({len(png)} bytes): {ratio:.2f}x")


if __name__ == "__main__":
    main()
