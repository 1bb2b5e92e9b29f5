"""Read a checkpoint file's content safely, without trusting what it claims to be.

The format is decided from the content (zip, safetensors header), not only the
name. Pickles are always unpickled with ``torch.load(weights_only=True)``; a
file that needs more is refused unless the caller explicitly trusts it.
torch is imported lazily.
"""

from __future__ import annotations

import logging
import pickle
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._deps import require
from ..errors import UnsafeCheckpointError
from ..pickle_scan import unsafe_globals
from .formats import TORCH_PURPOSE, not_loadable

if TYPE_CHECKING:
    from .formats import MapLocation

__all__ = ["read_checkpoint"]

logger = logging.getLogger(__name__)


def read_checkpoint(file: Path, map_location: MapLocation, trust: bool) -> Any:
    """Whatever ``file`` holds (usually a dict), read as safetensors or with torch.load."""
    kind = _sniff_format(file)
    if kind == "safetensors":
        return _load_safetensors(file, map_location)
    return _torch_load(file, map_location, trust)


def _sniff_format(file: Path) -> str:
    """Classify the file as 'safetensors' or 'torch' from its content and name."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise not_loadable(file, "the file does not exist") from None
    except IsADirectoryError:
        raise not_loadable(file, "it is a directory, not a file") from None
    except OSError as exc:
        raise not_loadable(file, f"it cannot be read ({exc.strerror})") from exc
    if size == 0:
        raise not_loadable(file, "the file is empty (0 bytes)")
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
        raise not_loadable(file, f"it is a corrupt zip archive ({exc})") from exc
    inner = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        raise not_loadable(
            file,
            "it is a TorchScript archive (torch.jit.save), which holds a compiled "
            "model rather than weights. Export that model to ONNX, or save its "
            "weights with torch.save(model.state_dict(), path)",
        )
    if "data.pkl" not in inner:
        raise not_loadable(file, "it is a zip archive but not a torch.save file")


def _load_safetensors(file: Path, map_location: MapLocation) -> dict[str, Any]:
    """Read a safetensors file, turning format errors into CheckpointError."""
    st_torch = require("safetensors.torch", "Loading a safetensors checkpoint")
    torch = require("torch", TORCH_PURPOSE)
    on_device = isinstance(map_location, (str, torch.device))
    device = str(map_location) if on_device else "cpu"
    try:
        return dict(st_torch.load_file(str(file), device=device))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise not_loadable(
            file,
            f"it is not a valid safetensors file: corrupt or truncated header or data ({exc})",
        ) from exc


def _torch_load(file: Path, map_location: MapLocation, trust: bool) -> Any:
    """``torch.load`` with ``weights_only=True``; full unpickling only if trusted."""
    torch = require("torch", TORCH_PURPOSE)
    try:
        return _open_and_load(torch, file, map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        offending = unsafe_globals(torch, file, str(exc))
        if not offending:
            raise not_loadable(file, _unreadable_reason(exc)) from exc
        if not trust:
            raise UnsafeCheckpointError(_unsafe_message(file, offending)) from exc
    except Exception as exc:
        raise not_loadable(file, _unreadable_reason(exc)) from exc
    # Reached only when the file needs unsafe globals and the caller trusts it.
    return _trusted_load(torch, file, map_location, offending)


def _open_and_load(torch: Any, file: Path, map_location: MapLocation, *, weights_only: bool) -> Any:
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
    dtypes = {
        type(np.dtype(t))
        for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)
    }
    return [scalar, np.dtype, *dtypes]


def _trusted_load(torch: Any, file: Path, map_location: MapLocation, offending: list[str]) -> Any:
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
        raise not_loadable(
            file,
            f"it pickles a class that cannot be imported here ({exc}); import the "
            "module that defines the model class before loading",
        ) from exc
    except Exception as exc:
        raise not_loadable(file, _unreadable_reason(exc)) from exc


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
