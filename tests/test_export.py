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


def test_unknown_exporter_is_rejected(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="exporter must be one of"):
        export_onnx(tiny, tmp_path / "m.onnx", EXAMPLE, exporter="tf2onnx")
