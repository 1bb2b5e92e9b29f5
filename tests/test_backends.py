"""PyTorch and ONNX Runtime backends run the same hooks and agree; ONNX input validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import (
    ConfigError,
    InferenceError,
    Model,
    ModelLoadError,
    OnnxModel,
    TensorSpecError,
)
from tests.tiny_models import TinyNet, TwoHeads

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_pytorch() -> Any:
    return TinyNet.with_backend("pytorch")()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_pytorch: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_agnostic import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    example = np.zeros((3, 8, 8), dtype=np.float32)
    return export_onnx(tiny_pytorch, path, example)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_onnx_and_pytorch_agree_at_any_batch_size(
    tiny_pytorch: Any, tiny_onnx: Path, batch: int
) -> None:
    onnx_model = TinyNet.with_backend("onnxruntime")(tiny_onnx)
    raws = [np.random.default_rng(i).random((3, 8, 8)) for i in range(batch)]
    for ours, theirs in zip(tiny_pytorch.predict_batch(raws), onnx_model.predict_batch(raws)):
        assert ours["label"] == theirs["label"]
        np.testing.assert_allclose(ours["logits"], theirs["logits"], atol=1e-5)


def test_batched_results_equal_one_at_a_time_results(tiny_pytorch: Any) -> None:
    raws = [np.random.default_rng(i).random((3, 8, 8)) for i in range(4)]
    batched = tiny_pytorch.predict_batch(raws)
    single = [tiny_pytorch.predict(raw) for raw in raws]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-6)


def test_pytorch_model_is_in_eval_mode_and_infers_without_grad(tiny_pytorch: Any) -> None:
    assert not tiny_pytorch.network.training
    out = tiny_pytorch.infer({"image": np.ones((2, 3, 8, 8), dtype=np.float32)})
    assert out["logits"].shape == (2, 4) and out["logits"].dtype == np.float32


def test_onnx_model_reads_names_and_signature_from_the_graph(tiny_onnx: Path) -> None:
    model = OnnxModel(tiny_onnx)
    assert model.input_names == ("image",) and model.output_names == ("logits",)
    (spec,) = model.inputs
    assert spec.shape[1:] == (3, 8, 8) and not isinstance(spec.shape[0], int)
    assert spec.dtype == np.float32


def test_random_weights_are_recorded_in_the_exported_file(tiny_onnx: Path) -> None:
    assert OnnxModel(tiny_onnx).weights_source == "random (seed 0)"


def test_seeded_random_weights_are_reproducible_and_leave_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = TinyNet.with_backend("pytorch")(seed=3).network.state_dict()
    b = TinyNet.with_backend("pytorch")(seed=3).network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 8, 8), np.float32), r"\[3, 8, 8\] float32.*add the leading batch axis"),
        (np.zeros((1, 3, 8, 8), np.float64), r"float64.*expects \[-1, 3, 8, 8\] float32.*astype"),
        (np.zeros((1, 1, 8, 8), np.float32), r"\[1, 1, 8, 8\].*expects \[-1, 3, 8, 8\]"),
    ],
)
def test_onnx_model_inputs_are_checked_against_the_graph_signature(
    tiny_onnx: Path, array: np.ndarray, message: str
) -> None:
    model = OnnxModel(tiny_onnx)
    with pytest.raises(TensorSpecError, match=message):
        model.check_inputs({"image": array})
    with pytest.raises(TensorSpecError, match=message):
        model.predict(array)  # predict checks before the backend runs


def test_wrong_shape_from_user_preprocessing_names_the_input(tiny_onnx: Path) -> None:
    class Flat(TinyNet):
        def preprocessing(self, raw: Any) -> np.ndarray:
            return np.zeros((1, 192), np.float32)

    with pytest.raises(TensorSpecError, match=r"input 'image': preprocessing gave \[1, 192\] float32"):
        Flat.with_backend("onnxruntime")(tiny_onnx).predict(None)


def test_declared_names_that_differ_from_the_graph_are_refused(tiny_onnx: Path) -> None:
    class Renamed(TinyNet):
        input_names = ("pixels",)

    with pytest.raises(ModelLoadError, match=r"declares input_names \['pixels'\].*has inputs \['image'\]"):
        Renamed.with_backend("onnxruntime")(tiny_onnx)


def test_missing_onnx_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        OnnxModel(tmp_path / "nope.onnx")


def test_corrupt_onnx_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        OnnxModel(path)


def test_unknown_provider_and_optimization_level_are_config_errors(tiny_onnx: Path) -> None:
    with pytest.raises(ConfigError, match="CUDAExecutionProviderX.*not available"):
        OnnxModel(tiny_onnx, providers=["CUDAExecutionProviderX"])
    with pytest.raises(ConfigError, match="graph_optimization_level 'max'"):
        OnnxModel(tiny_onnx, graph_optimization_level="max")


def test_session_options_are_applied(tiny_onnx: Path) -> None:
    model = OnnxModel(
        tiny_onnx, intra_op_num_threads=1, graph_optimization_level="basic", enable_mem_pattern=False
    )
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 1 and not options.enable_mem_pattern


def test_multi_input_multi_output_models_keep_names_and_order(tmp_path: Path) -> None:
    from model_agnostic import export_onnx

    pt = TwoHeads.with_backend("pytorch")()
    path = export_onnx(pt, tmp_path / "two.onnx", np.ones((3, 4, 4)))
    ox = TwoHeads.with_backend("onnxruntime")(path)
    raw = np.arange(48, dtype=np.float32).reshape(3, 4, 4)
    a, b = pt.predict(raw), ox.predict(raw)
    assert list(a) == list(b) == ["pooled", "shifted"]
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    np.testing.assert_allclose(b["shifted"] - b["pooled"], 0.5, atol=1e-6)


def test_pytorch_forward_failure_is_an_inference_error_naming_shapes() -> None:
    model = TinyNet.with_backend("pytorch")()
    with pytest.raises(InferenceError, match=r"forward failed on inputs.*\(1, 5, 8, 8\)"):
        model.infer({"image": np.zeros((1, 5, 8, 8), np.float32)})


def test_create_model_must_return_a_module() -> None:
    class NotANet(Model):
        def create_model(self) -> Any:
            return "densenet"

    with pytest.raises(ModelLoadError, match="returned str; expected a torch.nn.Module"):
        NotANet.with_backend("pytorch")()


def test_read_only_input_arrays_are_accepted(tiny_pytorch: Any) -> None:
    array = np.ones((1, 3, 8, 8), np.float32)
    array.setflags(write=False)
    assert tiny_pytorch.infer({"image": array})["logits"].shape == (1, 4)
