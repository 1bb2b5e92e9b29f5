"""Torch-free model artifacts: a folder (or zip) that runs with the core dependencies only.

::

    chexnet/
      model.onnx          the graph
      config.toml         backend = "onnxruntime", the model class, its options
      model.py            the user's hooks, copied when the class came from a file
      labels.json         the model's ``labels``, when it has them
      metadata.json       versions, opset, creation time, signatures, preprocessing settings
      parity.json         the report ``verify`` produced
      CHECKSUMS.sha256    SHA-256 of every other file (``sha256sum -c`` compatible)

Loading verifies every checksum first and refuses a changed, missing or unlisted
file by name; a zip is unpacked into a cache folder only after every member
name is checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .. import __version__
from ..errors import ArtifactError, ExportError
from ..model import Model

__all__ = [
    "CHECKSUMS",
    "FORMAT",
    "encode_options",
    "file_digests",
    "is_artifact",
    "open_artifact",
    "option_values",
    "verify_checksums",
    "write_artifact",
    "write_parity",
    "write_zip",
]

log = logging.getLogger("model_agnostic.artifact")

FORMAT = "model-agnostic-artifact/1"
CHECKSUMS = "CHECKSUMS.sha256"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # always used with fullmatch
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MAX_MEMBERS, _MAX_UNPACKED = 64, 8 * 2**30


def write_artifact(
    model: Model,
    onnx_path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    report: dict[str, Any] | None = None,
    export_settings: dict[str, Any] | None = None,
    archive: bool = False,
    serving: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder for ``model`` around an exported ``onnx_path``; returns its path.

    ``report`` goes to ``parity.json`` (until :func:`write_parity` replaces it, a
    placeholder saying the artifact is not verified yet). With ``archive=True`` a
    ``<directory>.zip`` holding the same files is written too. ``serving`` (the config's
    ``[serving]`` section) is carried into the artifact's config. The model's options
    are written so that they load back equal, or refused (:func:`encode_options`).
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
    options = {name: getattr(model, name) for name in sorted(model.option_names())
               if hasattr(model, name)}
    _write_config(out / "config.toml", class_spec, options, serving or {})
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
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    write_parity(out, report or {"verdict": "unverified", "passed": False,
                                 "note": "written before verification; not verified yet"})
    if archive:
        write_zip(out, out.with_name(out.name + ".zip"))
    return out


def write_parity(folder: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """(Re)write ``parity.json`` and the checksums of every file."""
    folder = Path(folder)
    (folder / "parity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    _write_checksums(folder)


def file_digests(folder: str | os.PathLike[str], skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every regular file in ``folder`` but the checksum listing and ``skip``."""
    folder = Path(folder)
    return {p.name: _sha256(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in (CHECKSUMS, *skip)}


def _what_happened(onnx_file: Path) -> dict[str, Any]:
    """What the exporter did, read back from the file: exporter, real opset, fallbacks."""
    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    happened: dict[str, Any] = {
        "opset_written": next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "opset_import": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
    }
    if "model_agnostic.exporter" in props:
        happened["exporter_used"] = props["model_agnostic.exporter"]
        happened["fallbacks"] = json.loads(props.get("model_agnostic.fallbacks", "[]"))
    return happened


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """True for an artifact folder or a ``.zip`` archive of one."""
    path = Path(path)
    return (path.is_dir() and (path / CHECKSUMS).is_file()) or (
        path.is_file() and path.suffix == ".zip"
    )


def open_artifact(path: str | os.PathLike[str]) -> Path:
    """Verify an artifact (unpacking a zip first) and return its ``config.toml``."""
    path = Path(path)
    folder = _unpack(path) if path.is_file() else path
    verify_checksums(folder)
    return folder / "config.toml"


def verify_checksums(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`ArtifactError` naming any file that is changed, missing or unlisted."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.is_file():
        raise ArtifactError(f"{str(folder)!r} is not an artifact: it has no {CHECKSUMS}")
    if listing.is_symlink():
        raise ArtifactError(f"artifact {folder.name}: {CHECKSUMS} is a symbolic link; refused")
    expected: dict[str, str] = {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not (re.fullmatch(r"[0-9a-f]{64}", digest) and _PLAIN_NAME.fullmatch(name)):
            raise ArtifactError(f"{listing}: line {number} is not '<sha256>  <file name>'")
        expected[name] = digest
    for entry in folder.iterdir():
        if entry.name in (CHECKSUMS, "__pycache__"):
            continue
        if entry.is_symlink() or not entry.is_file():
            raise ArtifactError(f"artifact {folder.name}: {entry.name!r} is not a regular file; refused")
        if entry.name not in expected:
            raise ArtifactError(f"artifact {folder.name}: {entry.name!r} is not listed in {CHECKSUMS}; refused")
    for name, digest in expected.items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"artifact {folder.name}: {name!r} is missing")
        if _sha256(file) != digest:
            raise ArtifactError(
                f"artifact {folder.name}: {name!r} does not match its SHA-256 checksum; "
                "the file was changed after export, refused"
            )


def _external_data(onnx_path: Path) -> set[str]:
    import onnx

    from .to_onnx import external_data_files

    names = external_data_files(onnx.load(str(onnx_path), load_external_data=False))
    unsafe = [n for n in names if not _PLAIN_NAME.fullmatch(n) or n in ("model.onnx", CHECKSUMS)]
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
    if not _PLAIN_NAME.fullmatch(source.name):
        raise ExportError(f"cannot copy model source {source.name!r} into the artifact")
    return f"{source.name}:{hooks.__qualname__}", source


def option_values(hooks: type[Model], configured: dict[str, Any]) -> dict[str, Any]:
    """The options a model built from ``hooks`` with ``configured`` overrides will hold."""
    values = {}
    for name in sorted(hooks.option_names()):
        if name in configured:
            values[name] = configured[name]
        elif hasattr(hooks, name):
            values[name] = getattr(hooks, name)
    return values


def encode_options(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``[model.options]`` TOML lines, and the names of the options whose value is None.

    TOML has no null, so a None-valued option is listed in ``[model] none_options``
    instead (docs/export.md). Refuses, naming the option, any value that would not come
    back equal from the artifact's config.
    """
    lines, nones = [], []
    for name, value in sorted(options.items()):
        if value is None:
            nones.append(name)
        else:
            lines.append(f"{_key(name)} = {_toml(value, name)}")
    parsed = tomllib.loads("\n".join(["[options]", *lines, ""]))["options"]
    for name, value in options.items():
        if value is not None and not _same(parsed.get(name), value):
            raise ExportError(
                f"option {name!r} = {value!r:.80} would not come back equal from the "
                f"artifact's config (it reads back as {parsed.get(name)!r:.80})"
            )
    return lines, nones


def _same(a: Any, b: Any) -> bool:
    """Equal, with tuples and lists alike (TOML has arrays only) and types kept."""
    if isinstance(b, (list, tuple)):
        return isinstance(a, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return type(a) is type(b) and a == b


def _write_config(path: Path, class_spec: str, options: dict[str, Any],
                  serving: dict[str, Any]) -> None:
    option_lines, nones = encode_options(options)
    lines = [
        "# Written by model-agnostic export; runs on ONNX Runtime without torch.",
        'backend = "onnxruntime"',
        "",
        "[model]",
        f"class = {json.dumps(class_spec)}",
    ]
    if nones:
        lines.append(f"none_options = {_toml(nones, 'none_options')}  # options set to None")
    if option_lines:
        lines += ["", "[model.options]", *option_lines]
    lines += ["", "[onnxruntime]", 'path = "model.onnx"']
    if serving:
        lines += ["", "[serving]"] + [f"{k} = {_toml(v, k)}" for k, v in serving.items()]
    path.write_text("\n".join([*lines, ""]))


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _toml(value: Any, where: str) -> str:
    """One value as TOML: strings, booleans, integers, floats (nan, inf), dates and
    times, arrays and inline tables; anything else is refused, naming ``where``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str) and _utf8(value):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (datetime, date)) or (isinstance(value, time) and value.tzinfo is None):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict) and all(isinstance(k, str) and _utf8(k) for k in value):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v, f'{where}.{k}')}"
                               for k, v in value.items()) + "}"
    raise ExportError(
        f"option {where!r} = {value!r:.60} ({type(value).__name__}) cannot be stored in the "
        "artifact's config.toml: use a string, boolean, 64-bit integer, float, date or time, "
        "a list, a table with string keys, or None (top level only)"
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_checksums(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != CHECKSUMS)
    (folder / CHECKSUMS).write_text("".join(f"{_sha256(folder / n)}  {n}\n" for n in names))


def write_zip(folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Zip the artifact ``folder`` into ``target`` (written beside it, then renamed)."""
    folder, target = Path(folder), Path(target)
    partial = target.with_name(f".{target.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            if file.is_file():
                archive.write(file, file.name)
    os.replace(partial, target)
    return target


def _unpack(archive_path: Path) -> Path:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(
            f"{str(archive_path)!r} is not a valid artifact archive: {exc}"
        ) from None
    with archive:
        _check_members(archive_path.name, archive.infolist())
        cache = Path(os.environ.get("MODEL_AGNOSTIC_CACHE", Path.home() / ".cache" / "model_agnostic"))
        target = cache / "artifacts" / _sha256(archive_path)[:32]
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            archive.extractall(staging)
        except Exception as exc:  # bad CRC, truncated data, encryption, unknown compression
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactError(
                f"{archive_path.name} cannot be unpacked ({type(exc).__name__}: {exc}); "
                "the archive is corrupt or was not written by 'model-agnostic export'"
            ) from None
    try:
        staging.rename(target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_members(archive: str, members: list[zipfile.ZipInfo]) -> None:
    """Refuse, before anything is written, members that are not plain, unique, small files."""
    if len(members) > _MAX_MEMBERS or sum(m.file_size for m in members) > _MAX_UNPACKED:
        raise ArtifactError(
            f"{archive}: more than {_MAX_MEMBERS} members or {_MAX_UNPACKED} bytes unpacked; "
            "refused"
        )
    seen: set[str] = set()
    for member in members:
        name = member.filename
        if not _PLAIN_NAME.fullmatch(name) or member.is_dir():
            raise ArtifactError(
                f"{archive}: member {name!r} is not a plain file name; refused (expected "
                "names like 'model.onnx', with no folders, '..' or absolute paths)"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ArtifactError(f"{archive}: member {name!r} is a symbolic link; refused")
        if name in seen:
            raise ArtifactError(f"{archive}: member {name!r} appears twice; refused")
        seen.add(name)
