"""apply_state_dict: load a state_dict into a module and explain any mismatch.

A mismatch is explained in terms of the fix: a rename rule, ``strict=False``,
or a model built to match the checkpoint. torch is imported lazily.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._deps import require
from ..errors import CheckpointError
from .formats import MAX_LISTED, TORCH_PURPOSE

if TYPE_CHECKING:
    import torch

__all__ = ["LoadReport", "apply_state_dict"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`apply_state_dict` could not match.

    ``missing_keys`` are model entries the state_dict lacked (left at their
    current values); ``unexpected_keys`` are state_dict entries the model has
    no place for (ignored). Both are empty after a strict load.
    """

    missing_keys: tuple[str, ...] = ()
    unexpected_keys: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every key matched."""
        return not self.missing_keys and not self.unexpected_keys


def apply_state_dict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
) -> LoadReport:
    """Load ``state_dict`` into ``module`` and report what did not match.

    Shape mismatches are always an error, raised before anything is copied.
    With ``strict=True`` (default) any missing or unexpected key is an error
    too; the message lists them with close matches and the fix. Note that,
    as with ``torch.nn.Module.load_state_dict``, the matching weights may
    already have been copied when a strict load fails. With ``strict=False``
    the matching weights are loaded, a warning is logged and the report is
    returned.

    Raises:
        CheckpointError: keys or shapes do not fit the module.
    """
    target = type(module).__name__
    mismatched = _shape_mismatches(module, state_dict)
    if mismatched:
        raise CheckpointError(_mismatch_message(target, shapes=mismatched))
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"Loading the checkpoint into {target} failed: {exc}") from exc
    report = LoadReport(tuple(result.missing_keys), tuple(result.unexpected_keys))
    if report.complete:
        return report
    if strict:
        raise CheckpointError(
            _mismatch_message(target, report.missing_keys, report.unexpected_keys)
        )
    logger.warning(
        "Loaded the checkpoint into %s with strict=False: %s",
        target,
        _mismatch_details(report.missing_keys, report.unexpected_keys, ()),
    )
    return report


def _shape_mismatches(
    module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(key, checkpoint shape, model shape)`` for every common key that differs."""
    torch = require("torch", TORCH_PURPOSE)
    lazy = torch.nn.parameter.UninitializedTensorMixin
    found = []
    for key, expected in module.state_dict().items():
        given = state_dict.get(key)
        if given is None or isinstance(expected, lazy):
            continue
        if not isinstance(given, torch.Tensor):
            raise CheckpointError(
                f"State dict entry {key!r} is a {type(given).__name__}, not a tensor."
            )
        if given.shape != expected.shape:
            found.append((key, tuple(given.shape), tuple(expected.shape)))
    return found


def _mismatch_message(
    target: str,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    shapes: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
) -> str:
    details = _mismatch_details(missing, unexpected, shapes)
    if shapes:
        fix = (
            "Fix: a shape mismatch means the checkpoint was trained for a different "
            "configuration (e.g. number of classes or layer widths); build the "
            "model to match it. strict=False does not skip mismatched shapes."
        )
    else:
        fix = (
            "Fix: add rename rules (rename=[(regex, replacement), ...], or "
            "rename = [[regex, replacement], ...] in the config's [pytorch] "
            "section) that map the checkpoint's names to the model's, or use "
            "strict=False to load only the matching weights."
        )
    return f"The checkpoint does not fit {target}: {details}\n{fix}"


def _mismatch_details(
    missing: Sequence[str],
    unexpected: Sequence[str],
    shapes: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    """Counts, then the first few keys of each kind with suggestions."""
    counts = []
    lines = []
    if missing:
        counts.append(f"{len(missing)} missing key(s)")
        lines.append(f"Missing from the checkpoint ({len(missing)}):")
        lines += [f"  - {_suggest(key, unexpected)}" for key in missing[:MAX_LISTED]]
        lines += _more(len(missing))
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected key(s)")
        lines.append(f"Unexpected in the checkpoint ({len(unexpected)}):")
        lines += [f"  - {key!r}" for key in unexpected[:MAX_LISTED]]
        lines += _more(len(unexpected))
    if shapes:
        counts.append(f"{len(shapes)} shape mismatch(es)")
        lines.append(f"Shape mismatches ({len(shapes)}):")
        lines += [
            f"  - {key!r}: checkpoint {list(got)} vs model {list(want)}"
            for key, got, want in shapes[:MAX_LISTED]
        ]
        lines += _more(len(shapes))
    hint = _prefix_hint(missing, unexpected)
    return "; ".join(counts) + ".\n" + "\n".join(lines + ([hint] if hint else []))


def _more(total: int) -> list[str]:
    return [f"  ... and {total - MAX_LISTED} more"] if total > MAX_LISTED else []


def _suggest(missing_key: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(missing_key, candidates, n=1, cutoff=0.75)
    if not close:
        return f"{missing_key!r}"
    return f"{missing_key!r} — the checkpoint has {close[0]!r}; add a rename rule"


def _prefix_hint(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """Suggest a rule when checkpoint keys are model keys under one common prefix."""
    wanted = set(missing)
    prefixes = set()
    for key in unexpected:
        for match in re.finditer(r"\.", key):
            if key[match.end() :] in wanted:
                prefixes.add(key[: match.end()])
                break
    if len(prefixes) != 1:
        return ""
    prefix = prefixes.pop()
    return (
        f"The checkpoint's keys carry the extra prefix {prefix!r}; the rename "
        f'rule (r"^{re.escape(prefix)}", "") removes it.'
    )
