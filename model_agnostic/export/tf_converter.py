"""ONNX -> TensorFlow SavedModel with onnx2tf, run from a virtual environment of its own.

onnx2tf pins exact versions of everything it touches (TensorFlow 2.19, onnx 1.19, onnxruntime
1.23, numpy 1.26, protobuf 4.25), so it cannot share the environment this package runs in.
It is installed once into ``$MODEL_AGNOSTIC_CACHE/onnx2tf-<version>/`` (default
``~/.cache/model_agnostic/onnx2tf-<version>/``; several GB: docs/backends.md) and run as a
subprocess (the cached-venv mechanics, marker, lock and log, are :mod:`model_agnostic._venv`).

:func:`convert` handles what onnx2tf gets wrong for us (docs/backends.md): it rewrites its
input file in place (we convert a copy), renames the signature's outputs ``output_0``...
and transposes 4-D outputs to NHWC (we re-wrap the signature with our names and layout),
needs ``onnxsim`` on ``PATH`` (the venv's ``bin`` goes first) and goes on to convert to
TFLite twice, most of its time (``_tf_onnx2tf.py`` stops it once the SavedModel is
written). An op it cannot convert is named in an :class:`ExportError`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._venv import ensure_venv, ensure_venv_command, venv_python, venv_ready
from ..artifact import CACHE_ENV
from ..errors import ExportError

__all__ = [
    "ONNX2TF_VERSION",
    "SPECS",
    "Conversion",
    "convert",
    "converter_dir",
    "ensure_converter",
    "is_ready",
    "supported_ops",
]

ONNX2TF_VERSION = "1.29.24"
#: What the converter's venv holds; onnx2tf pins its own dependencies exactly.
SPECS: tuple[str, ...] = (f"onnx2tf=={ONNX2TF_VERSION}",)
INSTALL_TIMEOUT_S = 3600.0
CONVERT_TIMEOUT_S = 1800.0
_REWRAP = Path(__file__).with_name("_tf_rewrap.py")  # runs inside the converter's venv
_ONNX2TF = Path(__file__).with_name("_tf_onnx2tf.py")  # onnx2tf, stopped before TFLite
_OP_IN_LOG = re.compile(r"onnx_op_type:\s*([A-Za-z0-9_]+)")
_OP_NAME_IN_LOG = re.compile(r"onnx_op_name:\s*(\S+)")

Progress = Callable[[str], None]
_VENV: dict[str, Any] = {
    "what": "the ONNX -> TensorFlow converter's venv (several GB)",
    "error": ExportError,
    "timeout_s": INSTALL_TIMEOUT_S,
}


@dataclass(frozen=True)
class Conversion:
    """A SavedModel written by :func:`convert`: where, how long it took, and with what."""

    path: Path
    seconds: float
    versions: dict[str, str]
    outputs_transposed: list[str] = field(default_factory=list)


def converter_dir() -> Path:
    """``$MODEL_AGNOSTIC_CACHE/onnx2tf-<version>``, default under ``~/.cache/model_agnostic``."""
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "model_agnostic")
    return cache.expanduser() / f"onnx2tf-{ONNX2TF_VERSION}"


def _python() -> Path:
    return venv_python(converter_dir())


def is_ready() -> bool:
    """Whether the converter's venv exists with the current specs (no install needed)."""
    return venv_ready(converter_dir(), SPECS)


def ensure_converter(progress: Progress = lambda message: None) -> Path:
    """The converter venv's interpreter, installing it first (several GB, once;
    concurrent callers wait). Raises :class:`ExportError` with the end of pip's log when
    the install fails."""
    return ensure_venv(converter_dir(), SPECS, progress=progress, **_VENV)


def supported_ops() -> frozenset[str]:
    """The ONNX op types onnx2tf converts: one module per op in its ``ops`` package."""
    found = list(converter_dir().glob("lib/python*/site-packages/onnx2tf/ops/*.py"))
    return frozenset(p.stem for p in found if not p.stem.startswith("_"))


def check_ops(onnx_path: Path, supported: frozenset[str]) -> None:
    """Refuse, before converting, a graph with ops onnx2tf has no converter for."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    missing: dict[str, str] = {}
    for node in _nodes(proto.graph):
        if node.op_type not in supported:
            key = (
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            )
            missing.setdefault(key, node.name or "(unnamed)")
    if missing:
        listed = ", ".join(f"{op} (node {name!r})" for op, name in missing.items())
        raise ExportError(
            f"onnx2tf {ONNX2TF_VERSION} cannot convert ONNX op {listed}: it has no converter for "
            "it; rewrite that part of the model with supported ops, or export to ONNX only"
        )


def _nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:  # If / Loop / Scan bodies
            if attribute.g.node:
                yield from _nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _nodes(sub)


def convert(
    onnx_path: str | os.PathLike[str],
    target: str | os.PathLike[str],
    inputs: Sequence[tuple[str, str, Sequence[int | None]]],
    outputs: Sequence[tuple[str, Sequence[int | None]]],
    example_shapes: Mapping[str, Sequence[int]],
    *,
    progress: Progress = lambda message: None,
) -> Conversion:
    """Convert ``onnx_path`` into a SavedModel folder ``target`` (which must not exist).

    ``inputs`` are ``(name, dtype, shape)`` and ``outputs`` ``(name, shape)`` of the ONNX
    graph (``None`` for a dynamic dimension): the SavedModel's ``serving_default``
    signature gets exactly these names and shapes, NCHW kept at the boundary.
    ``example_shapes`` (an input's real shape, e.g. the verified example's) become
    onnx2tf's shape hints, with a batch of 2: onnx2tf checks each op on test data, and at
    batch 1 it cannot tell ``Flatten(axis=1)`` from ``axis=0`` and freezes the batch.
    """
    source, target = Path(onnx_path), Path(target)
    python = ensure_converter(progress)
    check_ops(source, supported_ops())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="model-agnostic-onnx2tf-") as scratch:
        work = Path(scratch)
        copy = work / "model.onnx"  # onnx2tf rewrites its input in place
        shutil.copyfile(source, copy)
        for name in _external_data(source):
            shutil.copyfile(source.parent / name, work / name)
        raw = work / "onnx2tf"
        hints = [
            f"{name}:{','.join(map(str, [2, *example_shapes[name][1:]]))}" for name, _, _ in inputs
        ]
        images = [name for name, _, shape in inputs if 3 <= len(shape) <= 5]  # -k: 3-5-D only
        _run_onnx2tf(python, copy, raw, images, hints)
        spec = {
            "source": str(raw),
            "target": str(target),
            "inputs": [[n, d, list(s)] for n, d, s in inputs],
            "outputs": [[n, list(s)] for n, s in outputs],
        }
        done = _subprocess([str(python), str(_REWRAP), json.dumps(spec)], work)
        if done.returncode != 0:
            raise ExportError(
                "re-wrapping onnx2tf's SavedModel with the model's signature failed: "
                + _last_lines(done.stdout)
            )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    return Conversion(
        target,
        time.perf_counter() - started,
        {"onnx2tf": ONNX2TF_VERSION, **answer["versions"]},
        answer["transposed"],
    )


def _run_onnx2tf(
    python: Path, model: Path, out: Path, keep_nchw: list[str], hints: list[str]
) -> None:
    command = [str(python), str(_ONNX2TF), "-i", str(model), "-o", str(out), "-osd"]
    command += [*(["-k", *keep_nchw] if keep_nchw else []), "-sh", *hints]
    done = _subprocess(command, model.parent)
    if done.returncode != 0 or not (out / "saved_model.pb").is_file():
        ops = _OP_IN_LOG.findall(done.stdout)
        names = _OP_NAME_IN_LOG.findall(done.stdout)
        if ops:
            where = f" (node {names[-1]!r})" if names else ""
            raise ExportError(
                f"onnx2tf {ONNX2TF_VERSION} failed converting ONNX op {ops[-1]}{where}: "
                f"{_last_lines(done.stdout, 3)}"
            )
        raise ExportError(
            f"onnx2tf {ONNX2TF_VERSION} failed (exit {done.returncode}) without naming an op: "
            + _last_lines(done.stdout)
        )


def _subprocess(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = os.pathsep.join([str(_python().parent), env.get("PATH", "")])  # onnxsim
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", NO_COLOR="1")
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=CONVERT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"the converter ({Path(command[0]).name}) did not finish within "
            f"{CONVERT_TIMEOUT_S:.0f} s; stopped"
        ) from None


def _external_data(onnx_path: Path) -> set[str]:
    import onnx

    from .to_onnx import external_data_files

    return external_data_files(onnx.load(str(onnx_path), load_external_data=False))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_lines(text: str, count: int = 8) -> str:
    lines = [_ANSI.sub("", line).strip() for line in text.strip().splitlines()]
    return " | ".join(line for line in lines[-count:] if line)[:1500]


def main() -> int:
    """``python -m model_agnostic.export.tf_converter``: install the converter (CI runs it)."""
    return ensure_venv_command(converter_dir(), SPECS, **_VENV)


if __name__ == "__main__":
    sys.exit(main())
