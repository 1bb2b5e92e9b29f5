"""``export --format savedmodel``: the artifact's ONNX graph, converted to a TensorFlow
SavedModel inside the same artifact, then verified in the same parity report.

The SavedModel lies where TF Serving looks for one, ``savedmodel/<name>/<version>/``
(``saved_model.pb``, ``variables/``; ``<name>`` is ``[serving] name`` or the artifact's
folder name, ``<version>`` is ``[serving] version`` when it is a number, else 1), so
``tensorflow_model_server --model_base_path=<artifact>/savedmodel/<name>`` serves it. The
artifact's ``config.toml`` gains a ``[tensorflow]`` section pointing at it, and
``metadata.json`` a ``savedmodel`` entry: its signature, the converter's and TensorFlow's
versions, the conversion time. A CAM model's classifier weights are copied into the
SavedModel's ``assets.extra/`` (which TF Serving ignores) for the TensorFlow backend.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..artifact import SAVEDMODEL_DIR
from ..errors import ConfigError
from ..model import Model
from .artifact import write_parity
from .tf_converter import convert

__all__ = ["FORMATS", "add_savedmodel", "check_format", "savedmodel_folder"]

#: What ``export --format`` accepts: ONNX alone, or ONNX and a SavedModel beside it.
FORMATS = ("onnx", "savedmodel")


def check_format(value: Any) -> str:
    """``value`` if it is one of :data:`FORMATS`, else a :class:`ConfigError` saying so."""
    if value not in FORMATS:
        raise ConfigError(f"export format must be one of {list(FORMATS)}, got {value!r}")
    return str(value)


def savedmodel_folder(serving: dict[str, Any], output: Path) -> str:
    """``savedmodel/<name>/<version>``, relative to the artifact (see the module docs)."""
    name = str(serving.get("name") or output.name)
    version = str(serving.get("version", "1"))
    return f"{SAVEDMODEL_DIR}/{name}/{version if version.isdigit() else '1'}"


def add_savedmodel(
    reference: Model,
    staging: Path,
    example: Any,
    location: str,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Convert ``staging``'s ``model.onnx`` into ``staging/location`` and record it in the
    artifact's config and metadata; returns the metadata entry."""
    metadata = json.loads((staging / "metadata.json").read_text())
    shapes = {k: v.shape for k, v in reference.prepare(example).items()}
    target = staging / location
    conversion = convert(
        staging / "model.onnx",
        target,
        [(s["name"], s["dtype"], [_dim(d) for d in s["shape"]]) for s in metadata["inputs"]],
        [(s["name"], [_dim(d) for d in s["shape"]]) for s in metadata["outputs"]],
        shapes,
        progress=progress,
    )
    if reference.cam is not None:
        from ..backends.onnx_runtime import cam_weights_file as beside_graph
        from ..backends.tf_savedmodel import cam_weights_file

        cam_weights_file(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(beside_graph(staging / "model.onnx"), cam_weights_file(target))
    entry = {
        "path": location,
        "signature": "serving_default",
        "inputs": metadata["inputs"],
        "outputs": metadata["outputs"],
        "layout": "as the ONNX graph (NCHW kept); batch dynamic",
        "converted_from": "model.onnx",
        "conversion_s": round(conversion.seconds, 1),
        "outputs_transposed_back": conversion.outputs_transposed,
        "versions": {**conversion.versions, "tensorflow": _tensorflow_version()},
        "tflite": "not shipped (onnx2tf is stopped before it writes any)",
    }
    metadata["savedmodel"] = entry
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    config = (staging / "config.toml").read_text()
    (staging / "config.toml").write_text(
        config.rstrip("\n") + f'\n\n[tensorflow]\npath = "{location}"\n'
    )
    write_parity(staging, json.loads((staging / "parity.json").read_text()))  # checksums
    return entry


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _tensorflow_version() -> str:
    module = sys.modules.get("tensorflow")
    if module is None:
        from .._deps import require

        module = require("tensorflow", "verifying a SavedModel")
    return str(getattr(module, "__version__", "unknown"))
