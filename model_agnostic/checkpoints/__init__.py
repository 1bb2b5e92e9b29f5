"""Read PyTorch checkpoints safely and load them into a model.

:func:`load_state_dict` turns the checkpoint files people actually have (bare
state_dicts, training checkpoints, DataParallel prefixes, legacy key names,
GPU-saved tensors, pre-1.6 files, safetensors) into one flat dict of tensors;
:func:`apply_state_dict` loads such a dict into a module.

Modules: ``formats`` (what a checkpoint may be), ``reading`` (the file, read
safely), ``unwrapping`` (to a flat, renamed dict), ``loading``
(:func:`load_state_dict`), ``fitting`` (:func:`apply_state_dict`).
torch is imported lazily, so importing this package stays cheap.
"""

from .fitting import LoadReport, apply_state_dict
from .formats import STATE_DICT_KEYS, SUPPORTED_FORMATS
from .loading import load_state_dict

__all__ = [
    "STATE_DICT_KEYS",
    "SUPPORTED_FORMATS",
    "LoadReport",
    "apply_state_dict",
    "load_state_dict",
]
