"""The JSON part of a protocol body: where it ends, how deep it nests, and parsing it.

The binary tensor extension puts binary data after the JSON; ``Inference-Header-Content-
Length`` says where the JSON ends. Every failure is a
:class:`~model_agnostic.errors.ProtocolError` (status hint 400) that says what was expected.

Parsing takes orjson's fast path for strict JSON (about 4x faster than the standard library
on a 3 MB tensor); anything orjson refuses is parsed by the standard library, so what was
accepted before (``NaN`` literals, lone surrogate escapes, integers beyond 64 bits, read as
null-free floats or refused later by the tensor checks) still is, with the same messages.
Duplicate keys keep the last value either way. Documents are written with :func:`dumps`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from ..errors import ProtocolError
from .codec import describe

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "HEADER_LENGTH",
    "as_bytes",
    "dumps",
    "header_split",
    "json_depth",
    "load_object",
    "parse_fast",
    "plain_numbers",
]

#: The binary extension's header: the length of the JSON part of the body.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: JSON nested deeper than this is refused before it is parsed (a tensor of rank 32 nests
#: 32 levels inside the request's own 3).
DEFAULT_MAX_DEPTH = 64


def header_split(value: Any, size: int) -> int | None:
    """Where the JSON part of the body ends, from the header value (``None``: no header)."""
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        raise ProtocolError(
            f"{HEADER_LENGTH} must be a non-negative decimal integer, got {describe(value)}"
        )
    split = int(text)
    if split > size:
        raise ProtocolError(f"{HEADER_LENGTH} is {split}, but the body has only {size} bytes")
    return split


_DEPTH_BLOCK = 1 << 16
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth(raw: bytes, stop_above: int | None = None) -> int:
    """The deepest ``[``/``{`` nesting in ``raw``, counted without parsing (a bracket inside
    a string counts too, which only errs towards refusing). 64 KiB at a time, everything but
    brackets dropped first (C speed), so it needs little memory; it returns early once the
    depth passes ``stop_above``."""
    depth = deepest = 0
    for start in range(0, len(raw), _DEPTH_BLOCK):
        brackets = raw[start : start + _DEPTH_BLOCK].translate(None, _NOT_BRACKETS)
        if not brackets:
            continue
        codes = np.frombuffer(brackets, np.uint8)
        running = np.cumsum(np.where((codes == 0x5B) | (codes == 0x7B), 1, -1))
        deepest = max(deepest, depth + int(running.max()))
        depth += int(running[-1])
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def parse_fast(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed by orjson when it is strict JSON holding one object, else None.

    orjson reads integers beyond 64 bits as floats and stops at a nesting of 1024 by
    itself; callers that need the exact reading take :func:`load_object` instead."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _refuse_deep(raw: bytes, what: str, max_depth: int | None) -> None:
    if max_depth is not None and (depth := json_depth(raw, max_depth)) > max_depth:
        raise ProtocolError(
            f"the {what} JSON is nested {depth} levels deep or more, over the limit of {max_depth}"
        )


def load_object(
    raw: bytes, what: str, max_depth: int | None = None, fast: bool = True
) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object (``what`` names it in errors); JSON nested deeper
    than ``max_depth`` is refused before it is parsed. ``fast`` tries orjson first;
    without it (or when orjson refuses) the standard library parses, exactly."""
    _refuse_deep(raw, what, max_depth)
    if fast and (doc := parse_fast(raw)) is not None:
        return doc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        hint = ""
        try:  # valid JSON followed by bytes: binary tensors sent without the header
            json.JSONDecoder().raw_decode(raw[: error.start].decode("utf-8"))
            hint = f"; binary data after the JSON needs the {HEADER_LENGTH} header"
        except (ValueError, RecursionError):
            pass
        raise ProtocolError(
            f"the {what} is not UTF-8 text (invalid byte at {error.start}); expected JSON{hint}"
        ) from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ProtocolError(f"the {what} JSON is nested too deeply") from None
    except json.JSONDecodeError as error:
        hint = ""
        if error.msg == "Extra data":
            hint = f"; binary data after the JSON needs the {HEADER_LENGTH} header"
        raise ProtocolError(f"the {what} is not valid JSON: {error}{hint}") from None
    except (ValueError, MemoryError) as error:
        raise ProtocolError(f"the {what} is not valid JSON: {describe(str(error), 120)}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"the {what} must be a JSON object, got {describe(doc)}")
    return doc


_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(document: Any, default: Any = None) -> bytes:
    """Compact JSON bytes: numpy arrays and scalars serialised natively (C-contiguous
    arrays; others are copied), non-finite floats in arrays as ``null`` (strict JSON).

    A string orjson cannot write (a lone surrogate, which a request ``id`` may carry) is
    written by the standard library instead, escaped as ``\\udXXX``."""
    try:
        return orjson.dumps(document, default=default or _contiguous, option=_DUMP_OPTIONS)
    except orjson.JSONEncodeError as error:
        if "endianness" in str(error):  # orjson refuses these before asking ``default``
            return dumps(_native(document), default)
        if "surrogates" not in str(error):
            raise ProtocolError(
                f"cannot encode the document as JSON: {error}", status=500
            ) from None
    return json.dumps(document, separators=(",", ":"), default=_listed(default)).encode("ascii")


def _native(value: Any) -> Any:
    """``value`` with every non-native-endian array (in dicts and lists) converted."""
    if isinstance(value, np.ndarray):
        return value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))
    if isinstance(value, dict):
        return {key: _native(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native(item) for item in value]
    return value


def _contiguous(value: Any) -> Any:
    """What orjson cannot write natively: a strided or non-native-endian array, copied."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _listed(default: Any) -> Any:
    """A ``default`` for the standard library: arrays as lists (non-finite as None)."""

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            values = value.tolist()
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                flat = value.reshape(-1)
                return [None if not np.isfinite(v) else v for v in flat.tolist()]
            return values
        if isinstance(value, np.generic):
            return value.item()
        if default is not None:
            return default(value)
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    return convert


def as_bytes(body: Any, what: str) -> bytes:
    """A request or response body as bytes (copied from a mutable buffer), never empty."""
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)  # never alias a buffer the caller may still change
    if not isinstance(body, bytes):
        raise ProtocolError(f"the {what} body must be bytes, got {type(body).__name__}")
    if not body:
        raise ProtocolError(f"the {what} body is empty; expected a JSON inference {what}")
    return body


#: The bytes :func:`plain_numbers` looks at; one C pass drops the rest (digits, commas...).
_MARKS = b'[]{}"\\elsu'
_NOT_MARKS = bytes(sorted(set(range(256)) - set(_MARKS)))
_KEPT = frozenset(_MARKS.decode())


def plain_numbers(text: bytes, doc: Any, max_depth: int | None = None) -> bool:
    """Whether ``text`` (already parsed as ``doc``) nests no deeper than ``max_depth`` and
    every tensor's JSON ``data`` holds only numbers and ``null``, so numpy may convert it in
    one call. One pass over the bytes keeps only brackets, quotes, backslashes and the
    letters ``e l s u`` (little is left of numeric data); then:

    * depth: the brackets, counted as :func:`json_depth` does;
    * no string in ``data``: the quotes are exactly those of the keys and other strings;
    * no ``true``/``false`` in ``data``: each leaves a ``ue``/``se`` pair, and the pairs
      left are exactly those of the booleans and strings outside ``data`` (numbers leave
      a lone ``e``, ``null`` leaves ``ull``; a quote ends every string).

    A body with a backslash is never plain: an escape (``\\u0065``) could hide a pair."""
    marks = text.translate(None, _NOT_MARKS)
    if b"\\" in marks:
        return False
    if max_depth is not None and json_depth(marks, max_depth) > max_depth:
        return False
    strings, pairs = _outside_data(doc)
    found = marks.count(b"ue") + marks.count(b"se")
    return found == pairs and marks.count(b'"') == 2 * strings


def _outside_data(value: Any) -> tuple[int, int]:
    """(strings, ``ue``/``se`` pairs) of a parsed document as :func:`plain_numbers` counts
    them, keys included, tensors' ``data`` left out."""
    if isinstance(value, dict):
        skip = "datatype" in value
        strings, pairs = len(value), sum(_pairs(key) for key in value)
        for key, item in value.items():
            if not (skip and key == "data"):
                more = _outside_data(item)
                strings, pairs = strings + more[0], pairs + more[1]
        return strings, pairs
    if isinstance(value, list):
        counts = [_outside_data(item) for item in value]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
    if isinstance(value, bool):
        return 0, 1
    return (1, _pairs(value)) if isinstance(value, str) else (0, 0)


def _pairs(text: str) -> int:
    """The ``ue``/``se`` pairs left of a string once all but the marks are dropped."""
    kept = "".join(char for char in text if char in _KEPT)
    return kept.count("ue") + kept.count("se")
