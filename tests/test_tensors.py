"""The one signature check: arrays against a model's tensor specs, with one error type."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from model_agnostic.errors import InputError, TensorSpecError
from model_agnostic.tensors import TensorSpec, check_arrays, describe_spec, format_shape

Arrays = dict[str, np.ndarray]
IMAGE = TensorSpec("image", np.dtype(np.float32), (None, 3, 224, 224))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"image": np.zeros((1, 3, 224, 224), np.float32), "extra": np.zeros(1)},
         r"the request gave an unknown input 'extra'; the model's inputs are \['image'\]"),
        ({}, r"the request gave no input 'image' \(\[-1, 3, 224, 224\] float32\)"),
        ({"image": np.zeros((1, 3, 224, 224), np.float64)},
         r"input 'image': the request gave \[1, 3, 224, 224\] float64, the model expects "
         r"\[-1, 3, 224, 224\] float32; convert with array.astype\(np.float32\)"),
        ({"image": np.zeros((3, 224, 224), np.float32)},
         r"input 'image': the request gave \[3, 224, 224\] float32 of rank 3, the model expects "
         r"\[-1, 3, 224, 224\] float32; add the leading batch axis"),
        ({"image": np.zeros((1, 3, 200, 224), np.float32)},
         r"\[1, 3, 200, 224\] float32 with 200 in dimension 2"),
        ({"image": [[1.0]]}, r"input 'image': the request gave list, expected a numpy array"),
    ],
)
def test_arrays_that_do_not_fit_are_refused_naming_the_input(inputs: Any, message: str) -> None:
    with pytest.raises(TensorSpecError, match=message) as error:
        check_arrays([IMAGE], inputs, "the request")
    assert isinstance(error.value, InputError)  # a server answers 400


def test_any_variable_dimension_and_an_unknown_rank_are_accepted() -> None:
    check_arrays([IMAGE], {"image": np.zeros((7, 3, 224, 224), np.float32)})
    anything = TensorSpec("t", np.dtype(object), cast(Any, None))
    check_arrays([anything], {"t": np.array([[b"a"]], dtype=object)})
    with pytest.raises(TensorSpecError, match="int32, the model expects any shape object"):
        check_arrays([anything], {"t": np.zeros(2, np.int32)})


def test_one_shape_format_everywhere() -> None:
    assert format_shape((None, 3, "height", -1, 5)) == "[-1, 3, -1, -1, 5]"
    assert describe_spec(IMAGE) == "[-1, 3, 224, 224] float32" == IMAGE.describe()
