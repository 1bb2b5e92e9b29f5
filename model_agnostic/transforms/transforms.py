"""Transform classes with torchvision (v1) names, arguments, behaviour and reprs.

Each class validates and stores its settings in ``__init__`` and calls one
function of :mod:`model_agnostic.transforms.functional` in ``__call__``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from . import functional as F
from .functional import ImageLike, InterpolationMode

__all__ = [
    "Compose",
    "ToTensor",
    "PILToTensor",
    "Normalize",
    "Resize",
    "CenterCrop",
    "Pad",
    "Lambda",
    "FiveCrop",
    "TenCrop",
    "Grayscale",
]

_TWO_DIMS = "Please provide only two dimensions (h, w) for size."


def _setup_size(size: Any, error_msg: str) -> Any:
    """torchvision's ``_setup_size``: int -> (int, int), [s] -> (s, s), else as given."""
    if isinstance(size, numbers.Real) and not isinstance(size, bool):
        return int(size), int(size)  # type: ignore[call-overload]
    if not isinstance(size, Sequence) or isinstance(size, str):
        raise TypeError(f"size should be int or sequence of length 1 or 2. Got {type(size)}")
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"{error_msg} Got {size!r}")
    return size


class Compose:
    """Apply ``transforms`` one after the other."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = transforms

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        body = "".join(f"\n    {t}" for t in self.transforms)
        return f"{self.__class__.__name__}({body}\n)"


class ToTensor:
    """PIL image or HWC ndarray -> new CHW ndarray; uint8 becomes float32 in [0, 1]."""

    def __call__(self, pic: ImageLike) -> np.ndarray:
        return F.to_tensor(pic)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class PILToTensor:
    """PIL image -> new CHW ndarray of the same dtype, values not scaled."""

    def __call__(self, pic: Image.Image) -> np.ndarray:
        return F.pil_to_tensor(pic)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class Normalize:
    """``(x - mean) / std`` per channel on a float CHW ndarray (not on PIL images).

    Out of place unless ``inplace=True``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        return F.normalize(tensor, self.mean, self.std, self.inplace)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(mean={self.mean}, std={self.std})"


class Resize:
    """Resize a PIL image: int ``size`` matches the shorter side, ``(h, w)`` is exact.

    ``interpolation`` takes an :class:`InterpolationMode` (ours or torchvision's),
    its string value or a Pillow integer constant. ``antialias`` is accepted for
    compatibility; Pillow always antialiases. ndarray input raises TypeError.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        interpolation: Any = InterpolationMode.BILINEAR,
        max_size: int | None = None,
        antialias: bool | None = True,
    ) -> None:
        F._check_resize_size(size, max_size)
        self.size = size
        self.max_size = max_size
        self.interpolation = F._to_interpolation(interpolation)
        self.antialias = antialias

    def __call__(self, img: Image.Image) -> Image.Image:
        return F.resize(img, self.size, self.interpolation, self.max_size, self.antialias)

    def __repr__(self) -> str:
        detail = (
            f"(size={self.size}, interpolation={self.interpolation.value}, "
            f"max_size={self.max_size}, antialias={self.antialias})"
        )
        return f"{self.__class__.__name__}{detail}"


class CenterCrop:
    """Crop the center to ``size``; zero-pads when the crop is larger than the image."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _setup_size(size, error_msg=_TWO_DIMS)

    def __call__(self, img: ImageLike) -> ImageLike:
        return F.center_crop(img, self.size)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(size={self.size})"


class Pad:
    """Pad all sides; ``padding_mode`` is constant, edge, reflect or symmetric."""

    def __init__(
        self, padding: int | Sequence[int], fill: Any = 0, padding_mode: str = "constant"
    ) -> None:
        F._check_pad_args(padding, fill, padding_mode, is_array=False)
        self.padding = padding
        self.fill = fill
        self.padding_mode = padding_mode

    def __call__(self, img: ImageLike) -> ImageLike:
        return F.pad(img, self.padding, self.fill, self.padding_mode)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(padding={self.padding}, fill={self.fill}, "
            f"padding_mode={self.padding_mode})"
        )


class Lambda:
    """Apply a user function as a transform."""

    def __init__(self, lambd: Callable[[Any], Any]) -> None:
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got {type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img: Any) -> Any:
        return self.lambd(img)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class FiveCrop:
    """Return the four corner crops and the center crop, as a tuple."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _setup_size(size, error_msg=_TWO_DIMS)

    def __call__(self, img: ImageLike) -> tuple[ImageLike, ...]:
        return F.five_crop(img, self.size)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(size={self.size})"


class TenCrop:
    """FiveCrop of the image and of its horizontal (or vertical) flip: 10 crops."""

    def __init__(self, size: int | Sequence[int], vertical_flip: bool = False) -> None:
        self.size = _setup_size(size, error_msg=_TWO_DIMS)
        self.vertical_flip = vertical_flip

    def __call__(self, img: ImageLike) -> tuple[ImageLike, ...]:
        return F.ten_crop(img, self.size, self.vertical_flip)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(size={self.size}, vertical_flip={self.vertical_flip})"


class Grayscale:
    """Convert a PIL image to grayscale with 1 ("L") or 3 ("RGB") channels."""

    def __init__(self, num_output_channels: int = 1) -> None:
        if num_output_channels not in (1, 3):
            raise ValueError(
                f"num_output_channels should be either 1 or 3. Got {num_output_channels!r}"
            )
        self.num_output_channels = num_output_channels

    def __call__(self, img: Image.Image) -> Image.Image:
        return F.rgb_to_grayscale(img, num_output_channels=self.num_output_channels)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_output_channels={self.num_output_channels})"
