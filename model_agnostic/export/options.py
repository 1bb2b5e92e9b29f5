"""The model's options in the artifact's ``config.toml``: written so they load back equal.

TOML has strings, booleans, 64-bit integers, floats (``nan``, ``inf``), dates and times,
arrays and tables, and no null: an option whose value is None is listed in ``[model]
none_options`` instead. Anything that would not come back equal is refused before any
work starts, naming the option.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import date, datetime, time
from typing import Any

from ..errors import ExportError
from ..model import Model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["encode_options", "option_values", "toml_value"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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
            lines.append(f"{_key(name)} = {toml_value(value, name)}")
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


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def toml_value(value: Any, where: str) -> str:
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
        return "[" + ", ".join(toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict) and all(isinstance(k, str) and _utf8(k) for k in value):
        return (
            "{"
            + ", ".join(f"{_key(k)} = {toml_value(v, f'{where}.{k}')}" for k, v in value.items())
            + "}"
        )
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
