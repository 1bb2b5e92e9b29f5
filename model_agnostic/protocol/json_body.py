"""The JSON part of a protocol body: where it ends, how deep it nests, and parsing it.

The binary tensor extension puts binary data after the JSON; ``Inference-Header-Content-
Length`` says where the JSON ends. Every failure is a
:class:`~model_agnostic.errors.ProtocolError` (status hint 400) that says what was expected.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import ProtocolError
from .codec import describe

__all__ = ["DEFAULT_MAX_DEPTH", "HEADER_LENGTH", "header_split", "json_depth", "load_object"]

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


def json_depth(raw: bytes, stop_above: int | None = None) -> int:
    """The deepest ``[``/``{`` nesting in ``raw``, counted without parsing (a bracket inside
    a string counts too, which only errs towards refusing). Scans 64 KiB at a time, so it
    needs little memory, and returns early once the depth passes ``stop_above``."""
    opened = raw.count(b"[") + raw.count(b"{")
    if stop_above is not None and opened <= stop_above:
        return opened  # cannot be deeper than the number of brackets opened
    depth = deepest = 0
    for start in range(0, len(raw), _DEPTH_BLOCK):
        codes = np.frombuffer(
            raw, np.uint8, count=min(_DEPTH_BLOCK, len(raw) - start), offset=start
        )
        steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32)
        steps -= (codes == 0x5D) | (codes == 0x7D)
        running = np.cumsum(steps)
        if running.size:
            deepest = max(deepest, depth + int(running.max()))
            depth += int(running[-1])
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def load_object(raw: bytes, what: str, max_depth: int | None = None) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object (``what`` names it in errors); JSON nested deeper
    than ``max_depth`` is refused before it is parsed."""
    if max_depth is not None and (depth := json_depth(raw, max_depth)) > max_depth:
        raise ProtocolError(
            f"the {what} JSON is nested {depth} levels deep or more, over the limit of {max_depth}"
        )
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
