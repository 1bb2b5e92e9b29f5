"""Fuzzing, the long version: the generators of the fuzz tests for 100 000+ inputs.

The HTTP targets run against ``python -m model_agnostic serve <tiny model> --port <free>``
started by this script (the production server, defaults but for a 1 ms batching delay),
over keep-alive loopback connections; the library targets run in this process:

=================  ============================================================================
api-openapi        schemathesis, the server's own ``/openapi.json`` (positive and negative)
api-openapi-v2     schemathesis, the same document with the v2 schemas of tests/fuzz_openapi.py
api-infer          v2 infer requests, valid and broken (tests/fuzz_requests.py: infer_cases)
api-predict        image uploads, every format and mode, valid and broken (predict_cases)
api-routes         any method, path and headers (route_cases)
decode-v2          the api-infer bodies, decoded in process (and answered, and read back)
decode-binary      binary tensors of every datatype, sizes and header lengths often wrong
decode-raw         raw bodies for random single-input specs
decode-bytes       arbitrary bytes and header values, as a request and as a response
transforms         every transform on random images and arrays, checked against torchvision
config             generated configs (schema-guided), load_config
config-text        arbitrary TOML-like text and bytes, load_config
=================  ============================================================================

The defaults give 104 000 requests across the API and the decoders (117 000 inputs in all,
about 10 minutes on 2 cores). Counted per target: inputs generated; errors (a 5xx answer,
an exception other than the documented one, or no answer at all); other violations (an
error that is not JSON ``{"error": ...}``, a wrong answer to a valid request); distinct
problems, the first example of each kept. The server must still be live at the end.
Writes bench/results/fuzz.json (per target: inputs, seconds, errors, violations, each
distinct problem with its count and first example; the server's RSS, liveness, exit code).

Usage: python bench/fuzz.py [--scale 1.0] [--seed 0] [--only TARGET ...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from common import machine, write_result  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import fuzz_inputs as inputs  # noqa: E402
from tests import fuzz_openapi as openapi  # noqa: E402
from tests.fuzz_requests import (  # noqa: E402
    Client,
    HttpCase,
    infer_cases,
    predict_cases,
    problem,
    route_cases,
)
from tests.serving_fixtures import write_tiny_model  # noqa: E402


@dataclass
class Tally:
    """What one target found."""

    name: str
    examples: int = 0
    seconds: float = 0.0
    errors: int = 0
    violations: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def record(self, found: str | None, example: Any) -> None:
        self.examples += 1
        if found is None:
            return
        error = found.startswith(("server error", "no answer")) or " raised " in found
        self.errors += error
        self.violations += not error
        key = re.sub(r"\d+", "N", found)[:110]  # one line per kind of problem
        self.problems[key] += 1
        self.first.setdefault(key, f"{found[:300]}\n      example: {example!r:.600}")


@dataclass(frozen=True)
class Target:
    name: str
    examples: int
    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[Any], str | None]


# --------------------------------------------------------------------------- the server
class Server:
    """``python -m model_agnostic serve <config> --port <free>`` in a child process."""

    def __init__(self, config: Path, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "model_agnostic", "serve", str(config), "--port",
                 str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 120
        while not self.live():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {log}")
            time.sleep(0.1)

    def live(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            connection.request("GET", "/v2/health/live")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+)", status)
        return int(found.group(1)) / 1024 if found else float("nan")

    def stop(self) -> int | None:
        self.process.terminate()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


def _sent(client: Client, case: HttpCase) -> str | None:
    try:
        return problem(case, client.send(case))
    except (OSError, http.client.HTTPException) as error:
        client.close()
        return f"no answer: {type(error).__name__}: {error}"


def _sent_by_schemathesis(case: Any, url: str, session: Any) -> str | None:
    try:
        return problem(*openapi.call(case, url, session))
    except Exception as error:  # requests' errors: no answer
        return f"no answer: {type(error).__name__}: {str(error)[:200]}"


def api_targets(server: Server, scale: float) -> list[Target]:
    import requests

    client, session = Client(server.url), requests.Session()
    document = json.loads(client.send(HttpCase("GET", "/openapi.json")).body)
    url = server.url
    return [
        Target("api-openapi", int(8000 * scale), lambda: openapi.schema_cases(document),
               lambda case: _sent_by_schemathesis(case, url, session)),
        Target("api-openapi-v2", int(3000 * scale),
               lambda: openapi.schema_cases(openapi.v2_document(document)),
               lambda case: _sent_by_schemathesis(case, url, session)),
        Target("api-infer", int(15000 * scale), infer_cases, lambda c: _sent(client, c)),
        Target("api-predict", int(8000 * scale), predict_cases, lambda c: _sent(client, c)),
        Target("api-routes", int(5000 * scale), route_cases, lambda c: _sent(client, c)),
    ]


# ------------------------------------------------------------------------------ library
def library_targets(folder: Path, scale: float) -> list[Target]:
    def v2(case: HttpCase) -> str | None:
        return inputs.decode_problem(case.body, dict(case.headers).get(
            "Inference-Header-Content-Length"))

    def raw_bytes(case: tuple[bytes, str | None]) -> str | None:
        return inputs.decode_problem(*case) or inputs.response_problem(*case)

    bytes_and_header = st.tuples(st.binary(max_size=96), st.none() | st.text(max_size=6))
    config_text = inputs.TOML_SOUP | st.text(max_size=60) | st.binary(max_size=60)
    return [
        Target("decode-v2", int(25000 * scale), infer_cases, v2),
        Target("decode-binary", int(20000 * scale), inputs.binary_requests, raw_bytes),
        Target("decode-raw", int(10000 * scale), inputs.raw_requests,
               lambda case: inputs.decode_problem(case[1], "0", raw_input=case[0])),
        Target("decode-bytes", int(10000 * scale), lambda: bytes_and_header, raw_bytes),
        Target("transforms", int(3000 * scale), inputs.transform_cases,
               inputs.transform_problem),
        Target("config", int(5000 * scale), inputs.config_documents,
               lambda text: inputs.config_problem(text, folder)),
        Target("config-text", int(5000 * scale), lambda: config_text,
               lambda source: inputs.config_problem(source, folder)),
    ]


def run(target: Target, chosen_seed: int) -> Tally:
    tally = Tally(target.name)

    @seed(chosen_seed)
    @settings(max_examples=target.examples, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=target.strategy())
    def each(case: Any) -> None:
        tally.record(target.check(case), case)

    started = time.perf_counter()
    each()
    tally.seconds = time.perf_counter() - started
    return tally


# ------------------------------------------------------------------------------- report
def report(tallies: list[Tally], header: str) -> str:
    columns = ("| target | inputs | errors (5xx, crash, no answer) | other violations "
               "| distinct problems | seconds |")
    lines = [header, "", columns, "|---|---:|---:|---:|---:|---:|"]
    for t in tallies:
        lines.append(f"| {t.name} | {t.examples:,} | {t.errors:,} | {t.violations:,} | "
                     f"{len(t.problems)} | {t.seconds:.0f} |")
    total = sum(t.examples for t in tallies)
    lines.append(f"| **total** | **{total:,}** | **{sum(t.errors for t in tallies):,}** | "
                 f"**{sum(t.violations for t in tallies):,}** | | "
                 f"**{sum(t.seconds for t in tallies):.0f}** |")
    for t in tallies:
        for key, count in t.problems.most_common():
            lines += ["", f"- {t.name}: {count}x {key}", f"      {t.first[key]}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    parser.add_argument("--only", nargs="*", help="run only these targets")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # stop the server too
    started = time.perf_counter()
    tallies: list[Tally] = []
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        folder = Path(tmp)
        config = write_tiny_model(folder / "tiny", serving='name = "tiny"\n'
                                                           'max_queue_delay_ms = 1.0')
        server = Server(config, folder / "serve.log")
        try:
            targets = api_targets(server, args.scale) + library_targets(folder, args.scale)
            rss = [server.rss_mib()]
            for target in targets:
                if args.only and target.name not in args.only:
                    continue
                tallies.append(run(target, args.seed))
                t = tallies[-1]
                print(f"{t.name}: {t.examples:,} inputs in {t.seconds:.0f} s, {t.errors} errors, "
                      f"{t.violations} other violations", flush=True)
            rss.append(server.rss_mib())
            live = server.live()
        finally:
            code = server.stop()
        log_tail = (folder / "serve.log").read_text(errors="replace")[-2000:]
    header = (f"Fuzzing, {machine()}; seed {args.seed}, scale {args.scale}; took "
              f"{time.perf_counter() - started:.0f} s. Server: live at the end: {live}; RSS "
              f"{rss[0]:.1f} -> {rss[-1]:.1f} MiB; exit code after SIGTERM: {code}.")
    text = report(tallies, header)
    print(text)
    if code != 0:
        print("server log (tail):\n" + log_tail)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    failed = not live or code != 0 or any(t.errors for t in tallies)
    write_result("fuzz", {
        "seed": args.seed, "scale": args.scale, "only": args.only,
        "seconds": time.perf_counter() - started,
        "server": {"live_at_end": live, "rss_start_mib": rss[0], "rss_end_mib": rss[-1],
                   "exit_code_after_sigterm": code},
        "targets": [{"name": t.name, "inputs": t.examples, "seconds": t.seconds,
                     "errors": t.errors, "violations": t.violations,
                     "problems": [{"kind": key, "count": count, "first": t.first[key]}
                                  for key, count in t.problems.most_common()]}
                    for t in tallies],
        "totals": {"inputs": sum(t.examples for t in tallies),
                   "errors": sum(t.errors for t in tallies),
                   "violations": sum(t.violations for t in tallies),
                   "http_inputs": sum(t.examples for t in tallies if t.name.startswith("api-"))},
        "passed": not failed})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
