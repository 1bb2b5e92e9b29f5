"""The ``model-agnostic`` command line.

Exit codes: 0 success, 1 a model_agnostic error (the message says what was
wrong), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, ModelAgnosticError

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="model-agnostic: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        return int(args.run(args))
    except ModelAgnosticError as exc:
        print(f"model-agnostic: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _predict(args: argparse.Namespace) -> int:
    if args.forbid_torch:  # any attempt to import torch now fails loudly
        for name in ("torch", "torchvision"):
            sys.modules[name] = None  # type: ignore[assignment]
    from .config import load_model

    model = load_model(args.config, backend=args.backend)
    start = time.perf_counter()
    results = model.predict_batch(args.inputs)
    elapsed = time.perf_counter() - start
    report = {
        "backend": model.backend_name,
        "torch_imported": sys.modules.get("torch") is not None,
        "weights": getattr(model, "weights_source", "unknown"),
        "seconds": round(elapsed, 4),
        "results": [{"input": name, "result": r} for name, r in zip(args.inputs, results)],
    }
    json.dump(report, sys.stdout, indent=args.indent)
    sys.stdout.write("\n")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .config import load_config, load_model
    from .export import DEFAULT_OPSET, export_onnx

    config = load_config(args.config)
    settings = config.export
    output = args.output or config.backend_options("onnxruntime").get("path")
    if not output:
        raise ConfigError(f"{config.path}: export needs --output or an [onnxruntime] path")
    model = load_model(config, backend="pytorch")
    print(f"exporting {type(model).__name__} to {output} ...", file=sys.stderr)
    start = time.perf_counter()
    path = export_onnx(
        model,
        output,
        args.example,
        opset=args.opset or settings.get("opset", DEFAULT_OPSET),
        dynamic_batch=settings.get("dynamic_batch", True),
        exporter=args.exporter,
    )
    size = Path(path).stat().st_size / 2**20
    print(
        f"wrote {path} ({size:.1f} MiB) in {time.perf_counter() - start:.1f} s; "
        "ONNX Runtime agrees with PyTorch on the example",
        file=sys.stderr,
    )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-agnostic",
        description="Run one model on PyTorch or ONNX Runtime, chosen by config.",
        epilog="Exit codes: 0 success, 1 error (message on stderr), 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="run the full pipeline on inputs and print JSON",
        description="Load the model a config describes and print its results for each "
        "input as JSON (one backend call for all inputs).",
    )
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="raw inputs (image files)")
    predict.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    predict.add_argument(
        "--forbid-torch",
        action="store_true",
        help="make 'import torch' fail in this process, proving the path runs without PyTorch",
    )
    predict.set_defaults(run=_predict)

    export = commands.add_parser(
        "export",
        help="export the model to ONNX from the PyTorch backend",
        description="Build the model on the PyTorch backend, export it to ONNX with a "
        "dynamic batch axis, and check ONNX Runtime gives the same outputs on the example.",
    )
    export.add_argument("--example", required=True, help="a raw input used to trace shapes")
    export.add_argument("--output", help="ONNX file (default: the config's [onnxruntime] path)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: config, else 18)")
    export.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="exporter to try first; the other is the fallback (default: torchscript)",
    )
    export.set_defaults(run=_export)

    for sub in (predict, export):
        sub.add_argument("--config", required=True, help="the model's TOML config file")
    predict.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        help="override the config's backend (also: MODEL_AGNOSTIC_BACKEND)",
    )
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
