"""The production server: the data plane behind a WSGI app, served by waitress.

``model-agnostic serve`` builds a :class:`~model_agnostic.serving.dataplane.DataPlane` for
a config, an artifact or a model repository (:func:`build_dataplane`), wraps it in a WSGI
app (:func:`wsgi_app`) and serves it with waitress: multi-threaded, a request-size limit,
and a read timeout that releases the thread of a client that stalls. With a ``grpc_port``
the same data plane also answers gRPC (:mod:`.grpc_server`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

from .._deps import require
from ..config import Overrides, apply_overrides, load_model, resolve
from ..errors import ConfigError
from .batching import Batcher
from .dataplane import DataPlane, Request, Response
from .instances import version_batcher
from .metrics import Metrics
from .options import TOKEN_ENV, ServerOptions
from .repository import ModelRepository, ServedVersion
from .versions import load_version

log = logging.getLogger(__name__)

__all__ = [
    "ServerOptions",
    "BackgroundServer",
    "build_dataplane",
    "is_repository",
    "make_runner",
    "serve",
    "warn_if_threads_starve_instances",
    "wsgi_app",
]


def make_runner(metrics: Metrics | None) -> Callable[[ServedVersion], Batcher | None]:
    """A repository hook giving each loaded version its own adaptive batcher over its model
    instances (:func:`~.instances.version_batcher`)."""
    return functools.partial(version_batcher, metrics=metrics)


def build_dataplane(
    target: str | os.PathLike[str],
    *,
    backend: str | None = None,
    options: ServerOptions | None = None,
    metrics: bool = True,
    ui: bool = True,
    runners: Callable[[Metrics | None], Callable[[ServedVersion], Any]] = make_runner,
    overrides: Sequence[tuple[str, Overrides]] = (),
) -> DataPlane:
    """A data plane serving ``target``: a config file, an artifact (folder or .zip), or a
    model repository folder laid out as ``<name>/<version>/``.

    ``runners(metrics)`` gives the repository's hook that wraps each loaded version for
    serving (default: our adaptive batcher; the Ray Serve adapter passes Ray's batching).
    ``overrides`` are deploy-time layers applied to every model loaded
    (:func:`~model_agnostic.config.deploy_layers`); the artifacts' files are untouched.
    """
    options = options or ServerOptions()
    stats = Metrics() if metrics else None
    path = Path(target)
    if _is_repository(path):
        repository = ModelRepository(
            path,
            version_policy=options.version_policy,
            poll_interval_s=options.poll_interval_s,
            make_runner=runners(stats),
            loader=functools.partial(load_version, overrides=overrides),
        )
    else:
        repository = ModelRepository(make_runner=runners(stats))
        config = apply_overrides(resolve(path), *overrides) if overrides else resolve(path)
        model = load_model(config, backend=backend)
        serving = config.serving
        name = str(serving.pop("name", None) or _default_name(path))
        version = str(serving.pop("version", "1"))
        repository.add(name, model, version, serving)
    page = (
        resources.files("model_agnostic.serving").joinpath("ui.html").read_bytes() if ui else None
    )
    token = options.auth_token()
    if options.model_control and not token:
        raise ConfigError(
            f"[server] model_control needs authentication: set auth_token_file or ${TOKEN_ENV}"
        )
    return DataPlane(
        repository,
        metrics=stats,
        limits=options.limits(),
        ui=page,
        auth_token=token,
        model_control=options.model_control,
    )


def is_repository(path: str | os.PathLike[str]) -> bool:
    """True for a model repository folder (``<name>/<version>/``), not a model itself."""
    path = Path(path)
    return _is_repository(path)


def _is_repository(path: Path) -> bool:
    from ..artifact import is_artifact

    if not path.is_dir() or is_artifact(path) or (path / "config.toml").is_file():
        return False
    return True


def _default_name(path: Path) -> str:
    """An artifact's folder name (``artifacts/chexnet`` -> chexnet), a config's folder's."""
    if path.suffix == ".zip" or path.is_dir():
        return path.stem
    return path.resolve().parent.name


def wsgi_app(dataplane: DataPlane) -> Callable[..., Iterable[bytes]]:
    """A WSGI application over ``dataplane``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = _respond(dataplane, environ)
        status = f"{response.status} {_phrase(response.status)}"
        headers = [*response.headers.items(), ("Content-Length", str(len(response.body)))]
        start_response(status, headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]

    return app


def _respond(dataplane: DataPlane, environ: dict[str, Any]) -> Response:
    refused = dataplane.refuse_length(environ.get("CONTENT_LENGTH"))
    if refused is not None:
        return refused
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    headers = {
        key[5:].replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["CONTENT-TYPE"] = environ["CONTENT_TYPE"]
    path = environ.get("PATH_INFO", "/")
    method, query = environ.get("REQUEST_METHOD", "GET"), environ.get("QUERY_STRING", "")
    return dataplane.handle(Request(method, path, body, headers, query))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _json_channel(limit: int) -> Any:
    """waitress's connection class, answering the errors waitress finds itself (bad framing,
    over-size bodies and headers) in JSON like every other error."""
    channel = require("waitress.channel", "The inference server")
    task = require("waitress.task", "The inference server")

    class JsonErrorTask(task.ErrorTask):  # type: ignore[name-defined]
        def execute(self) -> None:
            error = self.request.error
            message = f"{error.reason}: {error.body}"
            if error.code == 413:
                message = (
                    f"request body is over the limit of {limit} bytes "
                    f"(the server's max_request_bytes)"
                )
            body = json.dumps({"error": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(channel.HTTPChannel):  # type: ignore[name-defined]
        error_task_class = JsonErrorTask

    return JsonErrorChannel


def _create_server(dataplane: DataPlane, options: ServerOptions) -> Any:
    waitress = require("waitress.server", "The inference server")
    server = waitress.create_server(
        wsgi_app(dataplane),
        host=options.host,
        port=options.port,
        threads=options.threads,
        # waitress answers over-size bodies itself (plain text); ours answers in JSON first
        max_request_body_size=options.max_request_bytes + (1 << 20),
        # bodies are read in 64 KiB chunks and kept in memory up to 16 MiB (waitress's
        # defaults, 8 KiB and 512 KiB, spill a single 224x224 CheXNet tensor to a temp file)
        recv_bytes=65536,
        inbuf_overflow=min(16 << 20, options.max_request_bytes + (1 << 20)),
        channel_timeout=options.read_timeout_s,
        cleanup_interval=max(0.5, min(30.0, options.read_timeout_s / 2)),
        connection_limit=max(100, options.threads * 8),
        ident="model_agnostic",
        clear_untrusted_proxy_headers=True,
    )
    server.channel_class = _json_channel(options.max_request_bytes)
    return server


def serve(dataplane: DataPlane, options: ServerOptions) -> None:
    """Serve until Ctrl-C or SIGTERM; then stop accepting connections, let every accepted
    request finish (up to ``drain_timeout_s``), and stop the repository's threads."""
    with until_stopped() as wait:
        server = BackgroundServer(dataplane, options).start()
        warn_if_threads_starve_instances(dataplane, options.threads)
        names = ", ".join(dataplane.repository.names()) or "no models yet"
        grpc = f" and gRPC on {server.grpc_address}" if server.grpc_address else ""
        print(
            f"serving {names} on {server.url}{grpc} (Open Inference Protocol v2, /ui, "
            "/metrics, /openapi.json); Ctrl-C or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            wait()
        finally:
            drained = server.drain(options.drain_timeout_s)
            server.stop()
    print(
        "stopped: "
        + (
            "every accepted request was answered"
            if drained
            else f"requests still running after {options.drain_timeout_s} s were cut"
        ),
        file=sys.stderr,
        flush=True,
    )


def warn_if_threads_starve_instances(dataplane: DataPlane, threads: int) -> int:
    """Log a warning when ``[server] threads`` (requests answered at once) is below the
    model instances serving them: the extra instances could then never all be busy.
    Returns the number of instances counted."""
    total = 0
    for name in dataplane.repository.names():
        for version in dataplane.repository.ready_versions(name):
            with dataplane.repository.acquire(name, version) as served:
                total += getattr(served.runner, "instances", 1)
    if total > threads:
        log.warning(
            "[server] threads = %d answers at most %d requests at once, but %d model "
            "instance(s) wait for them: raise threads to at least %d to keep them all busy",
            threads,
            threads,
            total,
            total,
        )
    return total


@contextlib.contextmanager
def until_stopped() -> Iterator[Callable[[], None]]:
    """Inside the block SIGTERM no longer ends the process: the function it yields blocks
    until SIGTERM or Ctrl-C arrives. The previous SIGTERM handler is restored after."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    def wait() -> None:
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    try:
        yield wait
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_loop(server: Any, action: Callable[[], None]) -> None:
    """Run ``action`` on waitress's loop thread; on this one if its wake-up pipe is gone.

    Shutting down must not fail: in rare runs of the test suite (about 1 in 10 of
    tests/test_serving_load.py, never reproduced under strace) the pipe's write end is
    already closed when the server stops, so pulling it raises EBADF. The loop then still
    sees the closed sockets within its 1 s select timeout."""
    try:
        server.trigger.pull_trigger(action)
    except OSError:
        with server.trigger.lock:
            if action not in server.trigger.thunks:
                return  # the loop ran it after all
            server.trigger.thunks.remove(action)
        action()


class BackgroundServer:
    """The same server on a background thread (tests, benchmarks, notebooks); with
    ``options.grpc_port`` set (0: a free port), the gRPC service too, at :attr:`grpc_address`.

    ``with BackgroundServer(dataplane) as server: requests.get(server.url + "/v2")``
    """

    def __init__(self, dataplane: DataPlane, options: ServerOptions | None = None) -> None:
        self.dataplane = dataplane
        self.options = options or ServerOptions(port=0)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._grpc: Any = None  # a GrpcServer when options.grpc_port is set
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self._server.effective_port}"

    @property
    def grpc_port(self) -> int | None:
        """The port the gRPC service is bound to (also with ``grpc_port=0``), None without one."""
        return None if self._grpc is None else int(self._grpc.port)

    @property
    def grpc_address(self) -> str | None:
        """``host:port`` of the gRPC service (the port bound), None without one."""
        return None if self._grpc is None else str(self._grpc.address)

    def start(self) -> BackgroundServer:
        self.dataplane.repository.start()
        self._server = _create_server(self.dataplane, self.options)
        self._thread = threading.Thread(
            target=self._run_loop, daemon=True, name="model_agnostic-server"
        )
        self._thread.start()
        if self.options.grpc_port is not None:
            from .grpc_server import GrpcServer

            try:
                self._grpc = GrpcServer(self.dataplane, self.options).start()
            except BaseException:
                self.stop()
                raise
        return self

    def drain(self, timeout: float) -> bool:
        """Stop accepting connections (HTTP and gRPC), then wait up to ``timeout`` s until
        every request accepted is answered and sent. True if all were."""
        server = self._server
        if server is None:
            return True
        wasyncore = require("waitress.wasyncore", "The inference server")
        _in_loop(server, lambda: wasyncore.dispatcher.close(server))
        grpc_idle = (lambda: True) if self._grpc is None else self._grpc.drain(timeout).is_set
        deadline = time.monotonic() + timeout

        def idle() -> bool:
            tasks = server.task_dispatcher
            return (
                not tasks.queue
                and not tasks.active_count
                and self.dataplane.active == 0
                and grpc_idle()
                and not any(
                    ch.total_outbufs_len or ch.requests
                    for ch in list(server.active_channels.values())
                )
            )

        while not idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _run_loop(self) -> None:
        try:
            self._server.run()
        except OSError as exc:
            # stop() closed a socket the loop was selecting on (its wake-up pipe was gone,
            # so it closed them from the calling thread): the loop is meant to end anyway
            if not (self._stopping and exc.errno == errno.EBADF):
                raise

    def stop(self) -> None:
        """Close every connection and the listening socket, then the repository."""
        self._stopping = True
        server = self._server
        if server is not None:
            wasyncore = require("waitress.wasyncore", "The inference server")
            closed = threading.Event()

            def close_in_loop() -> None:  # runs on the server's own thread
                for channel in list(server.active_channels.values()):
                    channel.handle_close()  # closes its output buffers (temp files) too
                if server.socket is not None:
                    wasyncore.dispatcher.close(server)  # the listening socket
                try:
                    server.trigger.close()  # the loop's map is now empty: run() returns
                except OSError:  # its write end was closed under it (see _in_loop)
                    pass
                wasyncore.file_dispatcher.close(server.trigger)  # no-op unless that failed
                closed.set()

            _in_loop(server, close_in_loop)
            closed.wait(10)
            server.task_dispatcher.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._grpc is not None:
            self._grpc.stop()
        self.dataplane.repository.stop()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
