"""A whole ``perf`` run: settings -> what to send -> clients -> the sweep's levels."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..protocol import datatype_of
from .clients import Client, Target, fetch_signature, file_client, tensor_client
from .load import Plan, sweep
from .stats import LevelStats
from .workload import build_inputs, read_files

__all__ = ["ENCODINGS", "TRANSPORTS", "Run", "Settings", "prepare", "run"]

TRANSPORTS = ("http", "grpc")
ENCODINGS = ("binary", "json")


@dataclass(frozen=True)
class Settings:
    """What to load and how.

    Tensors mode (``files`` None): the model's inputs from its metadata, sent over
    ``transport`` (``"http"`` or ``"grpc"``), over HTTP as ``encoding`` (``"binary"`` or
    ``"json"``), shaped by ``shapes`` where variable, from ``data`` files or random with
    ``seed``, asking for ``outputs`` (None: all). Files mode: every file of ``files``
    POSTed to ``/v2/models/{model}/predict``.
    """

    url: str
    model: str
    version: str | None = None
    transport: str = "http"
    encoding: str = "binary"
    files: str | None = None
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    data: Mapping[str | None, Path] = field(default_factory=dict)
    outputs: Sequence[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.transport == "grpc" and self.encoding != "binary":
            raise ConfigError("gRPC always sends raw tensor bytes; --encoding json is HTTP only")
        if self.files is not None and (
            self.transport != "http" or self.shapes or self.data or self.outputs
        ):
            raise ConfigError(
                "--files uploads to /v2/models/{name}/predict over HTTP; it takes no "
                "--transport grpc, --shape, --data or --output"
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"the timeout must be > 0 s, got {self.timeout_s}")

    @property
    def target(self) -> Target:
        return Target(self.url, self.model, self.version, dict(self.headers), self.timeout_s)

    @property
    def mode(self) -> str:
        """``"files"``, ``"grpc"``, ``"http binary"`` or ``"http json"``."""
        if self.files is not None:
            return "files"
        return "grpc" if self.transport == "grpc" else f"http {self.encoding}"


@dataclass
class Run:
    """A finished run: its settings, what each request sent, and the levels measured."""

    settings: Settings
    sent: dict[str, Any]
    levels: list[LevelStats]

    def describe(self) -> dict[str, Any]:
        """The settings and payload, JSON-ready (for reports)."""
        s = self.settings
        return {
            "url": s.url,
            "model": s.model,
            "version": s.version,
            "mode": s.mode,
            "outputs": list(s.outputs) if s.outputs is not None else None,
            "timeout_s": s.timeout_s,
            "sent": self.sent,
        }


def prepare(settings: Settings) -> tuple[Callable[[int], Client], dict[str, Any]]:
    """A client factory for ``settings`` and a description of each request's payload.

    Tensors mode reads the model's metadata first; a server that is down or lacks the
    model raises the remote backend's error here, before any load."""
    target = settings.target
    if settings.files is not None:
        uploads = read_files(settings.files)
        sent = {"files": [u.name for u in uploads], "bytes": sum(len(u.body) for u in uploads)}
        return file_client(target, uploads), sent
    specs = fetch_signature(target, settings.transport)
    inputs = build_inputs(specs, settings.shapes, settings.data, settings.seed)
    sent = {
        "inputs": {
            name: {"shape": list(a.shape), "datatype": datatype_of(a.dtype)}
            for name, a in inputs.items()
        }
    }
    if settings.transport == "grpc":
        from .grpc_client import grpc_client

        return grpc_client(target, inputs, outputs=settings.outputs), sent
    binary = settings.encoding == "binary"
    return tensor_client(target, inputs, binary=binary, outputs=settings.outputs), sent


def run(
    settings: Settings, plan: Plan, progress: Callable[[LevelStats], None] | None = None
) -> Run:
    """Prepare the requests, then sweep ``plan``'s concurrency levels."""
    factory, sent = prepare(settings)
    return Run(settings, sent, sweep(factory, plan, progress))
