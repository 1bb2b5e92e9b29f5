"""The production server under load and faults, on loopback: sustained load, a burst above
capacity, clients that disconnect mid-request, SIGTERM with requests in flight, hot swap.

The scenarios are ``bench/load.py``'s (one copy of the code), run smaller here: the bench
runs 10,000 requests, this file 1,500.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("waitress")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(ROOT / "bench"))
import load  # noqa: E402  (bench/load.py)

SLOW_QUEUE = 'name = "slow"\nmax_batch_size = 4\nmax_queue_size = 8\nmax_queue_delay_ms = 0.0'


@pytest.fixture(scope="module")
def digits() -> Iterator[load.ServerProcess]:
    """The digits artifact, served by ``model-agnostic serve``."""
    with load.ServerProcess(load.DIGITS) as server:
        yield server


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[load.ServerProcess]:
    """A ~50 ms a call model whose queue holds 8 requests (batches of up to 4)."""
    config = load.write_slow_model(tmp_path_factory.mktemp("slow"), SLOW_QUEUE)
    with load.ServerProcess(config) as server:
        yield server


def test_sustained_load_has_no_errors_and_a_stable_footprint(
        digits: load.ServerProcess) -> None:
    result = load.sustained(digits, load.digits_cases(), requests=1500, concurrency=32,
                            warmup=300)
    assert result["errors"] == 0, result["first_errors"]
    assert result["statuses"] == {200: 1500}
    assert result["threads"][1] == result["threads"][0], result
    assert result["fds"][1] <= result["fds"][0], result
    assert result["rss_growth_pct"] < 15, result


def test_clients_that_disconnect_mid_request_leak_nothing(digits: load.ServerProcess) -> None:
    result = load.disconnects(digits, load.digits_cases(2)[1], rounds=60)
    assert result["threads"][1] == result["threads"][0], result
    assert result["fds"][1] <= result["fds"][0], result
    assert result["rss_growth_pct"] < 15, result
    assert result["after_ok"]


def test_a_burst_above_capacity_gets_quick_503s_and_every_accepted_request_completes(
        slow: load.ServerProcess) -> None:
    result = load.burst(slow, load.tiny_cases("slow", seed=2), size=60)
    assert not result["errors"], result["errors"]  # only 200 (correct) and 503 (in JSON)
    assert result["accepted"] + result["rejected"] == 60
    assert result["accepted"] >= 4 and result["rejected"] >= 10, result
    assert result["p99_503_ms"] < 1000, result
    assert result["after_ok"]


def test_clients_leaving_queued_or_running_requests_leak_nothing(
        slow: load.ServerProcess) -> None:
    result = load.disconnects(slow, load.tiny_cases("slow", 2)[1], rounds=16, warm=4)
    assert result["threads"][1] == result["threads"][0], result
    assert result["fds"][1] <= result["fds"][0], result
    assert result["after_ok"]


def test_sigterm_answers_every_request_in_flight_refuses_new_ones_and_exits_0(
        tmp_path: Path) -> None:
    config = load.write_slow_model(tmp_path, 'name = "slow"\nmax_batch_size = 1\n'
                                   'max_queue_size = 64')
    result = load.drain(config, requests=12)
    assert not result["errors"], result["errors"]
    assert result["answered"] == 12 and result["in_flight_at_sigterm"] >= 4, result
    assert result["new_connection_refused"]
    assert result["exit_code"] == 0 and result["drained_message"], result


def test_hot_swap_under_load_fails_no_request_and_each_answer_matches_its_version(
        tmp_path: Path) -> None:
    result = load.hot_swap(tmp_path, requests=1500, concurrency=32, swaps=5, broken=4,
                           gap_s=0.2)
    assert result["errors"] == 0, result["first_errors"]
    assert set(result["versions_seen"]) == {"1", "2", "3", "5", "6"}, result
    assert result["failed_at_end"] == ["4"] and result["served_at_end"] == ["6"], result
