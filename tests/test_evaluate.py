"""model_agnostic.evaluate and ``model-agnostic evaluate``: AUROC against a brute-force
pairwise count, labels files, result shapes, bootstrap CIs, comparisons, the CLI."""

from __future__ import annotations

import json
import re
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_agnostic.errors import ConfigError, InputError
from model_agnostic.evaluate import (
    auroc,
    compare,
    evaluate,
    read_labels,
    roc_curve,
    scores_of,
)

TESTS = Path(__file__).resolve().parent


def pairwise_auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half: the definition, counted."""
    positives, negatives = score[truth == 1], score[truth == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_the_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 60)
    score = rng.integers(0, 8, 60) / 7  # many ties on purpose
    assert auroc(truth, score) == pytest.approx(pairwise_auroc(truth, score), abs=1e-12)


def test_auroc_is_one_zero_and_none_at_the_edges() -> None:
    truth = np.array([0, 0, 1, 1])
    assert auroc(truth, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auroc(truth, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auroc(truth, np.full(4, 0.5)) == 0.5
    assert auroc(np.ones(4), np.arange(4.0)) is None


def test_roc_curve_runs_corner_to_corner_and_its_area_is_the_auroc() -> None:
    rng = np.random.default_rng(3)
    truth, score = rng.integers(0, 2, 200), rng.normal(size=200)
    score[truth == 1] += 1
    fpr, tpr = roc_curve(truth, score)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(truth, score), abs=1e-12)


def test_chestxray14_labels_are_read_from_finding_labels(tmp_path: Path) -> None:
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID\n"
        "00000001_000.png,Cardiomegaly,0,1\n"
        "00000001_001.png,Cardiomegaly|Emphysema,1,1\n"
        "00000002_000.png,No Finding,0,2\n",
        encoding="utf-8",
    )
    table = read_labels(path, ["Cardiomegaly", "Emphysema", "Hernia"])
    assert {k: v.tolist() for k, v in table.items()} == {
        "00000001_000.png": [1, 0, 0], "00000001_001.png": [1, 1, 0], "00000002_000.png": [0, 0, 0],
    }


def test_generic_labels_take_one_column_per_class(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("image,a,b\nsub/x.png,1,0\ny.png,0,1\n", encoding="utf-8")
    assert {k: v.tolist() for k, v in read_labels(path, ["a", "b"]).items()} == {
        "x.png": [1, 0], "y.png": [0, 1],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,a,b\nx.png,1,0\nz.png,yes,0\n", "line 3: a is 'yes'; expected 0 or 1"),
        ("image,a\n", "has no rows"),
        ("file,a\nx.png,1\n", "no image column"),
        ("image,a\nx.png,1\n", "no column for classes ['b']"),
    ],
)
def test_bad_labels_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_labels(path, ["a", "b"])


def test_scores_are_read_from_every_result_shape() -> None:
    classes = ["a", "b"]
    assert scores_of({"b": 0.2, "a": 0.7, "note": "x"}, classes) == [0.7, 0.2]
    findings = [{"finding": "b", "probability": 0.2}, {"finding": "a", "probability": 0.7}]
    assert scores_of(findings, classes) == [0.7, 0.2]  # CheXNet's process_result
    assert scores_of(np.array([[0.7, 0.2]]), classes) == [0.7, 0.2]
    with pytest.raises(InputError, match=r"no score for \['b'\]"):
        scores_of({"a": 0.7}, classes)
    with pytest.raises(InputError, match="3 numbers for 2 classes"):
        scores_of([1, 2, 3], classes)


class Scores:
    """A stand-in model whose result for each file is looked up in a table."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def predict_batch(self, paths: list[Path]) -> list[dict[str, float]]:
        return [dict(zip("ab", self.table[Path(p).name])) for p in paths]


def labelled_folder(tmp_path: Path, n: int, seed: int = 0) -> tuple[dict[str, Any], dict[str, list[float]]]:
    rng = np.random.default_rng(seed)
    labels, table = {}, {}
    for i in range(n):
        name = f"{i:03d}.png"
        (tmp_path / name).write_bytes(b"")  # evaluate only checks that the file exists
        truth = rng.integers(0, 2, 2)
        labels[name] = truth.astype(np.int8)
        table[name] = (truth + rng.normal(0, 0.8, 2)).tolist()
    return labels, table


def test_evaluate_reports_the_auroc_of_every_class_with_a_ci_around_it(tmp_path: Path) -> None:
    labels, table = labelled_folder(tmp_path, 120)
    result = evaluate(Scores(table), tmp_path, labels, ["a", "b"], bootstrap=300, seed=1)
    for i, name in enumerate("ab"):
        truth = np.array([labels[n][i] for n in sorted(labels)])
        score = np.array([table[n][i] for n in sorted(labels)])
        assert result.auroc[name] == pytest.approx(pairwise_auroc(truth, score), abs=1e-12)
        low, high = result.ci[name]
        assert low < result.auroc[name] < high and high - low < 0.35
    again = evaluate(Scores(table), tmp_path, labels, ["a", "b"], bootstrap=300, seed=1)
    assert again.ci == result.ci  # seeded: the same CI every run


def test_evaluate_skips_labelled_images_that_are_not_in_the_folder(tmp_path: Path) -> None:
    labels, table = labelled_folder(tmp_path, 10)
    labels["missing.png"] = np.array([1, 0], dtype=np.int8)
    result = evaluate(Scores(table), tmp_path, labels, ["a", "b"], bootstrap=0)
    assert len(result.images) == 10 and result.ci["a"] is None
    with pytest.raises(InputError, match="none of the 1 labelled images"):
        evaluate(Scores(table), tmp_path / "nowhere", {"x.png": labels["missing.png"]}, ["a", "b"])


def test_non_finite_scores_are_refused_by_name(tmp_path: Path) -> None:
    labels, table = labelled_folder(tmp_path, 6)
    table["003.png"] = [float("nan"), 0.0]
    with pytest.raises(InputError, match="NaN or infinite, e.g. '003.png'"):
        evaluate(Scores(table), tmp_path, labels, ["a", "b"], bootstrap=0)


def test_compare_counts_flipped_decisions_and_auroc_differences(tmp_path: Path) -> None:
    labels, table = labelled_folder(tmp_path, 40)
    first = evaluate(Scores(table), tmp_path, labels, ["a", "b"], bootstrap=0)
    shifted = {name: [a + 0.3, b] for name, (a, b) in table.items()}
    second = evaluate(Scores(shifted), tmp_path, labels, ["a", "b"], bootstrap=0)
    result = compare(first, second, threshold=0.5)
    expected = sum(1 for a, _ in table.values() if (a >= 0.5) != (a + 0.3 >= 0.5))
    assert result["classes"]["a"]["flips"] == expected > 0
    assert result["classes"]["b"]["flips"] == 0
    assert result["classes"]["a"]["difference"] == pytest.approx(0, abs=1e-12)  # same order
    assert result["classes"]["a"]["max_abs_score_difference"] == pytest.approx(0.3)


def test_the_evaluate_command_writes_json_a_roc_png_and_a_comparison(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from model_agnostic.cli import main

    rng = np.random.default_rng(7)
    folder, rows, means = tmp_path / "images", ["image,red,green,blue"], {}
    folder.mkdir()
    for i in range(30):
        pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        means[f"{i}.png"] = pixels.reshape(-1, 3).mean(axis=0) / 255
        truth = (means[f"{i}.png"] + rng.normal(0, 0.02, 3) > 0.5).astype(int)
        rows.append(f"{i}.png," + ",".join(map(str, truth)))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for name, gamma in (("a.toml", 1.0), ("b.toml", 3.0)):
        (tmp_path / name).write_text(
            f'backend = "pytorch"\n[model]\nclass = "{TESTS.as_posix()}/tiny_models.py:Brightness"\n'
            f"[model.options]\ngamma = {gamma}\n", encoding="utf-8")
    code = main(["evaluate", str(folder), "--config", str(tmp_path / "a.toml"),
                 "--labels", str(tmp_path / "labels.csv"), "--bootstrap", "50",
                 "--compare", str(tmp_path / "b.toml"),
                 "--json", str(tmp_path / "out.json"), "--roc", str(tmp_path / "roc.png")])
    assert code == 0
    report = json.loads((tmp_path / "out.json").read_text())
    truth = np.array([[int(v) for v in row.split(",")[1:]] for row in rows[1:]])
    names = [row.split(",")[0] for row in rows[1:]]
    for i, colour in enumerate(("red", "green", "blue")):
        score = np.array([means[n][i] for n in names])
        expected = pairwise_auroc(truth[:, i], score)
        assert report["classes"][colour]["auroc"] == pytest.approx(expected, abs=1e-6)
        diff = report["compare"]["difference"]["classes"][colour]
        assert diff["difference"] == pytest.approx(0, abs=1e-9)  # gamma keeps the order
    assert report["compare"]["difference"]["flips"] > 0  # ...but moves the threshold
    with Image.open(tmp_path / "roc.png") as roc:
        assert roc.format == "PNG" and roc.size[1] == 640
        colours = np.unique(np.asarray(roc.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 3  # curves, not a blank page


@pytest.mark.parametrize(("options", "message"), [
    ({"batch": 0}, "batch must be a whole number of images >= 1, got 0"),
    ({"batch": 2.5}, "batch must be"),
    ({"bootstrap": -1}, "bootstrap must be a whole number >= 0"),
])
def test_bad_batch_or_bootstrap_is_a_config_error(tmp_path: Path, options: dict[str, Any],
                                                   message: str) -> None:
    labels, table = labelled_folder(tmp_path, 4)
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate(Scores(table), tmp_path, labels, ["a", "b"], **options)
