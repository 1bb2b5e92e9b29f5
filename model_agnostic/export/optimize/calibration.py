"""Inputs for calibration and gating: a folder of sample files read in a stable order,
each run through the model's own ``preprocessing`` (as a deployment would)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...model import Arrays, Model

__all__ = ["calibration_batches", "read_folder", "read_input"]


def read_input(path: str | os.PathLike[str]) -> Any:
    """One raw input from a file: a ``.npy`` array (no pickles) is loaded, anything else
    (an image, a DICOM file) is passed to ``preprocessing`` as its path."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a numpy array file ({exc})") from None
    return path


def read_folder(folder: str | os.PathLike[str], limit: int) -> list[Any]:
    """The first ``limit`` files of ``folder`` by name, as raw inputs (:func:`read_input`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"calibration folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"calibration folder {str(folder)!r} holds no files")
    return [read_input(p) for p in files[:limit]]


def calibration_batches(model: Model, raws: Sequence[Any]) -> list[Arrays]:
    """Each raw input through ``model.prepare`` (its ``preprocessing``): one batch per
    input, holding the rows that input contributes (ten for a TenCrop model)."""
    batches = []
    for i, raw in enumerate(raws):
        try:
            batches.append(model.prepare(raw))
        except (ValueError, TypeError, OSError) as exc:
            name = str(raw) if isinstance(raw, (str, Path)) else f"input {i}"
            raise ConfigError(
                f"calibration {name}: the model's preprocessing refused it ({exc}); calibrate "
                "on inputs the model takes (image files, or .npy arrays)"
            ) from None
    return batches
