"""The ``<!-- table: perf-check -->`` block of docs/benchmarks.md, from
bench/results/perf_check.json (written by bench/perf_check.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from render_common import source

RESULT = Path(__file__).resolve().parent / "results" / "perf_check.json"


def perf_check() -> str:
    """perf against a bare closed loop, per server, encoding and concurrency."""
    d = json.loads(RESULT.read_text(encoding="utf-8"))
    low, high = d["target"]["perf_over_direct"].split(" to ")
    lines = [_source(d), "",
             "| server | encoding | concurrency | perf (req/s) | direct (req/s) | perf / direct "
             "| p50 perf / direct | p99 perf / direct |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(d["stats"], key=_order):
        server, encoding, concurrency = name.split()
        perf, direct = d["stats"][name]["perf"], d["stats"][name]["direct"]
        lines.append(
            f"| {server} | {encoding} | {concurrency.removeprefix('c')} | {perf['req_s']:.2f} | "
            f"{direct['req_s']:.2f} | {d['ratios'][name]:.2f} | "
            f"{_ms(perf['p50_s'])} / {_ms(direct['p50_s'])} ms | "
            f"{_ms(perf['p99_s'])} / {_ms(direct['p99_s'])} ms |")
    ratios = d["ratios"].values()
    verdict = "met" if d["target"]["met"] else "**not met**"
    lines += ["", f"perf / direct throughput: **{min(ratios):.2f} to {max(ratios):.2f}** "
              f"(target {low} to {high} in every cell: {verdict}); requests perf saw fail: "
              f"{d['perf_failed']}."]
    return "\n".join(lines)


def _source(d: dict[str, Any]) -> str:
    return source("perf_check.json", note=(
        f"CheXNet {'x'.join(map(str, d['input_shape']))} FP32 asking for `{d['output']}`; "
        f"{d['requests']} requests per cell, way and round, {d['rounds']} alternating rounds; "
        "perf and the direct loop take turns going first."))


def _order(name: str) -> tuple[bool, str, str, int]:
    """Ours first, then by encoding and concurrency ("ours binary c8")."""
    server, encoding, concurrency = name.split()
    return server != "ours", server, encoding, int(concurrency.removeprefix("c"))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f}"
