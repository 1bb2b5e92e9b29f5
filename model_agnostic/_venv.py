"""A cached virtual environment of pinned packages, created on first use and reused: what
the ONNX -> TensorFlow converter runs in (``export/tf_converter.py``) and what the interop
tests' peer servers run in (``tests/peers/envs.py``).

A marker file written last records the specs, the Python version and what pip installed:
a venv whose marker matches is reused as it is; one without it (an interrupted install) or
with other specs is deleted and created again. pip's output goes to ``<folder>.log``, and
concurrent callers wait for one another on ``<folder>.lock``. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["MARKER", "ensure_venv", "ensure_venv_command", "marker", "venv_python", "venv_ready"]

#: The marker file inside a usable venv.
MARKER = "model-agnostic-venv.json"


def venv_python(folder: Path) -> Path:
    """The venv's interpreter (the venv may not exist yet)."""
    return folder / "bin" / "python"


def _wanted(specs: Sequence[str]) -> dict[str, Any]:
    return {"specs": list(specs), "python": platform.python_version()}


def marker(folder: Path) -> dict[str, Any] | None:
    """What the venv's marker records (``wanted``, ``installed``, ``created_s``), or None."""
    try:
        recorded = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def venv_ready(folder: Path, specs: Sequence[str]) -> bool:
    """Whether ``folder`` holds a venv of ``specs`` for this Python (no install needed)."""
    recorded = marker(folder)
    if recorded is None or recorded.get("wanted") != _wanted(specs):
        return False
    return venv_python(folder).is_file()


def ensure_venv(
    folder: Path,
    specs: Sequence[str],
    *,
    what: str,
    error: type[Exception],
    timeout_s: float,
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """The interpreter of the venv of ``specs`` in ``folder``, created first unless cached.

    ``what`` names it in messages; a failed step raises ``error`` with the end of pip's log.
    Each step (``venv``, ``pip install``) may take ``timeout_s``.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if not venv_ready(folder, specs):
            progress(f"creating {what} ({' '.join(specs)}) in {folder}; done once, then reused")
            _create(folder, specs, what, error, timeout_s)
    return venv_python(folder)


def ensure_venv_command(
    folder: Path, specs: Sequence[str], *, what: str, error: type[Exception], timeout_s: float
) -> int:
    """:func:`ensure_venv` for a command line: says whether the venv was cached or how long
    creating it took; exit status 1, with the reason on stderr, when that failed."""
    started = time.monotonic()
    cached = venv_ready(folder, specs)
    try:
        ensure_venv(folder, specs, what=what, error=error, timeout_s=timeout_s,
                    progress=lambda message: print(message, flush=True))  # fmt: skip
    except error as exc:
        print(exc, file=sys.stderr)
        return 1
    how = "cached" if cached else f"created in {time.monotonic() - started:.0f} s"
    print(f"{what} ({' '.join(specs)}): {how}, {folder}")
    return 0


def _create(
    folder: Path, specs: Sequence[str], what: str, error: type[Exception], timeout_s: float
) -> None:
    log = folder.with_name(folder.name + ".log")
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    python = str(venv_python(folder))
    steps = [
        [sys.executable, "-m", "venv", str(folder)],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *specs],
    ]
    with log.open("w", encoding="utf-8") as out:
        for command in steps:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            failure = _run(command, out, timeout_s)
            if failure:
                out.close()
                raise error(
                    f"could not create {what} in {folder} ({' '.join(specs)}): "
                    f"`{' '.join(command[:5])} ...` {failure}; end of {log}:\n{_tail(log)}"
                )
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=False
    ).stdout.split()
    record = {
        "wanted": _wanted(specs),
        "installed": freeze,
        "created_s": round(time.monotonic() - started, 1),
    }
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _run(command: list[str], out: TextIO, timeout_s: float) -> str:
    """Run ``command`` with its output into ``out``; what went wrong, or ""."""
    try:
        code = subprocess.run(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
        ).returncode
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout_s:.0f} s"
    except OSError as exc:
        return f"could not run ({exc})"
    return f"exited with {code}" if code else ""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
