"""Shared helpers for the bench scripts: machine description, interleaved timing, and
``write_result``, which every bench script calls to write its JSON result."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
XRAY = ROOT / "examples" / "chexnet" / "data" / "nih_cxr14_00000001_000.png"
CHEXNET_CONFIG = ROOT / "examples" / "chexnet" / "config.toml"
_STARTED = time.perf_counter()  # when the bench script imported this module


def machine() -> str:
    """One line: CPU model, cores, Python and library versions."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("numpy", "PIL", "onnxruntime", "torch", "torchvision"):
        try:
            module = __import__(name)
            versions.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, " + ", ".join(versions)


def interleaved_samples(fns: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of every timed call of each function, run round-robin so noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, run round-robin so noise hits all alike."""
    return medians(interleaved_samples(fns, repeats, warmup))


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``: ``data`` (samples, medians, ratios, targets)
    plus ``machine``, ``command``, ``commit`` (the code measured: ``git describe``-style,
    ``+dirty`` with uncommitted changes), ``finished`` (UTC) and ``wall_s`` (seconds since
    the script started). NaN and infinities become null. ``bench/render_docs.py`` renders the
    tables in docs/ from these files; the name is the bench script's file stem."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).is_absolute() and Path(argv[0]).is_relative_to(ROOT):
        argv[0] = Path(argv[0]).relative_to(ROOT).as_posix()
    record = {**data, "machine": machine(), "command": " ".join(["python", *argv]),
              "commit": commit(),
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "wall_s": round(time.perf_counter() - _STARTED, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(_dumps(_plain(record)) + "\n", encoding="utf-8")
    temporary.replace(path)
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return path


def commit() -> str:
    """The checked-out commit (short hash), ``+dirty`` when the tree has changes."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short=7", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, keys as strings, NaN/inf as None, paths as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def _dumps(value: Any, level: int = 0) -> str:
    """``json.dumps(indent=1, sort_keys=True)``, except that a list of numbers, strings or
    nulls stays on one line (timing samples would otherwise take a line each)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, level + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _dumps(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value)
