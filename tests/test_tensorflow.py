"""The TensorFlow path: ``export --format savedmodel`` (onnx2tf in its own cached venv), the
SavedModel verified in the same parity report, the ``tensorflow`` backend, and TF Serving's
REST API on our server serving it to ``RemoteModel`` v1.

Needs the ``tf`` extra and the converter's venv (``python -m
model_agnostic.export.tf_converter``); without them these tests skip and say so, unless
``MODEL_AGNOSTIC_REQUIRE_TF=1`` (CI sets it), which makes a missing piece a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic.errors import ArtifactError, ConfigError, ExportError, ModelLoadError
from tests.conftest import ROOT, XRAY, assert_same_findings, chexnet_config, predict_over_v1

DIGITS = ROOT / "examples" / "digits"


def _need(ready: bool, why: str) -> None:
    if ready:
        return
    if os.environ.get("MODEL_AGNOSTIC_REQUIRE_TF") == "1":
        pytest.fail(f"{why} (MODEL_AGNOSTIC_REQUIRE_TF=1: CI must run the TensorFlow tests)")
    pytest.skip(why)


def _importable(module: str, purpose: str) -> None:
    """``module`` must import (a skip, or under MODEL_AGNOSTIC_REQUIRE_TF=1 a failure)."""
    _need(importlib.util.find_spec(module) is not None, f"{purpose} needs {module}")


def _tensorflow() -> Any:
    """TensorFlow, imported as the library does (``_deps.require``: Triton first, or a
    later torchvision import crashes the process)."""
    from model_agnostic._deps import require
    from model_agnostic.errors import MissingDependencyError

    try:
        return require("tensorflow", "the TensorFlow tests")
    except MissingDependencyError as exc:
        _need(False, str(exc))


def _converter() -> None:
    _tensorflow()
    from model_agnostic.export.tf_converter import converter_dir, is_ready

    _need(
        is_ready(),
        f"the onnx2tf venv is not installed in {converter_dir()}: run "
        "python -m model_agnostic.export.tf_converter (several GB, once)",
    )


def _one_op_onnx(path: Path, node: Any, out_type: int, initializers: Any = ()) -> Path:
    """A one-node ONNX graph ``x`` (float, ``[batch, 4]``) -> ``y`` saved at ``path``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node], node.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", out_type, ["batch", 4])],
        list(initializers),
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS / "test_split.npz") as data:
        return data["X"], data["y"]


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The digits model exported with a SavedModel (about 10 s), and its report."""
    _importable("torch", "exporting a SavedModel")
    _converter()
    from model_agnostic.export.pipeline import export_model

    images, digits = _digit_images()
    samples = [images[np.flatnonzero(digits == d)[0]] for d in range(10)]
    out = tmp_path_factory.mktemp("digits-tf") / "digits"
    result = export_model(
        DIGITS / "config.toml", out, example=samples[0], samples=samples[1:], format="savedmodel"
    )
    assert result.artifact == out, result.report.summary()
    return out, result.report


@pytest.fixture(scope="session")
def chexnet_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """CheXNet (seeded random weights) exported with a SavedModel once per session
    (about 100 s of conversion), and its report."""
    _importable("torch", "exporting a SavedModel")
    _converter()
    from model_agnostic.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("chexnet-tf")
    config = chexnet_config(
        folder, "pytorch", '[pytorch]\nseed = 0\n\n[serving]\nname = "chexnet"\n\n[verify]\ngenerated = 1'
    )
    result = export_model(config, folder / "chexnet", example=XRAY, format="savedmodel")
    assert result.artifact is not None, result.report.summary()
    return result.artifact, result.report


def _stages(report: Any) -> dict[str, str]:
    return {stage.stage: stage.status for stage in report.stages}


# ---------------------------------------------------------------- digits (fast)
def test_digits_export_writes_a_verified_savedmodel_laid_out_for_tf_serving(
    digits_artifact: tuple[Path, Any],
) -> None:
    artifact, report = digits_artifact
    assert report.passed, report.summary()
    assert _stages(report)["savedmodel-inference"] == "pass"
    assert _stages(report)["savedmodel-postprocessing"] == "pass"
    version = artifact / "savedmodel" / "digits" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert not list(artifact.rglob("*.tflite"))
    listed = (artifact / "CHECKSUMS.sha256").read_text()
    for file in version.rglob("*"):
        if file.is_file():
            assert f"  {file.relative_to(artifact).as_posix()}\n" in listed
    saved = json.loads((artifact / "metadata.json").read_text())["savedmodel"]
    assert saved["path"] == "savedmodel/digits/1"
    assert saved["versions"]["onnx2tf"] == "1.29.24"
    assert saved["versions"]["tensorflow"] == _tensorflow().__version__
    assert 'path = "savedmodel/digits/1"' in (artifact / "config.toml").read_text()


def test_savedmodel_loads_in_plain_tensorflow_with_the_documented_signature(
    digits_artifact: tuple[Path, Any],
) -> None:
    tf = _tensorflow()
    loaded = tf.saved_model.load(str(digits_artifact[0] / "savedmodel" / "digits" / "1"))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert {k: (v.shape.as_list(), v.dtype.name) for k, v in inputs.items()} == {
        "pixels": ([None, 1, 8, 8], "float32")
    }
    outputs = signature.structured_outputs
    assert {k: (v.shape.as_list(), v.dtype.name) for k, v in outputs.items()} == {
        "logits": ([None, 10], "float32")
    }
    for rows in (1, 5):  # the batch stays dynamic
        answer = signature(pixels=tf.zeros([rows, 1, 8, 8], tf.float32))
        assert answer["logits"].shape == (rows, 10)


def test_digits_on_tensorflow_equals_onnx_runtime_and_has_the_same_accuracy(
    digits_artifact: tuple[Path, Any],
) -> None:
    from model_agnostic import TensorFlowModel, load_model

    images, digits = _digit_images()
    on_tf = load_model(digits_artifact[0], backend="tensorflow")
    on_onnx = load_model(digits_artifact[0])
    assert isinstance(on_tf, TensorFlowModel) and on_tf.backend_name == "tensorflow"
    batch = np.concatenate([on_onnx.prepare(image)["pixels"] for image in images])
    np.testing.assert_allclose(
        on_tf.infer({"pixels": batch})["logits"],
        on_onnx.infer({"pixels": batch})["logits"],
        rtol=0,
        atol=1e-5,
    )
    tf_digits = [r["digit"] for r in on_tf.predict_batch(list(images))]
    onnx_digits = [r["digit"] for r in on_onnx.predict_batch(list(images))]
    assert tf_digits == onnx_digits
    accuracy = np.mean(np.array(tf_digits, dtype=int) == digits)
    assert accuracy == np.mean(np.array(onnx_digits, dtype=int) == digits) > 0.9


def test_a_conversion_that_changes_answers_is_refused_naming_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _importable("torch", "exporting a SavedModel")
    _converter()
    from model_agnostic.backends.tf_savedmodel import TensorFlowModel
    from model_agnostic.export.pipeline import export_model

    infer = TensorFlowModel.infer

    def off_by_a_little(self: Any, inputs: Any, outputs: Any = None) -> Any:
        answer = infer(self, inputs, outputs)
        return {**answer, "logits": answer["logits"] + np.float32(0.01)}

    monkeypatch.setattr(TensorFlowModel, "infer", off_by_a_little)
    images, _ = _digit_images()
    out = tmp_path / "digits"
    result = export_model(
        DIGITS / "config.toml", out, example=images[0], samples=list(images[1:4]), format="savedmodel"
    )
    assert result.artifact is None and not out.exists()
    assert result.report.first_failure == "savedmodel-inference"
    assert _stages(result.report)["inference"] == "pass"  # ONNX itself is fine
    failed = [c for s in result.report.stages if s.stage == "savedmodel-inference"
              for c in s.comparisons if c.status == "fail"]
    assert failed and all(c.name.endswith(":logits") for c in failed)
    assert all(abs(c.max_abs - 0.01) < 1e-4 for c in failed)
    assert "FAILED, first at savedmodel-inference" in result.report.summary()


def test_an_op_onnx2tf_cannot_convert_is_named_in_the_error(tmp_path: Path) -> None:
    _converter()
    from onnx import TensorProto, helper

    from model_agnostic.export.tf_converter import convert

    like = helper.make_tensor("like", TensorProto.DOUBLE, [1], [0.0])
    path = _one_op_onnx(tmp_path / "castlike.onnx", helper.make_node(
        "CastLike", ["x", "like"], ["y"], name="cast_to_double"), TensorProto.DOUBLE, [like])
    before = path.read_bytes()
    with pytest.raises(ExportError, match=r"cannot convert ONNX op CastLike \(node 'cast_to_double'\)"):
        convert(path, tmp_path / "out", [("x", "float32", [None, 4])], [("y", [None, 4])], {"x": [1, 4]})
    assert path.read_bytes() == before and not (tmp_path / "out").exists()


def test_a_changed_savedmodel_file_is_refused_by_its_checksum(
    digits_artifact: tuple[Path, Any], tmp_path: Path
) -> None:
    from model_agnostic import load_model

    copy = tmp_path / "digits"
    shutil.copytree(digits_artifact[0], copy)
    index = copy / "savedmodel" / "digits" / "1" / "variables" / "variables.index"
    index.write_bytes(index.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="'savedmodel/digits/1/variables/variables.index' does not match"):
        load_model(copy, backend="tensorflow")
    (copy / "savedmodel" / "digits" / "1" / "assets" / "extra.txt").write_text("x")
    with pytest.raises(ArtifactError, match="is not listed"):
        load_model(copy, backend="tensorflow")


def test_the_zipped_artifact_runs_on_tensorflow(
    digits_artifact: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_agnostic import load_model
    from model_agnostic.export.artifact import write_zip

    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    archive = write_zip(digits_artifact[0], tmp_path / "digits.zip")
    images, _ = _digit_images()
    assert load_model(archive, backend="tensorflow").predict(images[0]) == load_model(
        digits_artifact[0], backend="tensorflow"
    ).predict(images[0])


def test_inspect_shows_the_savedmodel_signature(digits_artifact: tuple[Path, Any]) -> None:
    from model_agnostic.inspection import describe, render

    text = render(describe(digits_artifact[0]))
    assert "savedmodel  savedmodel/digits/1/ signature serving_default (onnx2tf 1.29.24" in text
    assert "    input     pixels: float32 [-1, 1, 8, 8]" in text
    folder = render(describe(digits_artifact[0] / "savedmodel" / "digits" / "1"))
    assert "signature   serving_default" in folder
    assert "    output    logits: float32 [-1, 10]" in folder


# ---------------------------------------------------------------- the backend itself
def test_tensorflow_backend_is_chosen_by_config_and_checks_its_settings(
    digits_artifact: tuple[Path, Any], write_config: Any
) -> None:
    from model_agnostic import TensorFlowModel, load_model

    saved = (digits_artifact[0] / "savedmodel" / "digits" / "1").as_posix()
    head = f'backend = "tensorflow"\n[model]\nclass = "{DIGITS.as_posix()}/model.py:Digits"\n'
    model = load_model(write_config(head + f'[tensorflow]\npath = "{saved}"\n'))
    assert isinstance(model, TensorFlowModel) and model.input_names == ("pixels",)
    with pytest.raises(ConfigError, match=r"backend 'tensorflow' needs \[tensorflow\] path"):
        load_model(write_config(head))
    with pytest.raises(ModelLoadError, match="is not a SavedModel folder: expected saved_model.pb"):
        load_model(write_config(head + f'[tensorflow]\npath = "{DIGITS.as_posix()}"\n'))
    with pytest.raises(ModelLoadError, match=r"has no signature 'predict'; it has \['serving_default'\]"):
        load_model(write_config(head + f'[tensorflow]\npath = "{saved}"\nsignature = "predict"\n'))


def test_tensorflow_threads_are_per_process_and_a_clash_says_so(
    digits_artifact: tuple[Path, Any],
) -> None:
    from model_agnostic import TensorFlowModel

    saved = digits_artifact[0] / "savedmodel" / "digits" / "1"
    TensorFlowModel(saved).infer({"pixels": np.zeros((1, 1, 8, 8), np.float32)})  # started
    tf = _tensorflow()
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(ConfigError, match="intra_op_num_threads = .*per process and already started"):
        TensorFlowModel(saved, intra_op_num_threads=current + 3)


def test_without_tensorflow_the_backend_names_the_extra_to_install(tmp_path: Path) -> None:
    """Needs neither TensorFlow nor the converter: the import comes before the path is read."""
    config = tmp_path / "config.toml"
    config.write_text(f'backend = "tensorflow"\n[model]\nclass = "{DIGITS.as_posix()}/model.py:Digits"\n'
                      f'[tensorflow]\npath = "{tmp_path.as_posix()}"\n', encoding="utf-8")
    code = (
        "import sys\nsys.modules['tensorflow'] = None\n"
        "from model_agnostic import load_model, MissingDependencyError\n"
        "try:\n"
        f"    load_model({str(config)!r})\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert "pip install 'model-agnostic[tf]'" in done.stdout, done.stderr


# ---------------------------------------------------------------- CheXNet (slow)
@pytest.mark.slow
def test_chexnet_exports_a_verified_savedmodel_with_its_two_outputs(
    chexnet_artifact: tuple[Path, Any],
) -> None:
    artifact, report = chexnet_artifact
    assert report.passed, report.summary()
    assert {k: v for k, v in _stages(report).items() if k.startswith("savedmodel")} == {
        "savedmodel-inference": "pass",
        "savedmodel-postprocessing": "pass",
        "savedmodel-heatmaps": "pass",
    }
    saved = json.loads((artifact / "metadata.json").read_text())["savedmodel"]
    assert [o["name"] for o in saved["outputs"]] == ["probabilities", "features"]
    assert saved["outputs_transposed_back"] == ["features"]  # onnx2tf made it NHWC


@pytest.mark.slow
def test_chexnet_on_tensorflow_equals_onnx_runtime_with_the_same_class(
    chexnet_artifact: tuple[Path, Any],
) -> None:
    from model_agnostic import load_model

    on_tf = load_model(chexnet_artifact[0], backend="tensorflow")
    on_onnx = load_model(chexnet_artifact[0])
    assert type(on_tf).hooks_class is type(on_onnx).hooks_class
    batch = on_onnx.prepare(XRAY)
    got, want = on_tf.infer(batch), on_onnx.infer(batch)
    assert got["features"].shape == want["features"].shape == (10, 1024, 7, 7)
    for name in ("probabilities", "features"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5)
    ours, theirs = on_tf.predict(XRAY, explain=1), on_onnx.predict(XRAY, explain=1)
    assert_same_findings(ours.result, theirs.result, atol=1e-5)
    assert on_tf.can_explain()
    np.testing.assert_allclose(ours.heatmaps[0].map, theirs.heatmaps[0].map, atol=1e-4)


@pytest.mark.slow
def test_our_tf_serving_api_serves_the_savedmodel_to_remote_model_v1(
    chexnet_artifact: tuple[Path, Any],
) -> None:
    _importable("waitress", "our server")
    from model_agnostic import load_model

    local = load_model(chexnet_artifact[0], backend="tensorflow")
    ours = predict_over_v1(local, chexnet_artifact[0], XRAY, backend="tensorflow")
    assert_same_findings(ours, local.predict(XRAY), atol=1e-6)


def test_verify_on_an_artifact_with_a_savedmodel_checks_it_too(
    digits_artifact: tuple[Path, Any],
) -> None:
    from model_agnostic.export.pipeline import verify_config

    images, _ = _digit_images()
    report = verify_config(DIGITS / "config.toml", digits_artifact[0], samples=list(images[:3]))
    assert report.passed, report.summary()
    assert {"savedmodel-inference", "savedmodel-postprocessing", "artifact"} <= set(_stages(report))


def test_onnx2tf_is_stopped_once_the_savedmodel_is_written_and_2d_inputs_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnx2tf goes on to write two TFLite files we do not ship (most of its time); the
    driver stops it right after the SavedModel, which is complete and loads. The graph's
    input is 2-D, which onnx2tf's keep-NCHW flag refuses: it is passed for 3-5-D only."""
    _converter()
    import contextlib

    from onnx import TensorProto, helper

    from model_agnostic.export import tf_converter

    _one_op_onnx(tmp_path / "relu.onnx", helper.make_node("Relu", ["x"], ["y"], name="relu"),
                 TensorProto.FLOAT)
    scratch = tmp_path / "scratch"  # kept, to see what onnx2tf wrote
    scratch.mkdir()
    monkeypatch.setattr(tf_converter.tempfile, "TemporaryDirectory",
                        lambda **_: contextlib.nullcontext(str(scratch)))
    done = tf_converter.convert(tmp_path / "relu.onnx", tmp_path / "saved",
                                [("x", "float32", [None, 4])], [("y", [None, 4])], {"x": [1, 4]})
    assert (scratch / "onnx2tf" / "saved_model.pb").is_file()
    assert not list(tmp_path.rglob("*.tflite"))
    assert done.outputs_transposed == []
    tf = _tensorflow()
    signature = tf.saved_model.load(str(done.path)).signatures["serving_default"]
    answer = signature(x=tf.constant([[-1.0, 2.0, -3.0, 4.0]]))
    np.testing.assert_array_equal(answer["y"].numpy(), [[0.0, 2.0, 0.0, 4.0]])
