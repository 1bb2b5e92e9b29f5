"""verify: stage-by-stage parity, three verdicts, waivers, and blaming the first stage
that diverges."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_agnostic.cli import EXIT_OK, EXIT_PARITY, EXIT_UNVERIFIED, main
from model_agnostic.export.pipeline import export_model, generated_images
from model_agnostic.export.verify import Tolerances, verify
from tests.conftest import XRAY

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

CONFIG = """
[model]
class = "@TESTS@/tiny_models.py:{cls}"
[model.options]
broken = "{broken}"
[onnxruntime]
path = "tiny.onnx"
[export]
example = "{example}"
[verify]
generated = 3
{verify}
"""


@pytest.fixture
def make_config(write_config: Callable[..., Path]) -> Callable[..., Path]:
    def make(broken: str = "", cls: str = "TinyImage", verify: str = "") -> Path:
        return write_config(CONFIG.format(broken=broken, cls=cls, verify=verify,
                                          example=XRAY.as_posix()))

    return make


def test_a_faithful_export_passes_every_stage(make_config: Callable[..., Path], tmp_path: Path) -> None:
    result = export_model(make_config(""), tmp_path / "artifact")
    report = result.report
    assert report.passed and report.first_failure is None and result.artifact is not None
    assert report.verdict == "passed"
    assert [s.stage for s in report.stages] == ["preprocessing", "inference", "postprocessing", "artifact"]
    assert all(s.status == "pass" for s in report.stages)
    assert report.stages[0].max_abs <= 1e-6
    assert len(report.samples) == 4  # the example + 3 generated images
    assert report.task["logits"]["kind"] == "classification"
    assert report.task["logits"]["top1_agree"] == report.task["logits"]["rows"] == 4
    assert "without torch" in report.stages[3].reason


def test_parity_json_describes_the_files_on_disk(make_config: Callable[..., Path], tmp_path: Path) -> None:
    from model_agnostic.artifact import file_digests

    artifact = export_model(make_config(""), tmp_path / "artifact").artifact
    parity = json.loads((artifact / "parity.json").read_text())
    assert parity["verdict"] == "passed" and parity["subject"]["kind"] == "artifact"
    assert parity["subject"]["files"] == file_digests(artifact, skip=("parity.json",))
    assert set(parity["subject"]["files"]) >= {"model.onnx", "config.toml", "metadata.json"}


@pytest.mark.parametrize("broken", ["nearest", "square"])
def test_broken_preprocessing_is_caught_and_blamed_on_preprocessing(
    make_config: Callable[..., Path], tmp_path: Path, broken: str
) -> None:
    result = export_model(make_config(broken), tmp_path / "artifact")
    assert result.artifact is None and not (tmp_path / "artifact").exists()
    report = result.report
    assert not report.passed and report.first_failure == "preprocessing"
    assert report.stages[0].max_abs > 1e-3
    # both backends share the broken pipeline, so the later stages still agree
    assert report.stages[1].passed and report.stages[2].passed
    assert report.stages[3].status == "unverified" and "earlier stage failed" in report.stages[3].reason
    assert "FAILED, first at preprocessing" in report.summary()


def test_cli_export_exits_3_and_writes_nothing_when_parity_fails(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--config", str(make_config("nearest")), "--output", str(tmp_path / "out")])
    assert code == EXIT_PARITY
    assert "FAIL       preprocessing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_inference_divergence_is_blamed_on_inference(make_config: Callable[..., Path]) -> None:
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
    make_config: Callable[..., Path], tmp_path: Path
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
    assert verify(near, far, samples).verdict == "failed"
    loose = verify(near, far, samples, tolerances=Tolerances(atol=1e-4))
    assert [s.status for s in loose.stages[1:]] == ["pass", "pass"]
    assert loose.verdict == "unverified"  # no reference pipeline: stage 1 never ran


def test_generated_images_vary_size_and_mode() -> None:
    images = generated_images(4)
    assert len({im.size for im in images}) == 4
    assert {im.mode for im in images} >= {"RGB", "L", "RGBA"}
    assert [np.asarray(a).tobytes() for a in images] == [np.asarray(b).tobytes() for b in generated_images(4)]


def test_verify_needs_samples() -> None:
    from model_agnostic import ModelAgnosticError

    with pytest.raises(ModelAgnosticError, match="at least one sample"):
        verify(None, None, [])  # type: ignore[arg-type]


# ------------------------------------------------- unverified is not passed
REFERENCE_FILE = """
from torchvision import transforms as tv

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
val_transform = tv.Compose([tv.Resize(20), tv.CenterCrop(16), tv.ToTensor(), tv.Normalize(MEAN, STD)])
"""


def test_a_model_without_a_reference_is_unverified_and_not_shipped(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    result = export_model(make_config(cls="TinyImageNoReference"), tmp_path / "artifact")
    report = result.report
    assert report.verdict == "unverified" and not report.passed and not report.shippable
    assert report.stages[0].status == "unverified"
    assert "no reference_preprocessing" in report.stages[0].reason
    assert [s.status for s in report.stages[1:]] == ["pass", "pass", "pass"]
    assert result.artifact is None and not (tmp_path / "artifact").exists()
    summary = report.summary()
    assert "parity UNVERIFIED" in summary and "NOT a pass" in summary and "PASSED" not in summary
    assert "--allow-unverified preprocessing" in summary


def test_unverified_gets_its_own_exit_code_from_export_and_verify(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(cls="TinyImageNoReference")
    assert main(["export", "--config", str(config), "--output", str(tmp_path / "a")]) == EXIT_UNVERIFIED
    assert not (tmp_path / "a").exists()
    from model_agnostic import load_model
    from model_agnostic.export import export_onnx

    export_onnx(load_model(config, backend="pytorch"), config.parent / "tiny.onnx", XRAY)
    assert main(["verify", "--config", str(config), str(XRAY)]) == EXIT_UNVERIFIED
    assert "parity UNVERIFIED" in capsys.readouterr().err


def test_an_explicit_waiver_ships_and_is_recorded_wherever_the_verdict_shows(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = make_config(cls="TinyImageNoReference"), tmp_path / "a"
    code = main(["export", "--config", str(config), "--output", str(out),
                 "--allow-unverified", "preprocessing"])
    assert code == EXIT_OK
    parity = json.loads((out / "parity.json").read_text())
    assert parity["verdict"] == "unverified" and parity["passed"] is False
    (waiver,) = parity["waivers"]
    assert waiver["stage"] == "preprocessing"
    assert waiver["flag"] == "--allow-unverified preprocessing"
    assert waiver["source"] == "command line" and "no reference" in waiver["reason"]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "UNVERIFIED" in shown and "waived by --allow-unverified preprocessing" in shown


def test_a_failed_stage_cannot_be_waived(make_config: Callable[..., Path], tmp_path: Path) -> None:
    code = main(["export", "--config", str(make_config("nearest")), "--output",
                 str(tmp_path / "a"), "--allow-unverified", "all"])
    assert code == EXIT_PARITY and not (tmp_path / "a").exists()


def test_the_config_can_name_the_training_codes_pipeline_as_the_reference(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text(REFERENCE_FILE)
    declared = 'reference = "train.py:val_transform"'
    good = export_model(make_config(cls="TinyImageNoReference", verify=declared), tmp_path / "a")
    assert good.report.verdict == "passed" and good.artifact is not None
    bad = export_model(make_config("square", cls="TinyImageNoReference", verify=declared),
                       tmp_path / "b")
    assert bad.report.first_failure == "preprocessing"


def test_a_reference_that_cannot_be_imported_is_a_clear_error(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    from model_agnostic import ModelAgnosticError

    config = make_config(cls="TinyImageNoReference", verify='reference = "train.py:nope"')
    (tmp_path / "train.py").write_text("x = 1\n")
    with pytest.raises(ModelAgnosticError, match="train.py has no \\[verify\\] reference named 'nope'"):
        export_model(config, tmp_path / "a")


# ------------------------------------------------------------ atomic export
def test_a_failed_export_leaves_the_previous_artifact_untouched(
    make_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model_agnostic.artifact import file_digests, verify_checksums

    out = tmp_path / "a"
    assert main(["export", "--config", str(make_config("")), "--output", str(out)]) == EXIT_OK
    before = file_digests(out)
    code = main(["export", "--config", str(make_config("nearest")), "--output", str(out), "--force"])
    assert code == EXIT_PARITY
    assert f"the previous artifact at {out} is untouched" in capsys.readouterr().err
    verify_checksums(out)
    assert file_digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert main(["export", "--config", str(make_config("")), "--output", str(out), "--force"]) == EXIT_OK
    assert json.loads((out / "parity.json").read_text())["verdict"] == "passed"


def test_an_existing_target_without_force_fails_before_anything_is_built(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    from model_agnostic import ExportError
    from tests.tiny_models import CountingTinyImage

    out = tmp_path / "a"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    CountingTinyImage.built.clear()
    with pytest.raises(ExportError, match="exists; pass --force"):
        export_model(make_config(cls="CountingTinyImage"), out)
    with pytest.raises(ExportError, match="not one"):
        export_model(make_config(cls="CountingTinyImage"), out, force=True)
    assert CountingTinyImage.built == [] and (out / "keep.txt").read_text() == "mine"
