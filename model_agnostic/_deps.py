"""Lazy imports of optional, heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
import importlib.util
import sys
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
    "tensorflow": "tf",
}


#: module -> installed modules to load first. TensorFlow and Triton (which CUDA builds of
#: torch import with torchvision) both bundle LLVM: Triton loaded *after* TensorFlow
#: crashes the process (SIGSEGV in libtriton), Triton first works.
_LOAD_FIRST = {"tensorflow": ("triton",)}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error naming the extra that installs it."""
    for first in _LOAD_FIRST.get(module.split(".")[0], ()):
        if first not in sys.modules and importlib.util.find_spec(first) is not None:
            try:
                importlib.import_module(first)
            except Exception:  # a broken optional library must not stop this one
                pass
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f"pip install 'model-agnostic[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(
            f"{purpose} needs the '{top}' package, which is not installed. Install it with: {hint}"
        ) from None
