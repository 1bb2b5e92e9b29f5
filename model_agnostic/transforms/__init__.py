"""Torch-free drop-in for the torchvision (v1) transforms a deployment needs.

Swap ``import torchvision.transforms as T`` for
``import model_agnostic.transforms as T``: same names, arguments, outputs and
reprs, with numpy arrays in CHW layout where torchvision returns tensors.
Only numpy and Pillow are imported. See docs/transforms.md.
"""

from . import functional
from .functional import InterpolationMode
from .transforms import (
    CenterCrop,
    Compose,
    FiveCrop,
    Grayscale,
    Lambda,
    Normalize,
    Pad,
    PILToTensor,
    Resize,
    TenCrop,
    ToTensor,
)

__all__ = [
    "CenterCrop",
    "Compose",
    "FiveCrop",
    "Grayscale",
    "InterpolationMode",
    "Lambda",
    "Normalize",
    "PILToTensor",
    "Pad",
    "Resize",
    "TenCrop",
    "ToTensor",
    "functional",
]
