"""verify: stage-by-stage parity, tolerances, and blaming the first stage that diverges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import numpy as np
import pytest

from model_agnostic.cli import EXIT_OK, EXIT_PARITY, main
from model_agnostic.export.pipeline import export_model, generated_images
from model_agnostic.export.verify import Tolerances, verify
from tests.conftest import XRAY

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

CONFIG = """
[model]
class = "@TESTS@/tiny_models.py:TinyImage"
[model.options]
broken = "{broken}"
[onnxruntime]
path = "tiny.onnx"
[export]
example = "{example}"
[verify]
generated = 3
"""


@pytest.fixture
def make_config(write_config: Callable[..., Path]) -> Callable[[str], Path]:
    return lambda broken="": write_config(CONFIG.format(broken=broken, example=XRAY.as_posix()))


def test_a_faithful_export_passes_every_stage(make_config: Callable[[str], Path], tmp_path: Path) -> None:
    result = export_model(make_config(""), tmp_path / "artifact")
    report = result.report
    assert report.passed and report.first_failure is None and result.artifact is not None
    assert [s.stage for s in report.stages] == ["preprocessing", "inference", "postprocessing"]
    assert all(s.passed for s in report.stages)
    assert report.stages[0].max_abs <= 1e-6
    assert len(report.samples) == 4  # the example + 3 generated images
    assert any("top-4" in c.name for c in report.stages[1].comparisons)


@pytest.mark.parametrize("broken", ["nearest", "square"])
def test_broken_preprocessing_is_caught_and_blamed_on_preprocessing(
    make_config: Callable[[str], Path], tmp_path: Path, broken: str
) -> None:
    result = export_model(make_config(broken), tmp_path / "artifact")
    assert result.artifact is None and not (tmp_path / "artifact").exists()
    report = result.report
    assert not report.passed and report.first_failure == "preprocessing"
    assert report.stages[0].max_abs > 1e-3
    # both backends share the broken pipeline, so the later stages still agree
    assert report.stages[1].passed and report.stages[2].passed
    assert "FAILED, first at preprocessing" in report.summary()


def test_cli_export_exits_3_and_writes_nothing_when_parity_fails(
    make_config: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--config", str(make_config("nearest")), "--output", str(tmp_path / "out")])
    assert code == EXIT_PARITY
    assert "FAIL  preprocessing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_inference_divergence_is_blamed_on_inference(make_config: Callable[[str], Path]) -> None:
    from model_agnostic import load_model
    from model_agnostic.export import export_onnx

    config = make_config("")
    reference = load_model(config, backend="pytorch")
    export_onnx(reference, config.parent / "tiny.onnx", XRAY)
    candidate = type(reference).hooks_class.with_backend("onnxruntime")(config.parent / "tiny.onnx")
    with torch.no_grad():  # the PyTorch model drifts after export
        reference.network[-1].bias += 1e-3
    report = verify(reference, candidate, [XRAY])
    assert report.first_failure == "inference"
    assert 5e-4 < report.stages[1].max_abs < 2e-3


def test_cli_verify_exit_codes_and_json_report(
    make_config: Callable[[str], Path], tmp_path: Path
) -> None:
    from model_agnostic import load_model
    from model_agnostic.export import export_onnx

    config = make_config("")
    export_onnx(load_model(config, backend="pytorch"), config.parent / "tiny.onnx", XRAY)
    assert main(["verify", "--config", str(config), "--report", str(tmp_path / "r.json"), str(XRAY)]) == EXIT_OK
    assert '"passed": true' in (tmp_path / "r.json").read_text()
    broken = make_config("square")
    assert main(["verify", "--config", str(broken), str(XRAY)]) == EXIT_PARITY


def test_tolerances_decide_pass_or_fail() -> None:
    from model_agnostic import Model
    from model_agnostic.backends import bind

    class Offset(Model):
        backend_name = "offset"

        def __init__(self, delta: float) -> None:
            super().__init__()
            self.delta = delta

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {"output": inputs["input"] + self.delta}

    model = bind(Model, Offset)
    samples = [np.ones((1, 3), np.float32)]
    near, far = model(delta=0.0), model(delta=2e-5)
    assert not verify(near, far, samples).passed
    assert verify(near, far, samples, tolerances=Tolerances(atol=1e-4)).passed


def test_generated_images_vary_size_and_mode() -> None:
    images = generated_images(4)
    assert len({im.size for im in images}) == 4
    assert {im.mode for im in images} >= {"RGB", "L", "RGBA"}
    assert [np.asarray(a).tobytes() for a in images] == [np.asarray(b).tobytes() for b in generated_images(4)]


def test_verify_needs_samples() -> None:
    from model_agnostic import ModelAgnosticError

    with pytest.raises(ModelAgnosticError, match="at least one sample"):
        verify(None, None, [])  # type: ignore[arg-type]
