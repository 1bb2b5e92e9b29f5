"""The model-agnostic CLI: predict prints JSON, export writes a checked file, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from model_agnostic.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main

torch = pytest.importorskip("torch")

CONFIG = """
backend = "onnxruntime"
[model]
class = "@TESTS@/tiny_models.py:TinyNet"
[onnxruntime]
path = "tiny.onnx"
"""


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    for i in range(2):
        Image.new("RGB", (20 + i, 10), (40 * i, 90, 200)).save(tmp_path / f"img{i}.png")
    return write_config(CONFIG)


def test_export_then_predict_on_onnx_runtime_without_torch(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    artifact = tmp_path / "artifact"
    assert main(["export", "--config", str(config), "--example", images[0], "--output", str(artifact)]) == EXIT_OK
    err = capsys.readouterr().err
    assert "exporting to ONNX: done" in err and "parity PASSED" in err
    assert (artifact / "model.onnx").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "model_agnostic", "predict", "--forbid-torch", "--config", str(artifact), *images],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == EXIT_OK, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "onnxruntime" and report["torch_imported"] is False
    assert [r["input"] for r in report["results"]] == images
    assert all(r["result"]["label"] in range(4) for r in report["results"])
    assert main(["predict", "--backend", "pytorch", "--config", str(config), *images]) == EXIT_OK
    pytorch_report = json.loads(capsys.readouterr().out)
    for a, b in zip(report["results"], pytorch_report["results"]):
        assert a["result"]["label"] == b["result"]["label"]
        assert max(abs(x - y) for x, y in zip(a["result"]["logits"], b["result"]["logits"])) < 1e-5


def test_errors_exit_1_with_the_message_on_stderr(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.jpg").write_text("not an image")
    assert main(["predict", "--backend", "pytorch", "--config", str(config), str(tmp_path / "bad.jpg")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "model-agnostic: error:" in err and "bad.jpg' is not a recognised image" in err
    assert main(["predict", "--config", str(tmp_path / "missing.toml"), "x.jpg"]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err


def test_forbid_torch_explains_a_model_that_imports_torch_at_the_top(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "eager.py").write_text(
        "import torch\nfrom model_agnostic import Model\nclass Eager(Model):\n    pass\n"
    )
    config = write_config('backend = "onnxruntime"\n[model]\nclass = "eager.py:Eager"\n[onnxruntime]\npath = "x.onnx"\n')
    done = subprocess.run(
        [sys.executable, "-m", "model_agnostic", "predict", "--forbid-torch", "--config", str(config), "x"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == EXIT_ERROR
    assert "import torch inside create_model()" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict"])
    assert exit_info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == EXIT_USAGE


def test_export_force_replaces_only_an_artifact(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = str(tmp_path / "img0.png")
    out = tmp_path / "artifact"
    args = ["export", "--config", str(config), "--example", image, "--output", str(out)]
    assert main(args) == EXIT_OK
    assert main(args) == EXIT_ERROR and "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == EXIT_OK
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("precious")
    code = main(["export", "--config", str(config), "--example", image, "--output", str(tmp_path / "mine"), "--force"])
    assert code == EXIT_ERROR and (tmp_path / "mine" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("command", [[], ["predict"], ["export"], ["verify"], ["inspect"]])
def test_help_explains_each_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--config" in text or "COMMAND" in text or "artifact" in text


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("model-agnostic")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "predict" in done.stdout and "export" in done.stdout


def test_explain_refuses_two_images_whose_heatmaps_would_share_a_name(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (20, 10)).save(tmp_path / folder / "x.png")
    code = main(["predict", "--backend", "pytorch", "--config", str(config), "--explain", "1",
                 "--heatmaps", str(tmp_path / "maps"), str(tmp_path / "a" / "x.png"),
                 str(tmp_path / "b" / "x.png")])
    assert code == EXIT_ERROR
    assert "have the same name: their heatmaps would overwrite" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()
