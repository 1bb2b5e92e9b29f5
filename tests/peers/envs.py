"""Cached virtual environments for the third-party inference servers of the interop tests.

KServe's Python ``ModelServer`` and MLServer pin dependencies (FastAPI, pydantic, uvicorn,
protobuf...) that conflict with ours and with each other, so each runs from a virtual
environment of its own, created here on first use and reused afterwards:

* folder: ``<repo>/.peers/<name>``, or ``$MODEL_AGNOSTIC_PEERS_DIR/<name>``;
* the pinned specs below, installed with pip into a venv of the interpreter running this;
* a marker file, written last, records the specs and the Python version: a venv whose
  marker matches is reused as it is; one without it (an interrupted install) or with
  other specs is deleted and created again. pip's output goes to ``<folder>.log``.

Standard library only. Create both up front (CI does, before ``make test``)::

    python3 tests/peers/envs.py            # the tested peers; or: ... envs.py bentoml
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]

#: What each peer's venv holds: the server at a pinned version, and what our runtimes use.
SPECS: dict[str, tuple[str, ...]] = {
    "kserve": ("kserve==0.21.0", "onnxruntime", "numpy"),
    # uvloop 0.22 stopped get_event_loop() from making a loop; MLServer 1.7.1's inference
    # worker processes call it at start and die, which takes the server down with its
    # default parallel_workers=1 ("There is no current event loop in thread 'MainThread'").
    "mlserver": ("mlserver==1.7.1", "onnxruntime", "numpy", "uvloop<0.22"),
    # bench/json_path.py only: BentoML's adaptive batching against our server.
    "bentoml": ("bentoml==1.4.40", "onnxruntime", "numpy"),
}
#: The peers the test suite starts (``envs.py`` with no arguments creates these).
TESTED = ("kserve", "mlserver")
DIR_VARIABLE = "MODEL_AGNOSTIC_PEERS_DIR"
MARKER = "model-agnostic-peer.json"
PIP_TIMEOUT_S = 1800


class PeerEnvError(RuntimeError):
    """A peer's venv could not be created; the message says why and where the log is."""


def peers_dir() -> Path:
    """Where the venvs live: ``$MODEL_AGNOSTIC_PEERS_DIR``, else ``<repo>/.peers``."""
    value = os.environ.get(DIR_VARIABLE, "").strip()
    return Path(value).expanduser().resolve() if value else ROOT / ".peers"


def venv_dir(name: str) -> Path:
    _check_name(name)
    return peers_dir() / name


def python(name: str) -> Path:
    """The venv's interpreter (the venv may not exist yet: see :func:`ensure`)."""
    return venv_dir(name) / "bin" / "python"


def wanted(name: str) -> dict[str, object]:
    """What the marker of a usable venv records."""
    _check_name(name)
    return {"specs": list(SPECS[name]), "python": platform.python_version()}


def is_ready(name: str) -> bool:
    """Whether the venv exists with the current specs (then :func:`ensure` is instant)."""
    try:
        recorded = json.loads((venv_dir(name) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("wanted") == wanted(name) and python(name).is_file()


def ensure(name: str) -> Path:
    """The interpreter of peer ``name``'s venv, created first unless cached.

    Raises :class:`PeerEnvError` (with the end of pip's log) when creation fails.
    Concurrent callers (two test runs) wait for each other through a lock file.
    """
    folder = venv_dir(name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{name}.lock"):
        if is_ready(name):
            return python(name)
        _create(name, folder)
    return python(name)


def _create(name: str, folder: Path) -> None:
    log = folder.parent / f"{name}.log"
    if folder.exists():
        shutil.rmtree(folder)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        steps = [
            [sys.executable, "-m", "venv", str(folder)],
            [str(folder / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", *SPECS[name]],
        ]
        for command in steps:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            failure = _run(command, out)
            if failure:
                out.close()
                raise PeerEnvError(
                    f"could not create the {name} venv in {folder} ({' '.join(SPECS[name])}): "
                    f"`{' '.join(command[:5])} ...` {failure}; end of {log}:\n" + _tail(log)
                )
    freeze = subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "freeze"],
                            capture_output=True, text=True, check=False).stdout.split()
    record = {"wanted": wanted(name), "installed": freeze,
              "created_s": round(time.monotonic() - started, 1)}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _run(command: list[str], out: TextIO) -> str:
    """Run ``command`` with its output into ``out``; what went wrong, or ""."""
    try:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=PIP_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        return f"did not finish within {PIP_TIMEOUT_S} s"
    except OSError as exc:
        return f"could not run ({exc})"
    return f"exited with {code}" if code else ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _check_name(name: str) -> None:
    if name not in SPECS:
        raise ValueError(f"unknown peer {name!r}; known: {sorted(SPECS)}")


def main(argv: list[str]) -> int:
    names = argv or list(TESTED)
    for name in names:
        if name not in SPECS:
            print(f"unknown peer {name!r}; known: {' '.join(sorted(SPECS))}", file=sys.stderr)
            return 2
    for name in names:
        started = time.monotonic()
        cached = is_ready(name)
        try:
            ensure(name)
        except PeerEnvError as exc:
            print(exc, file=sys.stderr)
            return 1
        how = "cached" if cached else f"created in {time.monotonic() - started:.0f} s"
        print(f"peer venv {name} ({' '.join(SPECS[name])}): {how}, {venv_dir(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
