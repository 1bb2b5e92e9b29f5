"""Writing model artifacts: the folder ``model-agnostic export`` ships (see
:mod:`model_agnostic.artifact` for its layout, and for reading and verifying one).

The artifact is written whole, then ``parity.json`` and the checksums are rewritten once the
parity report describing these very files is final (:func:`write_parity`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifact import CHECKSUMS, PLAIN_NAME, file_digests
from ..errors import ExportError
from ..model import Model
from .options import encode_options, toml_value

__all__ = ["FORMAT", "write_artifact", "write_parity", "write_zip"]

log = logging.getLogger(__name__)

FORMAT = "model-agnostic-artifact/1"


def write_artifact(
    model: Model,
    onnx_path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    report: dict[str, Any] | None = None,
    export_settings: dict[str, Any] | None = None,
    archive: bool = False,
    serving: dict[str, Any] | None = None,
    session: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder for ``model`` around an exported ``onnx_path``; returns its path.

    ``report`` goes to ``parity.json`` (until :func:`write_parity` replaces it, a
    placeholder saying the artifact is not verified yet). With ``archive=True`` a
    ``<directory>.zip`` holding the same files is written too. ``serving`` (the config's
    ``[serving]`` section) is carried into the artifact's config, and ``session`` (its
    ``[onnxruntime]`` settings but ``path``: the settings parity was verified with). The
    model's options are written so that they load back equal, or refused
    (:func:`encode_options`).
    """
    from ..backends.onnx_runtime import OnnxModel

    out = Path(directory)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"artifact folder {str(out)!r} exists and is not empty; choose a new one")
    class_spec, source = _hooks_source(model)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out / "model.onnx")
    for name in _external_data(Path(onnx_path)):  # weights of models over 2 GiB
        shutil.copyfile(Path(onnx_path).parent / name, out / name)
    if source is not None:
        shutil.copyfile(source, out / source.name)
    explain = None
    if model.cam is not None:
        from ..backends.onnx_runtime import cam_weights_file

        shutil.copyfile(cam_weights_file(Path(onnx_path)), cam_weights_file(out / "model.onnx"))
        explain = {
            "method": "class activation maps",
            "features_output": model.cam.features,
            "scores_output": model.cam.scores,
            "weights": cam_weights_file(out / "model.onnx").name,
        }
    options = {
        name: getattr(model, name) for name in sorted(model.option_names()) if hasattr(model, name)
    }
    _write_config(out / "config.toml", class_spec, options, serving or {}, session or {})
    labels = getattr(model, "labels", None)
    if labels:
        (out / "labels.json").write_text(json.dumps(list(labels), indent=2) + "\n")
    graph = OnnxModel(out / "model.onnx")
    metadata = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_class": class_spec,
        "weights": str(getattr(model, "weights_source", "unknown")),
        "versions": _versions(),
        "export": {**(export_settings or {}), **_what_happened(out / "model.onnx")},
        "inputs": [_signature(spec) for spec in graph.inputs],
        "outputs": [_signature(spec) for spec in graph.outputs],
        "preprocessing": {"options": options, "pipeline": repr(getattr(model, "transform", None))},
        "labels": "labels.json" if labels else None,
        "explain": explain,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    write_parity(
        out,
        report
        or {
            "verdict": "unverified",
            "passed": False,
            "note": "written before verification; not verified yet",
        },
    )
    if archive:
        write_zip(out, out.with_name(out.name + ".zip"))
    return out


def write_parity(folder: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """(Re)write ``parity.json`` and the checksums of every file."""
    folder = Path(folder)
    (folder / "parity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    _write_checksums(folder)


def _what_happened(onnx_file: Path) -> dict[str, Any]:
    """What the exporter did, read back from the file: exporter, real opset, fallbacks."""
    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    happened: dict[str, Any] = {
        "opset_written": next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None
        ),
        "opset_import": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
    }
    if "model_agnostic.exporter" in props:
        happened["exporter_used"] = props["model_agnostic.exporter"]
        happened["fallbacks"] = json.loads(props.get("model_agnostic.fallbacks", "[]"))
    return happened


def _external_data(onnx_path: Path) -> set[str]:
    import onnx

    from .to_onnx import external_data_files

    names = external_data_files(onnx.load(str(onnx_path), load_external_data=False))
    unsafe = [n for n in names if not PLAIN_NAME.fullmatch(n) or n in ("model.onnx", CHECKSUMS)]
    if unsafe:
        raise ExportError(f"{onnx_path.name} keeps weights in {unsafe}; expected plain file names")
    return names


def _hooks_source(model: Model) -> tuple[str, Path | None]:
    """The class spec for the artifact's config, and the source file to copy (if any)."""
    hooks = type(model).hooks_class or type(model)
    module = sys.modules.get(hooks.__module__)
    if "<locals>" in hooks.__qualname__:
        raise ExportError(
            f"{hooks.__qualname__} is defined inside a function; define it at module level "
            "so the artifact can import it"
        )
    if hooks.__module__ == "__main__" or module is None:
        raise ExportError(
            f"{hooks.__name__} is defined in a script (__main__); move it to its own module so "
            "the artifact can import it without running the script"
        )
    if not hooks.__module__.startswith("_model_agnostic_user."):
        return f"{hooks.__module__}:{hooks.__qualname__}", None  # an installed package
    source = Path(module.__file__ or "")
    if not PLAIN_NAME.fullmatch(source.name):
        raise ExportError(f"cannot copy model source {source.name!r} into the artifact")
    return f"{source.name}:{hooks.__qualname__}", source


def _write_config(
    path: Path,
    class_spec: str,
    options: dict[str, Any],
    serving: dict[str, Any],
    session: dict[str, Any],
) -> None:
    option_lines, nones = encode_options(options)
    lines = [
        "# Written by model-agnostic export; runs on ONNX Runtime without torch.",
        'backend = "onnxruntime"',
        "",
        "[model]",
        f"class = {json.dumps(class_spec)}",
    ]
    if nones:
        lines.append(f"none_options = {toml_value(nones, 'none_options')}  # options set to None")
    if option_lines:
        lines += ["", "[model.options]", *option_lines]
    lines += ["", "[onnxruntime]", 'path = "model.onnx"']
    lines += [f"{k} = {toml_value(v, k)}" for k, v in sorted(session.items()) if k != "path"]
    if serving:
        lines += ["", "[serving]"] + [f"{k} = {toml_value(v, k)}" for k, v in serving.items()]
    path.write_text("\n".join([*lines, ""]))


def _signature(spec: Any) -> dict[str, Any]:
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in spec.shape]
    return {"name": spec.name, "dtype": str(spec.dtype), "shape": shape}


def _versions() -> dict[str, str]:
    versions = {"model_agnostic": __version__, "python": platform.python_version()}
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions


def _write_checksums(folder: Path) -> None:
    digests = file_digests(folder)
    (folder / CHECKSUMS).write_text("".join(f"{d}  {n}\n" for n, d in digests.items()))


def write_zip(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Zip the artifact ``folder`` into ``target`` (written beside it, then renamed)."""
    folder, target = Path(folder), Path(target)
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in file_digests(folder, skip=()):  # every file the checksums cover
            archive.write(folder / name, name)
        archive.write(folder / CHECKSUMS, CHECKSUMS)
    os.replace(partial, target)
    return target
