"""Find the globals a pickled checkpoint references, without unpickling it.

Used to say *why* a checkpoint was refused: which classes or functions loading
it would import (and possibly call). Nothing here ever executes the pickle.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["unsafe_globals"]

_UNSAFE_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL (\S+) was not an allowed global")
_BLOCKED_MODULE_IN_MESSAGE = re.compile(r"whose module (\S+) is blocked")


def unsafe_globals(torch: Any, file: Path, error_text: str) -> list[str]:
    """Globals the checkpoint needs beyond the weights_only safe set.

    Combines a static scan of the pickle opcodes with the names torch put in
    its error message; nothing is ever unpickled.
    """
    found: set[str] = set()
    try:
        found.update(torch.serialization.get_unsafe_globals_in_checkpoint(str(file)))
    except Exception:  # legacy format, protocol > 2, ...: scan it ourselves
        try:
            found.update(_scan_globals(file) - _safe_globals(torch))
        except (OSError, zipfile.BadZipFile, StopIteration):
            pass
    if not found:  # the scan could not see it; torch's message names it
        found.update(_UNSAFE_GLOBAL_IN_MESSAGE.findall(error_text))
        found.update(f"{module}.*" for module in _BLOCKED_MODULE_IN_MESSAGE.findall(error_text))
    # Non-torch names first: those are the ones a reader should look at.
    return sorted(found, key=lambda name: (name.startswith("torch."), name))


def _safe_globals(torch: Any) -> set[str]:
    try:
        unpickler = torch._weights_only_unpickler
        return set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    except Exception:  # private API moved: report every global instead
        return set()


def _scan_globals(file: Path) -> set[str]:
    """Every GLOBAL/STACK_GLOBAL/INST in the checkpoint's pickles."""
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            return _globals_in_pickles(io.BytesIO(archive.read(pkl)), count=1)
    # Legacy format: magic, protocol, sys_info, the object, storage keys.
    with file.open("rb") as fh:
        return _globals_in_pickles(fh, count=5)


def _globals_in_pickles(stream: IO[bytes], count: int) -> set[str]:
    """Globals of up to ``count`` consecutive pickles; stops at the first bad one."""
    found: set[str] = set()
    for _ in range(count):
        try:
            found |= set(_globals_in_pickle(stream))
        except Exception:  # not (or no longer) a valid pickle
            break
    return found


def _globals_in_pickle(stream: IO[bytes]) -> Iterator[str]:
    """Yield ``module.name`` for each global one pickle references."""
    recent: list[Any] = [None, None]  # the last two values pushed
    memo: dict[Any, Any] = {}
    names: list[str] = []  # collected first, so a corrupt pickle yields none
    for opcode, arg, _pos in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            names.append(_python3_name(*str(arg).split(" ", 1)))
        elif opcode.name == "STACK_GLOBAL":
            module, name = recent[-2], recent[-1]
            names.append(f"{module}.{name}" if module and name else "<dynamic global>")
        if opcode.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if arg is None else arg] = recent[-1]
        elif opcode.name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif opcode.name != "FRAME":
            recent.append(arg if isinstance(arg, str) else None)
        del recent[:-2]
    yield from names


def _python3_name(module: str, name: str) -> str:
    """``module.name`` as pickle resolves it (Python 2 names such as __builtin__)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"
