"""``model-agnostic evaluate``: a model over a folder of labelled images, per-class AUROC
with a bootstrap confidence interval, and (``--compare``) the differences between two
models, configs or backends on the same images.

Labels come from ChestX-ray14's ``Data_Entry_2017.csv`` format (``Image Index``,
``Finding Labels`` joined by ``|``, ``No Finding``) or a generic CSV: an ``image`` column
and one 0/1 column per class (or a ``labels`` column joined by ``|``). Scores are read from
``process_result``: a ``{label: score}`` dict, a list of ``{label-ish: str, score-ish:
number}`` items (CheXNet's findings), or numbers in the order of the model's ``labels``.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError
from .model import Model

__all__ = ["Evaluation", "auroc", "compare", "evaluate", "read_labels", "scores_of"]

Progress = Callable[[int, int], None]


@dataclass
class Evaluation:
    """Scores and labels of every image, and the per-class AUROC with its CI."""

    images: list[str]
    classes: list[str]
    labels: np.ndarray  # images x classes, 0/1
    scores: np.ndarray  # images x classes
    auroc: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": len(self.images),
            "classes": {
                name: {
                    "auroc": self.auroc[name],
                    "ci95": self.ci[name],
                    "positives": int(self.labels[:, i].sum()),
                }
                for i, name in enumerate(self.classes)
            },
            "mean_auroc": _mean([v for v in self.auroc.values() if v is not None]),
        }


def read_labels(path: str | os.PathLike[str], classes: Sequence[str]) -> dict[str, np.ndarray]:
    """``{image file name: 0/1 vector over classes}`` from a ChestX-ray14 or generic CSV."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as exc:
        raise ConfigError(f"labels file {str(path)!r} cannot be read: {exc}") from None
    if not rows:
        raise ConfigError(f"labels file {str(path)!r} has no rows")
    columns = set(rows[0])
    index = next((c for c in ("Image Index", "image", "Image", "path") if c in columns), None)
    if index is None:
        raise ConfigError(
            f"{path.name}: no image column; expected 'Image Index' (ChestX-ray14) "
            f"or 'image', got {sorted(columns)}"
        )
    joined = next((c for c in ("Finding Labels", "labels") if c in columns), None)
    missing = [c for c in classes if c not in columns] if joined is None else []
    if missing:
        raise ConfigError(
            f"{path.name}: no column for classes {missing}; expected a "
            "'Finding Labels'/'labels' column or one 0/1 column per class"
        )
    table = {}
    for number, row in enumerate(rows, 2):
        if joined is not None:
            present = {label.strip() for label in (row[joined] or "").split("|")}
            vector = [1 if name in present else 0 for name in classes]
        else:
            vector = [_binary(row[name], path.name, number, name) for name in classes]
        table[Path(row[index]).name] = np.array(vector, dtype=np.int8)
    return table


def evaluate(
    model: Model,
    folder: str | os.PathLike[str],
    labels: Mapping[str, np.ndarray],
    classes: Sequence[str],
    *,
    batch: int = 8,
    bootstrap: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Evaluation:
    """Run ``model`` on every labelled image in ``folder``; AUROC per class with a
    percentile bootstrap 95% CI (``bootstrap`` resamples of the images)."""
    if type(batch) is not int or batch < 1:
        raise ConfigError(f"batch must be a whole number of images >= 1, got {batch!r}")
    if type(bootstrap) is not int or bootstrap < 0:
        raise ConfigError(
            f"bootstrap must be a whole number >= 0 (0: no intervals), got {bootstrap!r}"
        )
    folder = Path(folder)
    names = sorted(name for name in labels if (folder / name).is_file())
    if not names:
        raise InputError(f"none of the {len(labels)} labelled images is in {str(folder)!r}")
    scores = []
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        results = model.predict_batch([folder / name for name in chunk])
        scores += [scores_of(result, classes) for result in results]
        if progress is not None:
            progress(min(start + batch, len(names)), len(names))
    result = Evaluation(
        names,
        list(classes),
        np.stack([labels[n] for n in names]),
        np.array(scores, dtype=np.float64),
    )
    bad = ~np.isfinite(result.scores).all(axis=1)
    if bad.any():
        raise InputError(
            f"the model scored {int(bad.sum())} image(s) NaN or infinite, e.g. "
            f"{names[int(np.argmax(bad))]!r}; AUROC needs finite scores"
        )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), (bootstrap, len(names))) if bootstrap else None
    for i, name in enumerate(classes):
        truth, score = result.labels[:, i], result.scores[:, i]
        result.auroc[name] = auroc(truth, score)
        result.ci[name] = _bootstrap_ci(truth, score, draws)
    return result


def compare(first: Evaluation, second: Evaluation, threshold: float = 0.5) -> dict[str, Any]:
    """Per-class AUROC difference (second - first) and decisions flipped at ``threshold``."""
    if first.images != second.images or first.classes != second.classes:
        raise InputError("the two evaluations cover different images or classes")
    flips = (first.scores >= threshold) != (second.scores >= threshold)
    return {
        "threshold": threshold,
        "images": len(first.images),
        "classes": {
            name: {
                "auroc_first": first.auroc[name],
                "auroc_second": second.auroc[name],
                "difference": _difference(first.auroc[name], second.auroc[name]),
                "flips": int(flips[:, i].sum()),
                "max_abs_score_difference": float(
                    np.abs(first.scores[:, i] - second.scores[:, i]).max()
                ),
            }
            for i, name in enumerate(first.classes)
        },
        "flips": int(flips.sum()),
        "flipped_images": [first.images[i] for i in np.flatnonzero(flips.any(axis=1))],
    }


def auroc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None when only one
    class is present."""
    truth = np.asarray(truth).astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(np.asarray(score, dtype=np.float64))
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct threshold."""
    order = np.argsort(-np.asarray(score), kind="stable")
    truth = np.asarray(truth).astype(bool)[order]
    ordered = np.asarray(score)[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), truth.size - 1]
    tps, fps = np.cumsum(truth)[last], np.cumsum(~truth)[last]
    return (np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)])


def scores_of(result: Any, classes: Sequence[str]) -> list[float]:
    """A result's score for each class (see the module docstring for the shapes read)."""
    if isinstance(result, Mapping):
        table = {str(k): v for k, v in result.items() if _is_number(v)}
    elif (
        isinstance(result, (list, tuple)) and result and all(isinstance(i, Mapping) for i in result)
    ):
        table = {}
        for item in result:
            label = next((v for v in item.values() if isinstance(v, str)), None)
            value = next((v for v in item.values() if _is_number(v)), None)
            if label is not None and value is not None:
                table[label] = value
    else:
        flat = np.asarray(result, dtype=np.float64).reshape(-1)
        if flat.size != len(classes):
            raise InputError(
                f"the model's result has {flat.size} numbers for {len(classes)} "
                "classes; expected a score per class"
            )
        return flat.tolist()
    missing = [name for name in classes if name not in table]
    if missing:
        raise InputError(f"the model's result has no score for {missing}; it has {sorted(table)}")
    return [float(table[name]) for name in classes]


def progress_bar(stream: Any = sys.stderr) -> Progress:
    """A one-line progress bar on ``stream`` (a line per 10% when it is not a terminal)."""
    shown = {"tenth": -1}

    def show(done: int, total: int) -> None:
        if stream.isatty():
            filled = int(30 * done / total)
            stream.write(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} images")
            if done == total:
                stream.write("\n")
        elif (tenth := 10 * done // total) > shown["tenth"]:
            shown["tenth"] = tenth
            stream.write(f"  {done}/{total} images\n")
        stream.flush()

    return show


def _bootstrap_ci(
    truth: np.ndarray, score: np.ndarray, draws: np.ndarray | None
) -> tuple[float, float] | None:
    if draws is None or auroc(truth, score) is None:
        return None
    values = [v for rows in draws if (v := auroc(truth[rows], score[rows])) is not None]
    if len(values) < 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _difference(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else second - first


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank of the tie
    return ranks


def _binary(text: str, file: str, line: int, name: str) -> int:
    value = (text or "").strip()
    if value not in ("0", "1"):
        raise ConfigError(f"{file} line {line}: {name} is {value!r}; expected 0 or 1")
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None
