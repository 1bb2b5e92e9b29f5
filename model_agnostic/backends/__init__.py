"""Backends: concrete :class:`~model_agnostic.Model` subclasses that supply ``infer``.

They sit side by side; :func:`bind` puts a user's hooks on top of one of them.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import ConfigError, ModelLoadError
from ..model import Model, _is_backend

__all__ = ["BACKENDS", "backend_class", "bind"]

#: backend name -> "module:Class", imported only when chosen.
BACKENDS = {
    "pytorch": "model_agnostic.backends.pytorch:PyTorchModel",
    "onnxruntime": "model_agnostic.backends.onnx_runtime:OnnxModel",
    "remote": "model_agnostic.backends.remote:RemoteModel",
    "tensorflow": "model_agnostic.backends.tf_savedmodel:TensorFlowModel",
}


def backend_class(name: str) -> type[Model]:
    """The backend class registered under ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def bind(hooks: type[Model], backend: str | type[Model]) -> type[Model]:
    """A class running ``hooks``'s pre/post-processing on ``backend``.

    The result subclasses both, so ``isinstance(m, CheXNet)`` and
    ``isinstance(m, OnnxModel)`` both hold.
    """
    runner = backend_class(backend) if isinstance(backend, str) else backend
    if not (isinstance(hooks, type) and issubclass(hooks, Model)):
        raise ModelLoadError(f"{hooks!r} is not a model_agnostic.Model subclass")
    return _bind(hooks.__dict__.get("hooks_class") or hooks, runner)  # a bound class rebinds


@cache
def _bind(hooks: type[Model], runner: type[Model]) -> type[Model]:
    if not _is_backend(runner):
        raise ModelLoadError(f"{runner.__name__} is not a backend")
    if issubclass(hooks, runner):
        return hooks
    if issubclass(runner, hooks):  # plain Model: the backend's default hooks
        return runner
    bound = [k.__name__ for k in hooks.__mro__ if _is_backend(k)]
    if bound:
        raise ModelLoadError(
            f"{hooks.__name__} already runs on {bound[0]}; subclass model_agnostic.Model "
            "(not a backend class) to choose the backend at load time"
        )
    if "create_model" in runner.__abstractmethods__ and (hooks.create_model is Model.create_model):
        raise ModelLoadError(
            f"{hooks.__name__} does not define create_model(), which the "
            f"{runner.backend_name} backend needs to build the network"
        )
    namespace = {
        "__module__": hooks.__module__,
        "__qualname__": f"{hooks.__qualname__}[{runner.backend_name}]",
        "hooks_class": hooks,
    }
    return type(hooks.__name__, (hooks, runner), namespace)
