"""model-agnostic optimize: variants of a verified artifact, gated on task budgets against
the FP32 PyTorch reference, timed here, shipped only when within budget and faster.

The digits example (a real trained model and its labelled test split) carries the INT8
accuracy claims; a tiny MLP with one huge activation carries the layer diagnosis and
the exclusion retry (per-tensor INT8 rounds its other units to zero)."""

from __future__ import annotations

import argparse
import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import load_model
from model_agnostic.artifact import verify_checksums
from model_agnostic.errors import ConfigError
from model_agnostic.export.optimize import (
    Budgets,
    VariantResult,
    cpu_info,
    exit_code,
    optimize_artifact,
)
from model_agnostic.export.optimize.budgets import check_budgets
from model_agnostic.export.optimize.variants import build_variant, fp16_skip_reason
from tests.conftest import ROOT

DIGITS = ROOT / "examples" / "digits"
CONFIG = DIGITS / "config.toml"
ARTIFACT = DIGITS / "artifact"
QUICK = {"speed_seconds": 0.2}

OUTLIER = '''
"""An MLP whose middle activation has one huge unit: per-tensor INT8 rounds the rest to 0."""
import numpy as np

from model_agnostic import Model


class Outlier(Model):
    input_names = ("x",)
    output_names = ("logits",)

    def create_model(self):
        import torch

        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(),
            torch.nn.Linear(16, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 4),
        )
        with torch.no_grad():
            net[2].weight[0] *= 1000.0  # unit 0 of the middle activation: about 1000
            net[2].bias[0] = 1000.0
            net[4].weight[:, 0] = 0.0  # ...and the classifier ignores it
        return net

    def preprocessing(self, raw):
        return np.asarray(raw, dtype=np.float32).reshape(1, 8)

    def reference_preprocessing(self, raw):
        return np.asarray(raw, dtype=np.float32)[None]

    def process_result(self, outputs):
        return {"label": int(np.argmax(outputs["logits"][0]))}
'''


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()


def digits(model: Any, images: np.ndarray) -> np.ndarray:
    return np.array([result["digit"] for result in model.predict_batch(list(images))])


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS / "test_split.npz") as data:
        return data["X"], data["y"]


@pytest.fixture(scope="module")
def training_images() -> list[np.ndarray]:
    """The first 64 images of train.py's training split (calibration never sees the test)."""
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    data = datasets.load_digits()
    train, _ = selection.train_test_split(
        data.images.astype(np.uint8), test_size=0.25, random_state=0, stratify=data.target
    )
    return list(train[:64])


@pytest.fixture(scope="module")
def static_int8(
    tmp_path_factory: pytest.TempPathFactory,
    split: tuple[np.ndarray, np.ndarray],
    training_images: list[np.ndarray],
) -> tuple[VariantResult, str, str]:
    """Digits INT8 static, gated on the whole test split, shipped whatever its speed."""
    before = digest(ARTIFACT)
    output = tmp_path_factory.mktemp("digits") / "int8"
    (result,) = optimize_artifact(
        CONFIG,
        output=output,
        variants=["int8-static"],
        samples=list(split[0]),
        calibration=training_images,
        allow_slower=True,
        **QUICK,
    )
    return result, before, digest(ARTIFACT)


def test_digits_int8_static_keeps_test_accuracy_within_budget(
    static_int8: tuple[VariantResult, str, str], split: tuple[np.ndarray, np.ndarray]
) -> None:
    result, _, _ = static_int8
    assert result.status == "shipped", result.summary()
    images, truth = split
    fp32 = digits(load_model(ARTIFACT), images)
    int8 = digits(load_model(result.artifact), images)
    fp32_accuracy, int8_accuracy = float(np.mean(fp32 == truth)), float(np.mean(int8 == truth))
    changed = int(np.sum(fp32 != int8))
    print(f"\ndigits test split: FP32 {fp32_accuracy:.2%}, INT8 static {int8_accuracy:.2%}, "
          f"{changed} of {len(truth)} predictions changed")
    (check,) = result.budgets
    assert check.passed and check.limit == Budgets().min_top1_agreement
    assert check.measured == pytest.approx(1 - changed / len(truth))  # the gate counted these
    assert changed <= len(truth) * (1 - check.limit)
    assert abs(fp32_accuracy - int8_accuracy) <= 1 - check.limit
    assert result.elementwise[0].max_abs > 1e-3  # quantisation moved the numbers: reported only


def test_the_source_is_untouched_and_the_variant_verifies(
    static_int8: tuple[VariantResult, str, str],
) -> None:
    result, before, after = static_int8
    assert before == after
    assert result.artifact is not None
    verify_checksums(result.artifact)
    parity = json.loads((result.artifact / "parity.json").read_text())
    assert parity["verdict"] == "passed"
    assert [s["stage"] for s in parity["stages"]] == ["preprocessing", "task", "artifact"]
    assert {s["stage"] for s in parity["elementwise"]} >= {"inference", "postprocessing"}
    assert set(parity["subject"]["files"]) == {
        p.name for p in result.artifact.iterdir() if p.name not in ("parity.json", "CHECKSUMS.sha256")
    }
    record = json.loads((result.artifact / "metadata.json").read_text())["optimization"]
    assert record["variant"] == "int8-static" and record["build"]["format"] == "QDQ"
    assert record["cpu"]["flags"] == cpu_info()["flags"]
    assert record["speed"]["speedup"] > 0 and "fp32_s" in record["speed"]
    assert record["speed"]["allowed_slower"] == (record["speed"]["speedup"] < 1.05)
    assert (result.artifact / "model.onnx").read_bytes() != (ARTIFACT / "model.onnx").read_bytes()
    assert load_model(result.artifact).artifact_parity["verdict"] == "passed"


def test_a_budget_tighter_than_achieved_refuses_and_names_layers(
    tmp_path: Path, split: tuple[np.ndarray, np.ndarray], training_images: list[np.ndarray],
    static_int8: tuple[VariantResult, str, str],
) -> None:
    achieved = static_int8[0].budgets[0].measured
    assert achieved < 1.0, "INT8 changed no digit: nothing is tighter than what it achieves"
    (result,) = optimize_artifact(
        CONFIG, output=tmp_path / "int8", variants=["int8-static"], samples=list(split[0]),
        calibration=training_images, min_top1_agreement=1.0, **QUICK,
    )
    assert result.status == "refused" and result.exit_code == 3
    assert not (tmp_path / "int8").exists()
    assert [p for p in tmp_path.iterdir()] == []  # no staging folder left behind
    task = next(s for s in result.report.stages if s.stage == "task")
    assert task.status == "fail"
    assert result.budgets[0].measured == pytest.approx(achieved)
    graph_nodes = {"/0/Conv", "/1/Relu", "/2/Conv", "/3/Relu", "/4/MaxPool", "/5/Flatten", "/6/Gemm"}
    assert result.layers and set(result.layers[0].nodes) <= graph_nodes
    text = result.summary()
    assert "REFUSED" in text and "min_top1_agreement" in text
    assert "layers that diverge most" in text and result.layers[0].label in text


@pytest.fixture(scope="module")
def outlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """The tiny MLP exported to an artifact, and 200 inputs to gate on."""
    from model_agnostic.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("outlier")
    (folder / "outlier.py").write_text(textwrap.dedent(OUTLIER))
    (folder / "config.toml").write_text(
        '[model]\nclass = "outlier.py:Outlier"\n[export]\noutput = "artifact"\n'
        "[verify]\ngenerated = 0\n[optimize]\nmin_top1_agreement = 0.95\n"
    )
    samples = list(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
    assert export_model(folder / "config.toml", folder / "artifact", samples=samples[:4]).report.passed
    return folder / "config.toml", samples


def test_refusal_names_the_layer_that_diverges(tmp_path: Path, outlier: Any) -> None:
    config, samples = outlier
    (result,) = optimize_artifact(config, output=tmp_path / "v", samples=samples, **QUICK)
    assert result.status == "refused"
    worst = result.layers[0]
    assert worst.label == "/2/Gemm (Gemm)" and worst.added > 0.5
    assert set(worst.nodes) == {"/2/Gemm", "/3/Relu", "/4/Gemm"}  # its output's consumer too
    assert all(layer.added < worst.added / 2 for layer in result.layers[1:])


def test_excluding_the_diverging_layer_passes_by_hand_and_by_retry(
    tmp_path: Path, outlier: Any
) -> None:
    config, samples = outlier
    (by_hand,) = optimize_artifact(
        config, output=tmp_path / "hand", samples=samples, allow_slower=True,
        exclude_nodes=["/2/Gemm", "/3/Relu", "/4/Gemm"], **QUICK,
    )
    assert by_hand.status == "shipped", by_hand.summary()
    (retried,) = optimize_artifact(
        config, output=tmp_path / "retry", samples=samples, allow_slower=True, retry_excluding=1,
        **QUICK,
    )
    assert retried.status == "shipped", retried.summary()
    assert [a["verdict"] for a in retried.attempts] == ["failed", "passed"]
    assert retried.attempts[1]["exclude_nodes"] == ["/2/Gemm", "/3/Relu", "/4/Gemm"]
    record = json.loads((tmp_path / "retry" / "metadata.json").read_text())["optimization"]
    assert record["build"]["exclude_nodes"] == ["/2/Gemm", "/3/Relu", "/4/Gemm"]
    assert "kept in float" in retried.summary()


def test_a_variant_not_faster_is_reported_and_not_shipped_unless_allowed(
    tmp_path: Path, split: tuple[np.ndarray, np.ndarray]
) -> None:
    samples, variants = list(split[0][:20]), ["graph", "int8-dynamic"]
    refused = optimize_artifact(
        CONFIG, output=tmp_path / "out", variants=variants, samples=samples,
        min_speedup=1000.0, **QUICK,
    )
    for result in refused:
        assert result.status == "not-faster" and result.exit_code == 5
        assert result.reason.startswith(f"not faster here: {result.speed['speedup']:.2f}x")
        assert "min_speedup" in result.reason and "--allow-slower" in result.reason
        assert result.report.passed  # within budget: speed alone refused it
    assert exit_code(refused) == 5 and not (tmp_path / "out").exists()
    allowed = optimize_artifact(
        CONFIG, output=tmp_path / "out", variants=variants, samples=samples,
        min_speedup=1000.0, allow_slower=True, **QUICK,
    )
    assert [r.status for r in allowed] == ["shipped", "shipped"] and exit_code(allowed) == 0
    assert "not faster here" in allowed[0].summary()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "artifact-graph", "artifact-int8-dynamic"]  # several variants: one folder each
    graph = json.loads((tmp_path / "out" / "artifact-graph" / "metadata.json").read_text())
    record = graph["optimization"]
    assert record["speed"]["allowed_slower"] is True and record["speed"]["min_speedup"] == 1000.0
    assert record["build"]["level"] == "extended"  # portable: no layouts for this CPU only
    dynamic = json.loads((tmp_path / "out" / "artifact-int8-dynamic" / "metadata.json").read_text())
    assert dynamic["optimization"]["build"]["format"].startswith("QOperator")


def test_fp16_on_cpu_is_skipped_with_the_reason(tmp_path: Path, split: Any) -> None:
    (result,) = optimize_artifact(
        CONFIG, output=tmp_path / "fp16", variants=["fp16"], samples=list(split[0][:2]), **QUICK
    )
    assert result.status == "skipped" and result.exit_code == 0
    assert "CPUExecutionProvider" in result.reason and "float32" in result.reason
    assert not (tmp_path / "fp16").exists()
    assert fp16_skip_reason(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    built = build_variant("fp16", ARTIFACT / "model.onnx", tmp_path / "fp16.onnx", session={})
    assert built["weights"] == "float16"  # what a GPU provider would get; runs here too
    half = load_model(ARTIFACT)  # the same hooks on the float16 graph, float32 in and out
    from model_agnostic.backends.onnx_runtime import OnnxModel

    logits = OnnxModel(tmp_path / "fp16.onnx").infer(half.prepare(split[0][0]))["logits"]
    assert logits.dtype == np.float32 and int(np.argmax(logits)) == half.predict(split[0][0])["digit"]


def test_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    for bad, words in (
        ({"variants": ["int4"]}, "unknown"),
        ({"min_top1_agreement": 99.0}, "fraction"),
        ({"labels": "labels.csv"}, "go together"),
    ):
        with pytest.raises(ConfigError, match=words):
            optimize_artifact(CONFIG, output=tmp_path / "x", **bad)
    with pytest.raises(ConfigError, match="cannot replace or sit inside"):
        optimize_artifact(CONFIG, output=ARTIFACT / "inside")


def test_budgets_cover_top_k_flips_and_auroc() -> None:
    task = {
        "logits": {"kind": "classification", "rows": 10, "k": 5, "top1_agree": 10,
                   "topk_agree": 8},
        "probabilities": {"kind": "multilabel", "rows": 10, "decisions": 140,
                          "threshold": 0.5, "flips": 3},
    }
    auroc = {"images": 50, "classes": {
        "a": {"difference": -0.004}, "b": {"difference": -0.03}, "c": {"difference": None}}}
    budgets = Budgets(min_topk_agreement=0.9, max_flips=2, max_auroc_drop=0.02)
    checks = {c.name: c for c in check_budgets(task, budgets, auroc)}
    assert checks["logits top-1 agreement"].passed
    assert not checks["logits top-5 agreement"].passed
    assert not checks["probabilities decision flips"].passed
    assert checks["AUROC drop"].measured == pytest.approx(0.03) and not checks["AUROC drop"].passed
    assert "(b)" in checks["AUROC drop"].detail


def test_the_command_refuses_with_exit_3_and_writes_json(
    tmp_path: Path, split: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    from model_agnostic.cli.optimize import add_parser

    inputs, calibration = tmp_path / "inputs", tmp_path / "calibration"
    inputs.mkdir()
    calibration.mkdir()
    for i, image in enumerate(split[0]):
        np.save(inputs / f"{i:03d}.npy", image)
        if i < 32:
            np.save(calibration / f"{i:03d}.npy", image)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(), ["onnxruntime", "pytorch"])
    args = parser.parse_args([
        "optimize", str(CONFIG), *sorted(str(p) for p in inputs.iterdir()), "--variant", "int8-static",
        "--calibration", str(calibration), "--min-top1-agreement", "1.0",
        "--output", str(tmp_path / "out"), "--json", str(tmp_path / "outcome.json"),
    ])
    assert args.run(args) == 3
    err = capsys.readouterr().err
    assert "int8-static: REFUSED" in err and "layers that diverge most" in err
    (outcome,) = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "refused" and outcome["layers"]
    assert not (tmp_path / "out").exists()


def test_cpu_info_reads_the_instruction_set_flags(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU\nflags\t\t: fpu sse4_2 avx2 avx512_vnni amx_int8\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU" and info["isa"] == ["sse4_2", "avx2", "avx512_vnni", "amx_int8"]
    assert cpu_info(tmp_path / "missing")["flags"] == []


def test_an_artifact_alone_is_gated_against_itself_in_fp32(
    tmp_path: Path, split: tuple[np.ndarray, np.ndarray]
) -> None:
    (result,) = optimize_artifact(
        ARTIFACT, output=tmp_path / "v", samples=list(split[0][:50]), allow_slower=True, **QUICK
    )
    assert result.status == "shipped", result.summary()
    assert "FP32 artifact on ONNX Runtime" in result.report.subject["reference"]
    preprocessing = result.report.stages[0]  # no training pipeline here: the source's check
    assert preprocessing.status == "pass" and "carried from" in preprocessing.reason
