"""Cached virtual environments for the third-party inference servers of the interop tests.

KServe's Python ``ModelServer`` and MLServer pin dependencies (FastAPI, pydantic, uvicorn,
protobuf...) that conflict with ours and with each other, so each runs from a virtual
environment of its own, created here on first use and reused afterwards:

* folder: ``<repo>/.peers/<name>``, or ``$MODEL_AGNOSTIC_PEERS_DIR/<name>``;
* the pinned specs below, in a cached venv (``model_agnostic._venv``: a marker written
  last, a lock, pip's output in ``<folder>.log``).

Create both up front (CI does, before ``make test``)::

    .venv/bin/python tests/peers/envs.py   # the tested peers; or: ... envs.py bentoml
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: python tests/peers/envs.py

from model_agnostic._venv import (  # noqa: E402
    ensure_venv,
    ensure_venv_command,
    venv_python,
    venv_ready,
)

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
    return venv_python(venv_dir(name))


def is_ready(name: str) -> bool:
    """Whether the venv exists with the current specs (then :func:`ensure` is instant)."""
    return venv_ready(venv_dir(name), SPECS[name])


def ensure(name: str) -> Path:
    """The interpreter of peer ``name``'s venv, created first unless cached.

    Raises :class:`PeerEnvError` (with the end of pip's log) when creation fails.
    Concurrent callers (two test runs) wait for each other through a lock file.
    """
    return ensure_venv(venv_dir(name), SPECS[name], **_settings(name))


def _settings(name: str) -> dict[str, Any]:
    return {"what": f"the {name} venv", "error": PeerEnvError, "timeout_s": PIP_TIMEOUT_S}


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
        if ensure_venv_command(venv_dir(name), SPECS[name], **_settings(name)):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
