"""The ``model-agnostic`` command line: export, verify, predict, inspect, serve, evaluate,
optimize, perf.

Exit codes (for CI pipelines): 0 success; 1 an error (the message on stderr says
what was wrong); 2 bad command-line usage; 3 parity failed (verify, or export
refusing to ship; optimize: a variant over its budget); 4 parity unverified: a stage
could not be checked and nobody waived it (``--allow-unverified STAGE``), so export wrote
nothing; 5 (optimize) a variant not faster here, not shipped without ``--allow-slower``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backends import BACKENDS
from ..errors import ConfigError, ModelAgnosticError
from .arguments import add_export, add_predict, add_serve, add_verify
from .evaluate import add_parser as add_evaluate
from .optimize import add_parser as add_optimize
from .perf import add_parser as add_perf

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PARITY", "EXIT_UNVERIFIED"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARITY, EXIT_UNVERIFIED = 0, 1, 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="model-agnostic: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        return int(args.run(args))
    except ModelAgnosticError as exc:
        print(f"model-agnostic: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _predict(args: argparse.Namespace) -> int:
    if args.forbid_torch:  # any attempt to import torch now fails loudly
        for name in ("torch", "torchvision"):
            sys.modules[name] = None  # type: ignore[assignment]
    from ..config import apply_overrides, deploy_layers, load_model, resolve

    config = apply_overrides(resolve(args.config), *deploy_layers(args.overrides, args.set))
    model = load_model(config, backend=args.backend)
    start = time.perf_counter()
    explain = _explain_option(args.explain)
    if explain is not False:
        _refuse_clashing_stems(args.inputs)
    results = model.predict_batch(args.inputs, explain=explain)
    if explain is not False:
        results = [
            _save_heatmaps(r, name, Path(args.heatmaps)) for r, name in zip(results, args.inputs)
        ]
    report = {
        "backend": model.backend_name,
        "torch_imported": sys.modules.get("torch") is not None,
        "weights": getattr(model, "weights_source", "unknown"),
        "seconds": round(time.perf_counter() - start, 4),
        "results": [{"input": name, "result": r} for name, r in zip(args.inputs, results)],
    }
    print(json.dumps(report, indent=args.indent))
    return EXIT_OK


def _explain_option(text: str | None) -> bool | int | list[str]:
    if text is None:
        return False
    if text.isdigit():
        return int(text)
    return [label.strip() for label in text.split(",") if label.strip()]


def _refuse_clashing_stems(inputs: list[str]) -> None:
    """Heatmaps are written as ``<stem>.<label>``: two inputs with one stem would clash."""
    seen: dict[str, str] = {}
    for source in inputs:
        other = seen.setdefault(Path(source).stem, source)
        if other != source:
            raise ConfigError(
                f"--explain writes <image name>.<label>.png, and {other!r} and {source!r} "
                "have the same name: their heatmaps would overwrite each other; rename one "
                "or run them separately with their own --heatmaps folders"
            )


def _save_heatmaps(explained: Any, source: str, folder: Path) -> dict[str, Any]:
    """The explanation as JSON, each heatmap's overlay (PNG) and raw map (.npy) written to
    ``folder`` and named there (and the overlay on stderr)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    heatmaps = []
    for heatmap in explained.heatmaps:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in heatmap.label)
        stem = f"{Path(source).stem}.{safe}"
        overlay = heatmap.save_overlay(folder / f"{stem}.png")
        np.save(folder / f"{stem}.npy", heatmap.map, allow_pickle=False)
        print(
            f"heatmap of {heatmap.label} ({heatmap.score:.4f}) over {source}: {overlay}",
            file=sys.stderr,
        )
        heatmaps.append(
            {
                **heatmap.to_dict(overlay=False),
                "map": str(folder / f"{stem}.npy"),
                "overlay": str(overlay),
            }
        )
    return {"result": explained.result, "heatmaps": heatmaps}


def _export(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..export.pipeline import export_model

    config = load_config(args.config)
    output = Path(args.output or config.export.get("output") or "")
    if not str(output) or output == Path("."):
        raise ConfigError(f"{config.path}: export needs --output or [export] output")
    print(f"exporting {config.model_class} to {output}", file=sys.stderr)
    existed = output.exists()
    result = export_model(
        config,
        output,
        example=args.example,
        samples=args.samples,
        archive=args.archive,
        force=args.force,
        allow_unverified=args.allow_unverified,
        waiver_flag="--allow-unverified",
        progress=_progress,
        opset=args.opset,
        exporter=args.exporter,
        dynamic_hw=True if args.dynamic_hw else None,
        format=args.format,
    )
    print(result.report.summary(), file=sys.stderr)
    if result.artifact is None:
        kept = f"; the previous artifact at {output} is untouched" if existed else ""
        print(f"model-agnostic: nothing written{kept}", file=sys.stderr)
        return _exit_code(result.report)
    print(f"wrote {result.artifact}" + (" and its .zip" if args.archive else ""), file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from ..export.pipeline import verify_config

    report = verify_config(
        args.config,
        args.onnx,
        args.samples,
        progress=_progress,
        allow_unverified=args.allow_unverified,
        waiver_flag="--allow-unverified",
    )
    print(report.summary(), file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return _exit_code(report)


def _exit_code(report: Any) -> int:
    """0 passed (or every unverified stage waived), 3 failed, 4 unverified."""
    if report.verdict == "failed":
        return EXIT_PARITY
    return EXIT_OK if report.shippable else EXIT_UNVERIFIED


def _inspect(args: argparse.Namespace) -> int:
    from ..inspection import describe, render

    info = describe(args.path)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, deploy_layers, deploy_section, resolve
    from ..serving.server import ServerOptions, build_dataplane, is_repository, serve

    target = Path(args.target)
    layers = deploy_layers(args.overrides, args.set)
    if is_repository(target):
        section = deploy_section(layers, "server")
    else:
        section = apply_overrides(resolve(target), *layers).server
    options = ServerOptions.from_config(
        section,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        threads=args.threads,
        max_request_bytes=args.max_request_bytes,
        read_timeout_s=args.read_timeout,
        version_policy=args.version_policy,
        poll_interval_s=args.poll_interval,
        infer_timeout_s=args.infer_timeout,
        drain_timeout_s=args.drain_timeout,
        auth_token_file=args.auth_token_file,
        model_control=args.model_control or None,
    )
    if args.engine == "ray":
        if options.grpc_port is not None:
            raise ConfigError(
                "gRPC (--grpc-port, [server] grpc_port) is served by the built-in engine only"
            )
        return _serve_on_ray(args, target, options)
    if args.address or args.replicas is not None:
        raise ConfigError("--address and --replicas need --engine ray")
    _progress(f"loading {target}")
    dataplane = build_dataplane(
        target,
        backend=args.backend,
        options=options,
        metrics=not args.no_metrics,
        ui=not args.no_ui,
        overrides=layers,
    )
    serve(dataplane, options)
    return EXIT_OK


def _serve_on_ray(args: argparse.Namespace, target: Path, options: Any) -> int:
    """``serve --engine ray``: the same endpoints from Ray Serve replicas (docs/scaling.md)."""
    from ..adapters.ray_serve import serve_on_ray, settings_from_config
    from ..config import load_config

    if args.no_metrics or args.no_ui:
        raise ConfigError(
            "--no-metrics and --no-ui apply to the built-in engine only; "
            "with --engine ray every replica serves /metrics and /ui"
        )
    section = load_config(target).sections.get("ray", {}) if target.suffix == ".toml" else {}
    settings = settings_from_config(section)
    if args.replicas is not None:
        settings.pop("autoscaling_config", None)
        settings["num_replicas"] = args.replicas
    serve_on_ray(
        target,
        address=args.address or section.get("address"),
        host=options.host,
        port=options.port,
        backend=args.backend,
        options=options,
        **settings,
    )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-agnostic",
        description="Write a model once; export it to ONNX with proof of parity; run it on "
        "PyTorch or ONNX Runtime, chosen by config.",
        epilog="Exit codes: 0 success, 1 error (message on stderr), 2 bad usage, 3 parity "
        "failed, 4 parity unverified (a stage was not checked and not waived).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_export(commands, _export)
    add_verify(commands, _verify)
    add_predict(commands, _predict)
    add_serve(commands, _serve)
    add_evaluate(commands, sorted(BACKENDS))
    add_optimize(commands, sorted(BACKENDS))
    add_perf(commands, sorted(BACKENDS))
    inspect = commands.add_parser(
        "inspect",
        help="describe an artifact or .onnx file",
        description="Show inputs, outputs, opset, op counts, size and the parity summary of an "
        "artifact folder, its .zip, or a plain .onnx file.",
    )
    inspect.add_argument("path", help="artifact folder, .zip, or .onnx file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=_inspect)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
