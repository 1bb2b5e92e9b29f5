"""``model-agnostic optimize``: the command line over :mod:`model_agnostic.export.optimize`
— faster variants of a verified artifact, each gated on task budgets and on speed.

Exit codes: 0 every variant shipped (or skipped, with its reason); 1 an error; 3 a
variant outside its budget (nothing written for it); 4 a variant whose gate could not
decide; 5 a variant within budget but not faster here (``--allow-slower`` ships it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(commands: Any, backends: list[str]) -> None:
    """Register ``optimize`` on the CLI's sub-command parser."""
    command = commands.add_parser(
        "optimize",
        help="faster variants of an artifact (graph, INT8, FP16), gated on task budgets",
        description="Build variants of a verified FP32 artifact (SOURCE: the artifact folder, "
        "or the training config whose [export] output is it), check each against the FP32 "
        "PyTorch reference on task-level budgets (element-wise errors are reported, not "
        "gated), time it against the FP32 artifact here, and write it as a new artifact "
        "only if it is within budget and faster. The source is never modified. Settings "
        "default to the config's [optimize] section.",
    )
    command.add_argument("source", help="artifact folder, or the training config.toml")
    command.add_argument(
        "inputs", nargs="*", help="samples to count the budgets on (.npy arrays or files)"
    )
    command.add_argument(
        "--config", help="training config for the PyTorch reference (when SOURCE is an artifact)"
    )
    command.add_argument(
        "--variant",
        action="append",
        help="graph, int8-dynamic, int8-static or fp16 (repeatable; default: [optimize] "
        "variants, else int8-static)",
    )
    command.add_argument(
        "--output", help="the new artifact (several variants: a folder for one each)"
    )
    command.add_argument("--calibration", help="folder of calibration inputs (INT8 static)")
    command.add_argument("--calibration-size", type=int, help="calibration inputs used at most")
    channel = command.add_mutually_exclusive_group()
    channel.add_argument(
        "--per-channel", dest="per_channel", action="store_const", const=True, default=None
    )
    channel.add_argument("--no-per-channel", dest="per_channel", action="store_const", const=False)
    command.add_argument("--exclude-op-types", help="op types kept in float, comma-separated")
    command.add_argument("--exclude-nodes", help="node names kept in float, comma-separated")
    command.add_argument(
        "--retry-excluding",
        type=int,
        default=0,
        metavar="N",
        help="on a failed budget, retry up to N times, each time keeping the layer that "
        "adds most error in float",
    )
    for flag, kind in (
        ("--min-top1-agreement", float),
        ("--min-topk-agreement", float),
        ("--max-flips", int),
        ("--max-auroc-drop", float),
        ("--min-speedup", float),
    ):
        command.add_argument(flag, type=kind, help=f"[optimize] {flag[2:].replace('-', '_')}")
    command.add_argument("--labels", help="labels CSV for the AUROC budget (with --images)")
    command.add_argument("--images", help="folder of the labelled images")
    command.add_argument(
        "--allow-slower", action="store_true", help="ship a variant that is not faster here"
    )
    command.add_argument(
        "--speed-rows", type=int, help="rows per timed call (default: the first sample's)"
    )
    command.add_argument("--force", action="store_true", help="replace an existing output")
    command.add_argument("--json", metavar="FILE", help="write every variant's outcome as JSON")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from ..export.optimize import exit_code, optimize_artifact
    from ..export.optimize.calibration import read_input

    results = optimize_artifact(
        args.source,
        config=args.config,
        output=args.output,
        samples=[read_input(path) for path in args.inputs],
        calibration=args.calibration,
        force=args.force,
        allow_slower=args.allow_slower,
        retry_excluding=args.retry_excluding,
        speed_rows=args.speed_rows,
        progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
        variants=args.variant,
        calibration_size=args.calibration_size,
        per_channel=args.per_channel,
        exclude_op_types=_names(args.exclude_op_types),
        exclude_nodes=_names(args.exclude_nodes),
        min_top1_agreement=args.min_top1_agreement,
        min_topk_agreement=args.min_topk_agreement,
        max_flips=args.max_flips,
        max_auroc_drop=args.max_auroc_drop,
        min_speedup=args.min_speedup,
        labels=args.labels,
        images=args.images,
    )
    for result in results:
        print(result.summary(), file=sys.stderr)
    if args.json:
        document = [result.to_dict() for result in results]
        Path(args.json).write_text(json.dumps(document, indent=2, default=str) + "\n")
    return exit_code(results)


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None
