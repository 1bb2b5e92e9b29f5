"""A variant's artifact folder: the source artifact's files with ``model.onnx`` replaced,
its optimisation recorded in ``metadata.json``, its own ``parity.json`` and checksums.

Built in a staging folder beside the target and moved into place by a rename only when
the variant passed (export's atomic swap); the source artifact is only ever read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ...artifact import CHECKSUMS, file_digests
from ..artifact import write_parity
from ..pipeline import _staging_folder, _swap_in

__all__ = ["finish_variant", "ship_variant", "stage_variant"]

_REPLACED = ("model.onnx", "parity.json", CHECKSUMS)


def stage_variant(source: Path, output: Path, graph: Path) -> Path:
    """A staging folder beside ``output`` holding ``source``'s files with ``graph`` as
    ``model.onnx``, and placeholder parity and checksums (so it loads like any artifact)."""
    staging = _staging_folder(output)
    skipped = set(_REPLACED) | _external_data(source / "model.onnx")
    for file in sorted(source.iterdir()):
        if file.is_file() and file.name not in skipped:
            shutil.copyfile(file, staging / file.name)
    shutil.copyfile(graph, staging / "model.onnx")
    write_parity(staging, {"verdict": "unverified", "passed": False, "note": "not verified yet"})
    return staging


def finish_variant(staging: Path, record: dict[str, Any], report: dict[str, Any]) -> None:
    """Record the optimisation in ``metadata.json``, then write ``parity.json`` (its
    subject: every file's SHA-256) and the checksums."""
    metadata_file = staging / "metadata.json"
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    metadata["optimization"] = record
    metadata_file.write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    report["subject"] = {
        **report.get("subject", {}),
        "kind": "artifact",
        "files": file_digests(staging, skip=("parity.json",)),
    }
    write_parity(staging, report)


def ship_variant(staging: Path, output: Path) -> None:
    """Move the verified staging folder into place (replacing ``output`` by renames)."""
    _swap_in(staging, output)


def _external_data(graph: Path) -> set[str]:
    """The files holding ``graph``'s external weights (replaced by the variant's graph)."""
    import onnx

    from ..to_onnx import external_data_files

    return set(external_data_files(onnx.load(str(graph), load_external_data=False)))
