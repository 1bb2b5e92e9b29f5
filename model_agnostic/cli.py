"""The ``model-agnostic`` command line: export, verify, predict, inspect, serve.

Exit codes (for CI pipelines): 0 success; 1 an error (the message on stderr says
what was wrong); 2 bad command-line usage; 3 parity failed (verify, or export
refusing to ship); 4 parity unverified: a stage could not be checked and nobody
waived it (``--allow-unverified STAGE``), so export wrote nothing.
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

from .backends import BACKENDS
from .errors import ConfigError, ModelAgnosticError

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
    from .config import apply_overrides, deploy_layers, load_model, resolve

    config = apply_overrides(resolve(args.config), *deploy_layers(args.overrides, args.set))
    model = load_model(config, backend=args.backend)
    start = time.perf_counter()
    results = model.predict_batch(args.inputs)
    report = {
        "backend": model.backend_name,
        "torch_imported": sys.modules.get("torch") is not None,
        "weights": getattr(model, "weights_source", "unknown"),
        "seconds": round(time.perf_counter() - start, 4),
        "results": [{"input": name, "result": r} for name, r in zip(args.inputs, results)],
    }
    print(json.dumps(report, indent=args.indent))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .config import load_config
    from .export.pipeline import export_model

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
    )
    print(result.report.summary(), file=sys.stderr)
    if result.artifact is None:
        kept = f"; the previous artifact at {output} is untouched" if existed else ""
        print(f"model-agnostic: nothing written{kept}", file=sys.stderr)
        return _exit_code(result.report)
    print(f"wrote {result.artifact}" + (" and its .zip" if args.archive else ""), file=sys.stderr)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from .export.pipeline import verify_config

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
    from .inspection import describe, render

    info = describe(args.path)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from .config import apply_overrides, deploy_layers, deploy_section, resolve
    from .serving.server import ServerOptions, build_dataplane, is_repository, serve

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
    from .adapters.ray_serve import serve_on_ray, settings_from_config
    from .config import load_config

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
    _add_export(commands)
    _add_verify(commands)
    _add_predict(commands)
    _add_serve(commands)
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


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="export to ONNX, verify parity, write a torch-free artifact",
        description="Build the model on PyTorch, export it to ONNX (dynamic batch axis), write "
        "a checksummed artifact into a staging folder, verify preprocessing, inference, "
        "post-processing and the artifact itself (run from disk without torch) against "
        "PyTorch on the example, the samples and generated inputs, and move it into place only "
        "if parity holds (exit 3 if a stage failed, 4 if one was not verified; the previous "
        "artifact is then untouched).",
    )
    export.add_argument("--config", required=True, help="the model's TOML config file")
    export.add_argument("--example", help="raw input to trace shapes (default: [export] example)")
    export.add_argument(
        "--sample",
        dest="samples",
        action="append",
        default=[],
        metavar="INPUT",
        help="extra input to verify on (repeatable)",
    )
    export.add_argument("--output", help="artifact folder (default: [export] output)")
    export.add_argument("--archive", action="store_true", help="also write <output>.zip")
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an existing artifact (only once the new one passed)",
    )
    export.add_argument("--opset", type=int, help="ONNX opset (default: [export] opset, else 18)")
    export.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        help="exporter to try first; the other is the fallback",
    )
    export.add_argument(
        "--dynamic-hw",
        action="store_true",
        help="make height and width dynamic too (checked at other sizes)",
    )
    _add_waiver(export)
    export.set_defaults(run=_export)


def _add_overrides(command: Any) -> None:
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a deploy-time setting over the config or artifact, e.g. "
        "onnxruntime.intra_op_num_threads=1 (repeatable; also MODEL_AGNOSTIC_<SECTION>_<KEY> "
        "environment variables; sections: onnxruntime, pytorch, remote, serving, server)",
    )
    command.add_argument(
        "--overrides",
        metavar="FILE",
        help="a TOML file of deploy-time settings ([onnxruntime], [server], ...) layered "
        "over the config or artifact; the environment and --set win over it",
    )


def _add_waiver(command: Any) -> None:
    command.add_argument(
        "--allow-unverified",
        action="append",
        default=[],
        metavar="STAGE",
        choices=("preprocessing", "inference", "postprocessing", "artifact", "all"),
        help="accept that STAGE could not be verified (repeatable; 'all'); the waiver is "
        "recorded in the report and the artifact with your user name. A failed stage "
        "cannot be waived",
    )


def _add_verify(commands: Any) -> None:
    verify = commands.add_parser(
        "verify",
        help="compare PyTorch and ONNX Runtime stage by stage",
        description="Compare the config's PyTorch model with an exported graph or artifact: "
        "preprocessing vs the training-time reference, inference at several batch sizes, "
        "post-processing, and (for an artifact) the artifact run without torch. Exit 0 if "
        "every stage passed ([verify] in the config), 3 if one failed, 4 if one could not "
        "be verified.",
    )
    verify.add_argument("samples", nargs="*", metavar="INPUT", help="inputs to compare on")
    verify.add_argument("--config", required=True, help="the model's TOML config file")
    verify.add_argument("--onnx", help="ONNX file or artifact (default: [onnxruntime] path)")
    verify.add_argument("--report", help="also write the report as JSON to this file")
    _add_waiver(verify)
    verify.set_defaults(run=_verify)


def _add_predict(commands: Any) -> None:
    predict = commands.add_parser(
        "predict",
        help="run the full pipeline on inputs and print JSON",
        description="Load a model from a config file or an artifact and print its result for "
        "each input as JSON (one backend call for all inputs).",
    )
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="raw inputs (image files)")
    predict.add_argument(
        "--config", required=True, help="TOML config file, artifact folder or .zip"
    )
    predict.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        help="override the config's backend (also: MODEL_AGNOSTIC_BACKEND)",
    )
    predict.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    _add_overrides(predict)
    predict.add_argument(
        "--forbid-torch",
        action="store_true",
        help="make 'import torch' fail in this process, proving the path runs without PyTorch",
    )
    predict.set_defaults(run=_predict)


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP (Open Inference Protocol v2, web page, metrics)",
        description="Serve a config, an artifact or a model repository folder "
        "(<name>/<version>/ artifacts, watched for new versions) on waitress, a multi-threaded "
        "production WSGI server: the v2 REST API with binary tensors, "
        "/v2/models/<name>/predict for raw images, /ui, /metrics, /openapi.json. "
        "Options default to the config's [server] section, then the built-in defaults.",
    )
    serve.add_argument("target", help="TOML config, artifact folder or .zip, or model repository")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--threads", type=int, help="worker threads (default 16)")
    serve.add_argument("--max-request-bytes", type=int, help="body size limit (default 64 MiB)")
    serve.add_argument(
        "--read-timeout",
        type=float,
        help="seconds a stalled client may hold a connection (default 30)",
    )
    serve.add_argument(
        "--version-policy", help="repository: latest (default), latest:N, all, specific:1,3"
    )
    serve.add_argument(
        "--poll-interval",
        type=float,
        help="repository: seconds between scans for new versions (default 1)",
    )
    serve.add_argument(
        "--infer-timeout",
        type=float,
        help="seconds a request may wait for its batch to start (default 60)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        help="on SIGTERM, seconds to let accepted requests finish (default 30)",
    )
    serve.add_argument(
        "--auth-token-file",
        help="require 'Authorization: Bearer <token>' for inference; the token "
        "is this file's content (or set $MODEL_AGNOSTIC_AUTH_TOKEN)",
    )
    serve.add_argument(
        "--model-control",
        action="store_true",
        help="enable POST /v2/repository/models/<name>/load|unload (needs a token)",
    )
    serve.add_argument(
        "--backend", choices=sorted(BACKENDS), help="override the config's backend (single model)"
    )
    serve.add_argument(
        "--engine",
        choices=("builtin", "ray"),
        default="builtin",
        help="builtin: this package's server (default); ray: Ray Serve "
        "replicas, settings from the config's [ray] section (needs the "
        "[ray] extra; docs/scaling.md)",
    )
    serve.add_argument(
        "--address",
        help="with --engine ray: the Ray cluster to join "
        "('auto', 'ray://head:10001'); default [ray] address, else a local "
        "Ray instance started and stopped with the command",
    )
    serve.add_argument(
        "--replicas",
        type=int,
        help="with --engine ray: replicas (overrides [ray] num_replicas and autoscaling)",
    )
    _add_overrides(serve)
    serve.add_argument("--no-metrics", action="store_true", help="turn /metrics off")
    serve.add_argument("--no-ui", action="store_true", help="turn the web page off")
    serve.set_defaults(run=_serve)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
