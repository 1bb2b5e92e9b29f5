"""``model-agnostic perf``: the command line over :mod:`..perf` — a table on stdout, the
numbers as JSON, throughput and latency against concurrency as a PNG."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError

__all__ = ["add_parser"]

_DEFAULT_URLS = {"http": "http://127.0.0.1:8000", "grpc": "127.0.0.1:8001"}


def add_parser(commands: Any, backends: list[str]) -> None:
    """Register ``perf`` on the CLI's sub-command parser (``backends`` is not used)."""
    command = commands.add_parser(
        "perf",
        help="load-test an Open Inference Protocol server: throughput, latency, errors",
        description="Closed-loop load on MODEL of any Open Inference Protocol server (ours, "
        "Triton, KServe, MLServer): each of --concurrency clients, on a connection of its "
        "own, sends its next request when the last is answered. Tensors (the default) are "
        "shaped and typed by the model's metadata, random or from --data; --files uploads "
        "images to /v2/models/MODEL/predict instead. Prints a table; exits 1 when any "
        "measured request failed (every failure is counted by kind, none stops the run).",
    )
    command.add_argument("model", help="the model's name on the server")
    command.add_argument(
        "--url", help="http://host:port, or host:port for gRPC (default: 127.0.0.1:8000/8001)"
    )
    command.add_argument("--model-version", help="a model version to pin")
    command.add_argument("--transport", choices=("http", "grpc"), default="http")
    command.add_argument(
        "--encoding", choices=("binary", "json"), default="binary", help="HTTP tensors"
    )
    command.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="shape of an input with variable dimensions (repeatable)",
    )
    command.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]FILE.npy",
        help="an input's values from an .npy file (default: seeded random values)",
    )
    command.add_argument(
        "--output", action="append", metavar="NAME", help="request this output only (repeatable)"
    )
    command.add_argument("--files", metavar="PATH", help="a file or folder of files to upload")
    command.add_argument(
        "--concurrency", default="1", metavar="1,2,4,8", help="the levels to sweep (default 1)"
    )
    amount = command.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="requests per level (default: 100)")
    amount.add_argument("--duration", type=float, metavar="SECONDS", help="seconds per level")
    command.add_argument("--warmup", type=int, default=1, help="warm-up requests per client")
    command.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    command.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header (gRPC metadata) on every request",
    )
    command.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    command.add_argument("--json", metavar="FILE", help="write the results as JSON")
    command.add_argument("--plot", metavar="FILE.png", help="draw throughput and latency")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .. import perf

    settings = perf.Settings(
        url=args.url or _DEFAULT_URLS[args.transport],
        model=args.model,
        version=args.model_version,
        transport=args.transport,
        encoding=args.encoding,
        files=args.files,
        shapes=perf.parse_shapes(args.shape),
        data=perf.parse_data(args.data),
        outputs=args.output,
        headers=_headers(args.header),
        timeout_s=args.timeout,
        seed=args.seed,
    )
    plan = perf.Plan(
        concurrency=_levels(args.concurrency),
        requests=args.requests,
        duration_s=args.duration,
        warmup=args.warmup,
    )
    print(f"perf: {settings.model} at {settings.url}, {settings.mode}", file=sys.stderr)

    def progress(level: Any) -> None:
        print(
            f"  concurrency {level.concurrency}: {level.ok} ok, {level.failed} failed, "
            f"{level.throughput:.2f} req/s",
            file=sys.stderr,
            flush=True,
        )

    done = perf.run(settings, plan, progress)
    print(perf.table(done.levels))
    if args.json:
        perf.write_json(args.json, perf.document(done.levels, done.describe()))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        perf.plot_png(
            done.levels, args.plot, f"{settings.model} at {settings.url}, {settings.mode}"
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    failed = sum(level.failed for level in done.levels)
    if failed:
        total = failed + sum(level.ok for level in done.levels)
        print(f"perf: {failed} of {total} measured requests failed", file=sys.stderr)
    return 1 if failed else 0


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ConfigError(f"--concurrency {text!r} must be integers >= 1, e.g. 1,2,4,8")
    return levels


def _headers(texts: list[str]) -> dict[str, str]:
    headers = {}
    for text in texts:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header {text!r} must be 'NAME: VALUE'")
        headers[name.strip()] = value.strip()
    return headers
