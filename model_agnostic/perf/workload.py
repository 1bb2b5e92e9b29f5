"""What ``model-agnostic perf`` sends: input tensors built from a model's signature, or files.

Tensors: every input of the model's metadata, its variable dimensions filled from
``--shape NAME=1,3,224,224`` (a variable first dimension alone defaults to 1, the batch),
with seeded random data of the input's dtype or the contents of an ``.npy`` file. The
arrays are checked against the signature with :func:`~model_agnostic.tensors.check_arrays`
before anything is sent. Files: every file of a folder (or one file), read once.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..tensors import TensorSpec, check_arrays, describe_spec, is_fixed

__all__ = ["Upload", "build_inputs", "parse_data", "parse_shapes", "random_array", "read_files"]

#: Files at most read for files mode (they are all held in memory).
MAX_FILES = 10_000


@dataclass(frozen=True)
class Upload:
    """One file to POST: its name, bytes and content type."""

    name: str
    body: bytes
    content_type: str


def parse_shapes(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["image=1,3,224,224"]`` -> ``{"image": (1, 3, 224, 224)}``; :class:`ConfigError` if bad."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, sep, dims = text.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            shape = (-1,)
        if not sep or not name or not shape or any(d < 0 for d in shape):
            raise ConfigError(
                f"--shape {text!r} must be NAME=D1,D2,... with non-negative integer "
                "dimensions, e.g. image=1,3,224,224"
            )
        if name in shapes:
            raise ConfigError(f"--shape gives input {name!r} twice")
        shapes[name] = shape
    return shapes


def parse_data(texts: Sequence[str]) -> dict[str | None, Path]:
    """``["image=x.npy"]`` -> ``{"image": Path("x.npy")}``; a bare ``x.npy`` is keyed ``None``
    (the model's only input)."""
    found: dict[str | None, Path] = {}
    for text in texts:
        name, sep, path = text.rpartition("=") if "=" in text else ("", "", text)
        key = name if sep else None
        if (sep and not name) or not path.endswith(".npy"):
            raise ConfigError(f"--data {text!r} must be FILE.npy or NAME=FILE.npy")
        if key in found:
            raise ConfigError(f"--data gives {'the input' if key is None else repr(key)} twice")
        found[key] = Path(path)
    return found


def random_array(dtype: np.dtype, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Seeded values of ``dtype``: normal floats, small integers, booleans, 8-byte strings."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(tuple(shape)).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, min(100, np.iinfo(dt).max) + 1, tuple(shape)).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, tuple(shape)).astype(bool)
    if dt.kind in "OSU":
        letters = rng.integers(ord("a"), ord("z") + 1, (*shape, 8), dtype=np.uint8)
        values = np.empty(tuple(shape), dtype=object)
        for index in np.ndindex(*shape):
            values[index] = letters[index].tobytes()
        return values
    raise ConfigError(f"cannot make random data of dtype {dt}; give it with --data NAME=FILE.npy")


def build_inputs(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: Mapping[str | None, Path] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One array per input of ``specs``, from ``data`` files or random; checked against them."""
    shapes, data = dict(shapes or {}), dict(data or {})
    names = [spec.name for spec in specs]
    for name in [*shapes, *(k for k in data if k is not None)]:
        if name not in names:
            raise ConfigError(f"the model has no input {name!r}; its inputs are {names}")
    if None in data:
        if len(specs) != 1:
            raise ConfigError(
                f"--data FILE.npy names no input, but the model has {len(specs)}: {names}; "
                "use --data NAME=FILE.npy"
            )
        data[names[0]] = data.pop(None)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        path = data.get(spec.name)
        if path is not None:
            arrays[spec.name] = _load_npy(path, spec)
        else:
            arrays[spec.name] = random_array(spec.dtype, _shape(spec, shapes.get(spec.name)), rng)
    check_arrays(specs, arrays, source="perf's data")
    return arrays


def read_files(target: str | Path) -> list[Upload]:
    """The files to upload: ``target`` itself, or every visible file in the folder, sorted."""
    path = Path(target)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        paths = [path]
    else:
        raise ConfigError(f"--files {str(target)!r} is neither a file nor a folder")
    if not paths:
        raise ConfigError(f"--files {str(target)!r}: the folder has no files")
    if len(paths) > MAX_FILES:
        raise ConfigError(f"--files {str(target)!r} has {len(paths)} files; at most {MAX_FILES}")
    return [
        Upload(
            p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        )
        for p in paths
    ]


def _shape(spec: TensorSpec, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape to send: ``given`` (checked against the spec), else the spec's with a
    variable first dimension as 1."""
    hint = f"give it with --shape {spec.name}=D1,D2,..."
    if given is not None:
        if spec.shape is not None and (
            len(given) != len(spec.shape)
            or any(is_fixed(w) and w != g for w, g in zip(spec.shape, given))
        ):
            raise ConfigError(
                f"--shape {spec.name}={','.join(map(str, given))} does not fit the model's "
                f"input {spec.name!r}: {describe_spec(spec)}"
            )
        return given
    if spec.shape is None:
        raise ConfigError(f"input {spec.name!r} has an unknown shape; {hint}")
    dims = [d if is_fixed(d) else (1 if axis == 0 else None) for axis, d in enumerate(spec.shape)]
    if any(d is None for d in dims):
        raise ConfigError(
            f"input {spec.name!r} is {describe_spec(spec)}, with variable dimensions past "
            f"the first; {hint}"
        )
    return tuple(int(d) for d in dims if d is not None)


def _load_npy(path: Path, spec: TensorSpec) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--data {path}: cannot read it as an .npy file: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise ConfigError(f"--data {path} must hold one array (an .npy file, not .npz)")
    if spec.dtype.kind == "O" and array.dtype.kind in "SU":
        return array.astype(object)  # BYTES: strings travel as object arrays
    if array.dtype.newbyteorder("=") == spec.dtype:
        return array.astype(spec.dtype, copy=False)  # a big-endian file
    return array
