"""export_onnx: dynamic batch, names, metadata, exporter fallback, and the checks it runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import ExportError, OnnxModel
from tests.tiny_models import TinyNet

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model_agnostic import export_onnx  # noqa: E402
from model_agnostic.export import to_onnx  # noqa: E402

EXAMPLE = np.zeros((3, 8, 8), np.float32)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return TinyNet.with_backend("pytorch")(seed=1)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_give_a_dynamic_batch_axis(tiny: Any, tmp_path: Path, exporter: str) -> None:
    path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, exporter=exporter)
    model = OnnxModel(path)
    assert not isinstance(model.inputs[0].shape[0], int)
    for batch in (1, 2, 5):
        array = np.random.default_rng(batch).random((batch, 3, 8, 8), dtype=np.float32)
        np.testing.assert_allclose(
            model.infer({"image": array})["logits"], tiny.infer({"image": array})["logits"], atol=1e-5
        )
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["model_agnostic.exporter"] == exporter
    assert meta["model_agnostic.weights"] == "random (seed 1)"


def test_static_batch_when_asked(tiny: Any, tmp_path: Path) -> None:
    path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, dynamic_batch=False)
    assert OnnxModel(path).inputs[0].shape == (1, 3, 8, 8)


def test_opset_is_configurable(tiny: Any, tmp_path: Path) -> None:
    path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, opset=17)
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert opsets[""] == 17


def test_failing_exporter_falls_back_and_says_so(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = to_onnx._run_exporter

    def broken_torchscript(torch: Any, name: str, *args: Any) -> None:
        if name == "torchscript":
            raise RuntimeError("unsupported operator aten::frobnicate")
        real(torch, name, *args)

    monkeypatch.setattr(to_onnx, "_run_exporter", broken_torchscript)
    with caplog.at_level(logging.WARNING):
        path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)
    assert "aten::frobnicate" in caplog.text and "instead of torchscript" in caplog.text
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["model_agnostic.exporter"] == "dynamo"


def test_when_every_exporter_fails_the_error_lists_each_reason(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(torch: Any, name: str, *args: Any) -> None:
        raise RuntimeError(f"{name} cannot do this")

    monkeypatch.setattr(to_onnx, "_run_exporter", broken)
    with pytest.raises(ExportError, match="torchscript: RuntimeError: torchscript cannot.*dynamo: RuntimeError"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)


def test_export_refuses_a_model_not_on_pytorch(tiny: Any, tmp_path: Path) -> None:
    path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)
    with pytest.raises(ExportError, match="export needs the PyTorch backend"):
        export_onnx(OnnxModel(path), tmp_path / "again.onnx", EXAMPLE)


def test_export_that_disagrees_with_pytorch_is_refused(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_infer = OnnxModel.infer
    monkeypatch.setattr(OnnxModel, "infer", lambda self, x: {k: v + 1 for k, v in real_infer(self, x).items()})
    with pytest.raises(ExportError, match=r"output 'logits' differs from PyTorch by 1"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)


def test_refusal_says_the_difference_is_not_float32_rounding(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_infer = OnnxModel.infer
    monkeypatch.setattr(OnnxModel, "infer", lambda self, x: {k: v + 1 for k, v in real_infer(self, x).items()})
    with pytest.raises(ExportError, match=r"not float32 rounding: at \(\d+, \d+\) the candidate is 1 "
                       r"from float64 where PyTorch float32 is [0-9.]+e-\d+"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)
    assert all(p.dtype == torch.float32 for p in tiny.network.parameters())


class Float32Noisy(torch.nn.Module):
    """Computes 1e-3 too much in float32 and exactly in float64: PyTorch's own rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, image: Any) -> Any:
        logits = image.mean(dim=(2, 3)) * self.scale
        return logits + 1e-3 if logits.dtype == torch.float32 else logits


def test_float32_rounding_in_pytorch_is_accepted_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Noisy(TinyNet):
        def create_model(self) -> Any:
            return Float32Noisy()

    model = Noisy.with_backend("pytorch")()
    real_infer = OnnxModel.infer  # the traced graph adds the 1e-3 too; take it out: exact
    monkeypatch.setattr(OnnxModel, "infer",
                        lambda self, x: {k: v - 1e-3 for k, v in real_infer(self, x).items()})
    with caplog.at_level(logging.WARNING, "model_agnostic.export"):
        export_onnx(model, tmp_path / "m.onnx", EXAMPLE + 0.5)
    assert "float32 rounding: the candidate is within tolerance of the float64 result" in caplog.text
    assert model.network.scale.dtype == torch.float32


def test_unknown_exporter_is_rejected(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exporter must be one of"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, exporter="tf2onnx")


class SwishImplementation(torch.autograd.Function):
    """EfficientNet's memory-efficient Swish: a custom autograd.Function."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


class MemoryEfficientSwish(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return SwishImplementation.apply(x)


class Histogram(torch.nn.Module):
    """Uses aten::histc, which no ONNX exporter supports."""

    def forward(self, x: Any) -> Any:
        return x + torch.histc(x, bins=4).sum()


class ConstantTrap(torch.nn.Module):
    """Data-dependent Python: tracing bakes the example's branch into the graph."""

    def forward(self, x: Any) -> Any:
        return x * 2 if float(x.std()) < 0.01 else x * -3


def _net(block: torch.nn.Module) -> type:
    class Net(TinyNet):
        def create_model(self) -> Any:
            body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), block)
            return torch.nn.Sequential(
                torch.nn.Sequential(body), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                torch.nn.Linear(4, 4),
            )

    return Net


def test_custom_autograd_function_swish_exports_and_agrees(tmp_path: Path) -> None:
    model = _net(MemoryEfficientSwish()).with_backend("pytorch")()
    path = export_onnx(model, tmp_path / "swish.onnx", EXAMPLE)
    array = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        OnnxModel(path).infer({"image": array})["logits"], model.infer({"image": array})["logits"], atol=1e-5
    )


def test_unexportable_op_is_refused_naming_the_module_and_op(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _net(Histogram()).with_backend("pytorch")()
    with caplog.at_level(logging.ERROR), pytest.raises(ExportError) as info:
        export_onnx(model, tmp_path / "h.onnx", EXAMPLE)
    message = str(info.value)
    assert "module '0.0.1' (Histogram)" in message
    assert "aten::histc" in message and "Fix:" in message


def test_graph_that_traced_a_constant_branch_is_caught_on_perturbed_inputs(tmp_path: Path) -> None:
    class Trap(TinyNet):
        def create_model(self) -> Any:
            return torch.nn.Sequential(ConstantTrap(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(3, 4))

        def preprocessing(self, raw: Any) -> np.ndarray:
            return np.full((1, 3, 8, 8), 0.05, np.float32)

    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(Trap.with_backend("pytorch")(), tmp_path / "t.onnx", None)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_dynamic_height_and_width_really_accept_other_sizes(tiny: Any, tmp_path: Path, exporter: str) -> None:
    path = export_onnx(tiny, tmp_path / "hw.onnx", np.zeros((3, 16, 16), np.float32),
                       dynamic_hw=True, exporter=exporter)
    model = OnnxModel(path)
    assert [isinstance(d, int) for d in model.inputs[0].shape] == [False, True, False, False]
    for shape in [(1, 3, 9, 31), (3, 3, 40, 24)]:
        array = np.random.default_rng(1).random(shape, dtype=np.float32)
        np.testing.assert_allclose(
            model.infer({"image": array})["logits"], tiny.infer({"image": array})["logits"], atol=1e-5
        )


def test_without_dynamic_hw_other_sizes_are_refused_before_running(tiny: Any, tmp_path: Path) -> None:
    from model_agnostic import TensorSpecError

    path = export_onnx(tiny, tmp_path / "fixed.onnx", EXAMPLE)
    with pytest.raises(TensorSpecError, match=r"9 in dimension 2, the model expects \[-1, 3, 8, 8\]"):
        OnnxModel(path).check_inputs({"image": np.zeros((1, 3, 9, 9), np.float32)})


def test_external_weights_are_gathered_into_one_file_and_shipped(tmp_path: Path) -> None:
    """Models over 2 GiB keep weights outside the .onnx; the exporter writes one file per tensor."""
    from model_agnostic.export.artifact import write_artifact

    class Wide(TinyNet):
        def create_model(self) -> Any:
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.Linear(64, 4))

    tiny = Wide.with_backend("pytorch")()
    path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE)
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    scattered = {p.name for p in tmp_path.iterdir()} - {"m.onnx"}
    assert len(scattered) > 3  # as the TorchScript exporter leaves a large model
    to_onnx._stamp(path, tiny, "torchscript", 18, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    Wide.__qualname__ = "Wide"  # write_artifact refuses classes it could not import again
    artifact = write_artifact(tiny, path, tmp_path / "artifact")
    assert (artifact / "m.onnx.data").is_file()
    array = np.random.default_rng(2).random((2, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(
        OnnxModel(artifact / "model.onnx").infer({"image": array})["logits"],
        tiny.infer({"image": array})["logits"], atol=1e-5,
    )


def test_metadata_records_the_opset_and_exporter_that_really_wrote_the_file(
    tiny: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    # dynamo cannot convert this graph down to opset 13 and would write 18 labelled 13
    with caplog.at_level(logging.WARNING, "model_agnostic.export"):
        path = export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, opset=13, exporter="dynamo")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert {o.domain: o.version for o in proto.opset_import}[""] == 13
    assert meta["model_agnostic.opset"] == meta["model_agnostic.opset_requested"] == "13"
    assert meta["model_agnostic.exporter"] == "torchscript"
    (fallback,) = json.loads(meta["model_agnostic.fallbacks"])
    assert fallback["exporter"] == "dynamo"
    assert "wrote opset 18 instead of the requested 13" in fallback["error"]
    assert "trying the next one" in caplog.text


@pytest.mark.parametrize("opset", [99, 3, "18"])
def test_an_opset_the_exporters_cannot_write_is_refused_before_exporting(
    tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opset: Any
) -> None:
    def never(*args: Any) -> None:
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(to_onnx, "_run_exporter", never)
    with pytest.raises(ExportError, match=rf"opset {opset!r} is not supported: .* write opsets 7 to \d+"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_export_model_records_what_happened_in_the_artifact(tmp_path: Path) -> None:
    import json

    from model_agnostic.export.pipeline import export_model
    from tests.conftest import TESTS, XRAY

    config = tmp_path / "config.toml"
    config.write_text(f'[model]\nclass = "{TESTS.as_posix()}/tiny_models.py:TinyImage"\n'
                      f'[export]\nexample = "{XRAY.as_posix()}"\nopset = 17\n[verify]\ngenerated = 0\n')
    artifact = export_model(config, tmp_path / "a").artifact
    export = json.loads((artifact / "metadata.json").read_text())["export"]
    assert export["opset"] == export["opset_written"] == 17
    assert export["exporter"] == export["exporter_used"] == "torchscript"
    assert export["fallbacks"] == [] and export["opset_import"]["ai.onnx"] == 17
