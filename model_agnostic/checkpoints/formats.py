"""What counts as a checkpoint, and the error raised for a file that is not one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    import torch

    MapLocation = str | torch.device | Mapping[str, str] | Callable[..., Any] | None

__all__ = ["STATE_DICT_KEYS", "SUPPORTED_FORMATS"]

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

#: The purpose named when torch is missing (see :func:`model_agnostic._deps.require`).
TORCH_PURPOSE = "Loading a PyTorch checkpoint"
#: How many keys an error message lists before "... and N more".
MAX_LISTED = 10


def not_loadable(file: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"Cannot load checkpoint '{file}': {reason}.\n{SUPPORTED_FORMATS}")
