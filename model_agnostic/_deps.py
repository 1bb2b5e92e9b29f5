"""Lazy imports of optional, heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> the extra that installs it
_EXTRAS = {
    "torch": "torch",
    "torchvision": "torch",
    "safetensors": "torch",
    "onnxscript": "torch",
    "waitress": "serve",
    "prometheus_client": "serve",
    "grpc": "serve",
    "ray": "ray",
    "starlette": "ray",
    "pydicom": "dicom",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f"pip install 'model-agnostic[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(
            f"{purpose} needs the '{top}' package, which is not installed. Install it with: {hint}"
        ) from None
