"""Refuse ONNX models whose external data would read files outside the model's folder.

An ONNX tensor may keep its values in another file (``external_data`` with a
``location``, ``offset`` and ``length``). ONNX Runtime opens that file when the
session is created, so a crafted model could make it read ``/etc/passwd``, a
key next to the model, or a device file. :func:`check_onnx_model` parses the
model without loading any external data and refuses, before a session exists,
every reference that is not a relative path to a regular file inside the
model's own folder, or whose byte range does not lie inside that file. A model
given as bytes has no folder, so any external reference in it is refused.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ._deps import require
from .errors import ModelLoadError

__all__ = ["ExternalReference", "check_onnx_model", "external_references"]

_ALLOWED = (
    "allowed: a relative path, with '/' separators and no '..', to a regular file inside "
    "the model's folder"
)
_KNOWN_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True)
class ExternalReference:
    """One tensor whose values live in another file: where it is and what it points to.

    ``tensor`` describes it for messages: its quoted name and, outside the main graph,
    where it sits (``"'w' in attribute 'value' of node 'const'"``). ``entries`` are its
    ``external_data`` key/value pairs, in file order, repeats included.
    """

    tensor: str
    entries: tuple[tuple[str, str], ...]

    def value(self, key: str) -> str | None:
        """The entry's value for ``key`` (``location``, ``offset``, ...), or None."""
        return next((v for k, v in self.entries if k == key), None)


def check_onnx_model(source: str | os.PathLike[str] | bytes) -> None:
    """Raise :class:`ModelLoadError` unless every external tensor stays inside the model folder.

    ``source`` is a ``.onnx`` path (external data resolves against its folder) or the
    serialized model (no folder: any external reference is refused). The model is parsed
    with ``load_external_data=False``; no external file is opened, only ``stat``-ed.
    """
    onnx = require("onnx", "Checking an ONNX model's external data")
    folder: Path | None = None
    label = "the ONNX model given as bytes"
    if not isinstance(source, bytes):
        path = Path(os.path.abspath(source))
        label, folder = repr(str(path)), path.parent
    try:
        if folder is None:
            proto = onnx.load_model_from_string(source)
        else:
            proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError, ...
        raise ModelLoadError(
            f"ONNX Runtime cannot load {label}: it is not a valid ONNX model ({exc}); "
            "expected a file written by onnx.save or torch.onnx.export"
        ) from None
    for ref in external_references(proto):
        _check_reference(ref, folder, label)


def external_references(proto: Any) -> list[ExternalReference]:
    """Every tensor in ``proto`` that stores its data externally, wherever it sits.

    Walks the whole message (initializers, sparse initializers, node attributes,
    subgraphs, functions, training info), so no place a tensor can hide is missed.
    """
    external = 1  # onnx.TensorProto.EXTERNAL; a number, so this needs no onnx import
    return [
        ExternalReference(where, tuple((e.key, e.value) for e in tensor.external_data))
        for where, tensor in _tensors(proto, "")
        if tensor.data_location == external or len(tensor.external_data)
    ]


def _tensors(message: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(description, TensorProto)`` for every tensor nested anywhere in ``message``."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in (value,) if hasattr(value, "ListFields") else value:
            kind = item.DESCRIPTOR.name
            if kind == "TensorProto":
                name = repr(item.name) if item.name else "(unnamed)"
                yield f"{name}{where and f' in {where}'}", item
            else:
                yield from _tensors(item, _context(kind, item, field.name, where))


def _context(kind: str, item: Any, field: str, where: str) -> str:
    named = {"NodeProto": "node", "AttributeProto": "attribute", "FunctionProto": "function"}
    if kind in named:
        here = f"{named[kind]} {item.name or getattr(item, 'op_type', '')!r}"
    elif kind == "GraphProto":
        if field == "graph" and not where:
            return ""  # the model's main graph
        here = f"graph {item.name!r}"
    elif kind in ("SparseTensorProto", "TrainingInfoProto"):
        here = field
    else:
        return where
    return f"{here} of {where}" if where else here


def _check_reference(ref: ExternalReference, folder: Path | None, label: str) -> None:
    location = ref.value("location")
    where = f"{label}: tensor {ref.tensor} keeps its data in {location!r}"
    if folder is None:
        raise ModelLoadError(
            f"{where}, but a model given as bytes has no folder to resolve external data "
            "against, so it is refused; load it from its .onnx path instead (the data file "
            "must sit inside the model's folder), or save it with the data embedded"
        )
    in_folder = f"{where}, which is refused for the model folder {str(folder)!r}"
    problem = _entry_problem(ref) or _location_problem(location)
    if problem:
        raise ModelLoadError(f"{in_folder}: {problem}; {_ALLOWED}")
    assert location is not None
    try:
        target = Path(os.path.realpath(folder / location, strict=True))
        info = target.stat()
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{in_folder}: it does not resolve to an existing file ({exc}); {_ALLOWED}"
        ) from None
    if not target.is_relative_to(os.path.realpath(folder)):
        raise ModelLoadError(
            f"{in_folder}: it resolves (through a symbolic link) to {str(target)!r}, outside "
            f"the folder; {_ALLOWED}"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f"{in_folder}: it is not a regular file; {_ALLOWED}")
    _check_range(ref, info.st_size, in_folder)


def _entry_problem(ref: ExternalReference) -> str:
    keys = [key for key, _ in ref.entries]
    unknown = sorted(set(keys) - _KNOWN_KEYS)
    if unknown:
        return f"it has unknown external_data keys {unknown} (known: {sorted(_KNOWN_KEYS)})"
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        return f"it repeats the external_data keys {repeated}; each may appear once"
    for key in ("offset", "length"):
        value = ref.value(key)
        if value is not None and not _DIGITS.fullmatch(value):
            return f"its {key} {value!r} is not a non-negative integer"
    return ""


def _location_problem(location: str | None) -> str:
    if not location:
        return "it has no location"
    if "\0" in location or "\\" in location:
        return "it contains a NUL or a backslash"
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive:
        return "it is an absolute path"
    if ".." in PurePosixPath(location).parts:
        return "it climbs out with '..'"
    return ""


def _check_range(ref: ExternalReference, size: int, in_folder: str) -> None:
    offset = int(ref.value("offset") or 0)
    length = ref.value("length")
    end = offset + int(length) if length is not None else offset
    if end > size or offset > size:
        raise ModelLoadError(
            f"{in_folder}: bytes {offset} to {end} lie beyond the end of the "
            f"{size}-byte file; the file is truncated or the offset/length are wrong"
        )
