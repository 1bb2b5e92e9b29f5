"""Load and faults: the production server under sustained load, bursts, disconnects,
SIGTERM and hot swap, all on loopback.

Each scenario starts ``python -m model_agnostic serve ... --port 0`` as a child
process (the command users run) and drives it from threads in this process with
keep-alive ``http.client`` connections:

a. sustained: N v2 infer requests (half JSON, half binary tensors; 1-4 random rows each)
   at concurrency C on the digits artifact; every answer is checked against a local
   ``OnnxModel`` on the same file. The server's RSS, threads and open files are read from
   ``/proc/<pid>`` after a warm-up and at the end;
b. burst: many simultaneous requests on a slow model (a MatMul chain of ~50 ms a call)
   whose queue holds 8: the overflow must get 503 quickly, the rest a correct 200;
c. disconnects: clients that send half a body and close, reset the connection, or send a
   whole request and close before reading the answer; afterwards the server's threads,
   open files and RSS are back to baseline and a valid request succeeds;
d. SIGTERM with requests in flight: all of them answered 200, new connections refused,
   exit code 0;
e. hot swap under load: a repository ``models/tiny/<version>/`` polled every 0.1 s gets
   new versions (scale = version number, one broken) renamed in during the load: no
   request fails and every answer matches the version it names.

``tests/test_load_faults.py`` runs the same scenarios, smaller, and asserts the same
properties; this file holds the one copy of the code. Results, with every latency of the
sustained and burst runs and the pass/fail of each property, go to bench/results/load.json.

The client is not the bottleneck: on a 2-core machine at ~1,000 req/s the client threads
use ~0.3 of a core and the server ~1.3 (the table reports both). tritonclient's
``async_infer`` (gevent, concurrency 32) reached only ~90 req/s on the same server, so
plain ``http.client`` connections are used.

Usage: python bench/load.py [--requests 10000] [--concurrency 32] [--burst 200]
                            [--disconnects 300] [--swaps 6]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from common import machine, write_result  # noqa: E402

from model_agnostic import ModelAgnosticError  # noqa: E402
from tests.serving_fixtures import WEIGHTS, write_tiny_model  # noqa: E402

DIGITS = ROOT / "examples" / "digits" / "artifact"
TIMEOUT_S = 60.0


# ------------------------------------------------------------------------ the server
@dataclass(frozen=True)
class Snapshot:
    """The server process as ``/proc`` sees it."""

    rss_kib: int
    threads: int
    fds: int
    cpu_s: float


class ServerProcess:
    """``model-agnostic serve TARGET --port 0 *args`` as a child process (its port read
    from the line the server prints)."""

    def __init__(self, target: Path, *args: str) -> None:
        self.port, self.url = 0, ""
        handle, log = tempfile.mkstemp(prefix="model-agnostic-serve-", suffix=".log")
        os.close(handle)
        self.log = Path(log)  # the server's stderr
        command = [sys.executable, "-m", "model_agnostic", "serve", str(target),
                   "--port", "0", *args]
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Read the port from the server's "serving ... on http://..." line; wait for ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n"
                                   + self.stderr())
            found = re.search(r" on http://127\.0\.0\.1:(\d+) ", self.stderr())
            self.port = int(found.group(1)) if found else 0
            try:
                if self.port and get(self.port, "/v2/health/ready")[0] == 200:
                    self.url = f"http://127.0.0.1:{self.port}"
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server was not ready after {timeout} s:\n" + self.stderr())

    def snapshot(self) -> Snapshot:
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return Snapshot(rss_kib=int(fields["VmRSS"].split()[0]),
                        threads=int(fields["Threads"]),
                        fds=len(os.listdir(f"/proc/{self.pid}/fd")),
                        cpu_s=(int(stat[11]) + int(stat[12])) / ticks)

    def settle(self, baseline: Snapshot, timeout: float = 10.0) -> Snapshot:
        """Wait until threads and open files are back to ``baseline`` (or time out)."""
        deadline = time.monotonic() + timeout
        now = self.snapshot()
        while (now.threads > baseline.threads or now.fds > baseline.fds) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.snapshot()
        return now

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.log.unlink(missing_ok=True)


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def post(port: int, path: str, body: bytes = b"") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


# ------------------------------------------------------------------------ the models
def write_slow_model(folder: Path, serving: str, target_ms: float = 50.0,
                     side: int = 256) -> Path:
    """The tiny model's contract and answers (``image`` [b,3,8,8] -> ``logits`` [b,4]) with
    a chain of ``side``x``side`` MatMuls beside it that takes about ``target_ms`` per call
    on one thread. The chain depends on the input, so nothing folds it away, and enters
    the logits multiplied by zero. Returns the config.toml."""
    config = write_tiny_model(folder, serving=serving)
    per_step = _time_chain(folder / "model.onnx", side, steps=8) / 8
    _write_chain(folder / "model.onnx", side, max(1, round(target_ms / 1000 / per_step)))
    return config


def _write_chain(path: Path, side: int, steps: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mix = numpy_helper.from_array(np.full((side, side), 1 / side, np.float32), "mix")
    const = [numpy_helper.from_array(WEIGHTS, "weights"), mix,
             numpy_helper.from_array(np.array([side, side], np.int64), "square"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "weights"], ["plain"]),
             helper.make_node("ReduceMean", ["image"], ["level"], keepdims=0),
             helper.make_node("Expand", ["level", "square"], ["x0"])]
    for step in range(steps):
        nodes.append(helper.make_node("MatMul", [f"x{step}", "mix"], [f"x{step + 1}"]))
    nodes += [helper.make_node("ReduceMean", [f"x{steps}"], ["busy"], keepdims=0),
              helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
              helper.make_node("Add", ["plain", "nothing"], ["logits"])]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        initializer=const)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _time_chain(path: Path, side: int, steps: int) -> float:
    """Median seconds of one call of a ``steps``-long chain on one thread."""
    import onnxruntime

    _write_chain(path, side, steps)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    image = np.ones((1, 3, 8, 8), np.float32)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        session.run(None, {"image": image})
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tiny_logits(image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """What the tiny and the slow model answer."""
    return (image.mean(axis=(2, 3)) @ (WEIGHTS * np.float32(scale))).astype(np.float32)


# ------------------------------------------------------------------ requests, answers
@dataclass(frozen=True)
class Case:
    """One prepared infer request and the answer expected (at scale 1)."""

    path: str
    body: bytes
    headers: dict[str, str]
    expected: np.ndarray
    binary: bool


def make_cases(model: str, input_name: str, arrays: list[np.ndarray],
               expected: list[np.ndarray]) -> list[Case]:
    """Requests for ``arrays``, alternately JSON and binary tensors (binary answers)."""
    from model_agnostic.protocol import encode_infer_request

    cases = []
    for index, (array, answer) in enumerate(zip(arrays, expected, strict=True)):
        binary = index % 2 == 1
        if binary:
            body, headers = encode_infer_request({input_name: array}, binary=True)
        else:
            body = json.dumps({"inputs": [{"name": input_name, "shape": list(array.shape),
                                           "datatype": "FP32",
                                           "data": array.ravel().tolist()}]}).encode()
            headers = {"Content-Type": "application/json"}
        cases.append(Case(f"/v2/models/{model}/infer", body, headers, answer, binary))
    return cases


def random_images(count: int, tail: tuple[int, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(1, 5)), *tail), dtype=np.float32)
            for _ in range(count)]


def digits_cases(count: int = 64, seed: int = 0) -> list[Case]:
    """Random pixel batches for the digits artifact, answered by a local OnnxModel."""
    from model_agnostic import OnnxModel

    local = OnnxModel(DIGITS / "model.onnx")
    images = random_images(count, (1, 8, 8), seed)
    return make_cases("artifact", "pixels", images,
                      [local.infer({"pixels": image})["logits"] for image in images])


def tiny_cases(model: str, count: int = 64, seed: int = 0) -> list[Case]:
    images = random_images(count, (3, 8, 8), seed)
    return make_cases(model, "image", images, [tiny_logits(image) for image in images])


def check(case: Case, status: int, header_length: str | None, body: bytes,
          scales: dict[str, float] | None = None) -> tuple[str | None, str | None]:
    """(what was wrong or None, the version that answered)."""
    if status != 200:
        return f"status {status}: {body[:200]!r}", None
    try:
        if case.binary:
            from model_agnostic.protocol import decode_infer_response

            outputs, meta = decode_infer_response(body, header_length)
            got, version = next(iter(outputs.values())), meta["model_version"]
        else:
            doc = json.loads(body)
            output = doc["outputs"][0]
            got = np.reshape(np.asarray(output["data"], np.float32), output["shape"])
            version = doc["model_version"]
    except (ValueError, KeyError, TypeError, IndexError, StopIteration,
            ModelAgnosticError) as exc:  # a malformed answer: an error of the run
        return f"malformed answer: {type(exc).__name__}: {exc}", None
    expected = case.expected
    if scales is not None:
        if version not in scales:
            return f"version {version!r} answered; expected one of {sorted(scales)}", version
        expected = case.expected * np.float32(scales[version])  # linear in the scale
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        return (f"wrong answer from version {version}: {got.ravel()[:4]} != "
                f"{expected.ravel()[:4]}"), version
    return None, version


# --------------------------------------------------------------------------- the load
@dataclass
class LoadResult:
    """What a run of requests saw: (status, seconds) per request, versions, errors."""

    samples: list[tuple[int, float]] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requests(self) -> int:
        return len(self.samples)

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for status, _ in self.samples)

    def add(self, status: int, seconds: float, error: str | None, version: str | None) -> None:
        with self._lock:
            self.samples.append((status, seconds))
            if version is not None:
                self.versions[version] += 1
            if error is not None:
                self.errors.append(error)

    def percentile_ms(self, q: float, status: int | None = None) -> float:
        """The ``q``-th percentile latency in ms, of the answers with ``status`` if given."""
        times = [s for code, s in self.samples if status is None or code == status]
        return float(np.percentile(times, q) * 1000) if times else 0.0


def run_load(port: int, cases: list[Case], requests: int, concurrency: int,
             until: threading.Event | None = None,
             scales: dict[str, float] | None = None) -> LoadResult:
    """``requests`` requests (and on until ``until`` is set) from ``concurrency`` threads,
    each on its own keep-alive connection, cycling through ``cases``."""
    result = LoadResult()
    jobs = itertools.count()
    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=_client, args=(port, cases, jobs, requests, until,
                                                      scales, result))
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu
    return result


def _client(port: int, cases: list[Case], jobs: Iterator[int], requests: int,
            until: threading.Event | None, scales: dict[str, float] | None,
            result: LoadResult) -> None:
    connection: http.client.HTTPConnection | None = None
    while True:
        index = next(jobs)  # itertools.count is atomic under the GIL
        if index >= requests and (until is None or until.is_set()):
            break
        case = cases[index % len(cases)]
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        start = time.perf_counter()
        try:
            connection.request("POST", case.path, case.body, case.headers)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connection = None
            result.add(0, time.perf_counter() - start, f"{type(exc).__name__}: {exc}", None)
            continue
        seconds = time.perf_counter() - start
        header = answer.getheader("Inference-Header-Content-Length")
        result.add(answer.status, seconds, *check(case, answer.status, header, body, scales))
        if answer.will_close:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def one_request_ok(port: int, case: Case) -> bool:
    """A valid request on a fresh connection gets the right answer, and live says so."""
    result = run_load(port, [case], 1, 1)
    return not result.errors and get(port, "/v2/health/live")[0] == 200


# ---------------------------------------------------------------------- the scenarios
def sustained(server: ServerProcess, cases: list[Case], requests: int, concurrency: int,
              warmup: int, keep_samples: bool = False) -> dict[str, Any]:
    """Scenario a: the measured run after a warm-up, with the server's footprint (and, with
    ``keep_samples``, every request's latency in ms)."""
    start = server.snapshot()
    warm = run_load(server.port, cases, warmup, concurrency)
    before = server.snapshot()
    run = run_load(server.port, cases, requests, concurrency)
    after = server.settle(before)  # the clients' closed connections closed on its side too
    return {"requests": run.requests, "concurrency": concurrency,
            "errors": len(warm.errors) + len(run.errors), "first_errors": run.errors[:5],
            "statuses": dict(run.statuses), "throughput": run.requests / run.seconds,
            "p50_ms": run.percentile_ms(50), "p99_ms": run.percentile_ms(99),
            "seconds": run.seconds, "rss_start_mib": start.rss_kib / 1024,
            "rss_warm_mib": before.rss_kib / 1024, "rss_end_mib": after.rss_kib / 1024,
            "rss_growth_pct": 100 * (after.rss_kib - before.rss_kib) / before.rss_kib,
            "threads": (before.threads, after.threads), "fds": (before.fds, after.fds),
            "server_cpu_per_s": (after.cpu_s - before.cpu_s) / run.seconds,
            "client_cpu_per_s": run.client_cpu_s / run.seconds,
            **({"latencies_ms": _ms(run)} if keep_samples else {})}


def _ms(result: LoadResult) -> list[float]:
    return [round(seconds * 1e3, 3) for _, seconds in result.samples]


def burst(server: ServerProcess, cases: list[Case], size: int,
          keep_samples: bool = False) -> dict[str, Any]:
    """Scenario b: ``size`` requests released at once on new connections (with
    ``keep_samples``, every request's status and latency in ms)."""
    gate = threading.Barrier(size)
    result = LoadResult()

    def one(index: int) -> None:
        case = cases[index % len(cases)]
        gate.wait()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
        start = time.perf_counter()
        try:
            connection.request("POST", case.path, case.body, case.headers)
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            result.add(0, time.perf_counter() - start, f"{type(exc).__name__}: {exc}", None)
            return
        finally:
            connection.close()
        seconds = time.perf_counter() - start
        if answer.status == 503:
            fine = b"queue" in body and body.startswith(b"{\"error\"")
            result.add(503, seconds, None if fine else f"503 without a JSON reason: {body!r}",
                       None)
        else:
            header = answer.getheader("Inference-Header-Content-Length")
            result.add(answer.status, seconds, *check(case, answer.status, header, body))

    with ThreadPoolExecutor(size) as pool:
        list(pool.map(one, range(size)))
    return {"requests": size, "statuses": dict(result.statuses), "errors": result.errors[:5],
            "rejected": result.statuses[503], "accepted": result.statuses[200],
            "p50_503_ms": result.percentile_ms(50, 503),
            "p99_503_ms": result.percentile_ms(99, 503),
            "max_200_ms": result.percentile_ms(100, 200),
            "after_ok": one_request_ok(server.port, cases[0]),
            **({"samples": {"status": [status for status, _ in result.samples],
                            "ms": _ms(result)}} if keep_samples else {})}


def disconnects(server: ServerProcess, case: Case, rounds: int, warm: int = 200
                ) -> dict[str, Any]:
    """Scenario c: clients that vanish mid-request, then the server's footprint."""
    run_load(server.port, [case], warm, 4)  # this exact request path is warm
    before = server.snapshot()
    kinds = (_half_body, _reset_mid_body, _no_read, _half_headers)
    for index in range(rounds):
        kinds[index % len(kinds)](server.port, case)
    after = server.settle(before)
    return {"rounds": rounds, "threads": (before.threads, after.threads),
            "fds": (before.fds, after.fds), "rss_mib": (before.rss_kib / 1024,
                                                       after.rss_kib / 1024),
            "rss_growth_pct": 100 * (after.rss_kib - before.rss_kib) / before.rss_kib,
            "after_ok": one_request_ok(server.port, case)}


def _head(case: Case, port: int) -> bytes:
    lines = [f"POST {case.path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {len(case.body)}",
             *(f"{key}: {value}" for key, value in case.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _half_body(port: int, case: Case) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(case, port) + case.body[: len(case.body) // 2])


def _reset_mid_body(port: int, case: Case) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(case, port) + case.body[: len(case.body) // 3])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _no_read(port: int, case: Case) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(case, port) + case.body)


def _half_headers(port: int, case: Case) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(case, port)[:20])


def drain(target: Path, requests: int) -> dict[str, Any]:
    """Scenario d: SIGTERM once all of ``requests`` requests (on a slow model) have reached
    the server, answered or still in flight (Prometheus' in-flight gauge)."""
    cases = tiny_cases("slow", requests, seed=3)
    with ServerProcess(target, "--drain-timeout", "30") as server:
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
                       for _ in cases]
        for connection in connections:
            connection.connect()  # accepted before the signal: these must be answered
        gate = threading.Barrier(requests + 1)
        done: list[tuple[float, str | None]] = []

        def one(connection: http.client.HTTPConnection, case: Case) -> None:
            gate.wait()
            try:
                connection.request("POST", case.path, case.body, case.headers)
                answer = connection.getresponse()
                body = answer.read()
                error, _ = check(case, answer.status, answer.getheader(
                    "Inference-Header-Content-Length"), body)
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                connection.close()
            done.append((time.monotonic(), error))

        threads = [threading.Thread(target=one, args=pair) for pair in zip(connections, cases, strict=True)]
        for thread in threads:
            thread.start()
        gate.wait()
        deadline = time.monotonic() + 30
        while len(done) + _in_flight(server.port) < requests and time.monotonic() < deadline:
            time.sleep(0.01)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        refused = _refused(server.port)
        for thread in threads:
            thread.join()
        code = server.process.wait(60)
        exited = time.monotonic() - signalled
        log = server.stderr()
    errors = [error for _, error in done if error]
    return {"requests": requests, "errors": errors[:5], "answered": len(done) - len(errors),
            "in_flight_at_sigterm": sum(at > signalled for at, _ in done),
            "new_connection_refused": refused, "exit_code": code, "exit_s": exited,
            "drained_message": "every accepted request was answered" in log}


def _in_flight(port: int) -> float:
    text = get(port, "/metrics")[1].decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("model_agnostic_inflight_requests{"))


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def hot_swap(workdir: Path, requests: int, concurrency: int, swaps: int, broken: int,
             gap_s: float) -> dict[str, Any]:
    """Scenario e: versions 2..swaps+1 (``broken`` is a corrupt one) renamed into a
    repository while ``requests`` requests (at least) run against it."""
    root = workdir / "models"
    write_tiny_model(root / "tiny" / "1")
    scales = {"1": 1.0}
    cases = tiny_cases("tiny", seed=4)
    published = []
    with ServerProcess(root, "--poll-interval", "0.1") as server:
        until = threading.Event()
        runs: list[LoadResult] = []
        load = threading.Thread(target=lambda: runs.append(run_load(
            server.port, cases, requests, concurrency, until, scales)))
        load.start()
        for version in range(2, swaps + 2):
            time.sleep(gap_s)
            good = version != broken
            if good:
                scales[str(version)] = float(version)
            published.append(_publish(server.port, root, workdir, version, good))
        time.sleep(gap_s)
        until.set()
        load.join()
        index = json.loads(post(server.port, "/v2/repository/index")[1])
    (run,) = runs
    details = index[0]["details"]
    return {"requests": run.requests, "concurrency": concurrency, "swaps": swaps,
            "broken": broken, "errors": len(run.errors), "first_errors": run.errors[:5],
            "statuses": dict(run.statuses), "versions_seen": dict(sorted(run.versions.items())),
            "swap_s": max(published), "served_at_end": details["served"],
            "failed_at_end": sorted(details["failed"])}


def _publish(port: int, root: Path, workdir: Path, version: int, good: bool) -> float:
    """Write a version beside the repository and rename it in; seconds until it is served
    (or, when broken, reported failed)."""
    staging = workdir / f"staging-{version}"
    write_tiny_model(staging, scale=float(version))
    if not good:
        (staging / "model.onnx").write_bytes(b"this is not an ONNX graph")
    start = time.monotonic()
    os.rename(staging, root / "tiny" / str(version))
    key = "served" if good else "failed"
    while time.monotonic() - start < 60:
        details = json.loads(post(port, "/v2/repository/index")[1])[0]["details"]
        if str(version) in details[key]:
            return time.monotonic() - start
        time.sleep(0.02)
    raise RuntimeError(f"version {version} was not {key} after 60 s")


# ------------------------------------------------------------------------- the report
def table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown table for docs/reliability.md."""
    rows = ["| scenario | measured | result |", "|---|---|---|"]
    if "sustained" in results:
        rows += _sustained_rows(results["sustained"])
    if "burst" in results:
        r = results["burst"]
        rows.append(
            f"| burst | {r['requests']} simultaneous requests, queue of 8, ~50 ms a call | "
            f"{r['accepted']} answered 200 (all correct, slowest {r['max_200_ms']:.0f} ms), "
            f"{r['rejected']} got 503 (p50 {r['p50_503_ms']:.0f} ms, p99 "
            f"{r['p99_503_ms']:.0f} ms); {len(r['errors'])} errors |")
    if "disconnects" in results:
        r = results["disconnects"]
        rows.append(
            f"| disconnects | {r['rounds']} clients gone mid-request (half body, reset, "
            f"unread answer, half headers) | threads {_pair(r['threads'])}, open files "
            f"{_pair(r['fds'])}, RSS {r['rss_growth_pct']:+.1f} %; next request "
            f"{'succeeds' if r['after_ok'] else 'FAILS'} |")
    if "disconnects_slow" in results:
        r = results["disconnects_slow"]
        rows.append(
            f"| disconnects | the same, {r['rounds']} on the slow model (requests queued or "
            f"running as the client leaves) | threads {_pair(r['threads'])}, open files "
            f"{_pair(r['fds'])}; next request {'succeeds' if r['after_ok'] else 'FAILS'} |")
    if "drain" in results:
        r = results["drain"]
        rows.append(
            f"| SIGTERM | {r['requests']} requests accepted, {r['in_flight_at_sigterm']} "
            f"still running at the signal | {r['answered']} answered 200; new connections "
            f"{'refused' if r['new_connection_refused'] else 'ACCEPTED'}; exit code "
            f"{r['exit_code']} after {r['exit_s']:.2f} s |")
    if "hot_swap" in results:
        r = results["hot_swap"]
        rows.append(
            f"| hot swap | {r['swaps']} new versions (v{r['broken']} broken) during "
            f"{r['requests']:,} requests at concurrency {r['concurrency']} | {r['errors']} "
            f"failed; answers by version {r['versions_seen']}, each matching its version; "
            f"v{r['broken']} reported failed, never served |")
    return "\n".join(rows)


def _sustained_rows(r: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    rows.append(
        f"| sustained | {r['requests']:,} infer requests at concurrency {r['concurrency']} "
        "(JSON and binary, checked) | "
        f"{r['errors']} errors; {r['throughput']:.0f} req/s; p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms |")
    rows.append(
        f"| sustained | server RSS after warm-up -> end; threads; open files | "
        f"{r['rss_warm_mib']:.1f} -> {r['rss_end_mib']:.1f} MiB "
        f"({r['rss_growth_pct']:+.1f} %); {_pair(r['threads'])}; {_pair(r['fds'])} |")
    rows.append(
        f"| sustained | CPU cores busy: server, client | {r['server_cpu_per_s']:.2f}, "
        f"{r['client_cpu_per_s']:.2f} |")
    return rows


def _pair(values: tuple[int, int]) -> str:
    return f"{values[0]} -> {values[1]}"


def verdicts(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The properties docs/reliability.md claims, each true or false."""
    out = {}
    if "sustained" in results:
        r = results["sustained"]
        out["sustained: 0 errors"] = r["errors"] == 0
        out["sustained: RSS growth < 10 %"] = r["rss_growth_pct"] < 10
        out["sustained: threads stable"] = r["threads"][0] == r["threads"][1]
    if "burst" in results:
        r = results["burst"]
        out["burst: only 200 and 503, 200s correct"] = not r["errors"]
        out["burst: 503s within 1 s (p99)"] = r["rejected"] > 0 and r["p99_503_ms"] < 1000
        out["burst: serves afterwards"] = r["after_ok"]
    for key in ("disconnects", "disconnects_slow"):
        if key in results:
            r = results[key]
            out[f"{key}: threads and files back"] = (
                r["threads"][1] == r["threads"][0] and r["fds"][1] <= r["fds"][0])
            out[f"{key}: serves afterwards"] = r["after_ok"]
    if "drain" in results:
        r = results["drain"]
        out["SIGTERM: all in flight answered, refused, exit 0"] = (
            not r["errors"] and r["answered"] == r["requests"] and r["in_flight_at_sigterm"] > 0
            and r["new_connection_refused"] and r["exit_code"] == 0)
    if "hot_swap" in results:
        r = results["hot_swap"]
        good = {str(v) for v in range(1, r["swaps"] + 2) if v != r["broken"]}
        out["hot swap: 0 failed, every good version answered"] = (
            r["errors"] == 0 and set(r["versions_seen"]) == good)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--disconnects", type=int, default=300)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--swap-requests", type=int, default=5_000)
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        with ServerProcess(DIGITS) as server:
            cases = digits_cases()
            results["sustained"] = sustained(server, cases, args.requests, args.concurrency,
                                             args.warmup, keep_samples=True)
            results["disconnects"] = disconnects(server, cases[1], args.disconnects)
        slow = write_slow_model(work / "slow", 'name = "slow"\nmax_batch_size = 4\n'
                                'max_queue_size = 8\nmax_queue_delay_ms = 0.0')
        with ServerProcess(slow) as server:
            slow_cases = tiny_cases("slow", seed=2)
            results["burst"] = burst(server, slow_cases, args.burst, keep_samples=True)
            # clients leaving while their request waits in the queue or runs
            results["disconnects_slow"] = disconnects(server, slow_cases[1], 24, warm=4)
        drained = write_slow_model(work / "drain", 'name = "slow"\nmax_batch_size = 1\n'
                                   'max_queue_size = 64')
        results["drain"] = drain(drained, 12)
        results["hot_swap"] = hot_swap(work, args.swap_requests, args.concurrency, args.swaps,
                                       broken=4, gap_s=0.3)
    elapsed = time.perf_counter() - started
    text = (f"Load and faults, {machine()}; took {elapsed:.0f} s.\n\n{table(results)}\n")
    checks = verdicts(results)
    text += "\n" + "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}"
                             for name, ok in checks.items()) + "\n"
    print(text)
    brief = {name: {k: v for k, v in r.items() if k not in ("latencies_ms", "samples")}
             for name, r in results.items()}
    print(json.dumps(brief, indent=1, default=str), file=sys.stderr)
    write_result("load", {"settings": vars(args), "seconds": elapsed, "scenarios": results,
                          "checks": checks})
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
