"""load_state_dict: any supported checkpoint file -> a flat state_dict."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .reading import read_checkpoint
from .unwrapping import compile_rules, find_state_dict, rename_keys, strip_module_prefix

if TYPE_CHECKING:
    import torch

    from .formats import MapLocation

__all__ = ["load_state_dict"]


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
    compiled = compile_rules(rename)
    file = Path(path)
    state: Any = read_checkpoint(file, map_location, trust_checkpoint)
    tensors = find_state_dict(state, file)
    return rename_keys(strip_module_prefix(tensors), compiled, file)
