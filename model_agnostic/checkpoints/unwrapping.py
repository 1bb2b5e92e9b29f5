"""From what a checkpoint file held to one flat ``{name: tensor}`` dict with the model's names.

Unwraps training checkpoints, strips DataParallel's ``module.`` prefix and
applies the caller's ``(regex, replacement)`` rename rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._deps import require
from ..errors import CheckpointError
from .formats import MAX_LISTED, STATE_DICT_KEYS, TORCH_PURPOSE, not_loadable

__all__ = ["compile_rules", "find_state_dict", "rename_keys", "strip_module_prefix"]

_MODULE_PREFIX = "module."


def find_state_dict(obj: Any, file: Path, depth: int = 0) -> dict[str, Any]:
    """The flat tensor dict inside ``obj`` (a state_dict, checkpoint or module)."""
    torch = require("torch", TORCH_PURPOSE)
    if isinstance(obj, torch.nn.Module):  # only possible after a trusted load
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise not_loadable(file, f"it holds a {type(obj).__name__}, not a dict of tensors")
    if not obj:
        raise not_loadable(file, "it holds an empty dict, no tensors")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise not_loadable(file, f"its keys must be strings, found {bad[0]!r}")
        return dict(obj)
    wrapped = [key for key in STATE_DICT_KEYS if key in obj]
    if wrapped and depth < 2:  # a training checkpoint: unwrap the weights
        return find_state_dict(obj[wrapped[0]], file, depth + 1)
    found = ", ".join(repr(k) for k in list(obj)[:MAX_LISTED]) or "nothing"
    raise not_loadable(
        file,
        f"it is a dict but neither a state_dict (all values tensors) nor a "
        f"checkpoint with one of the keys {', '.join(STATE_DICT_KEYS)}; "
        f"its keys are {found}",
    )


def strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop DataParallel/DDP's ``module.`` prefix when every key has it."""
    if state and all(key.startswith(_MODULE_PREFIX) for key in state):
        return {key[len(_MODULE_PREFIX) :]: value for key, value in state.items()}
    return state


def compile_rules(
    rename: Iterable[tuple[str, str]],
) -> list[tuple[re.Pattern[str], str]]:
    """Check and compile ``(regex, replacement)`` rules, before any file is read."""
    compiled = []
    for rule in rename:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise CheckpointError(f"Rename rule {rule!r} is not a (regex, replacement) pair.")
        pattern, replacement = rule
        try:
            compiled.append((re.compile(pattern), str(replacement)))
        except (re.error, TypeError) as exc:
            raise CheckpointError(
                f"Rename rule ({pattern!r}, {replacement!r}) has an invalid "
                f"regular expression: {exc}. Rules are Python re patterns "
                "applied with re.sub to every key."
            ) from exc
    return compiled


def rename_keys(
    state: dict[str, Any], rules: list[tuple[re.Pattern[str], str]], file: Path
) -> dict[str, Any]:
    """Apply every rule, in order, to every key; two keys may not collide."""
    if not rules:
        return state
    renamed: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in rules:
            try:
                new = pattern.sub(replacement, new)
            except (re.error, IndexError) as exc:
                raise CheckpointError(
                    f"Rename rule ({pattern.pattern!r}, {replacement!r}) failed on "
                    f"key {key!r}: {exc}. Check the replacement's group references."
                ) from exc
        if new in renamed:
            raise CheckpointError(
                f"Rename rules map both {origin[new]!r} and {key!r} of '{file}' to "
                f"{new!r}; make the rules more specific."
            )
        renamed[new], origin[new] = value, key
    return renamed
