"""The command line's arguments, one function per command; the runners are in
:mod:`model_agnostic.cli`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..backends import BACKENDS

__all__ = ["add_export", "add_overrides", "add_predict", "add_serve", "add_verify", "add_waiver"]

Run = Callable[[argparse.Namespace], int]


def add_export(commands: Any, run: Run) -> None:
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
    export.add_argument(
        "--format",
        choices=("onnx", "savedmodel"),
        help="savedmodel: also convert the ONNX graph to a TensorFlow SavedModel (onnx2tf, "
        "installed once into a cache) and verify it in the same report (default: [export] "
        "format, else onnx)",
    )
    add_waiver(export)
    export.set_defaults(run=run)


def add_overrides(command: Any) -> None:
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


def add_waiver(command: Any) -> None:
    command.add_argument(
        "--allow-unverified",
        action="append",
        default=[],
        metavar="STAGE",
        choices=("preprocessing", "inference", "postprocessing", "heatmaps", "artifact", "all"),
        help="accept that STAGE could not be verified (repeatable; 'all'); the waiver is "
        "recorded in the report and the artifact with your user name. A failed stage "
        "cannot be waived",
    )


def add_verify(commands: Any, run: Run) -> None:
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
    add_waiver(verify)
    verify.set_defaults(run=run)


def add_predict(commands: Any, run: Run) -> None:
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
    add_overrides(predict)
    predict.add_argument(
        "--forbid-torch",
        action="store_true",
        help="make 'import torch' fail in this process, proving the path runs without PyTorch",
    )
    predict.add_argument(
        "--explain",
        metavar="K|LABELS",
        help="also compute heatmaps (class activation maps; models with cam): of the K "
        "top-scoring classes, or of the comma-separated LABELS; overlays go to --heatmaps",
    )
    predict.add_argument(
        "--heatmaps",
        metavar="DIR",
        default="heatmaps",
        help="with --explain: folder for each heatmap's overlay and raw map, "
        "<input>.<label>.png and .npy (default heatmaps)",
    )
    predict.set_defaults(run=run)


def add_serve(commands: Any, run: Run) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP and gRPC (Open Inference Protocol v2, web page, metrics)",
        description="Serve a config, an artifact or a model repository folder "
        "(<name>/<version>/ artifacts, watched for new versions) on waitress, a multi-threaded "
        "production WSGI server: the v2 REST API with binary tensors, "
        "/v2/models/<name>/predict for raw images, /ui, /metrics, /openapi.json; with "
        "--grpc-port, inference.GRPCInferenceService too. "
        "Options default to the config's [server] section, then the built-in defaults.",
    )
    serve.add_argument("target", help="TOML config, artifact folder or .zip, or model repository")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port (default: off; "
        "0 picks a free one)",
    )
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
    add_overrides(serve)
    serve.add_argument("--no-metrics", action="store_true", help="turn /metrics off")
    serve.add_argument("--no-ui", action="store_true", help="turn the web page off")
    serve.set_defaults(run=run)
