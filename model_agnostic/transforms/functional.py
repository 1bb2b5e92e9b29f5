"""Torch-free functional image transforms with torchvision (v1) semantics.

Mirrors ``torchvision.transforms.functional``: PIL images go through the same
Pillow calls torchvision makes; numpy arrays in (..., C, H, W) layout stand in
for torch tensors. Only numpy and Pillow are imported.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np
from PIL import Image

from . import _resize
from ._pad import PAD_MODES, pad_array, pad_pil
from ._resize import _check_resize_size, _compute_resized_output_size, _is_int

__all__ = [
    "InterpolationMode",
    "get_dimensions",
    "get_image_size",
    "get_image_num_channels",
    "to_tensor",
    "pil_to_tensor",
    "normalize",
    "resize",
    "pad",
    "crop",
    "center_crop",
    "hflip",
    "vflip",
    "five_crop",
    "ten_crop",
    "to_grayscale",
    "rgb_to_grayscale",
]

ImageLike = Image.Image | np.ndarray


class InterpolationMode(Enum):
    """Interpolation modes, same member names and values as torchvision's."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


# Pillow integer constants torchvision accepts, and the Pillow filter of each mode.
_MODE_FROM_INT = {
    0: InterpolationMode.NEAREST,
    2: InterpolationMode.BILINEAR,
    3: InterpolationMode.BICUBIC,
    4: InterpolationMode.BOX,
    5: InterpolationMode.HAMMING,
    1: InterpolationMode.LANCZOS,
}
_PIL_FILTER = {mode: i for i, mode in _MODE_FROM_INT.items()} | {InterpolationMode.NEAREST_EXACT: 0}
_PIL_ONLY = (
    "{fn}() needs a PIL Image, got an ndarray of shape {shape}: apply {cls} to the PIL "
    "image before ToTensor (torchvision's tensor kernel differs from PIL's; only PIL "
    "parity is supported)"
)


def _to_interpolation(value: Any) -> InterpolationMode:
    """Coerce an InterpolationMode (ours or torchvision's), a string or a Pillow int."""
    if isinstance(value, InterpolationMode):
        return value
    if _is_int(value):
        if int(value) not in _MODE_FROM_INT:
            raise ValueError(
                f"interpolation int should be a Pillow filter constant in "
                f"{sorted(_MODE_FROM_INT)}. Got {value}"
            )
        return _MODE_FROM_INT[int(value)]
    if isinstance(value, Enum):
        value = value.value  # e.g. torchvision.transforms.InterpolationMode.BILINEAR
    if isinstance(value, str):
        key = value.strip().lower()
        for mode in InterpolationMode:
            if key in (mode.value, mode.name.lower()):
                return mode
        raise ValueError(
            f"interpolation should be one of {[m.value for m in InterpolationMode]}. Got {value!r}"
        )
    raise TypeError(
        "interpolation should be an InterpolationMode, its string value or a Pillow "
        f"integer constant. Got {type(value)}"
    )


def _img_type_error(img: Any) -> TypeError:
    return TypeError(f"img should be PIL Image or ndarray. Got {type(img)}")


def _check_array_image(img: np.ndarray) -> None:
    if img.ndim < 2:
        raise TypeError(f"ndarray is not an image: expected shape (..., H, W). Got {img.shape}")


def get_dimensions(img: ImageLike) -> list[int]:
    """Return ``[channels, height, width]`` of a PIL image or (..., C, H, W) array."""
    if isinstance(img, np.ndarray):
        _check_array_image(img)
        return [1 if img.ndim == 2 else int(img.shape[-3]), int(img.shape[-2]), int(img.shape[-1])]
    if isinstance(img, Image.Image):
        return [len(img.getbands()), img.height, img.width]
    raise _img_type_error(img)


def get_image_size(img: ImageLike) -> list[int]:
    """Return ``[width, height]``."""
    return get_dimensions(img)[:0:-1]


def get_image_num_channels(img: ImageLike) -> int:
    """Return the number of channels."""
    return get_dimensions(img)[0]


_MODE_TO_NPTYPE = {
    "I": np.int32,
    "I;16" if sys.byteorder == "little" else "I;16B": np.int16,
    "F": np.float32,
}


def _uint8_to_float(chw: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255 in float32, like torch's ``.to(float32).div(255)``."""
    out = np.empty(chw.shape, np.float32)
    np.divide(chw, np.float32(255), out=out, dtype=np.float32)
    return out


def to_tensor(pic: ImageLike) -> np.ndarray:
    """Convert a PIL image or HWC ndarray to a new C-contiguous CHW array.

    uint8 data becomes float32 in [0, 1]; other dtypes are kept unscaled, exactly
    as torchvision (mode "1" -> {0, 1}, "I" -> int32, "I;16" -> int16, "F" -> float32).
    """
    if isinstance(pic, np.ndarray):
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        chw = pic[None] if pic.ndim == 2 else pic.transpose(2, 0, 1)
        return _uint8_to_float(chw) if pic.dtype == np.uint8 else np.array(chw, order="C")
    if not isinstance(pic, Image.Image):
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    dtype = _MODE_TO_NPTYPE.get(pic.mode, np.uint8)
    hwc = np.asarray(pic, dtype).reshape(pic.height, pic.width, len(pic.getbands()))
    if pic.mode == "1":
        hwc = hwc * np.uint8(255)
    if dtype is np.uint8:
        return _uint8_to_float(hwc.transpose(2, 0, 1))
    return np.array(hwc.transpose(2, 0, 1), order="C")


def pil_to_tensor(pic: Image.Image) -> np.ndarray:
    """Convert a PIL image to a new CHW array of the same dtype, without scaling."""
    if not isinstance(pic, Image.Image):
        raise TypeError(f"pic should be PIL Image. Got {type(pic)}")
    hwc = np.asarray(pic).reshape(pic.height, pic.width, len(pic.getbands()))
    dtype = hwc.dtype.newbyteorder("=")  # "I;16B" comes big-endian; torchvision fails there
    return np.array(hwc.transpose(2, 0, 1), dtype=dtype, order="C")


def normalize(
    tensor: np.ndarray, mean: Sequence[float], std: Sequence[float], inplace: bool = False
) -> np.ndarray:
    """``(tensor - mean) / std`` per channel on a float (..., C, H, W) array.

    Computed in the array's dtype, subtraction then division, like torch.
    With ``inplace=True`` the input array is overwritten and returned.
    """
    if not isinstance(tensor, np.ndarray):
        raise TypeError(f"img should be ndarray image of shape (..., C, H, W). Got {type(tensor)}")
    if not np.issubdtype(tensor.dtype, np.floating):
        raise TypeError(
            f"Input array should be a float array (use ToTensor first). Got {tensor.dtype}."
        )
    if tensor.ndim < 3:
        raise ValueError(
            f"Expected array to be an image of shape (..., C, H, W). Got shape = {tensor.shape}"
        )
    mean_a = np.asarray(mean, dtype=tensor.dtype)
    std_a = np.asarray(std, dtype=tensor.dtype)
    if (std_a == 0).any():
        raise ValueError(
            f"std evaluated to zero after conversion to {tensor.dtype}, "
            "leading to division by zero."
        )
    mean_a = mean_a.reshape(-1, 1, 1) if mean_a.ndim == 1 else mean_a
    std_a = std_a.reshape(-1, 1, 1) if std_a.ndim == 1 else std_a
    if np.broadcast_shapes(tensor.shape, mean_a.shape, std_a.shape) != tensor.shape:
        raise ValueError(
            f"mean and std should have one value per channel of the image "
            f"{tensor.shape}. Got mean {mean_a.shape[:1]}, std {std_a.shape[:1]}"
        )
    out = np.subtract(tensor, mean_a, out=tensor if inplace else None)
    return np.divide(out, std_a, out=out)


def resize(
    img: Image.Image,
    size: int | Sequence[int],
    interpolation: Any = InterpolationMode.BILINEAR,
    max_size: int | None = None,
    antialias: bool | None = True,
) -> Image.Image:
    """Resize a PIL image (int ``size``: shorter side; ``(h, w)``: exact size).

    Same output size rounding and the same Pillow filter as torchvision; returns
    ``img`` itself when the size does not change. ndarray input raises TypeError.
    """
    interpolation = _to_interpolation(interpolation)
    size_list = _check_resize_size(size, max_size)
    if isinstance(img, np.ndarray):
        raise TypeError(_PIL_ONLY.format(fn="resize", shape=img.shape, cls="Resize"))
    if not isinstance(img, Image.Image):
        raise TypeError(f"img should be PIL Image. Got {type(img)}")
    out_h, out_w = _compute_resized_output_size((img.height, img.width), size_list, max_size)
    if (img.height, img.width) == (out_h, out_w):
        return img
    if antialias is False:
        warnings.warn(
            "Anti-alias option is always applied for PIL Image input. Argument "
            "antialias is ignored.",
            stacklevel=2,
        )
    return _resize.resize(img, (out_w, out_h), _PIL_FILTER[interpolation])


def _check_pad_args(padding: Any, fill: Any, padding_mode: Any, is_array: bool) -> None:
    is_seq = isinstance(padding, (tuple, list))
    if not (_is_int(padding) or (is_seq and all(_is_int(p) for p in padding))):
        raise TypeError(
            f"padding should be an int or a sequence of 1, 2 or 4 ints. Got {padding!r}"
        )
    if is_seq and len(padding) not in (1, 2, 4):
        raise ValueError(
            f"Padding must be an int or a 1, 2, or 4 element tuple, not a "
            f"{len(padding)} element tuple"
        )
    if is_array and fill is not None and not isinstance(fill, numbers.Number):
        raise TypeError(f"fill should be a number for ndarray images. Got {type(fill)}")
    if fill is not None and not isinstance(fill, (numbers.Number, tuple, list)):
        raise TypeError(f"fill should be a number or a tuple. Got {type(fill)}")
    if padding_mode not in PAD_MODES:
        raise ValueError(
            "Padding mode should be either constant, edge, reflect or symmetric. "
            f"Got {padding_mode!r}"
        )


def pad(
    img: ImageLike, padding: int | Sequence[int], fill: Any = 0, padding_mode: str = "constant"
) -> ImageLike:
    """Pad on all sides: ``padding`` is int, (lr, tb) or (l, t, r, b).

    ``padding_mode`` is constant (with ``fill``), edge, reflect or symmetric;
    PIL images follow torchvision's PIL path (palette kept for mode P). ndarray
    results are new arrays.
    """
    if isinstance(img, np.ndarray):
        _check_pad_args(padding, fill, padding_mode, is_array=True)
        _check_array_image(img)
        return pad_array(img, padding, fill, padding_mode)
    if not isinstance(img, Image.Image):
        raise _img_type_error(img)
    _check_pad_args(padding, fill, padding_mode, is_array=False)
    return pad_pil(img, padding, fill, padding_mode)


def crop(img: ImageLike, top: int, left: int, height: int, width: int) -> ImageLike:
    """Crop a box; areas outside the image are zero. ndarray results are new arrays."""
    if isinstance(img, Image.Image):
        return img.crop((left, top, left + width, top + height))
    if not isinstance(img, np.ndarray):
        raise _img_type_error(img)
    _check_array_image(img)
    h, w = img.shape[-2:]
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > w or bottom > h:
        padding_ltrb = [
            max(-left + min(0, right), 0),
            max(-top + min(0, bottom), 0),
            max(right - max(w, left), 0),
            max(bottom - max(h, top), 0),
        ]
        return pad_array(
            img[..., max(top, 0) : bottom, max(left, 0) : right], padding_ltrb, 0, "constant"
        )
    return img[..., top:bottom, left:right].copy()


def _crop_size(size: Any) -> tuple[int, int]:
    if isinstance(size, numbers.Real) and not isinstance(size, bool):
        return int(size), int(size)  # type: ignore[call-overload]
    if isinstance(size, (tuple, list)) and len(size) in (1, 2):
        return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    if isinstance(size, (tuple, list)):
        msg = f"Please provide only two dimensions (h, w) for size. Got {size!r}"
        raise ValueError(msg)
    raise TypeError(f"size should be int or sequence of length 1 or 2. Got {type(size)}")


def center_crop(img: ImageLike, output_size: int | Sequence[int]) -> ImageLike:
    """Crop the center; zero-pads first when the crop is larger than the image."""
    crop_height, crop_width = _crop_size(output_size)
    _, image_height, image_width = get_dimensions(img)
    if crop_width > image_width or crop_height > image_height:
        dw, dh = max(crop_width - image_width, 0), max(crop_height - image_height, 0)
        img = pad(img, [dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2], fill=0)
        _, image_height, image_width = get_dimensions(img)
        if crop_width == image_width and crop_height == image_height:
            return img
    crop_top = round((image_height - crop_height) / 2.0)  # round half to even, as torchvision
    crop_left = round((image_width - crop_width) / 2.0)
    return crop(img, crop_top, crop_left, crop_height, crop_width)


def _flip(img: ImageLike, axis: int, method: Image.Transpose) -> ImageLike:
    if isinstance(img, Image.Image):
        return img.transpose(method)
    if not isinstance(img, np.ndarray):
        raise _img_type_error(img)
    _check_array_image(img)
    return np.flip(img, axis).copy()


def hflip(img: ImageLike) -> ImageLike:
    """Flip left-right (ndarray: new array)."""
    return _flip(img, -1, Image.Transpose.FLIP_LEFT_RIGHT)


def vflip(img: ImageLike) -> ImageLike:
    """Flip top-bottom (ndarray: new array)."""
    return _flip(img, -2, Image.Transpose.FLIP_TOP_BOTTOM)


def five_crop(img: ImageLike, size: int | Sequence[int]) -> tuple[ImageLike, ...]:
    """Return ``(tl, tr, bl, br, center)`` crops of ``size``."""
    crop_height, crop_width = _crop_size(size)
    _, image_height, image_width = get_dimensions(img)
    if crop_width > image_width or crop_height > image_height:
        shown = (
            size
            if isinstance(size, (tuple, list)) and len(size) == 2
            else (crop_height, crop_width)
        )
        raise ValueError(
            f"Requested crop size {shown} is bigger than input size {(image_height, image_width)}"
        )
    bottom, right = image_height - crop_height, image_width - crop_width
    corners = ((0, 0), (0, right), (bottom, 0), (bottom, right))  # tl, tr, bl, br
    crops = [crop(img, top, left, crop_height, crop_width) for top, left in corners]
    return (*crops, center_crop(img, [crop_height, crop_width]))


def ten_crop(
    img: ImageLike, size: int | Sequence[int], vertical_flip: bool = False
) -> tuple[ImageLike, ...]:
    """``five_crop`` of the image, then of its horizontal (or vertical) flip."""
    _crop_size(size)  # validate before any work
    first_five = five_crop(img, size)
    if isinstance(img, np.ndarray):  # a flipped view: five_crop copies out what it keeps
        return first_five + five_crop(np.flip(img, -2 if vertical_flip else -1), size)
    return first_five + five_crop(vflip(img) if vertical_flip else hflip(img), size)


def to_grayscale(img: Image.Image, num_output_channels: int = 1) -> Image.Image:
    """Convert a PIL image of any mode to "L" (1 channel) or "RGB" with r == g == b."""
    if isinstance(img, np.ndarray):
        raise TypeError(_PIL_ONLY.format(fn="to_grayscale", shape=img.shape, cls="Grayscale"))
    if not isinstance(img, Image.Image):
        raise TypeError(f"img should be PIL Image. Got {type(img)}")
    if num_output_channels not in (1, 3):
        raise ValueError(
            f"num_output_channels should be either 1 or 3. Got {num_output_channels!r}"
        )
    gray = img.convert("L")
    if num_output_channels == 1:
        return gray
    rgb = Image.merge("RGB", (gray, gray, gray))
    rgb.info = {}  # a fresh image, as torchvision's fromarray gives (no stale "transparency")
    return rgb


def rgb_to_grayscale(img: Image.Image, num_output_channels: int = 1) -> Image.Image:
    """Alias of :func:`to_grayscale` (PIL only here)."""
    return to_grayscale(img, num_output_channels)
