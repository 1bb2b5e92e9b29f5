"""Start third-party inference servers (and ours) as real processes on loopback.

``start_kserve`` runs KServe's ``ModelServer`` (tests/peers/kserve_server.py) and
``start_mlserver`` runs ``mlserver start`` on a settings folder written here, each from its
venv (tests/peers/envs.py); ``start_ours`` runs ``model-agnostic serve``. Each hosts
``models``, a mapping from model name to an ONNX file, on free loopback ports, and returns
a :class:`PeerServer` once ``/v2/health/ready`` and every model's ready route answer 200.
A server that exits or is not ready in time raises :class:`PeerStartError` with the end
of its log. ``PeerServer.stop()`` (or ``with``) terminates its process group, then kills
it. Used by the pytest fixtures (tests/peers/fixtures.py) and bench/peers.py; needs
only the standard library, plus ``onnx`` to write MLServer's model settings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.peers import envs

PEERS = Path(__file__).resolve().parent
KSERVE_SERVER = PEERS / "kserve_server.py"
MLSERVER_RUNTIME = PEERS / "mlserver_runtime"
START_TIMEOUT_S = 180.0
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it

#: ONNX element types -> v2 datatypes (for MLServer's declared inputs and outputs).
ONNX_DATATYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
                  7: "INT64", 8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32",
                  13: "UINT64"}


class PeerStartError(RuntimeError):
    """A server exited or did not become ready; the message ends with its log."""


@dataclass
class PeerServer:
    """A running server process: ``url`` (``http://127.0.0.1:PORT``), its gRPC
    ``grpc_address`` (``127.0.0.1:PORT``; KServe and MLServer serve both) and ``log`` file."""

    kind: str
    url: str
    models: dict[str, Path]
    process: subprocess.Popen[bytes]
    log: Path
    _log_handle: IO[bytes] | None = field(default=None, repr=False)
    grpc_address: str | None = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the server's process group (workers included), then SIGKILL to what is
        left of it; the server's own pid is reaped last, so the group id cannot be reused."""
        if self.process.returncode is None:
            _signal_group(self.process, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while not _exited(self.process) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_kserve(models: Mapping[str, Path], folder: Path, *, python: Path | None = None,
                 timeout_s: float = START_TIMEOUT_S) -> PeerServer:
    """KServe's ``ModelServer`` with one ``kserve.Model`` per ONNX file (REST + gRPC)."""
    interpreter = str(python or envs.ensure("kserve"))
    pairs = [str(part) for name, path in models.items() for part in (name, path)]

    def command(ports: Sequence[int]) -> list[str]:
        return [interpreter, str(KSERVE_SERVER), *pairs[:2], str(ports[0]), str(ports[1]),
                *pairs[2:]]

    return _start("kserve", command, 2, models, folder, os.environ.copy(), timeout_s)


def start_mlserver(models: Mapping[str, Path], folder: Path, *, python: Path | None = None,
                   parallel_workers: int = 0, timeout_s: float = START_TIMEOUT_S) -> PeerServer:
    """``mlserver start FOLDER`` with tests/peers/mlserver_runtime's ``OnnxModel`` per file.

    ``parallel_workers=0`` runs inference in the server process (quicker to start);
    MLServer's own default is 1 worker process.
    """
    interpreter = python or envs.ensure("mlserver")
    mlserver = interpreter.parent / "mlserver"
    env = {**os.environ, "PYTHONPATH": str(MLSERVER_RUNTIME)}

    def command(ports: Sequence[int]) -> list[str]:
        write_mlserver_settings(models, folder, ports, parallel_workers)
        return [str(mlserver), "start", str(folder)]

    return _start("mlserver", command, 3, models, folder, env, timeout_s)


def start_ours(target: Path, folder: Path, name: str, *, extra: Sequence[str] = (),
               timeout_s: float = START_TIMEOUT_S) -> PeerServer:
    """``model-agnostic serve TARGET`` (a config or artifact folder) in this interpreter."""

    def command(ports: Sequence[int]) -> list[str]:
        return [sys.executable, "-m", "model_agnostic", "serve", str(target),
                "--port", str(ports[0]), *extra]

    return _start("ours", command, 1, {name: target}, folder, os.environ.copy(), timeout_s)


def write_mlserver_settings(models: Mapping[str, Path], folder: Path, ports: Sequence[int],
                            parallel_workers: int = 0) -> None:
    """``settings.json`` (loopback, the three ports) and ``NAME/model-settings.json`` each."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"host": "127.0.0.1", "http_port": ports[0], "grpc_port": ports[1],
                "metrics_port": ports[2], "parallel_workers": parallel_workers,
                "debug": False, "load_models_at_startup": True,
                "environments_dir": str(folder / ".envs"), "metrics_dir": str(folder / ".metrics")}
    (folder / "settings.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")
    for name, path in models.items():
        inputs, outputs = onnx_signature(path)
        model_settings = {"name": name, "implementation": "onnx_model.OnnxModel",
                          "parameters": {"uri": str(Path(path).resolve())},
                          "inputs": inputs, "outputs": outputs}
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps(model_settings, indent=1),
                                                          encoding="utf-8")


def onnx_signature(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs and outputs as v2 metadata (dynamic dims -1), read with ``onnx``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}

    def tensor(value: Any) -> dict[str, Any]:
        kind = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in kind.shape.dim]
        return {"name": value.name, "datatype": ONNX_DATATYPES[kind.elem_type], "shape": shape}

    return ([tensor(v) for v in graph.input if v.name not in initializers],
            [tensor(v) for v in graph.output])


# ------------------------------------------------------------------ machinery
def _start(kind: str, command: Callable[[Sequence[int]], list[str]], port_count: int,
           models: Mapping[str, Path], folder: Path, env: dict[str, str],
           timeout_s: float) -> PeerServer:
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, PORT_ATTEMPTS + 1):
        ports = _distinct_ports(port_count)
        log = folder / f"{kind}-{ports[0]}.log"
        handle = log.open("wb")
        process = subprocess.Popen(command(ports), cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                   stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        grpc = f"127.0.0.1:{ports[1]}" if kind in ("kserve", "mlserver") else None
        server = PeerServer(kind, f"http://127.0.0.1:{ports[0]}", dict(models), process, log,
                            handle, grpc)
        try:
            _wait_ready(server, timeout_s)
            return server
        except PeerStartError:
            server.stop()
            if attempt < PORT_ATTEMPTS and _port_clash(server.log_tail(200)):
                continue
            raise
    raise AssertionError("unreachable")


def _wait_ready(server: PeerServer, timeout_s: float) -> None:
    paths = ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in server.models)]
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while paths:
        if server.process.poll() is not None:
            raise PeerStartError(
                f"{server.kind} server exited with {server.process.returncode} before it was "
                f"ready ({server.url}); end of {server.log}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise PeerStartError(
                f"{server.kind} server at {server.url} not ready after {timeout_s:g} s "
                f"(GET {paths[0]}: {last}); end of {server.log}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + paths[0], timeout=5) as answer:
                if answer.status == 200:
                    paths.pop(0)
                    continue
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _port_clash(log: str) -> bool:
    return "address already in use" in log.lower() or "errno 98" in log.lower()


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (it stays a zombie till wait)."""
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the server's pid
    except (ProcessLookupError, PermissionError):
        pass
