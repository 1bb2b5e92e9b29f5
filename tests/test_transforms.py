"""model_agnostic.transforms classes (and their functionals) against torchvision.

Every image is generated here from a fixed seed. PIL outputs must match
torchvision's pixel for pixel (mode, size, palette); array outputs must have
torchvision's shape and dtype and differ by at most 1e-6.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import model_agnostic.transforms as M
import model_agnostic.transforms.functional as MF

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")
TF = pytest.importorskip("torchvision.transforms.functional")

ROOT = Path(__file__).resolve().parent.parent
MODES = ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "I", "I;16", "F", "CMYK"]
SIZES = [(1, 1), (17, 33), (41, 23), (32, 32)]  # (width, height): tiny, portrait, landscape, square
LARGE = (1500, 1100)
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def make_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A random image of ``mode`` ("P+transparency": P with a transparent index)."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width)).astype(bool))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31, (height, width), dtype=np.int32))
    if mode.startswith("I;16"):
        data = rng.integers(0, 2**16, (height, width)).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, size, data.tobytes())
    if mode == "F":
        return Image.fromarray((rng.standard_normal((height, width)) * 1000).astype(np.float32))
    if mode.startswith("P"):
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        if mode == "P+transparency":
            image.info["transparency"] = 7
        return image
    bands = Image.getmodebands(mode)
    data = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.frombytes(mode, size, data.tobytes())


def assert_same(ours: Any, theirs: Any) -> None:
    """Ours equals torchvision's: PIL pixel for pixel, arrays within 1e-6."""
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for mine, expected in zip(ours, theirs):
            assert_same(mine, expected)
    elif isinstance(theirs, Image.Image):
        assert isinstance(ours, Image.Image)
        assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
        assert ours.tobytes() == theirs.tobytes()
        assert ours.getpalette() == theirs.getpalette()
        assert ours.info.get("transparency") == theirs.info.get("transparency")
    else:
        expected = theirs.numpy()
        assert isinstance(ours, np.ndarray)
        assert (ours.shape, ours.dtype) == (expected.shape, expected.dtype)
        if expected.size:
            diff = np.abs(ours.astype(np.float64) - expected.astype(np.float64)).max()
            assert diff <= 1e-6, diff


def check(ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any) -> None:
    """``ours(*args)`` equals ``theirs(*args)``, or raises the same exception type (torch's
    RuntimeError for a bad argument is a ValueError here)."""
    try:
        expected = theirs(*args)
    except Exception as exc:  # noqa: BLE001 - mirror whatever torchvision raises
        with pytest.raises(ValueError if type(exc) is RuntimeError else type(exc)):
            ours(*args)
        return
    assert_same(ours(*args), expected)


def tv(fn: Callable[..., Any]) -> Callable[..., Any]:
    """torchvision's ``fn`` taking ndarrays: they are handed over as tensors (shared memory)."""
    return lambda *args: fn(*[torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                              for a in args])


def chw(seed: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("size", SIZES + [LARGE])
@pytest.mark.parametrize("mode", MODES + ["PA", "YCbCr", "HSV", "RGBX", "I;16B"])
def test_to_tensor_and_pil_to_tensor_match_torchvision_for_every_mode(mode, size):
    image = make_image(mode, size)
    assert_same(M.ToTensor()(image), T.ToTensor()(image))
    assert_same(MF.to_tensor(image), TF.to_tensor(image))
    if mode == "I;16B":  # torchvision fails on big-endian data; we return native-endian uint16
        expected = np.asarray(image).astype(np.uint16)[None]
        assert np.array_equal(M.PILToTensor()(image), expected) and expected.dtype.isnative
        return
    assert_same(M.PILToTensor()(image), T.PILToTensor()(image))
    assert_same(MF.pil_to_tensor(image), TF.pil_to_tensor(image))


def test_to_tensor_keeps_torchvision_quirks_for_1_and_i16_modes():
    bits = Image.fromarray(np.array([[True, False]]))
    assert MF.to_tensor(bits).tolist() == [[[1.0, 0.0]]]
    i16 = Image.fromarray(np.array([[0, 40000, 65535]], np.uint16))
    out = M.ToTensor()(i16)
    assert out.dtype == np.int16 and out.tolist() == [[[0, -25536, -1]]]  # not scaled, wraps


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int16, np.int32, bool])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (6, 4, 4)])
def test_to_tensor_converts_hwc_ndarrays_like_torchvision(shape, dtype):
    array = chw(1, shape, np.uint8).astype(dtype)
    ours = M.ToTensor()(array)
    assert_same(ours, T.ToTensor()(array))
    assert ours.flags.c_contiguous and ours.flags.writeable and not np.shares_memory(ours, array)


@pytest.mark.parametrize("interpolation", list(M.InterpolationMode))
@pytest.mark.parametrize("mode", MODES)
def test_resize_matches_torchvision_for_every_mode_and_interpolation(mode, interpolation):
    tv_mode = T.InterpolationMode(interpolation.value)
    for size in SIZES:
        image = make_image(mode, size)
        for spec in (13, [20], (9, 31)):
            check(M.Resize(spec, interpolation), T.Resize(spec, tv_mode), image)
            check(partial(MF.resize, interpolation=interpolation),
                  partial(TF.resize, interpolation=tv_mode), image, spec)


@pytest.mark.parametrize("interpolation", list(M.InterpolationMode))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_resize_large_image_every_interpolation(mode, interpolation):
    image = make_image(mode, LARGE)
    tv_mode = T.InterpolationMode(interpolation.value)
    assert_same(M.Resize(256, interpolation)(image), T.Resize(256, tv_mode)(image))


@pytest.mark.parametrize(("size", "max_size"), [(256, 300), ([100], 120), (50, 1000), (7, 8)])
@pytest.mark.parametrize("image_size", SIZES + [LARGE, (1100, 1500), (3, 1000)])
def test_resize_max_size_and_rounding_match_torchvision(size, max_size, image_size):
    image = Image.new("L", image_size)
    check(M.Resize(size, max_size=max_size), T.Resize(size, max_size=max_size), image)
    check(partial(MF.resize, max_size=max_size), partial(TF.resize, max_size=max_size), image, size)


def test_resize_accepts_torchvision_enums_strings_and_pil_constants():
    image = make_image("RGB", (40, 30))
    expected = T.Resize(20, T.InterpolationMode.BICUBIC)(image)
    spellings = (T.InterpolationMode.BICUBIC, "bicubic", "BICUBIC", Image.Resampling.BICUBIC, 3)
    for interpolation in spellings:
        assert_same(M.Resize(20, interpolation)(image), expected)
        assert_same(MF.resize(image, 20, interpolation), expected)
    assert M.Resize(20, Image.Resampling.LANCZOS).interpolation is M.InterpolationMode.LANCZOS


def test_resize_returns_input_when_size_unchanged_and_warns_on_antialias_false():
    image = make_image("RGB", (32, 24))
    assert M.Resize(24)(image) is image
    with pytest.warns(UserWarning, match="antialias"):
        ours = M.Resize(12, antialias=False)(image)
    with pytest.warns(UserWarning, match="antialias"):
        assert_same(ours, T.Resize(12, antialias=False)(image))


@pytest.mark.parametrize("mode", MODES)
def test_center_crop_smaller_and_larger_than_image(mode):
    for image_size in SIZES + [(20, 7)]:
        image = make_image(mode, image_size)
        for crop in (1, 5, (6, 3), [4], (40, 9), (7, 45), 50, (2, 33)):
            check(M.CenterCrop(crop), T.CenterCrop(crop), image)
            check(MF.center_crop, TF.center_crop, image, crop)


@pytest.mark.parametrize("shape", [(3, 17, 33), (1, 1, 1), (2, 3, 8, 9), (20, 7)])
def test_center_crop_pads_ndarrays_like_torchvision(shape):
    array = chw(2, shape)
    for crop in (1, 5, (6, 3), (40, 9), (7, 45), 50, (2, 33)):
        check(M.CenterCrop(crop), tv(T.CenterCrop(crop)), array)
        check(MF.center_crop, tv(TF.center_crop), array, crop)
        ours = M.CenterCrop(crop)(array)
        assert ours.flags.c_contiguous and not np.shares_memory(ours, array)


@pytest.mark.parametrize("vertical_flip", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_five_crop_and_ten_crop_match_torchvision_on_pil(mode, vertical_flip):
    for image_size in [(17, 33), (41, 23), (32, 32), (5, 5)]:
        image = make_image(mode, image_size)
        for size in (5, (3, 4), [2]):
            check(M.FiveCrop(size), T.FiveCrop(size), image)
            check(MF.five_crop, TF.five_crop, image, size)
            check(M.TenCrop(size, vertical_flip), T.TenCrop(size, vertical_flip), image)
            check(MF.ten_crop, TF.ten_crop, image, size, vertical_flip)


@pytest.mark.parametrize("vertical_flip", [False, True])
@pytest.mark.parametrize("shape", [(3, 256, 256), (1, 33, 17), (2, 3, 23, 41), (9, 9)])
def test_five_crop_and_ten_crop_match_torchvision_on_ndarrays(shape, vertical_flip):
    array = chw(3, shape)
    for size in (9, (4, 7), [3]):
        check(M.TenCrop(size, vertical_flip), tv(T.TenCrop(size, vertical_flip)), array)
        check(MF.ten_crop, tv(TF.ten_crop), array, size, vertical_flip)
        check(M.FiveCrop(size), tv(T.FiveCrop(size)), array)
        check(MF.five_crop, tv(TF.five_crop), array, size)
        crops = M.TenCrop(size, vertical_flip)(array)
        assert all(c.flags.c_contiguous and not np.shares_memory(c, array) for c in crops)


PADDINGS = [0, 3, [2], (1, 4), [0, 1, 2, 3], (5, 0, 0, 6), (-1, 2, 3, -2)]


@pytest.mark.parametrize("padding_mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("mode", MODES)
def test_pad_matches_torchvision_on_pil_for_every_mode(mode, padding_mode):
    fills = [0, 7] + ([(1, 2)] if mode == "LA" else [])
    for image_size in [(17, 33), (41, 23), (1, 1), (6, 6)]:
        image = make_image(mode, image_size)
        for padding in PADDINGS:
            for fill in fills if padding_mode == "constant" else [0]:
                check(M.Pad(padding, fill, padding_mode), T.Pad(padding, fill, padding_mode), image)
                check(MF.pad, TF.pad, image, padding, fill, padding_mode)


@pytest.mark.parametrize("padding_mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_pad_matches_torchvision_on_ndarrays(padding_mode, dtype):
    for shape in [(3, 17, 33), (1, 6, 6), (2, 3, 9, 8)]:
        array = chw(4, shape, dtype)
        for padding in PADDINGS:
            for fill in (0, 3) if padding_mode == "constant" else (0,):
                check(M.Pad(padding, fill, padding_mode), tv(T.Pad(padding, fill, padding_mode)),
                      array)
                check(MF.pad, tv(TF.pad), array, padding, fill, padding_mode)
        assert not np.shares_memory(M.Pad(0)(array), array)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", MODES + ["YCbCr", "LA"])
def test_grayscale_matches_torchvision(mode, channels):
    for image_size in SIZES:
        image = make_image(mode, image_size)
        check(M.Grayscale(channels), T.Grayscale(channels), image)
        check(MF.to_grayscale, TF.to_grayscale, image, channels)
        check(MF.rgb_to_grayscale, TF.rgb_to_grayscale, image, channels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 17, 33), (4, 3, 8, 8)])
def test_normalize_matches_torchvision_bit_for_bit(shape, dtype):
    array = chw(5, shape, dtype)
    before = array.copy()
    expected = T.Normalize(*IMAGENET)(torch.from_numpy(array.copy())).numpy()
    ours = M.Normalize(*IMAGENET)(array)
    assert_same(ours, torch.from_numpy(expected))
    assert np.array_equal(ours, expected) and np.array_equal(array, before)
    functional = TF.normalize(torch.from_numpy(array), *IMAGENET).numpy()
    assert np.array_equal(MF.normalize(array, *IMAGENET), functional)
    result = M.Normalize(*IMAGENET, inplace=True)(array)
    assert result is array and np.array_equal(array, expected)
    one = before[..., :1, :, :]
    check(M.Normalize([0.5], [0.25]), tv(T.Normalize([0.5], [0.25])), one)


def test_reprs_equal_torchvision():
    def build(lib: Any) -> Any:
        return lib.Compose([
            lib.Resize(256), lib.Resize((20, 30), 3, max_size=None, antialias=False),
            lib.Resize([224], lib.InterpolationMode.NEAREST_EXACT, max_size=300),
            lib.CenterCrop(224), lib.CenterCrop([7]), lib.CenterCrop((3, 4)),
            lib.CenterCrop([5, 6]),
            lib.FiveCrop(10), lib.TenCrop((3, 5), vertical_flip=True), lib.TenCrop([9]),
            lib.Pad(3), lib.Pad((1, 2), fill=(1, 2, 3), padding_mode="reflect"),
            lib.Grayscale(), lib.Grayscale(3), lib.ToTensor(), lib.PILToTensor(),
            lib.Normalize(*IMAGENET), lib.Normalize((0.5,), (0.2,), inplace=True), lib.Lambda(len),
        ])
    assert repr(build(M)) == repr(build(T))
    assert [m.value for m in M.InterpolationMode] == [m.value for m in T.InterpolationMode]
    assert [m.name for m in M.InterpolationMode] == [m.name for m in T.InterpolationMode]


RGB = Image.new("RGB", (4, 4))
CHW = np.zeros((3, 4, 4), np.float32)
NORM = M.Normalize(*IMAGENET)
ERRORS = [
    (lambda: M.Resize(2.5), TypeError, "size should be int or sequence"),
    (lambda: M.Resize((1, 2, 3)), ValueError, "size should be int or sequence of length 1 or 2"),
    (lambda: M.Resize((10, 20), max_size=30), ValueError, "max_size should only be passed"),
    (lambda: M.Resize(10, max_size=10)(RGB), ValueError, "must be strictly greater than"),
    (lambda: M.Resize(10, interpolation=9), ValueError, "Pillow filter constant"),
    (lambda: M.Resize(10, interpolation="cubic"), ValueError, "interpolation should be one of"),
    (lambda: M.Resize(10, interpolation=None), TypeError, "should be an InterpolationMode"),
    (lambda: M.Resize(10)(CHW), TypeError, "apply Resize to the PIL image before ToTensor"),
    (lambda: M.Resize(10)("a.png"), TypeError, "img should be PIL Image. Got <class 'str'>"),
    (lambda: M.Grayscale()(CHW), TypeError, "apply Grayscale to the PIL image before ToTensor"),
    (lambda: M.Grayscale(2), ValueError, "num_output_channels should be either 1 or 3"),
    (lambda: NORM(RGB), TypeError, "img should be ndarray image .* Got <class 'PIL.Image.Image'>"),
    (lambda: NORM(CHW.astype(np.uint8)), TypeError, "should be a float array"),
    (lambda: NORM(CHW[0]), ValueError, r"shape \(\.\.\., C, H, W\)"),
    (lambda: M.Normalize([0.5], [0.0])(CHW), ValueError, "std evaluated to zero"),
    (lambda: NORM(CHW[:1]), ValueError, "one value per channel"),
    (lambda: M.ToTensor()([[1]]), TypeError, "pic should be PIL Image or ndarray. Got <class 'li"),
    (lambda: M.ToTensor()(CHW[None]), ValueError, "pic should be 2/3 dimensional. Got 4"),
    (lambda: M.PILToTensor()(CHW), TypeError, "pic should be PIL Image. Got"),
    (lambda: M.CenterCrop((1, 2, 3)), ValueError, r"only two dimensions \(h, w\)"),
    (lambda: M.CenterCrop(None), TypeError, "size should be int or sequence"),
    (lambda: M.FiveCrop(10)(RGB), ValueError, r"Requested crop size \(10, 10\) is bigger"),
    (lambda: M.TenCrop(10)(None), TypeError, "PIL Image or ndarray. Got <class 'NoneType'>"),
    (lambda: M.Pad("3"), TypeError, "padding should be an int or a sequence of 1, 2 or 4 ints"),
    (lambda: M.Pad((1, 2, 3)), ValueError, "1, 2, or 4 element tuple"),
    (lambda: M.Pad(1, padding_mode="wrap"), ValueError, "constant, edge, reflect or symmetric"),
    (lambda: M.Pad(1, fill="red"), TypeError, "fill should be a number or a tuple"),
    (lambda: M.Pad(1, fill=(1, 2))(CHW), TypeError, "fill should be a number for ndarray"),
    (lambda: M.Pad(1, fill=(1, 2))(RGB), ValueError, r"does not match .* \(2 != 3\)"),
    (lambda: M.Pad(4, padding_mode="reflect")(CHW), ValueError, "smaller than the image"),
    (lambda: M.Lambda(3), TypeError, "Argument lambd should be callable, got 'int'"),
]


@pytest.mark.parametrize(("call", "error", "message"), ERRORS)
def test_errors_say_what_was_expected(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _chexnet_torchvision(mean: list[float], std: list[float]) -> Any:
    to_tensor, norm = T.ToTensor(), T.Normalize(mean, std)
    return T.Compose([
        T.Resize(256), T.TenCrop(224),
        T.Lambda(lambda crops: torch.stack([to_tensor(crop) for crop in crops])),
        T.Lambda(lambda crops: torch.stack([norm(crop) for crop in crops])),
    ])


@pytest.mark.parametrize(("mode", "mean", "std"), [("RGB", *IMAGENET), ("L", [0.5], [0.25])])
def test_chexnet_fast_path_equals_torchvision_order(mode, mean, std):
    image = make_image(mode, LARGE, seed=11)
    expected = _chexnet_torchvision(mean, std)(image).numpy()
    same_order = M.Compose([
        M.Resize(256), M.TenCrop(224),
        M.Lambda(lambda crops: np.stack([M.ToTensor()(crop) for crop in crops])),
        M.Lambda(lambda crops: np.stack([M.Normalize(mean, std)(crop) for crop in crops])),
    ])(image)
    fast = M.Compose([M.Resize(256), M.ToTensor(), M.Normalize(mean, std), M.TenCrop(224),
                      M.Lambda(np.stack)])(image)
    for ours in (same_order, fast):
        assert ours.shape == expected.shape == (10, len(mean), 224, 224)
        assert ours.dtype == np.float32 and np.abs(ours - expected).max() <= 1e-6
    assert np.array_equal(fast, expected)  # bit-identical, not just close


def test_import_works_where_torch_is_unimportable(tmp_path):
    code = f"""
import sys
sys.modules['torch'] = None
sys.modules['torchvision'] = None
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from PIL import Image
import model_agnostic.transforms as T
pipe = T.Compose([T.Resize(8), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3), T.TenCrop(4),
                  T.Lambda(np.stack)])
assert pipe(Image.new('RGB', (16, 12))).shape == (10, 3, 4, 4)
loaded = [m for m, v in sys.modules.items() if m.split('.')[0] in ('torch', 'torchvision') and v]
assert not loaded, loaded
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_transforms_sources_never_import_torch():
    for path in (ROOT / "model_agnostic" / "transforms").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("torch", "torchvision") for n in names), path
