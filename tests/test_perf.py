"""``model-agnostic perf``: every transport against our server (answers equal to direct
requests), the statistics on stubs with known latencies, errors counted by kind and never
fatal, the JSON and the PNG; against KServe's ModelServer, throughput consistent with a
closed loop measured directly here."""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_agnostic.cli.perf import add_parser
from model_agnostic.errors import (
    ConfigError,
    ModelLoadError,
    RemoteConnectionError,
    TensorSpecError,
)
from model_agnostic.perf import (
    LevelStats,
    Plan,
    RequestFailed,
    Settings,
    Target,
    build_inputs,
    document,
    parse_data,
    parse_shapes,
    plot_png,
    prepare,
    run,
    run_level,
    table,
    tensor_client,
)
from model_agnostic.perf.grpc_client import grpc_client
from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane
from model_agnostic.tensors import TensorSpec
from tests.peers.servers import PeerServer, free_port
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model

pytest.importorskip("waitress")
grpc = pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

IMAGE = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
MODES = {  # name -> Settings keywords
    "http binary": {"encoding": "binary"},
    "http json": {"encoding": "json"},
    "grpc": {"transport": "grpc"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = write_tiny_model(tmp_path_factory.mktemp("tiny"),
                              serving='name = "tiny"\nmax_queue_delay_ms = 1.0')
    options = ServerOptions(port=0, grpc_port=0, threads=8)
    with BackgroundServer(build_dataplane(config, options=options), options) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for seed in range(3):
        (folder / f"{seed}.png").write_bytes(png_bytes(seed))
    return folder


def settings(server: BackgroundServer, mode: str, **extra: Any) -> Settings:
    keywords = {**MODES[mode], **extra}
    url = str(server.grpc_address) if keywords.get("transport") == "grpc" else server.url
    return Settings(url=url, model="tiny", **keywords)


def cli(argv: list[str]) -> int:
    """``model-agnostic perf ARGV`` through the command module's own parser."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(), [])
    args = parser.parse_args(["perf", *argv])
    return int(args.run(args))


# ---------------------------------------------------------------- each transport, answers
def direct(server: BackgroundServer, mode: str, image: np.ndarray) -> np.ndarray:
    """The same request made with tritonclient, an independent implementation."""
    if mode == "grpc":
        client = grpcclient.InferenceServerClient(str(server.grpc_address))
        tensor = grpcclient.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
    else:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = httpclient.InferInput("image", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=mode == "http binary")
    try:
        return client.infer("tiny", [tensor]).as_numpy("logits")
    finally:
        client.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_each_transport_answers_what_a_direct_request_answers(
        server: BackgroundServer, mode: str, tmp_path: Path) -> None:
    np.save(tmp_path / "image.npy", IMAGE)
    factory, sent = prepare(settings(server, mode, data={None: tmp_path / "image.npy"}))
    assert sent == {"inputs": {"image": {"shape": [1, 3, 8, 8], "datatype": "FP32"}}}
    client = factory(0)
    try:
        answer = client.send()
    finally:
        client.close()
    np.testing.assert_array_equal(answer["logits"], direct(server, mode, IMAGE))
    np.testing.assert_allclose(answer["logits"], expected_logits(IMAGE), rtol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_sweep_over_each_transport_answers_every_request(
        server: BackgroundServer, mode: str) -> None:
    done = run(settings(server, mode, outputs=["logits"]), Plan((1, 3), requests=7, warmup=2))
    assert [level.concurrency for level in done.levels] == [1, 3]
    for level in done.levels:
        assert (level.ok, level.errors, level.warmup_errors) == (7, {}, {})
        assert level.throughput > 0 and 0 < level.percentile(50) <= level.percentile(99)
    assert done.describe()["mode"] == mode


def test_files_mode_posts_each_file_to_predict_like_a_direct_upload(
        server: BackgroundServer, images: Path) -> None:
    factory, sent = prepare(Settings(url=server.url, model="tiny", files=str(images)))
    assert sent["files"] == ["0.png", "1.png", "2.png"]
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    client = factory(1)  # client i starts at file i, then takes them in turn
    try:
        for name in ("1.png", "2.png", "0.png"):
            connection.request("POST", "/v2/models/tiny/predict", (images / name).read_bytes(),
                               {"Content-Type": "image/png"})
            expected = json.loads(connection.getresponse().read())["result"]
            assert client.send()["result"] == expected
    finally:
        client.close()
        connection.close()
    level = run(Settings(url=server.url, model="tiny", files=str(images)),
                Plan((2,), duration_s=0.3)).levels[0]
    assert level.ok > 0 and level.failed == 0


# ---------------------------------------------------------------- statistics on stubs
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Stub:
    """A client whose requests take known times on a fake clock; ``fail`` makes them fail."""

    def __init__(self, clock: FakeClock, latencies: list[float],
                 fail: Callable[[int], Exception | None] = lambda i: None) -> None:
        self.clock, self.latencies, self.fail = clock, latencies, fail
        self.calls, self.closed = 0, False

    def send(self) -> None:
        index, self.calls = self.calls, self.calls + 1
        self.clock.now += self.latencies[index % len(self.latencies)]
        error = self.fail(index)
        if error is not None:
            raise error

    def close(self) -> None:
        self.closed = True


def test_statistics_on_a_stub_with_known_latencies() -> None:
    clock = FakeClock()
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stub = Stub(clock, [0.5, *latencies])  # the first (warm-up) request is not measured
    level = run_level(lambda index: stub, 1, requests=100, warmup=1, clock=clock)
    assert stub.closed and stub.calls == 101
    assert level.latencies_s == pytest.approx(latencies)
    assert level.wall_s == pytest.approx(sum(latencies))  # 5.05 s from the start
    assert level.throughput == pytest.approx(100 / 5.05)
    # numpy's linear interpolation over 1..100 ms
    assert level.percentile(50) == pytest.approx(0.0505)
    assert level.percentile(90) == pytest.approx(0.0901)
    assert level.percentile(99) == pytest.approx(0.09901)
    doc = level.to_dict()
    assert doc["requests"] == doc["ok"] == 100 and doc["failed"] == 0
    assert doc["latency_s"]["mean"] == pytest.approx(0.0505) and len(doc["latencies_s"]) == 100


def test_a_level_without_a_count_or_duration_runs_100_requests() -> None:
    clock = FakeClock()
    assert run_level(lambda index: Stub(clock, [0.01]), 3, clock=clock).ok == 100


def test_a_duration_runs_until_it_has_passed() -> None:
    clock = FakeClock()
    stub = Stub(clock, [0.25])
    level = run_level(lambda index: stub, 1, duration_s=1.1, warmup=0, clock=clock)
    assert level.ok == 5  # started at 0, .25, .5, .75 and 1.0 s; the last ends past 1.1 s
    assert level.wall_s == pytest.approx(1.25) and level.throughput == pytest.approx(4.0)


def test_closed_loop_clients_run_concurrently_each_with_their_share() -> None:
    made: list[Any] = []

    class Sleeper:
        def __init__(self) -> None:
            self.calls, self.threads = 0, set()
            made.append(self)

        def send(self) -> None:
            self.calls += 1
            self.threads.add(threading.get_ident())
            time.sleep(0.02)

        def close(self) -> None:
            pass

    level = run_level(lambda index: Sleeper(), 4, requests=40, warmup=1)
    assert [client.calls for client in made] == [11] * 4  # 10 measured + 1 warm-up each
    assert all(len(client.threads) == 1 for client in made)
    assert len({ident for client in made for ident in client.threads}) == 4
    # 4 clients at 20 ms each: 200 req/s at most; sleep overshoots on a loaded machine
    assert 70 < level.throughput <= 205
    assert 0.02 <= level.percentile(50) < 0.06


def test_every_failure_is_counted_by_kind_and_none_stops_the_level() -> None:
    clock = FakeClock()
    kinds = {1: RequestFailed("HTTP 503", "busy"), 2: RequestFailed("timeout", "slow"),
             4: ValueError("a bug in a client"), 5: RequestFailed("HTTP 503", "busy again")}
    stub = Stub(clock, [0.01], fail=lambda i: kinds.get(i % 6))
    level = run_level(lambda index: stub, 1, requests=12, warmup=0, clock=clock)
    assert level.errors == {"HTTP 503": 4, "timeout": 2, "client ValueError": 2}
    assert level.ok == 4 and level.failed == 8 and level.throughput == pytest.approx(4 / 0.12)
    assert level.error_examples["HTTP 503"] == "busy"
    text = table([level])
    assert "errors at concurrency 1: 4 x HTTP 503: busy" in text
    assert "2 x client ValueError: a bug in a client" in text


def test_a_level_where_everything_failed_reports_no_latencies() -> None:
    level = LevelStats(2, 1.0, [], {"connection": 3})
    assert level.percentile(50) is None and level.throughput == 0
    assert level.to_dict()["latency_s"] == {"p50": None, "p90": None, "p99": None}
    assert table([level]).splitlines()[1].split() == ["2", "3", "3", "0.00", "-", "-", "-"]


# ---------------------------------------------------------------- errors against servers
def test_a_wrong_model_name_is_counted_as_404s(server: BackgroundServer, images: Path) -> None:
    wrong = Target(server.url, "nope")
    level = run_level(tensor_client(wrong, {"image": IMAGE}), 2, requests=6)
    assert level.errors == {"HTTP 404": 6} and level.warmup_errors == {"HTTP 404": 2}
    assert "no model is named 'nope'" in level.error_examples["HTTP 404"]
    wrong = Target(str(server.grpc_address), "nope")
    level = run_level(grpc_client(wrong, {"image": IMAGE}), 2, requests=6)
    assert level.errors == {"gRPC NOT_FOUND": 6}
    assert cli(["nope", "--url", server.url, "--files", str(images), "--requests", "3"]) == 1
    with pytest.raises(ModelLoadError, match="does not serve model 'nope'"):  # metadata first
        cli(["nope", "--url", server.url])


def test_a_server_that_is_down_is_counted_as_connection_errors() -> None:
    port = free_port()  # nobody listens there
    for factory in (tensor_client(Target(f"http://127.0.0.1:{port}", "tiny", timeout_s=5),
                                  {"image": IMAGE}),
                    grpc_client(Target(f"127.0.0.1:{port}", "tiny", timeout_s=5),
                                {"image": IMAGE})):
        level = run_level(factory, 2, requests=4)
        assert level.errors == {"connection": 4} and level.ok == 0
    with pytest.raises(RemoteConnectionError, match="is the server running"):
        cli(["tiny", "--url", f"http://127.0.0.1:{port}"])


def test_a_server_that_never_answers_is_counted_as_timeouts() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        target = Target("http://" + address, "tiny", timeout_s=0.3)
        level = run_level(tensor_client(target, {"image": IMAGE}), 2, requests=2, warmup=0)
        assert level.errors == {"timeout": 2}
        level = run_level(grpc_client(Target(address, "tiny", timeout_s=0.3), {"image": IMAGE}),
                          1, requests=1, warmup=0)
        assert level.errors == {"timeout": 1}


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with ``{}`` on a keep-alive connection; records the client port."""

    protocol_version = "HTTP/1.1"
    ports: list[int] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_each_client_keeps_one_connection_of_its_own(images: Path) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder) as stub:
        thread = threading.Thread(target=stub.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{stub.server_address[1]}"
            level = run(Settings(url=url, model="m", files=str(images)),
                        Plan((3,), requests=9, warmup=1)).levels[0]
        finally:
            stub.shutdown()
    assert level.ok == 9
    counts = sorted(_Recorder.ports.count(port) for port in set(_Recorder.ports))
    assert counts == [4, 4, 4]  # three connections, each carrying 1 warm-up + 3 requests


# ---------------------------------------------------------------- the command line
def test_the_command_writes_a_table_json_and_a_png(
        server: BackgroundServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "perf.json"
    code = cli(["tiny", "--url", server.url, "--concurrency", "1,2,4", "--requests", "8",
                "--output", "logits", "--encoding", "json", "--json", str(out),
                "--plot", str(tmp_path / "perf.png")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["concurrency", "requests", "failed", "req/s", "p50", "ms", "p90",
                                "ms", "p99", "ms"]
    assert [line.split()[:3] for line in lines[1:]] == [["1", "8", "0"], ["2", "8", "0"],
                                                        ["4", "8", "0"]]
    doc = json.loads(out.read_text())
    assert doc["settings"]["mode"] == "http json" and doc["settings"]["outputs"] == ["logits"]
    assert doc["settings"]["sent"]["inputs"]["image"]["shape"] == [1, 3, 8, 8]
    assert [level["ok"] for level in doc["levels"]] == [8, 8, 8]
    assert all(len(level["latencies_s"]) == 8 for level in doc["levels"])
    with Image.open(tmp_path / "perf.png") as png:
        assert png.format == "PNG" and png.size[0] >= 600
        assert len(png.getcolors(1 << 16) or []) > 3  # more than a blank frame


def test_the_plot_draws_levels_that_all_failed_as_gaps(tmp_path: Path) -> None:
    levels = [LevelStats(1, 1.0, [0.01, 0.02]), LevelStats(2, 1.0, [], {"connection": 2})]
    plot_png(levels, tmp_path / "gaps.png")
    with Image.open(tmp_path / "gaps.png") as png:
        assert png.format == "PNG"
    assert document(levels, {"url": "x"}, samples=False)["levels"][1]["errors"] == {"connection": 2}


# ---------------------------------------------------------------- the workload
def test_shapes_data_and_random_inputs_follow_the_signature(tmp_path: Path) -> None:
    specs = [TensorSpec("image", np.dtype("float32"), ("batch", 3, None, None)),
             TensorSpec("ids", np.dtype("int64"), (None, 4)),
             TensorSpec("flag", np.dtype("bool"), (1,)),
             TensorSpec("text", np.dtype(object), (2,))]
    assert parse_shapes(["image=2,3,16,16"]) == {"image": (2, 3, 16, 16)}
    arrays = build_inputs(specs, parse_shapes(["image=2,3,16,16"]))
    assert {k: (a.shape, a.dtype.kind) for k, a in arrays.items()} == {
        "image": ((2, 3, 16, 16), "f"), "ids": ((1, 4), "i"), "flag": ((1,), "b"),
        "text": ((2,), "O")}
    assert all(isinstance(v, bytes) and len(v) == 8 for v in arrays["text"])
    np.testing.assert_array_equal(build_inputs(specs, {"image": (1, 3, 2, 2)}, seed=3)["ids"],
                                  build_inputs(specs, {"image": (1, 3, 2, 2)}, seed=3)["ids"])
    with pytest.raises(ConfigError, match="--shape image=D1,D2"):
        build_inputs(specs)  # variable dims past the batch need a --shape
    with pytest.raises(ConfigError, match="does not fit the model's input 'image'"):
        build_inputs(specs, {"image": (1, 4, 2, 2)})
    with pytest.raises(ConfigError, match="no input 'pixels'"):
        build_inputs(specs, {"pixels": (1,)})
    ids = np.arange(8, dtype=np.int64).reshape(2, 4)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "wrong.npy", ids.astype(np.float32))
    got = build_inputs(specs, {"image": (1, 3, 2, 2)}, parse_data([f"ids={tmp_path}/ids.npy"]))
    np.testing.assert_array_equal(got["ids"], ids)
    with pytest.raises(TensorSpecError, match="input 'ids': perf's data gave"):
        build_inputs(specs, {"image": (1, 3, 2, 2)}, {"ids": tmp_path / "wrong.npy"})
    with pytest.raises(ConfigError, match="use --data NAME=FILE.npy"):
        build_inputs(specs, {"image": (1, 3, 2, 2)}, {None: tmp_path / "ids.npy"})


@pytest.mark.parametrize("bad", ["image", "image=", "image=1,x", "=1,2", "image=-1,3"])
def test_a_malformed_shape_says_the_form(bad: str) -> None:
    with pytest.raises(ConfigError, match="NAME=D1,D2"):
        parse_shapes([bad])


def test_settings_refuse_combinations_that_mean_nothing(images: Path) -> None:
    with pytest.raises(ConfigError, match="json is HTTP only"):
        Settings(url="127.0.0.1:1", model="m", transport="grpc", encoding="json")
    with pytest.raises(ConfigError, match="takes no --transport grpc, --shape"):
        Settings(url="http://x", model="m", files=str(images), shapes={"a": (1,)})
    with pytest.raises(ConfigError, match="a number of requests or a duration per level, not"):
        Plan((1,), requests=5, duration_s=1.0)
    assert Plan((1, 2)).requests == 100
    with pytest.raises(ConfigError, match="must be integers >= 1"):
        cli(["m", "--concurrency", "1,0"])


# ---------------------------------------------------------------- against KServe
def closed_loop(url: str, body: bytes, headers: dict[str, str], requests: int,
                concurrency: int) -> float:
    """Requests per second of a closed loop measured directly: one http.client connection
    per thread (warmed up with one request), the pre-encoded body, every answer read."""
    host, port = url.removeprefix("http://").split(":")
    connections = [http.client.HTTPConnection(host, int(port), timeout=60)
                   for _ in range(concurrency)]
    statuses: list[int] = []

    def post(connection: http.client.HTTPConnection) -> None:
        connection.request("POST", "/v2/models/digits/infer", body, headers)
        answer = connection.getresponse()
        answer.read()
        statuses.append(answer.status)

    for connection in connections:
        post(connection)
    start = threading.Barrier(concurrency + 1)

    def worker(connection: http.client.HTTPConnection) -> None:
        start.wait()
        for _ in range(requests // concurrency):
            post(connection)

    threads = [threading.Thread(target=worker, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    for connection in connections:
        connection.close()
    assert set(statuses) == {200}
    return requests // concurrency * concurrency / wall


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["binary", "json"])
def test_against_kserve_throughput_agrees_with_a_direct_closed_loop(
        kserve_server: PeerServer, encoding: str) -> None:
    """perf and a bare closed loop load digits alternately, three times each, at
    concurrency 1 and 4; their summed throughputs must agree within a factor of 2.

    Why 2: perf does a little more per request than the bare loop (its pooled transport,
    and it decodes every answer), a tenth of a millisecond or two on KServe's 2-4 ms round
    trip for digits, so it should read 5-20% lower; and on the shared 2-core development
    machine two back-to-back runs of the bare loop alone differed by up to 1.8x. Measured
    ratios over four runs of this test: 0.80 to 0.99. A tool that miscounts requests or
    time is off by far more than 2."""
    from model_agnostic.protocol import encode_infer_request

    pixels = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    body, headers = encode_infer_request({"pixels": pixels}, binary=encoding == "binary",
                                         outputs=["logits"], binary_outputs=encoding == "binary")
    npy = Path(kserve_server.log).parent / "pixels.npy"
    np.save(npy, pixels)
    chosen = Settings(url=kserve_server.url, model="digits", encoding=encoding,
                      data={None: npy}, outputs=["logits"])
    for concurrency in (1, 4):
        ours, bare = [], []
        for _ in range(3):  # alternating, so noise hits both
            bare.append(closed_loop(kserve_server.url, body, headers, 240, concurrency))
            level = run(chosen, Plan((concurrency,), requests=240)).levels[0]
            assert level.failed == 0 and level.ok == 240
            ours.append(level.throughput)
        ratio = sum(ours) / sum(bare)
        assert 0.5 < ratio < 2.0, (concurrency, ours, bare)
