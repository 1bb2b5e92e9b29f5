"""``model-agnostic evaluate``: the command line over :mod:`.evaluate` — a table on
stdout, the numbers as JSON, the ROC curves as a PNG drawn with Pillow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["add_parser", "roc_png", "table"]

# Distinct colours for up to 14 curves (CheXNet's findings), then they repeat.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 128, 128),
    (90, 90, 0),
)


def add_parser(commands: Any, backends: list[str]) -> None:
    """Register ``evaluate`` on the CLI's sub-command parser."""
    command = commands.add_parser(
        "evaluate",
        help="per-class AUROC over a labelled folder; --compare two models or backends",
        description="Run a model over every image of FOLDER named in --labels (ChestX-ray14's "
        "Data_Entry_2017.csv, or a CSV with an 'image' column and one 0/1 column per class) "
        "and report per-class AUROC with a bootstrap 95% confidence interval. With "
        "--compare, run a second config (or the same with --compare-backend) on the same "
        "images and report AUROC differences and the decisions that flip at --threshold.",
    )
    command.add_argument("folder", help="folder of images")
    command.add_argument("--config", required=True, help="TOML config file, artifact or .zip")
    command.add_argument("--labels", required=True, help="labels CSV")
    command.add_argument("--backend", choices=backends, help="override the config's backend")
    command.add_argument("--compare", metavar="CONFIG", help="a second config or artifact")
    command.add_argument("--compare-backend", choices=backends, help="backend of the second model")
    command.add_argument(
        "--classes", help="comma-separated class names (default: the model's labels)"
    )
    command.add_argument("--limit", type=int, help="only the first N labelled images found")
    command.add_argument("--batch", type=int, default=8, help="images per call (default 8)")
    command.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples for the CI (default 1000; 0: none)"
    )
    command.add_argument(
        "--threshold", type=float, default=0.5, help="decision threshold for --compare flips"
    )
    command.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    command.add_argument("--roc", metavar="FILE.png", help="draw the ROC curves into a PNG")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..config import load_model
    from ..evaluate import compare, evaluate, progress_bar, read_labels

    model = load_model(args.config, backend=args.backend)
    classes = _classes(args.classes, model)
    labels = read_labels(args.labels, classes)
    if args.limit is not None:
        present = sorted(n for n in labels if (Path(args.folder) / n).is_file())[: args.limit]
        labels = {name: labels[name] for name in present}
    options = {"batch": args.batch, "bootstrap": args.bootstrap}
    print(f"evaluating {args.config} ({model.backend_name})", file=sys.stderr)
    first = evaluate(model, args.folder, labels, classes, progress=progress_bar(), **options)
    report: dict[str, Any] = {
        "model": str(args.config),
        "backend": model.backend_name,
        **first.to_dict(),
    }
    print(table(report))
    if args.compare is not None or args.compare_backend is not None:
        other = load_model(args.compare or args.config, backend=args.compare_backend)
        print(f"evaluating {args.compare or args.config} ({other.backend_name})", file=sys.stderr)
        second = evaluate(other, args.folder, labels, classes, progress=progress_bar(), **options)
        difference = compare(first, second, args.threshold)
        report["compare"] = {
            "model": str(args.compare or args.config),
            "backend": other.backend_name,
            **second.to_dict(),
            "difference": difference,
        }
        print(_difference_table(difference))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.roc:
        roc_png(first, args.roc)
        print(f"wrote {args.roc}", file=sys.stderr)
    return 0


def _classes(text: str | None, model: Any) -> list[str]:
    if text:
        return [name.strip() for name in text.split(",") if name.strip()]
    labels = getattr(model, "labels", None)
    if not labels:
        raise ConfigError(f"{type(model).__name__} has no 'labels'; pass --classes A,B,...")
    return [str(name) for name in labels]


def table(report: dict[str, Any]) -> str:
    """The per-class AUROC table of an evaluation's ``to_dict()``."""
    lines = [f"{'class':<22} {'positives':>9} {'AUROC':>7}  95% CI"]
    for name, row in report["classes"].items():
        ci = row["ci95"]
        lines.append(
            f"{name:<22} {row['positives']:>9} {_number(row['auroc']):>7}  "
            + (f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-")
        )
    lines.append(f"{'mean':<22} {report['images']:>9} {_number(report['mean_auroc']):>7}")
    return "\n".join(lines)


def _difference_table(difference: dict[str, Any]) -> str:
    lines = [
        f"\n{'class':<22} {'AUROC diff':>10} {'max |score diff|':>17} "
        f"{'flips @' + format(difference['threshold'], 'g'):>10}"
    ]
    for name, row in difference["classes"].items():
        diff = row["difference"]
        lines.append(
            f"{name:<22} {'-' if diff is None else format(diff, '+.4f'):>10} "
            f"{row['max_abs_score_difference']:>17.3g} {row['flips']:>10}"
        )
    lines.append(
        f"{difference['flips']} decisions flipped over "
        f"{len(difference['flipped_images'])} of {difference['images']} images"
    )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def roc_png(evaluation: Any, path: str | Path, size: int = 640) -> None:
    """Draw every class's ROC curve (and the chance diagonal) into a PNG at ``path``."""
    from PIL import Image, ImageDraw

    from ..evaluate import roc_curve

    margin, legend = 48, 190
    image = Image.new("RGB", (size + legend, size), "white")
    draw = ImageDraw.Draw(image)
    side = size - 2 * margin

    def point(fpr: float, tpr: float) -> tuple[float, float]:
        return margin + fpr * side, size - margin - tpr * side

    draw.rectangle((*point(0, 1), *point(1, 0)), outline="black")
    draw.line((*point(0, 0), *point(1, 1)), fill=(190, 190, 190))
    for tick in (0.0, 0.5, 1.0):
        x, y = point(tick, 0)
        draw.text((x - 8, y + 6), f"{tick:g}", fill="black")
        x, y = point(0, tick)
        draw.text((x - 24, y - 6), f"{tick:g}", fill="black")
    draw.text((margin + side / 2 - 60, size - 20), "false positive rate", fill="black")
    draw.text((4, 8), "true positive rate", fill="black")
    row = 0
    for i, name in enumerate(evaluation.classes):
        if evaluation.auroc[name] is None:
            continue
        colour = PALETTE[i % len(PALETTE)]
        fpr, tpr = roc_curve(evaluation.labels[:, i], evaluation.scores[:, i])
        draw.line([point(x, y) for x, y in zip(fpr, tpr)], fill=colour, width=2)
        draw.text(
            (size + 4, margin + 16 * row), f"{name} {evaluation.auroc[name]:.3f}", fill=colour
        )
        row += 1
    image.save(path, format="PNG")
