"""The Model contract: hooks, batching and splitting, options, binding to backends."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import numpy as np
import pytest

from model_agnostic import ConfigError, InferenceError, Model, ModelLoadError, TensorSpecError
from model_agnostic.backends import bind


class DoubleBackend(Model):
    """A backend without a framework: output = 2 * input; records every batch it sees."""

    backend_name: ClassVar[str] = "double"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.batches: list[dict[str, np.ndarray]] = []

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(inputs)
        return {"output": inputs["input"] * 2}


class Crops(Model):
    """Each raw number n contributes n rows, like TenCrop contributes ten."""

    offset: int = 0

    def preprocessing(self, raw: Any) -> np.ndarray:
        return np.full((raw, 2), raw + self.offset, dtype=np.float32)

    def process_result(self, outputs: dict[str, np.ndarray]) -> Any:
        return outputs["output"].tolist()


def make(**options: Any) -> Any:
    return bind(Crops, DoubleBackend)(**options)


def test_predict_runs_preprocessing_backend_and_process_result() -> None:
    assert make().predict(1) == [[2.0, 2.0]]


def test_predict_batch_makes_one_backend_call_and_splits_rows_back_per_input() -> None:
    model = make()
    results = model.predict_batch([1, 3, 2])
    assert len(model.batches) == 1
    assert model.batches[0]["input"].shape == (6, 2)
    assert results == [[[2.0, 2.0]], [[6.0, 6.0]] * 3, [[4.0, 4.0]] * 2]


def test_predict_batch_of_nothing_returns_empty_without_calling_backend() -> None:
    model = make()
    assert model.predict_batch([]) == []
    assert model.batches == []


def test_predict_batch_rejects_a_single_string_with_a_hint() -> None:
    from model_agnostic import InputError

    with pytest.raises(InputError, match="use predict"):
        make().predict_batch("image.jpg")


def test_default_hooks_are_identity_like() -> None:
    model = bind(Model, DoubleBackend)()
    out = model.predict(np.ones((1, 3), dtype=np.float32))
    np.testing.assert_array_equal(out["output"], np.full((1, 3), 2.0))


def test_options_override_declared_attributes() -> None:
    model = make(offset=10)
    assert model.offset == 10
    assert model.predict(1) == [[22.0, 22.0]]


def test_unknown_option_is_rejected_naming_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"no option 'ofset'.*\['offset'\]"):
        make(ofset=1)


class Choosy(Model):
    mode: Literal["fast", "exact"] = "fast"
    flip: bool = False
    scale: float = 1.0  # not a bool or a Literal: not checked

    def infer(self, inputs: Any) -> Any:
        return inputs


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "slow"}, "Choosy option 'mode' must be one of ['fast', 'exact'], got 'slow'"),
    ({"flip": 1}, "Choosy option 'flip' must be true or false, got 1"),
])
def test_an_option_its_annotation_rules_out_is_refused(options: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Choosy(**options)
    model = Choosy(mode="exact", flip=True, scale=2)
    assert (model.mode, model.flip, model.scale) == ("exact", True, 2)


def test_bound_class_is_both_the_users_class_and_the_backend() -> None:
    model = make()
    assert isinstance(model, Crops) and isinstance(model, DoubleBackend)
    assert type(model).__name__ == "Crops"
    assert bind(Crops, DoubleBackend) is type(model)  # cached


def test_a_bound_class_can_be_rebound_to_another_backend() -> None:
    class Triple(Model):
        backend_name: ClassVar[str] = "triple"

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"output": inputs["input"] * 3}

    rebound = make().with_backend(Triple)
    assert rebound.hooks_class is Crops and rebound is bind(Crops, Triple)
    assert rebound().predict(1) == [[3.0, 3.0]]


def test_hooks_class_alone_cannot_run_without_a_backend() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Crops()  # type: ignore[abstract]


def test_binding_a_class_that_already_has_a_backend_is_refused() -> None:
    class Fixed(DoubleBackend):
        pass

    with pytest.raises(ModelLoadError, match="already runs on DoubleBackend"):
        bind(Fixed, "onnxruntime")


def test_pytorch_backend_requires_create_model() -> None:
    with pytest.raises(ModelLoadError, match="does not define create_model"):
        bind(Crops, "pytorch")


def test_unknown_backend_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError,
                       match=r"unknown backend 'tensorrt'.*onnxruntime.*pytorch.*tensorflow"):
        bind(Crops, "tensorrt")


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ([1.0, 2.0], "must return a numpy array or a dict"),
        ({"wrong": np.ones((1, 2))}, r"returned inputs \['wrong'\], expected exactly \['input'\]"),
        ({"input": 3.0}, "expected a numpy array with a leading batch axis"),
        (np.array(1.0), "leading batch axis"),
    ],
)
def test_bad_preprocessing_output_says_what_was_expected(returned: Any, message: str) -> None:
    class Bad(Model):
        def preprocessing(self, raw: Any) -> Any:
            return returned

    with pytest.raises(TensorSpecError, match=message):
        bind(Bad, DoubleBackend)().predict(None)


def test_inputs_of_one_example_must_share_the_batch_axis() -> None:
    class Uneven(Model):
        input_names = ("a", "b")

        def preprocessing(self, raw: Any) -> Any:
            return {"a": np.ones((1, 2)), "b": np.ones((2, 2))}

    class Sum(Model):
        backend_name: ClassVar[str] = "sum"

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"output": inputs["a"]}

    with pytest.raises(TensorSpecError, match="different batch sizes"):
        bind(Uneven, Sum)().predict(None)


def test_backend_output_without_the_batch_axis_is_an_inference_error() -> None:
    class Squash(Model):
        backend_name: ClassVar[str] = "squash"

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"output": inputs["input"].sum(axis=0)}

    with pytest.raises(InferenceError, match="batch had 3 rows"):
        bind(Crops, Squash)().predict(3)
