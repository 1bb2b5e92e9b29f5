"""Read PyTorch checkpoints safely and load them into a model.

:func:`load_state_dict` turns the checkpoint files people actually have (bare
state_dicts, training checkpoints, DataParallel prefixes, legacy key names,
GPU-saved tensors, pre-1.6 files, safetensors) into one flat dict of tensors.
It always unpickles with ``torch.load(weights_only=True)``; a file that needs
more is refused unless the caller explicitly trusts it.

:func:`apply_state_dict` loads such a dict into a module and explains any
mismatch in terms of the fix (a rename rule, ``strict=False``).

torch is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._deps import require
from .errors import CheckpointError, UnsafeCheckpointError
from .pickle_scan import unsafe_globals

if TYPE_CHECKING:
    import torch

    MapLocation = str | torch.device | Mapping[str, str] | Callable[..., Any] | None

__all__ = [
    "STATE_DICT_KEYS",
    "SUPPORTED_FORMATS",
    "LoadReport",
    "apply_state_dict",
    "load_state_dict",
]

logger = logging.getLogger("model_agnostic.checkpoints")

#: Keys of a training-checkpoint dict that may hold the weights, tried in order.
STATE_DICT_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "weights",
)

SUPPORTED_FORMATS = (
    "Supported checkpoint formats: a state_dict saved with torch.save "
    "(zip format, or the legacy format of PyTorch < 1.6); a checkpoint dict "
    f"holding the state_dict under one of {', '.join(map(repr, STATE_DICT_KEYS))} "
    "(other keys such as epoch or optimizer are ignored); a .safetensors file. "
    "A TorchScript model is not a checkpoint: export it to ONNX instead."
)

_TORCH_PURPOSE = "Loading a PyTorch checkpoint"
_MODULE_PREFIX = "module."
_MAX_LISTED = 10


# --------------------------------------------------------------------------
# load_state_dict
# --------------------------------------------------------------------------


def load_state_dict(
    path: str | os.PathLike[str],
    *,
    rename: Sequence[tuple[str, str]] = (),
    trust_checkpoint: bool = False,
    map_location: MapLocation = "cpu",
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return a flat ``{name: tensor}`` state_dict.

    Accepts a bare state_dict, a training-checkpoint dict (weights under one of
    :data:`STATE_DICT_KEYS`), legacy (pre-1.6) and zip ``torch.save`` files and
    ``.safetensors``. A ``module.`` prefix on *every* key (DataParallel/DDP) is
    stripped, then each ``(regex, replacement)`` rule of ``rename`` is applied
    in order to every key with :func:`re.sub`. Tensors are mapped to
    ``map_location`` (CPU by default), so GPU-saved files load anywhere;
    safetensors files honour a device string and otherwise load on CPU.

    Pickles are read with ``torch.load(weights_only=True)`` only. A file that
    needs other globals (a whole pickled model, or code) raises
    :class:`UnsafeCheckpointError` unless ``trust_checkpoint=True``, which
    loads it fully (logged as a warning) -- use that only for trusted files.

    Raises:
        CheckpointError: the file is missing, unreadable, not a checkpoint, or
            a rename rule is invalid.
        UnsafeCheckpointError: loading would need full unpickling.
    """
    compiled = _compile_rules(rename)
    file = Path(path)
    kind = _sniff_format(file)
    if kind == "safetensors":
        state: Any = _load_safetensors(file, map_location)
    else:
        state = _torch_load(file, map_location, trust_checkpoint)
    tensors = _find_state_dict(state, file)
    return _rename_keys(_strip_module_prefix(tensors), compiled, file)


def _sniff_format(file: Path) -> str:
    """Classify the file as 'safetensors' or 'torch' from its content and name."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise _not_loadable(file, "the file does not exist") from None
    except IsADirectoryError:
        raise _not_loadable(file, "it is a directory, not a file") from None
    except OSError as exc:
        raise _not_loadable(file, f"it cannot be read ({exc.strerror})") from exc
    if size == 0:
        raise _not_loadable(file, "the file is empty (0 bytes)")
    if zipfile.is_zipfile(file):
        _check_torch_zip(file)
        return "torch"
    if file.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        return "safetensors"
    return "torch"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """True if ``head`` is an 8-byte header length followed by a JSON object."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _check_torch_zip(file: Path) -> None:
    """Reject zip files that are not ``torch.save`` archives (e.g. TorchScript)."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _not_loadable(file, f"it is a corrupt zip archive ({exc})") from exc
    inner = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        raise _not_loadable(
            file,
            "it is a TorchScript archive (torch.jit.save), which holds a compiled "
            "model rather than weights. Export that model to ONNX, or save its "
            "weights with torch.save(model.state_dict(), path)",
        )
    if "data.pkl" not in inner:
        raise _not_loadable(file, "it is a zip archive but not a torch.save file")


def _load_safetensors(file: Path, map_location: MapLocation) -> dict[str, Any]:
    """Read a safetensors file, turning format errors into CheckpointError."""
    st_torch = require("safetensors.torch", "Loading a safetensors checkpoint")
    torch = require("torch", _TORCH_PURPOSE)
    on_device = isinstance(map_location, (str, torch.device))
    device = str(map_location) if on_device else "cpu"
    try:
        return dict(st_torch.load_file(str(file), device=device))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise _not_loadable(
            file,
            f"it is not a valid safetensors file: corrupt or truncated header or "
            f"data ({exc})",
        ) from exc


def _torch_load(file: Path, map_location: MapLocation, trust: bool) -> Any:
    """``torch.load`` with ``weights_only=True``; full unpickling only if trusted."""
    torch = require("torch", _TORCH_PURPOSE)
    try:
        return _open_and_load(torch, file, map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        offending = unsafe_globals(torch, file, str(exc))
        if not offending:
            raise _not_loadable(file, _unreadable_reason(exc)) from exc
        if not trust:
            raise UnsafeCheckpointError(_unsafe_message(file, offending)) from exc
    except Exception as exc:
        raise _not_loadable(file, _unreadable_reason(exc)) from exc
    # Reached only when the file needs unsafe globals and the caller trusts it.
    return _trusted_load(torch, file, map_location, offending)


def _open_and_load(
    torch: Any, file: Path, map_location: MapLocation, *, weights_only: bool
) -> Any:
    # An open file, not a path: torch.load dispatches on the '.safetensors'
    # suffix, while we have already decided the format from the content.
    with file.open("rb") as fh, torch.serialization.safe_globals(_numpy_scalar_globals()):
        return torch.load(fh, map_location=map_location, weights_only=weights_only)


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars and dtypes, common in checkpoint metadata (``best_acc``); data only."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)}
    return [scalar, np.dtype, *dtypes]


def _trusted_load(
    torch: Any, file: Path, map_location: MapLocation, offending: list[str]
) -> Any:
    """Full unpickling, only reached with ``trust_checkpoint=True``."""
    logger.warning(
        "Fully unpickling checkpoint '%s' because trust_checkpoint=True; it needs "
        "globals outside the weights_only safe set (%s). This can run arbitrary "
        "code: only do it for files from a trusted source.",
        file,
        _preview(offending),
    )
    try:
        return _open_and_load(torch, file, map_location, weights_only=False)
    except (AttributeError, ImportError) as exc:
        raise _not_loadable(
            file,
            f"it pickles a class that cannot be imported here ({exc}); import the "
            "module that defines the model class before loading",
        ) from exc
    except Exception as exc:
        raise _not_loadable(file, _unreadable_reason(exc)) from exc


def _unreadable_reason(exc: BaseException) -> str:
    """One line of what torch/pickle said, without torch's generic advice."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    detail = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    if "device" in line.lower():
        return f"its tensors cannot be placed on the requested map_location ({detail})"
    return f"it is corrupt or not a checkpoint at all ({detail})"


def _not_loadable(file: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"Cannot load checkpoint '{file}': {reason}.\n{SUPPORTED_FORMATS}"
    )


def _unsafe_message(file: Path, offending: list[str]) -> str:
    return (
        f"Refused to load checkpoint '{file}': it is a full pickle that needs "
        f"globals outside PyTorch's weights_only safe set: {_preview(offending)}. "
        "Unpickling it could run arbitrary code, so it was not loaded (nothing "
        "in it was executed). This is typical of a whole pickled model "
        "(torch.save(model)) or a tampered file.\n"
        "Fix: re-save the weights once, in an environment you trust, as a plain "
        "state_dict (torch.save(model.state_dict(), path)) or as safetensors. "
        "Only if the file comes from a source you trust, opt in with "
        "trust_checkpoint=True (config: trust_checkpoint = true in [pytorch]); "
        "that load is logged as a warning."
    )


def _preview(names: Sequence[str], limit: int = 15) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown} (and {more} more)" if more > 0 else shown


# --------------------------------------------------------------------------
# unwrapping and renaming
# --------------------------------------------------------------------------


def _find_state_dict(obj: Any, file: Path, depth: int = 0) -> dict[str, Any]:
    """The flat tensor dict inside ``obj`` (a state_dict, checkpoint or module)."""
    torch = require("torch", _TORCH_PURPOSE)
    if isinstance(obj, torch.nn.Module):  # only possible after a trusted load
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise _not_loadable(
            file, f"it holds a {type(obj).__name__}, not a dict of tensors"
        )
    if not obj:
        raise _not_loadable(file, "it holds an empty dict, no tensors")
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise _not_loadable(file, f"its keys must be strings, found {bad[0]!r}")
        return dict(obj)
    wrapped = [key for key in STATE_DICT_KEYS if key in obj]
    if wrapped and depth < 2:  # a training checkpoint: unwrap the weights
        return _find_state_dict(obj[wrapped[0]], file, depth + 1)
    found = ", ".join(repr(k) for k in list(obj)[:_MAX_LISTED]) or "nothing"
    raise _not_loadable(
        file,
        f"it is a dict but neither a state_dict (all values tensors) nor a "
        f"checkpoint with one of the keys {', '.join(STATE_DICT_KEYS)}; "
        f"its keys are {found}",
    )


def _strip_module_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Drop DataParallel/DDP's ``module.`` prefix when every key has it."""
    if state and all(key.startswith(_MODULE_PREFIX) for key in state):
        return {key[len(_MODULE_PREFIX) :]: value for key, value in state.items()}
    return state


def _compile_rules(
    rename: Iterable[tuple[str, str]],
) -> list[tuple[re.Pattern[str], str]]:
    compiled = []
    for rule in rename:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise CheckpointError(
                f"Rename rule {rule!r} is not a (regex, replacement) pair."
            )
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


def _rename_keys(
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


# --------------------------------------------------------------------------
# apply_state_dict
# --------------------------------------------------------------------------


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
        raise CheckpointError(
            f"Loading the checkpoint into {target} failed: {exc}"
        ) from exc
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
    torch = require("torch", _TORCH_PURPOSE)
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
        lines += [f"  - {_suggest(key, unexpected)}" for key in missing[:_MAX_LISTED]]
        lines += _more(len(missing))
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected key(s)")
        lines.append(f"Unexpected in the checkpoint ({len(unexpected)}):")
        lines += [f"  - {key!r}" for key in unexpected[:_MAX_LISTED]]
        lines += _more(len(unexpected))
    if shapes:
        counts.append(f"{len(shapes)} shape mismatch(es)")
        lines.append(f"Shape mismatches ({len(shapes)}):")
        lines += [
            f"  - {key!r}: checkpoint {list(got)} vs model {list(want)}"
            for key, got, want in shapes[:_MAX_LISTED]
        ]
        lines += _more(len(shapes))
    hint = _prefix_hint(missing, unexpected)
    return "; ".join(counts) + ".\n" + "\n".join(lines + ([hint] if hint else []))


def _more(total: int) -> list[str]:
    return [f"  ... and {total - _MAX_LISTED} more"] if total > _MAX_LISTED else []


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
