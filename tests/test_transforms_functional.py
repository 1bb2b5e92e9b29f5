"""model_agnostic.transforms.functional helpers against torchvision's functional API.

Images are generated from fixed seeds; PIL results must match pixel for pixel,
array results exactly (shape, dtype, values).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import model_agnostic.transforms as M
import model_agnostic.transforms.functional as MF
from model_agnostic.transforms import _resize

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")
TF = pytest.importorskip("torchvision.transforms.functional")

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK"]


def make_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random image of ``mode`` built from raw bytes (P gets a random palette)."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode in ("I", "I;16", "F"):
        dtype = {"I": "<i4", "I;16": "<u2", "F": "<f4"}[mode]
        data = (rng.standard_normal((height, width)) * 3000 + 30000).astype(dtype)
        return Image.frombytes(mode, size, data.tobytes())
    bands = Image.getmodebands(mode)
    data = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    image = Image.frombytes("L" if mode == "1" else mode, size, data.tobytes())
    if mode == "1":
        return image.convert("1")
    if mode == "P":
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image


def assert_same(ours: Any, theirs: Any) -> None:
    """PIL: same mode, size, pixels, palette. Arrays: same shape, dtype and values."""
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for mine, expected in zip(ours, theirs):
            assert_same(mine, expected)
    elif isinstance(theirs, Image.Image):
        assert isinstance(ours, Image.Image)
        assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
        assert ours.tobytes() == theirs.tobytes()
        assert ours.getpalette() == theirs.getpalette()
    else:
        expected = theirs.numpy()
        assert isinstance(ours, np.ndarray)
        assert (ours.shape, ours.dtype) == (expected.shape, expected.dtype)
        assert np.array_equal(ours, expected)


@pytest.mark.parametrize("mode", MODES + ["PA", "YCbCr"])
def test_image_size_channels_and_dimensions_match_torchvision_on_pil(mode):
    image = make_image(mode, (13, 7))
    assert MF.get_image_size(image) == TF.get_image_size(image) == [13, 7]
    assert MF.get_image_num_channels(image) == TF.get_image_num_channels(image)
    assert MF.get_dimensions(image) == TF.get_dimensions(image)


@pytest.mark.parametrize("shape", [(7, 13), (1, 7, 13), (3, 7, 13), (2, 4, 7, 13)])
def test_image_size_channels_and_dimensions_match_torchvision_on_ndarrays(shape):
    array, tensor = np.zeros(shape, np.float32), torch.zeros(shape)
    assert MF.get_image_size(array) == TF.get_image_size(tensor)
    assert MF.get_image_num_channels(array) == TF.get_image_num_channels(tensor)
    assert MF.get_dimensions(array) == TF.get_dimensions(tensor)


def test_image_size_rejects_non_images():
    with pytest.raises(TypeError, match="img should be PIL Image or ndarray. Got <class 'list'>"):
        MF.get_image_size([[0]])
    with pytest.raises(TypeError, match=r"expected shape \(..., H, W\)"):
        MF.get_dimensions(np.zeros(3))


BOXES = [(0, 0, 5, 5), (2, 3, 4, 6), (-3, -2, 6, 5), (5, 9, 20, 20), (-4, 10, 30, 3), (0, 0, 13, 7)]


@pytest.mark.parametrize("mode", MODES)
def test_crop_matches_torchvision_on_pil_inside_and_outside_bounds(mode):
    image = make_image(mode, (13, 7))
    for box in BOXES:
        assert_same(MF.crop(image, *box), TF.crop(image, *box))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
@pytest.mark.parametrize("shape", [(7, 13), (3, 7, 13), (2, 3, 7, 13)])
def test_crop_matches_torchvision_on_ndarrays_and_returns_copies(shape, dtype):
    array = (np.random.default_rng(1).standard_normal(shape) * 100).astype(dtype)
    for box in BOXES:
        ours = MF.crop(array, *box)
        assert_same(ours, TF.crop(torch.from_numpy(array), *box))
        assert ours.flags.c_contiguous and not np.shares_memory(ours, array)


@pytest.mark.parametrize("mode", MODES)
def test_hflip_and_vflip_match_torchvision_on_pil(mode):
    for size in [(1, 1), (13, 7), (6, 10)]:
        image = make_image(mode, size)
        assert_same(MF.hflip(image), TF.hflip(image))
        assert_same(MF.vflip(image), TF.vflip(image))


@pytest.mark.parametrize("shape", [(7, 1), (3, 7, 13), (2, 3, 1, 13)])
def test_hflip_and_vflip_match_torchvision_on_ndarrays_and_return_copies(shape):
    array = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    for ours_fn, theirs_fn in ((MF.hflip, TF.hflip), (MF.vflip, TF.vflip)):
        ours = ours_fn(array)
        assert_same(ours, theirs_fn(torch.from_numpy(array)))
        assert ours.flags.c_contiguous and not np.shares_memory(ours, array)


def test_flips_and_crops_reject_non_images():
    for fn in (MF.hflip, MF.vflip, lambda img: MF.crop(img, 0, 0, 1, 1), MF.to_grayscale):
        with pytest.raises(TypeError, match="img should be PIL Image"):
            fn("not an image")


def test_compute_resized_output_size_matches_torchvision_on_a_sweep():
    from torchvision.transforms.functional import _compute_resized_output_size as tv_size

    rng = np.random.default_rng(3)
    for _ in range(3000):
        h, w = (int(v) for v in rng.integers(1, 5000, 2))
        size = [int(rng.integers(1, 1000))]
        max_size = None if rng.random() < 0.5 else size[0] + int(rng.integers(1, 1000))
        expected = tv_size((h, w), size, max_size)
        assert MF._compute_resized_output_size((h, w), size, max_size) == expected
        pair = [int(v) for v in rng.integers(1, 1000, 2)]
        assert MF._compute_resized_output_size((h, w), pair) == tv_size((h, w), pair)


@pytest.mark.parametrize("mode", list(M.InterpolationMode))
def test_interpolation_accepts_every_spelling(mode):
    tv_mode = T.InterpolationMode(mode.value)
    spellings = [mode, tv_mode, mode.value, mode.value.upper(), mode.name, mode.name.lower()]
    assert all(MF._to_interpolation(s) is mode for s in spellings)
    assert MF._to_interpolation(mode.value.replace("-", "_")) is mode


@pytest.mark.parametrize("pil_constant", [Image.Resampling.NEAREST, Image.Resampling.LANCZOS,
                                          Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
                                          Image.Resampling.BOX, Image.Resampling.HAMMING])
def test_interpolation_accepts_the_pil_constants_torchvision_accepts(pil_constant):
    from torchvision.transforms.functional import _interpolation_modes_from_int

    expected = _interpolation_modes_from_int(int(pil_constant)).value
    assert MF._to_interpolation(pil_constant).value == expected
    assert MF._to_interpolation(int(pil_constant)).value == expected
    assert M.Resize(10, pil_constant).interpolation.value == expected


@pytest.mark.parametrize("value", [True, 1.5, object()])
def test_interpolation_rejects_other_types(value):
    with pytest.raises(TypeError, match="InterpolationMode, its string value or a Pillow"):
        MF._to_interpolation(value)


def test_normalize_handles_batches_scalars_and_float64_like_torchvision():
    batch = np.random.default_rng(4).random((2, 3, 5, 5)).astype(np.float32)
    mean, std = (0.1, 0.2, 0.3), (0.9, 0.8, 0.7)
    assert_same(MF.normalize(batch, mean, std), TF.normalize(torch.from_numpy(batch), mean, std))
    assert_same(MF.normalize(batch, 0.5, 0.25), TF.normalize(torch.from_numpy(batch), 0.5, 0.25))
    wide = batch.astype(np.float64)
    assert_same(MF.normalize(wide, mean, std), TF.normalize(torch.from_numpy(wide), mean, std))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I", "F", "1", "P"])
def test_to_tensor_returns_fresh_writable_contiguous_arrays(mode):
    image = make_image(mode, (9, 5))
    for out in (MF.to_tensor(image), MF.pil_to_tensor(image)):
        assert out.flags.c_contiguous and out.flags.writeable
        out[...] = 0  # must not touch the image
    assert MF.pil_to_tensor(image).tobytes() == TF.pil_to_tensor(image).numpy().tobytes()


def test_to_tensor_uint8_division_is_bit_identical_to_torch():
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = TF.to_tensor(Image.fromarray(every_value)).numpy()
    assert np.array_equal(MF.to_tensor(Image.fromarray(every_value)), expected)
    assert np.array_equal(MF.to_tensor(every_value), expected)


def test_ten_crop_accepts_every_size_form_like_torchvision():
    image = make_image("RGB", (20, 16))
    array = MF.to_tensor(image)
    for size in (8, [8], (8, 6), [5, 7]):
        assert_same(MF.ten_crop(image, size, True), TF.ten_crop(image, size, True))
        assert_same(MF.ten_crop(array, size), TF.ten_crop(torch.from_numpy(array), size))
    with pytest.raises(ValueError, match=r"Requested crop size \[30, 7\] is bigger than input"):
        MF.ten_crop(image, [30, 7])


def test_pad_keeps_the_palette_of_p_images_in_every_mode():
    image = make_image("P", (6, 5))
    for padding_mode in ("constant", "edge", "reflect", "symmetric"):
        ours = MF.pad(image, (2, 1), fill=3, padding_mode=padding_mode)
        assert_same(ours, TF.pad(image, (2, 1), fill=3, padding_mode=padding_mode))
        assert ours.mode == "P" and ours.getpalette() == image.getpalette()


def test_pad_edge_changes_cmyk_to_rgba_like_torchvision():
    image = make_image("CMYK", (4, 4))
    ours = MF.pad(image, 1, padding_mode="edge")
    assert ours.mode == TF.pad(image, 1, padding_mode="edge").mode == "RGBA"


# Threaded resize: functional.resize computes large images in bands in parallel threads
# (model_agnostic/transforms/_resize.py); every result must be Image.resize's, byte for byte.

ROOT = Path(__file__).resolve().parent.parent
XRAY = ROOT / "examples" / "chexnet" / "data" / "nih_cxr14_00000001_000.png"


def large_xray(mode: str = "L") -> Image.Image:
    """The sample X-ray at 1024x1024 (it ships at 512x512), a large image to resize."""
    return Image.open(XRAY).convert("L").resize((1024, 1024), Image.Resampling.BICUBIC).convert(mode)
FILTERS = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.BOX,
           Image.Resampling.HAMMING, Image.Resampling.LANCZOS]
BANDED_MODES = ["L", "RGB", "RGBA", "LA", "I", "F", "I;16", "CMYK", "YCbCr"]


def assert_same_pil(ours: Image.Image, expected: Image.Image) -> None:
    assert_same(ours, expected)
    assert ours.info == expected.info


@pytest.fixture
def force_bands(monkeypatch):
    """Band every resize that can be banded exactly, however small."""
    monkeypatch.setattr(_resize, "MIN_COST", 0)
    monkeypatch.setattr(_resize, "_MIN_BAND", 1)


def sweep_pairs(count: int, seed: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(size, output size) pairs: per axis half the time a dyadic ratio (m * 2**j -> m * 2**i,
    down or up), else arbitrary; a quarter are torchvision ``Resize(int)`` shapes."""
    rng = np.random.default_rng(seed)

    def axis() -> tuple[int, int]:
        if rng.random() < 0.5:
            m, (i, j) = int(rng.integers(1, 25)), rng.choice(5, 2, replace=False)
            return m * 2 ** int(j), m * 2 ** int(i)
        return int(rng.integers(1, 300)), int(rng.integers(1, 300))

    pairs = []
    for _ in range(count):
        if rng.random() < 0.25:
            w, h = (int(v) for v in rng.integers(16, 400, 2))
            size = [int(rng.choice([16, 32, 64, 128, 256]))]
            out_h, out_w = MF._compute_resized_output_size((h, w), size)
        else:
            (w, out_w), (h, out_h) = axis(), axis()
        pairs.append(((w, h), (out_w, out_h)))
    return pairs


def test_banded_resize_equals_image_resize_on_a_sweep(force_bands):
    planned: Counter[str] = Counter()
    for i, (size, out_size) in enumerate(sweep_pairs(300, seed=5)):
        image = make_image(BANDED_MODES[i % len(BANDED_MODES)], size, seed=i)
        for resample in (FILTERS[i % 5], FILTERS[(i + 2) % 5]):
            expected = image.resize(out_size, resample)
            for bands in (2, 3, 4):
                plan = _resize.band_plan(image, out_size, resample, bands)
                if plan is not None:
                    assert_same_pil(_resize.banded(image, out_size, resample, *plan), expected)
                    planned[plan[0]] += 1
    assert planned["rows"] > 300 and planned["columns"] > 150, planned  # both kinds exercised


@pytest.mark.parametrize("mode", ["L", "RGB", "F"])
def test_banded_resize_equals_image_resize_on_the_xray(force_bands, mode):
    image = large_xray(mode)
    cases = [((256, 256), f) for f in FILTERS] + [((512, 512), FILTERS[0]), ((256, 320), FILTERS[1]),
                                                   ((320, 256), FILTERS[4])]
    for out_size, resample in cases + ([((2048, 2048), FILTERS[0])] if mode == "L" else []):
        plan = _resize.band_plan(image, out_size, resample, 4)
        assert plan is not None
        assert_same_pil(_resize.banded(image, out_size, resample, *plan),
                        image.resize(out_size, resample))


def test_pass_order_rule_matches_pillow():
    """Where the order of the two passes changes the pixels, Image.resize takes the order
    band_plan assumes; boxes (as bands use) included."""
    rule, rng, bicubic = _resize._pass_order(), np.random.default_rng(6), Image.Resampling.BICUBIC
    assert rule is not None
    for _ in range(300):
        w, h, out_w, out_h = (int(v) for v in rng.integers(2, 80, 4))
        moved = rng.random() < 0.3
        box = (1, 1, w, h) if moved else (0, 0, w, h)
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        h_first = image.resize((out_w, h), bicubic, box=(box[0], 0, w, h)).resize(
            (out_w, out_h), bicubic, box=(0, box[1], out_w, h))
        v_first = image.resize((w, out_h), bicubic, box=(0, box[1], w, h)).resize(
            (out_w, out_h), bicubic, box=(box[0], 0, w, out_h))
        need_h, need_v = moved or out_w != w, moved or out_h != h
        expected = v_first if rule((w, h), (out_w, out_h), need_h, need_v) else h_first
        assert image.resize((out_w, out_h), bicubic, box=box).tobytes() == expected.tobytes()


def test_bands_the_plan_refuses_would_not_be_exact(force_bands):
    """Why band_plan checks ratios and pass order: cut anyway, the pixels differ."""
    image, bilinear = make_image("RGB", (300, 300), seed=1), Image.Resampling.BILINEAR
    assert _resize.band_plan(image, (224, 224), bilinear, 2) is None  # 300/224: box rounded
    naive = _resize.banded(image, (224, 224), bilinear, "rows", [0, 112, 224])
    assert naive.tobytes() != image.resize((224, 224), bilinear).tobytes()
    image = make_image("L", (226, 192), seed=0)  # 226 -> 452 is dyadic, but bands of
    plan = _resize.band_plan(image, (452, 32), bilinear, 4)  # columns would run the passes
    assert plan is not None and plan[0] == "rows"  # in the other order: rows are chosen
    naive = _resize.banded(image, (452, 32), bilinear, "columns", [0, 113, 226, 339, 452])
    assert naive.tobytes() != image.resize((452, 32), bilinear).tobytes()


def test_resize_bands_large_images_in_worker_threads(monkeypatch):
    monkeypatch.setenv(_resize.ENV_THREADS, "2")
    calls, band = [], _resize._band

    def spy(*args: Any) -> Image.Image:
        calls.append((threading.current_thread().name, args[-2:]))
        return band(*args)

    monkeypatch.setattr(_resize, "_band", spy)
    image = large_xray("RGB")
    assert_same_pil(MF.resize(image, 256), TF.resize(image, 256))
    assert sorted(span for _, span in calls) == [(0, 128), (128, 256)]
    assert {name.split("_")[0] for name, _ in calls} == {"MainThread", "model"}


@pytest.mark.parametrize("case", ["threads=1", "small", "nearest", "not dyadic", "P", "1"])
def test_resize_makes_one_call_when_banding_is_off_small_or_inexact(monkeypatch, case):
    monkeypatch.setenv(_resize.ENV_THREADS, "1" if case == "threads=1" else "4")
    monkeypatch.setattr(_resize, "_band", lambda *args: pytest.fail("banded"))
    image = large_xray(case if case in ("P", "1") else "RGB")
    size, interpolation = {"small": ([64, 48], M.InterpolationMode.BICUBIC),
                           "nearest": (256, M.InterpolationMode.NEAREST),
                           "not dyadic": (224, M.InterpolationMode.BILINEAR)}.get(
                               case, (256, M.InterpolationMode.LANCZOS))
    image = image.resize((256, 256)) if case == "small" else image
    tv_mode = T.InterpolationMode(interpolation.value)
    assert_same_pil(MF.resize(image, size, interpolation), TF.resize(image, size, tv_mode))


def test_resize_threads_setting(monkeypatch):
    monkeypatch.delenv(_resize.ENV_THREADS, raising=False)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _resize.resize_threads() == min(cpus or 1, _resize.MAX_THREADS)
    monkeypatch.setenv(_resize.ENV_THREADS, " 3 ")
    assert _resize.resize_threads() == 3
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(_resize.ENV_THREADS, bad)
        with pytest.raises(ValueError, match="MODEL_AGNOSTIC_RESIZE_THREADS should be a positive"):
            MF.resize(make_image("L", (8, 8)), 4)


def test_no_thread_on_import_pool_on_first_large_resize_and_fresh_pool_after_fork():
    code = f"""
import os, sys, threading
os.environ[{_resize.ENV_THREADS!r}] = "2"
sys.path.insert(0, {str(ROOT)!r})
from PIL import Image
import model_agnostic.transforms as T
from model_agnostic.transforms import _resize
assert threading.active_count() == 1 and not _resize._pools
T.Resize(8)(Image.new("RGB", (16, 16)))
assert threading.active_count() == 1 and not _resize._pools
T.Resize(256)(Image.new("RGB", (1024, 1024)))
assert list(_resize._pools) == [1] and threading.active_count() == 2
if hasattr(os, "fork"):  # a forked child has none of the parent's workers: it makes its own
    pid = os.fork()
    if pid == 0:
        T.Resize(256)(Image.new("RGB", (1024, 1024)))
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
print("ok")
"""
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
