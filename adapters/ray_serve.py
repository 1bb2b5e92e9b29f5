"""Ray Serve: any model (config, artifact or repository) as a Ray Serve application.

    from ray import serve
    from model_agnostic.adapters.ray_serve import deployment

    serve.run(deployment("examples/chexnet/artifacts/chexnet", num_replicas=2))

Each replica loads the model itself and answers every request with the I/O-free data plane,
so a Ray Serve application speaks the same Open Inference Protocol endpoints, ``/predict``,
``/metrics`` and ``/ui`` as ``model-agnostic serve``. Concurrent requests are merged with
Ray's own ``@serve.batch`` (not the data plane's batcher), counted in rows and split back
by rows. :func:`serve_on_ray` runs it until Ctrl-C (``model-agnostic serve --engine ray``).
See ``docs/scaling.md``.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._deps import require
from ..config import SCHEMA
from ..errors import ConfigError, InferenceError, ServingError
from ..serving.batching import (
    DEFAULTS,
    NullObserver,
    batch_options,
    request_key,
    run_merged,
)
from ..serving.dataplane import DataPlane, Request, Response
from ..serving.repository import ModelRepository, ServedVersion
from ..serving.server import ServerOptions, build_dataplane, until_stopped

if TYPE_CHECKING:
    from ray.serve import Application

__all__ = ["deployment", "serve_on_ray", "settings_from_config"]

Arrays = dict[str, np.ndarray]
Outcome = Arrays | BaseException
#: The header naming the replica that answered (Ray's replica id).
REPLICA_HEADER = "X-Replica"
#: Keys of a config's ``[ray]`` section and the :func:`deployment` argument each sets.
RAY_KEYS = {
    "num_replicas": "num_replicas",
    "max_ongoing_requests": "max_ongoing_requests",
    "max_queued_requests": "max_queued_requests",
    "num_cpus": "ray_actor_options",
    "autoscaling": "autoscaling_config",
}


# --------------------------------------------------------------------------- batching
@dataclass(eq=False)
class _Item:
    """One request's arrays on their way through ``@serve.batch``."""

    served: ServedVersion
    inputs: Arrays
    rows: int
    key: frozenset[tuple[str, np.dtype, tuple[int, ...]]]
    limit: int  # the version's own most rows per call
    weight: int  # rows counted against Ray's max_batch_size (capped, so never refused)
    arrival: float


def _weight(items: list[_Item]) -> int:
    """``batch_size_fn`` for ``@serve.batch``: rows, not calls."""
    return sum(item.weight for item in items)


def run_items(items: list[_Item], dataplane: DataPlane) -> list[Outcome]:
    """Run one Ray batch: merge compatible requests of one version into calls of at most
    its ``max_batch_size`` rows; one outcome (outputs or an exception) per request."""
    groups: dict[tuple[int, object], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault((id(item.served), item.key), []).append(index)
    outcomes: list[Outcome | None] = [None] * len(items)
    for indices in groups.values():
        for chunk in _chunks(indices, items):
            for index, outcome in zip(chunk, _run_chunk([items[i] for i in chunk], dataplane)):
                outcomes[index] = outcome
    return [
        outcome if outcome is not None else InferenceError("request was not run")
        for outcome in outcomes
    ]


def _chunks(indices: list[int], items: list[_Item]) -> list[list[int]]:
    """Greedy, in order: no chunk over its version's limit; an oversized request alone."""
    chunks: list[list[int]] = []
    rows = 0
    for index in indices:
        item = items[index]
        if not chunks or rows + item.rows > item.limit:
            chunks.append([])
            rows = 0
        chunks[-1].append(index)
        rows += item.rows
    return chunks


def _run_chunk(chunk: list[_Item], dataplane: DataPlane) -> list[Outcome]:
    """One backend call for a chunk, through the batcher's own merge, split and isolation."""
    served = chunk[0].served
    observer = dataplane.metrics.observer(served.name) if dataplane.metrics else NullObserver()
    started = time.monotonic()
    for item in chunk:
        observer.queue_wait(started - item.arrival)
    return run_merged(
        served.model.infer, served.name, [(item.inputs, item.rows) for item in chunk], observer
    )


class _RayRunner:
    """A version's runner (what the data plane calls ``infer`` on): hands the request to
    the replica's ``@serve.batch`` method on its event loop and waits for its rows."""

    def __init__(self, served: ServedVersion, limit: int, core: _Core) -> None:
        self.served, self.limit, self.core = served, limit, core

    def infer(self, inputs: Mapping[str, np.ndarray], timeout: float | None = None) -> Arrays:
        rows, key = request_key(inputs)
        item = _Item(
            self.served,
            dict(inputs),
            rows,
            key,
            self.limit,
            min(rows, self.core.batch_size),
            time.monotonic(),
        )
        loop = self.core.loop
        if loop is None:  # a request has always set it before the data plane runs
            raise ServingError("the replica has not started its event loop yet", 503)
        future = asyncio.run_coroutine_threadsafe(self.core.submit(item), loop)
        try:
            outcome: Outcome = future.result(timeout)
        except FutureTimeoutError:
            future.cancel()
            raise ServingError(
                f"model {self.served.name!r} did not answer within {timeout} s;"
                " retry later or raise [server] infer_timeout_s",
                503,
            ) from None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        """Nothing to stop: the batch queue belongs to the replica."""


# --------------------------------------------------------------------------- replica
class _Core:
    """What one replica does, apart from Ray's decorators: build the data plane (batching
    through :class:`_RayRunner`), answer Starlette requests on a thread pool."""

    def __init__(
        self,
        target: str,
        backend: str | None,
        options: ServerOptions,
        batching: tuple[int | None, float | None],
        threads: int,
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.submit: Callable[[_Item], Coroutine[Any, Any, Outcome]] = _unbound
        self.dataplane = build_dataplane(
            target, backend=backend, options=options, runners=lambda metrics: self._runner
        )
        repository = self.dataplane.repository
        repository.start()
        self.batch_size, self.wait_s = _batch_settings(repository, *batching)
        self._handle = ThreadPoolExecutor(threads, thread_name_prefix="model_agnostic-ray")
        self._infer = ThreadPoolExecutor(1, thread_name_prefix="model_agnostic-ray-infer")

    def _runner(self, served: ServedVersion) -> _RayRunner | None:
        options = batch_options(served.options, served.model, served.name)
        if not options["batching"]:
            return None
        return _RayRunner(served, int(options["max_batch_size"]), self)

    async def run_batch(self, items: list[_Item]) -> list[Outcome]:
        """The body of the replica's ``@serve.batch`` method: the model runs on one thread,
        so the event loop keeps taking requests into the next batch meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._infer, run_items, items, self.dataplane)

    async def answer(self, request: Any) -> Response:
        """A Starlette request -> the data plane's response."""
        self.loop = asyncio.get_running_loop()
        refused = self.dataplane.refuse_length(request.headers.get("content-length"))
        if refused is not None:
            return refused
        body = await request.body()
        scope = request.scope
        path, root = scope.get("path", "/"), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        query = scope.get("query_string", b"").decode("latin-1")
        plain = Request(request.method, path, body, dict(request.headers), query)
        return await self.loop.run_in_executor(self._handle, self.dataplane.handle, plain)

    def close(self) -> None:
        self.dataplane.repository.stop()
        self._handle.shutdown(wait=False)
        self._infer.shutdown(wait=False)


async def _unbound(item: _Item) -> Outcome:
    raise ServingError("the replica's batch method is not bound yet", 503)


def _batch_settings(
    repository: ModelRepository, size: int | None, wait_s: float | None
) -> tuple[int, float]:
    """Ray's batch size and wait: the arguments, else the served models' [serving]."""
    sizes, delays = [], []
    for name in repository.names():
        for version in repository.ready_versions(name):
            with repository.acquire(name, version) as served:
                runner = served.runner
                if isinstance(runner, _RayRunner):
                    sizes.append(runner.limit)
                options = {**DEFAULTS, **served.options}
                delays.append(float(options["max_queue_delay_ms"]) / 1000)
    size = size or max(sizes, default=int(DEFAULTS["max_batch_size"]))
    wait = (
        wait_s
        if wait_s is not None
        else min(delays, default=float(DEFAULTS["max_queue_delay_ms"]) / 1000)
    )
    return size, wait


def _replica_class(serve: Any) -> type:
    """The Ray Serve replica class (built here so ``ray`` is imported only when used)."""
    starlette = require("starlette.responses", "The Ray Serve adapter")

    class ModelAgnosticReplica:
        def __init__(
            self,
            target: str,
            backend: str | None,
            options: ServerOptions,
            batching: tuple[int | None, float | None],
            threads: int,
        ) -> None:
            self.core = _Core(target, backend, options, batching, threads)
            self.core.submit = self.batched
            self.batched.set_max_batch_size(self.core.batch_size)
            self.batched.set_batch_wait_timeout_s(self.core.wait_s)
            self.replica = serve.get_replica_context().replica_id.unique_id

        @serve.batch(batch_size_fn=_weight)
        async def batched(self, items: list[_Item]) -> list[Outcome]:
            return await self.core.run_batch(items)

        async def __call__(self, request: Any) -> Any:
            response = await self.core.answer(request)
            headers = {**response.headers, REPLICA_HEADER: self.replica}
            return starlette.Response(response.body, response.status, headers)

        def __del__(self) -> None:
            core = getattr(self, "core", None)
            if core is not None:
                core.close()

    return ModelAgnosticReplica


# --------------------------------------------------------------------------- public API
def deployment(
    target: str | os.PathLike[str],
    *,
    backend: str | None = None,
    options: ServerOptions | None = None,
    num_replicas: int = 1,
    autoscaling_config: Mapping[str, Any] | None = None,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float | None = None,
    max_ongoing_requests: int = 64,
    max_queued_requests: int = -1,
    ray_actor_options: Mapping[str, Any] | None = None,
    deployment_options: Mapping[str, Any] | None = None,
    name: str = "model_agnostic",
) -> Application:
    """A bound Ray Serve application serving ``target`` (a config, an artifact or a model
    repository folder; it must be readable at the same path on every node).

    Args:
        backend: overrides the config's backend, as ``model-agnostic serve --backend``.
        options: the ``[server]`` limits (request size, JSON depth, ...); host and port are
            Ray's (``serve.start(http_options=...)``), not these.
        num_replicas: replicas, each loading the model; ignored with ``autoscaling_config``.
        autoscaling_config: Ray's autoscaling settings (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``, ...), passed through unchanged.
        max_batch_size: most rows per backend call; default the model's ``[serving]
            max_batch_size``.
        batch_wait_timeout_s: Ray's wait for batch-mates; default the model's ``[serving]
            max_queue_delay_ms`` / 1000.
        max_ongoing_requests: requests a replica works on at once (Ray's default of 5 is
            too few to batch); also the replica's request threads.
        max_queued_requests: requests waiting for a replica before Ray answers 503 (-1: no
            limit).
        ray_actor_options: per replica, e.g. ``{"num_cpus": 2}``.
        deployment_options: any other ``serve.deployment`` option, passed through (e.g.
            ``{"health_check_period_s": 2}``).
        name: the deployment's name.
    """
    serve = require("ray.serve", "The Ray Serve adapter")
    _check_positive("num_replicas", num_replicas)
    _check_positive("max_ongoing_requests", max_ongoing_requests)
    if max_batch_size is not None:
        _check_positive("max_batch_size", max_batch_size)
    if batch_wait_timeout_s is not None and not batch_wait_timeout_s >= 0:
        raise ConfigError(
            f"batch_wait_timeout_s must be >= 0 seconds, got {batch_wait_timeout_s!r}"
        )
    path = Path(target).resolve()
    if not path.exists():
        raise ConfigError(f"{target}: no such config, artifact or model repository")
    settings: dict[str, Any] = {
        **(deployment_options or {}),
        "name": name,
        "max_ongoing_requests": max_ongoing_requests,
        "max_queued_requests": max_queued_requests,
    }
    if autoscaling_config is not None:
        settings["autoscaling_config"] = dict(autoscaling_config)
    else:
        settings["num_replicas"] = num_replicas
    if ray_actor_options is not None:
        settings["ray_actor_options"] = dict(ray_actor_options)
    replica = serve.deployment(**settings)(_replica_class(serve))
    return replica.bind(
        str(path),
        backend,
        options or ServerOptions(),
        (max_batch_size, batch_wait_timeout_s),
        max_ongoing_requests,
    )


def settings_from_config(section: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`deployment` keyword arguments from a config's ``[ray]`` section:
    ``num_replicas``, ``max_ongoing_requests``, ``max_queued_requests``, ``num_cpus``
    (per replica) and ``[ray.autoscaling]`` (Ray's autoscaling_config, passed through)."""
    unknown = sorted(set(section) - SCHEMA["ray"].keys())
    if unknown:
        raise ConfigError(
            f"[ray] has unknown keys {unknown}; expected some of {sorted(SCHEMA['ray'])}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        if key == "num_cpus":
            kwargs["ray_actor_options"] = {"num_cpus": value}
        elif key != "address":
            kwargs[RAY_KEYS[key]] = dict(value) if key == "autoscaling" else value
    return kwargs


def serve_on_ray(
    target: str | os.PathLike[str],
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    app_name: str = "model_agnostic",
    **settings: Any,
) -> None:
    """Serve ``target`` on Ray Serve until Ctrl-C or SIGTERM.

    ``address=None`` starts a local Ray instance (stopped on exit); ``"auto"`` joins the
    one running on this machine and ``"ray://head:10001"`` a remote cluster (the
    application is deleted on exit; the cluster keeps running). ``settings`` are
    :func:`deployment`'s keyword arguments.
    """
    ray = require("ray", "The Ray Serve adapter")
    serve = require("ray.serve", "The Ray Serve adapter")
    if not route_prefix.startswith("/"):
        raise ConfigError(f"route_prefix must start with '/', like '/ml'; got {route_prefix!r}")
    app = deployment(target, **settings)
    try:
        if address is not None:
            _check_reachable(address)
        # None: a new local instance (Ray's default joins any cluster recorded on this host)
        ray.init(address=address or "local", ignore_reinit_error=True)
    except (ConnectionError, RuntimeError) as exc:
        if address is None:
            raise
        raise ConfigError(
            f"could not join the Ray cluster at {address!r}: {str(exc).splitlines()[0]}. "
            "Check the address (the head's GCS port, 'auto', or 'ray://head:10001'); a "
            "cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
            "(~/.ray/auth_token or RAY_AUTH_TOKEN)"
        ) from None
    # after ray.init: Ray's core worker installs a crash handler for SIGTERM that aborts
    with until_stopped() as wait:
        try:
            serve.start(http_options={"host": host, "port": port})
            serve.run(app, name=app_name, route_prefix=route_prefix)
            url = f"http://{host}:{port}{route_prefix.rstrip('/')}"
            print(
                f"serving {target} on {url} with Ray Serve (Open Inference Protocol v2, "
                "/ui, /metrics); Ctrl-C or SIGTERM stops",
                file=sys.stderr,
                flush=True,
            )
            wait()
        finally:
            serve.delete(app_name)
            if address is None:
                serve.shutdown()
                ray.shutdown()
    print("stopped", file=sys.stderr, flush=True)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` or ``ray://host:port`` nobody listens on (Ray itself
    retries for minutes); ``auto`` and other forms are left to Ray."""
    found = re.fullmatch(r"(?:ray://)?\[?([\w.:-]+?)\]?:(\d+)", address)
    if found is None:
        return
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout_s).close()
    except OSError as exc:
        raise ConnectionError(
            f"nothing answers at {found.group(1)}:{found.group(2)} ({exc})"
        ) from None


def _check_positive(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
