"""Tensor data of the Open Inference Protocol: datatypes, and JSON or binary data <-> arrays.

Decoding never trusts its input: every failure is a
:class:`~model_agnostic.errors.ProtocolError` (status hint 400) that names the tensor and
says what was expected, and nothing is allocated before the element count has been checked
against the caller's limit. Encoding an array the protocol cannot carry is a
``ProtocolError`` with status hint 500: on a server, those are the model's own outputs.
"""

from __future__ import annotations

import math
import struct
from itertools import chain
from typing import Any

import numpy as np

from ..errors import ProtocolError

__all__ = [
    "DATATYPES",
    "MAX_RANK",
    "array_from_binary",
    "array_from_json",
    "array_to_binary",
    "array_to_json",
    "check_shape",
    "datatype_of",
    "describe",
    "format_shape",
    "numeric_from_json",
    "split_bytes",
]

#: v2 datatype name -> numpy dtype (little-endian, as the binary extension sends them).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: The most dimensions a tensor may have (numpy's own limit is 64).
MAX_RANK = 32

_BY_KIND: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if dt.kind != "O"
}
_LENGTH = struct.Struct("<I")
_VALUES = {
    "BOOL": ((bool,), "true or false"),
    "INT": ((int,), "integers"),
    "FP": ((int, float, type(None)), "numbers (null for NaN)"),
    "BYTES": ((str,), "strings"),
}


def datatype_of(dtype: np.dtype) -> str:
    """The v2 datatype name of a numpy dtype; :class:`ProtocolError` if it has none."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ProtocolError(f"{dtype!r} is not a numpy dtype") from None
    if dt.kind in "OSU":
        return "BYTES"
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        raise ProtocolError(
            f"dtype {dt} has no Open Inference Protocol datatype; use bool, (u)int8-64, "
            "float16/32/64, or bytes/str/object (BYTES)"
        )
    return name


def describe(value: Any, width: int = 40) -> str:
    """A short description of a decoded JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int) and value.bit_length() > 128:
        return "a very large integer"
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_shape(shape: Any) -> str:
    """``[1, 3, 224]`` for a shape given as any sequence of ints."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(where: str, shape: Any, limit: int) -> tuple[int, ...]:
    """Validate a JSON ``shape`` and its element count against ``limit``, before any allocation."""
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise ProtocolError(
            f"{where}: 'shape' must be a list of non-negative integers, got {describe(shape)}"
        )
    if len(shape) > MAX_RANK:
        raise ProtocolError(f"{where}: shape has {len(shape)} dimensions, at most {MAX_RANK}")
    for dim in shape:
        if dim < 0:
            raise ProtocolError(
                f"{where}: shape has the negative dimension {describe(dim)}; every dimension "
                "must be a non-negative integer"
            )
        if dim > limit:
            raise ProtocolError(
                f"{where}: shape has the dimension {describe(dim)}, more than the element "
                f"limit {limit}"
            )
    count = math.prod(shape)
    if count > limit:
        raise ProtocolError(
            f"{where}: shape {format_shape(shape)} has {count} elements, more than the limit "
            f"{limit}"
        )
    return tuple(shape)


def array_from_json(where: str, data: Any, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    """Decode JSON ``data`` (flat or nested, row-major) into a writable array of ``shape``,
    checking every value; every failure names what is wrong."""
    if not isinstance(data, list):
        raise ProtocolError(f"{where}: 'data' must be a JSON array, got {describe(data)}")
    expected = math.prod(shape)
    flat, dims, ragged = _flatten(where, data, len(shape))
    if ragged or len(flat) != expected:
        raise ProtocolError(
            f"{where}: {ragged}expected {expected} elements for shape {format_shape(shape)}, "
            f"got {len(flat)}"
        )
    depth = len(dims)
    if depth > 1 and dims != [*shape[: depth - 1], math.prod(shape[depth - 1 :])]:
        raise ProtocolError(
            f"{where}: nested 'data' has dimensions {format_shape(dims)}, which do not match "
            f"shape {format_shape(shape)}; nest it as the shape says or send it flat"
        )
    return _convert(where, flat, datatype).reshape(shape)


def numeric_from_json(data: Any, shape: tuple[int, ...], datatype: str) -> np.ndarray | None:
    """``data`` as a ``datatype`` array in one numpy call, or None when it is not plainly a
    well-formed tensor of numbers that fit (:func:`array_from_json` then says why).

    Only for bodies whose tensor data holds no ``true``/``false`` and no strings (the
    caller checks the bytes): numpy would read a boolean as 0 or 1 and ``"1.5"`` as 1.5,
    which the protocol refuses. ``null`` is NaN for floating types, as in the checking path.
    """
    if not isinstance(data, list) or datatype in ("BYTES", "BOOL"):
        return None
    native = DATATYPES[datatype].newbyteorder("=")
    try:
        with np.errstate(over="ignore"):
            if native.kind == "f":  # numbers and null only: convert directly
                array = np.asarray(data, dtype=native)
            else:  # integers: let numpy find the kind first, so 1.5 is not truncated
                array = np.asarray(data)
                if array.dtype.kind not in "iu":
                    return None
                if array.size:
                    info = np.iinfo(native)
                    if array.min() < info.min or array.max() > info.max:
                        return None
                array = array.astype(native)
    except (ValueError, TypeError, OverflowError):  # ragged, or not plain numbers
        return None
    if array.shape != shape and not (array.ndim == 1 and array.size == math.prod(shape)):
        return None
    return array.reshape(shape)


def _flatten(where: str, data: list[Any], rank: int) -> tuple[list[Any], list[int], str]:
    """Flatten nested lists one level at a time (C-speed per level, no recursion)."""
    level, dims, ragged = data, [len(data)], ""
    while level:
        types = set(map(type, level))
        if list not in types:
            break
        if len(types) > 1:
            raise ProtocolError(
                f"{where}: 'data' mixes arrays and values at depth {len(dims)}; expected a "
                "flat or evenly nested array"
            )
        if len(dims) >= max(rank, 1):
            raise ProtocolError(
                f"{where}: 'data' is nested deeper than the {rank} dimensions of its shape"
            )
        lengths = set(map(len, level))
        if len(lengths) > 1 and not ragged:
            low, high = min(lengths), max(lengths)
            ragged = f"ragged nested data (arrays of {low} and {high} items at depth {len(dims)}); "
        dims.append(max(lengths))
        level = list(chain.from_iterable(level))
    return level, dims, ragged


def _convert(where: str, flat: list[Any], datatype: str) -> np.ndarray:
    """Turn a flat list of JSON scalars into a 1-D array, checking every value fits."""
    dtype = DATATYPES[datatype]
    family = datatype if datatype in ("BOOL", "BYTES") else "FP" if dtype.kind == "f" else "INT"
    allowed, wanted = _VALUES[family]
    types = set(map(type, flat))
    if not types.issubset(allowed):
        bad = next(value for value in flat if type(value) not in allowed)
        raise ProtocolError(f"{where}: {datatype} data must be {wanted}, got {describe(bad)}")
    if family == "BYTES":
        try:
            items = [text.encode("utf-8") for text in flat]
        except UnicodeEncodeError:
            raise ProtocolError(f"{where}: a BYTES string is not valid Unicode text") from None
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array
    native = dtype.newbyteorder("=")
    if family == "INT" and flat:
        info = np.iinfo(native)
        for value in (min(flat), max(flat)):
            if not info.min <= value <= info.max:
                raise ProtocolError(
                    f"{where}: value {describe(value)} is out of range for {datatype} "
                    f"[{info.min}, {info.max}]"
                )
    if family != "FP":
        return np.array(flat, dtype=native)
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:
        raise ProtocolError(f"{where}: an integer in 'data' is too large for {datatype}") from None
    with np.errstate(over="ignore"):
        return values.astype(native)


def split_bytes(where: str, chunk: memoryview, count: int | None) -> list[bytes]:
    """Parse BYTES binary data (4-byte little-endian length + bytes, repeated) exactly."""
    size = len(chunk)
    if count is not None and count * _LENGTH.size > size:
        raise ProtocolError(
            f"{where}: {count} BYTES elements need at least {count * _LENGTH.size} bytes, "
            f"binary_data_size is {size}"
        )
    items: list[bytes] = []
    pos = 0
    while (pos < size) if count is None else (len(items) < count):
        if pos + _LENGTH.size > size:
            raise ProtocolError(
                f"{where}: BYTES element {len(items)} is cut off: its 4-byte length needs "
                f"{_LENGTH.size} bytes, {size - pos} remain"
            )
        (length,) = _LENGTH.unpack_from(chunk, pos)
        pos += _LENGTH.size
        if length > size - pos:
            raise ProtocolError(
                f"{where}: BYTES element {len(items)} declares {length} bytes, {size - pos} remain"
            )
        items.append(bytes(chunk[pos : pos + length]))
        pos += length
    if pos != size:
        raise ProtocolError(
            f"{where}: {size - pos} bytes are left over after {len(items)} BYTES elements; "
            "binary_data_size must cover the elements exactly"
        )
    return items


def array_from_binary(
    where: str, body: bytes, offset: int, size: int, shape: tuple[int, ...], datatype: str
) -> np.ndarray:
    """Read a tensor from ``body[offset:offset + size]``; read-only and zero-copy if numeric."""
    count = math.prod(shape)
    if datatype == "BYTES":
        items = split_bytes(where, memoryview(body)[offset : offset + size], count)
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    if size != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: binary_data_size is {size} bytes, expected {count * dtype.itemsize} "
            f"for shape {format_shape(shape)} {datatype}"
        )
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise ProtocolError(f"{where}: BOOL binary data must hold bytes 0 or 1")
    if not array.dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array.reshape(shape)


def array_to_json(where: str, array: np.ndarray, datatype: str) -> list[Any]:
    """Flat row-major JSON data; non-finite floats become ``null`` to keep the JSON strict."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [_as_text(where, value) for value in flat.tolist()]
    values: list[Any] = flat.tolist()
    if flat.dtype.kind == "f":
        finite = np.isfinite(flat)
        if not finite.all():
            for index in np.flatnonzero(~finite).tolist():
                values[index] = None
    return values


def array_to_binary(where: str, array: np.ndarray, datatype: str) -> memoryview:
    """Little-endian row-major bytes of ``array``; a view, not a copy, where it can be."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).reshape(-1).data
    parts: list[bytes] = []
    for value in array.reshape(-1).tolist():
        item = _as_raw(where, value)
        if len(item) >= 1 << 32:
            raise _unencodable(
                f"{where}: a BYTES element of {len(item)} bytes is over the 4 GiB limit"
            )
        parts += (_LENGTH.pack(len(item)), item)
    return memoryview(b"".join(parts))


def _unencodable(message: str) -> ProtocolError:
    return ProtocolError(message, status=500)


def _as_text(where: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _unencodable(
                f"{where}: a BYTES element is not UTF-8 text, which JSON cannot carry; "
                "ask for it as binary data"
            ) from None
    raise _unencodable(f"{where}: BYTES elements must be bytes or str, got {type(value).__name__}")


def _as_raw(where: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _unencodable(f"{where}: a BYTES string is not valid Unicode text") from None
    raise _unencodable(f"{where}: BYTES elements must be bytes or str, got {type(value).__name__}")
