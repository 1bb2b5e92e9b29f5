"""Digits: a small CNN for scikit-learn's bundled 8x8 handwritten digits (``load_digits``).

One raw input is one 8x8 image: any array-like of pixel values 0..16, exactly as
``sklearn.datasets.load_digits().images[i]`` holds them. ``preprocessing`` checks
it and scales it to a float32 ``(1, 1, 8, 8)`` array in [0, 1]; the network
returns ten logits; ``process_result`` turns them into the digit and its
probabilities (softmax in numpy).

torch is imported only inside ``create_model``, so this file imports without it:
the exported artifact runs with numpy and onnxruntime alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_agnostic import InputError, Model

#: Largest pixel value in ``load_digits`` (16 grey levels counted per 4x4 block).
MAX_PIXEL = 16
SIDE = 8


class Digits(Model):
    """An 8x8 image of a handwritten digit (values 0..16) -> the digit and ten probabilities."""

    input_names = ("pixels",)
    output_names = ("logits",)
    labels = tuple("0123456789")  # not annotated: a constant, not a user option

    def create_model(self) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),   # 16 x 8 x 8
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(),  # 32 x 8 x 8
            nn.MaxPool2d(2),                                         # 32 x 4 x 4
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, len(self.labels)),
        )

    def preprocessing(self, raw: Any) -> np.ndarray:
        try:
            pixels = np.asarray(raw)
        except (TypeError, ValueError) as exc:  # ragged nested lists, odd objects
            raise InputError(
                f"expected an 8x8 array of pixel values 0..{MAX_PIXEL}; "
                f"{type(raw).__name__} cannot be read as an array ({exc})"
            ) from None
        if pixels.dtype == bool or not np.issubdtype(pixels.dtype, np.number):
            raise InputError(
                f"expected an 8x8 array of numeric pixel values 0..{MAX_PIXEL}; "
                f"got non-numeric values of dtype {pixels.dtype} from {type(raw).__name__}"
            )
        if pixels.shape != (SIDE, SIDE):
            hint = " (a row of load_digits().data: use .reshape(8, 8))" if pixels.size == 64 else ""
            raise InputError(
                f"expected an 8x8 array of pixel values 0..{MAX_PIXEL}; got shape "
                f"{pixels.shape}{hint}"
            )
        if np.iscomplexobj(pixels) or not np.all(np.isfinite(pixels)):
            raise InputError(
                f"expected 8x8 pixel values 0..{MAX_PIXEL}; got a non-finite or complex value"
            )
        low, high = pixels.min(), pixels.max()
        if low < 0 or high > MAX_PIXEL:
            raise InputError(
                f"expected 8x8 pixel values in the range 0..{MAX_PIXEL} (load_digits' scale); "
                f"got values from {low:g} to {high:g}"
                + (" (an 8-bit image? divide by 16)" if high <= 255 and high > MAX_PIXEL else "")
            )
        return (pixels.astype(np.float32) / np.float32(MAX_PIXEL))[None, None]

    def process_result(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits = outputs["logits"][0].astype(np.float64)
        exp = np.exp(logits - logits.max())
        probabilities = exp / exp.sum()
        return {
            "digit": int(np.argmax(logits)),
            "probabilities": [float(p) for p in probabilities],
        }
