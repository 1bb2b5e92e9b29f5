"""Digits example: the shipped artifact runs torch-free at the README's accuracy,
agrees with PyTorch on every test image, and train.py rebuilds it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import InputError, load_model
from model_agnostic.artifact import verify_checksums
from tests.conftest import ROOT, run_without_torch

DIGITS = ROOT / "examples" / "digits"
ARTIFACT = DIGITS / "artifact"
SPLIT = DIGITS / "test_split.npz"
SHIPPED = ("weights.safetensors", "test_split.npz", "artifact")


def load_split(path: Path = SPLIT) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["X"], data["y"]


def predicted_digits(model: Any, images: np.ndarray) -> np.ndarray:
    return np.array([result["digit"] for result in model.predict_batch(list(images))])


def digest(path: Path) -> str:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()


@pytest.fixture(scope="module")
def onnx_model() -> Any:
    return load_model(ARTIFACT)


def test_shipped_artifact_loads_and_its_checksums_verify(onnx_model: Any) -> None:
    verify_checksums(ARTIFACT)
    assert onnx_model.backend_name == "onnxruntime"
    assert (onnx_model.input_names, onnx_model.output_names) == (("pixels",), ("logits",))
    assert json.loads((ARTIFACT / "labels.json").read_text()) == list("0123456789")
    assert json.loads((ARTIFACT / "parity.json").read_text())["passed"] is True
    assert (ARTIFACT / "model.py").read_bytes() == (DIGITS / "model.py").read_bytes(), (
        "the artifact's model.py is stale: rerun examples/digits/train.py"
    )
    images, _ = load_split()
    result = onnx_model.predict(images[0])
    assert set(result) == {"digit", "probabilities"} and isinstance(result["digit"], int)
    assert len(result["probabilities"]) == 10
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    assert result["digit"] == int(np.argmax(result["probabilities"]))


def test_shipped_files_are_not_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    shipped = (DIGITS / "weights.safetensors", SPLIT, *ARTIFACT.iterdir())
    paths = [str(p.relative_to(ROOT)) for p in shipped]
    ignored = subprocess.run(
        ["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert ignored.stdout == "", f"shipped files ignored by .gitignore: {ignored.stdout}"


def test_artifact_classifies_test_split_without_torch_at_readme_accuracy() -> None:
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from model_agnostic import load_model\n"
        "model = load_model('examples/digits/artifact')\n"
        "with np.load('examples/digits/test_split.npz') as data:\n"
        "    images, digits = data['X'], data['y']\n"
        "predicted = np.array([r['digit'] for r in model.predict_batch(list(images))])\n"
        "print(json.dumps({'correct': int((predicted == digits).sum()), 'total': len(digits),\n"
        "                  'torch': sys.modules.get('torch') is not None}))\n"
    )
    done = run_without_torch(code, ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["torch"] is False
    accuracy = result["correct"] / result["total"]
    assert accuracy > 0.9
    readme = (DIGITS / "README.md").read_text(encoding="utf-8")
    stated = f"{accuracy:.2%} ({result['correct']}/{result['total']})"
    assert stated in readme, f"README does not state the measured ONNX Runtime accuracy {stated}"


def test_evaluate_script_blocks_torch_and_reports_the_accuracy() -> None:
    done = subprocess.run(
        [sys.executable, str(DIGITS / "evaluate.py"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    _, digits = load_split()
    assert summary["torch_blocked"] is True and summary["torch_imported"] is False
    assert summary["onnxruntime"]["total"] == len(digits)
    assert summary["onnxruntime"]["accuracy"] > 0.9


def test_pytorch_and_onnx_give_the_same_prediction_for_every_test_image(onnx_model: Any) -> None:
    pytest.importorskip("torch")
    torch_model = load_model(DIGITS / "config.toml", backend="pytorch")
    images, digits = load_split()
    on_torch = predicted_digits(torch_model, images)
    on_onnx = predicted_digits(onnx_model, images)
    assert int(np.sum(on_torch != on_onnx)) == 0
    assert np.mean(on_torch == digits) == np.mean(on_onnx == digits) > 0.9
    batch = {"pixels": np.concatenate([torch_model.preprocessing(x) for x in images])}
    np.testing.assert_allclose(
        onnx_model.infer(batch)["logits"], torch_model.infer(batch)["logits"], rtol=1e-5, atol=1e-4
    )


def test_train_script_end_to_end_writes_a_passing_artifact(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    before = {name: digest(DIGITS / name) for name in SHIPPED}
    done = subprocess.run(
        [sys.executable, str(DIGITS / "train.py"),
         "--output-dir", str(tmp_path), "--epochs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parity PASSED" in done.stdout
    assert re.search(r"differing predictions:\s+0\b", done.stdout)
    accuracies = re.findall(r"(PyTorch|ONNX Runtime) test accuracy:\s+([\d.]+)", done.stdout)
    assert len(accuracies) == 2 and accuracies[0][1] == accuracies[1][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SHIPPED)  # no staging left over
    verify_checksums(tmp_path / "artifact")
    assert json.loads((tmp_path / "artifact" / "parity.json").read_text())["passed"] is True
    fresh, shipped = load_split(tmp_path / "test_split.npz"), load_split()
    assert all(np.array_equal(a, b) for a, b in zip(fresh, shipped))  # the split is fixed
    assert {name: digest(DIGITS / name) for name in SHIPPED} == before  # shipped files untouched


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (np.zeros((8, 7)), r"8x8 .*shape \(8, 7\)"),
        (np.zeros((1, 8, 8)), r"shape \(1, 8, 8\)"),
        (np.zeros(64), r"shape \(64,\).*reshape\(8, 8\)"),
        (np.full((8, 8), 17), r"range 0\.\.16.*from 17 to 17"),
        (np.full((8, 8), 255, dtype=np.uint8), r"range 0\.\.16.*to 255"),
        (-np.ones((8, 8)), r"range 0\.\.16.*from -1"),
        (np.full((8, 8), np.nan), r"non-finite"),
        ([["x"] * 8] * 8, r"non-numeric.*dtype <U1"),
        (np.ones((8, 8), dtype=bool), r"non-numeric.*bool"),
        (None, r"non-numeric.*NoneType"),
        ("a digit", r"non-numeric"),
        ([[1, 2], [3]], r"cannot be read as an array"),
    ],
    ids=["8x7", "batched", "flat-64", "above-16", "8-bit", "negative", "nan", "strings",
         "bool", "none", "text", "ragged"],
)
def test_preprocessing_rejects_bad_input_naming_the_problem(
    onnx_model: Any, raw: Any, named: str
) -> None:
    with pytest.raises(InputError, match=named):
        onnx_model.preprocessing(raw)
    with pytest.raises(InputError, match=named):
        onnx_model.predict(raw)


def test_preprocessing_scales_an_8x8_array_like_to_one_float32_row(onnx_model: Any) -> None:
    pixels = [[16] * 8] + [[0] * 8] * 6 + [[8] * 8]  # nested lists work too
    array = onnx_model.preprocessing(pixels)
    assert array.dtype == np.float32 and array.shape == (1, 1, 8, 8)
    assert array[0, 0, 0, 0] == 1.0 and array[0, 0, 1, 0] == 0.0 and array[0, 0, 7, 0] == 0.5
