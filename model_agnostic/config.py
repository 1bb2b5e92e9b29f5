"""Config files (TOML): validate them, import the model class, build the model on the chosen backend.

See ``docs/config.md`` for the format. Every key is checked; an unknown key is
rejected with the allowed ones, and relative paths are relative to the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import BACKENDS, bind
from .errors import ConfigError, ModelAgnosticError, ModelLoadError
from .model import Model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "BACKEND_ENV",
    "Config",
    "import_model_class",
    "import_object",
    "load_config",
    "load_model",
    "resolve",
]

#: Environment variable that overrides the config's backend.
BACKEND_ENV = "MODEL_AGNOSTIC_BACKEND"

_STR, _BOOL, _INT = (str,), (bool,), (int,)
_FLOAT = (int, float)
_STRS, _PAIRS = "list of strings", "list of [regex, replacement] pairs"
_INTS, _SIZES = "list of integers", "list of [height, width] pairs"
_PATH, _PATHS = "path", "list of paths"

#: section -> key -> expected type; ``None`` key set means "any keys" (user options).
SCHEMA: dict[str, dict[str, Any]] = {
    "": {"backend": _STR},
    "model": {"class": _STR, "options": dict, "none_options": _STRS},
    "pytorch": {
        "weights": _PATH,
        "device": _STR,
        "strict": _BOOL,
        "trust_checkpoint": _BOOL,
        "rename": _PAIRS,
        "seed": _INT,
        "num_threads": _INT,
    },
    "onnxruntime": {
        "path": _PATH,
        "providers": _STRS,
        "intra_op_num_threads": _INT,
        "inter_op_num_threads": _INT,
        "graph_optimization_level": _STR,
        "enable_cpu_mem_arena": _BOOL,
        "enable_mem_pattern": _BOOL,
        "allow_spinning": _BOOL,
    },
    "remote": {
        "url": _STR,
        "model_name": _STR,
        "model_version": _STR,
        "protocol": _STR,
        "binary": _BOOL,
        "timeout_s": _FLOAT,
        "connect_timeout_s": _FLOAT,
        "max_connections": _INT,
        "headers": dict,
    },
    "serving": {
        "name": _STR,
        "version": _STR,
        "batching": _BOOL,
        "max_batch_size": _INT,
        "max_queue_delay_ms": _FLOAT,
        "max_queue_size": _INT,
    },
    "server": {
        "host": _STR,
        "port": _INT,
        "threads": _INT,
        "max_request_bytes": _INT,
        "max_json_depth": _INT,
        "max_elements": _INT,
        "max_image_pixels": _INT,
        "infer_timeout_s": _FLOAT,
        "read_timeout_s": _FLOAT,
        "drain_timeout_s": _FLOAT,
        "version_policy": _STR,
        "poll_interval_s": _FLOAT,
        "auth_token_file": _PATH,
        "model_control": _BOOL,
    },
    "ray": {
        "address": _STR,
        "num_replicas": _INT,
        "num_cpus": _FLOAT,
        "max_ongoing_requests": _INT,
        "max_queued_requests": _INT,
        "autoscaling": dict,
    },
    "export": {
        "opset": _INT,
        "dynamic_batch": _BOOL,
        "dynamic_hw": _BOOL,
        "exporter": _STR,
        "example": _PATH,
        "output": _PATH,
        "allow_unverified": _STRS,
    },
    "verify": {
        "atol": _FLOAT,
        "rtol": _FLOAT,
        "preprocessing_atol": _FLOAT,
        "topk": _INT,
        "batch_sizes": _INTS,
        "image_sizes": _SIZES,
        "samples": _PATHS,
        "generated": _INT,
        "reference": _STR,
        "reference_input": _STR,
        "threshold": _FLOAT,
        "task": _STR,
        "noise_factor": _FLOAT,
    },
}


@dataclass(frozen=True)
class Config:
    """A validated config file."""

    path: Path
    model_class: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The artifact folder this config was read from, its checksums verified (None: a
    #: plain config file). A model built from it carries the artifact's parity verdict.
    artifact: Path | None = None

    def backend_options(self, backend: str) -> dict[str, Any]:
        """Keyword arguments for ``backend``'s constructor, paths resolved."""
        return dict(self.sections.get(backend, {}))

    @property
    def serving(self) -> dict[str, Any]:
        return dict(self.sections.get("serving", {}))

    @property
    def server(self) -> dict[str, Any]:
        return dict(self.sections.get("server", {}))

    @property
    def export(self) -> dict[str, Any]:
        return dict(self.sections.get("export", {}))

    @property
    def verify(self) -> dict[str, Any]:
        return dict(self.sections.get("verify", {}))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables are nested too deeply to parse") from None
    _check_keys(path, "", data, SCHEMA[""].keys() | (SCHEMA.keys() - {""}))
    sections: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if name in SCHEMA[""]:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        _check_keys(path, name, table, SCHEMA[name].keys())
        sections[name] = {
            key: _coerce(path, f"{name}.{key}", value, SCHEMA[name][key])
            for key, value in table.items()
        }
    model = sections.pop("model", {})
    if "class" not in model:
        raise ConfigError(
            f"{path}: [model] needs 'class', e.g. class = \"model.py:MyModel\" "
            "or \"package.module:MyModel\""
        )
    backend = data.get("backend", "pytorch")
    _check_type(path, "backend", backend, _STR)
    options = dict(model.get("options", {}))
    for name in model.get("none_options", []):  # TOML has no null (docs/export.md)
        if name in options:
            raise ConfigError(f"{path}: option {name!r} is both in [model.options] and in "
                              "[model] none_options; keep one")
        options[name] = None
    return Config(path, model["class"], backend, options, sections)


def resolve(target: str | os.PathLike[str] | Config) -> Config:
    """The config a TOML file, an artifact folder or an artifact ``.zip`` describes.

    An artifact's checksums are verified (a zip unpacked first) before anything in it is
    read; the returned config then records the artifact folder (``Config.artifact``).
    """
    if isinstance(target, Config):
        return target
    from .export.artifact import is_artifact, open_artifact

    if is_artifact(target):
        path = open_artifact(target)
        return dataclasses.replace(load_config(path), artifact=path.parent)
    return load_config(target)


def load_model(
    config: str | os.PathLike[str] | Config, backend: str | None = None
) -> Model:
    """Build the model a config file or an exported artifact describes, ready to ``predict``.

    ``config`` is a TOML file, an artifact folder or its ``.zip``; an artifact's
    checksums are verified before anything in it is read. The backend is, in
    order: the ``backend`` argument, the ``MODEL_AGNOSTIC_BACKEND`` environment
    variable, the config's ``backend``.
    """
    cfg = resolve(config)
    chosen = backend or os.environ.get(BACKEND_ENV) or cfg.backend
    if chosen not in BACKENDS:
        raise ConfigError(
            f"unknown backend {chosen!r} (from "
            f"{'the argument' if backend else BACKEND_ENV if os.environ.get(BACKEND_ENV) else cfg.path}); "
            f"choose one of {sorted(BACKENDS)}"
        )
    hooks = import_model_class(cfg.model_class, base_dir=cfg.path.parent)
    kwargs = cfg.backend_options(chosen)
    if chosen == "onnxruntime" and "path" not in kwargs:
        raise ConfigError(f"{cfg.path}: backend 'onnxruntime' needs [onnxruntime] path")
    if chosen == "remote" and not {"url", "model_name"} <= kwargs.keys():
        raise ConfigError(f"{cfg.path}: backend 'remote' needs [remote] url and model_name")
    try:
        model = bind(hooks, chosen)(**kwargs, **cfg.options)
        if cfg.artifact is not None:
            from .export.report import read_parity

            model.artifact_parity = read_parity(cfg.artifact)
        return model
    except ModelAgnosticError as exc:
        if isinstance(exc, ConfigError) and str(cfg.path) not in str(exc):
            raise ConfigError(f"{cfg.path}: {exc}") from exc
        raise


def import_model_class(spec: str, base_dir: str | os.PathLike[str] = ".") -> type[Model]:
    """Import ``"package.module:Class"`` or ``"file.py:Class"`` (relative to ``base_dir``)."""
    cls = import_object(spec, base_dir, what="model class", missing_ok=True)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        module_name = spec.rpartition(":")[0]
        raise ModelLoadError(
            f"{module_name} has no model_agnostic.Model subclass named {spec.rpartition(':')[2]!r}"
        )
    return cls


def import_object(spec: str, base_dir: str | os.PathLike[str] = ".", what: str = "object",
                  missing_ok: bool = False) -> Any:
    """The object ``"package.module:name"`` or ``"file.py:name"`` names (file relative to
    ``base_dir``); a file is compiled from its source, never from ``__pycache__``.
    A module without that name raises ``ModelLoadError`` (None with ``missing_ok``)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        name = "Class" if what == "model class" else "name"
        raise ConfigError(
            f"{what} {spec!r} must look like 'package.module:{name}' or 'file.py:{name}'"
        )
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(base_dir) / module_name)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name in ("torch", "torchvision"):
            raise ModelLoadError(
                f"importing {module_name} failed because {exc.name} is not installed. "
                "The ONNX Runtime backend runs without torch: import torch inside "
                "create_model(), not at the top of the module"
            ) from exc
        raise ModelLoadError(f"cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attr) and not missing_ok:
        raise ModelLoadError(f"{module_name} has no {what} named {attr!r}")
    return getattr(module, attr, None)


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the ``.py`` file itself: never reads (or writes) ``__pycache__``, whose
    bytecode no artifact checksum covers and which could differ from the source."""

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _import_file(path: Path) -> Any:
    """Import a user's model file, once per (path, content): a changed file is re-imported."""
    path = path.resolve()
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(path).encode() + b"\0" + path.read_bytes()).hexdigest()[:12]
    name = f"_model_agnostic_user.{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, path, loader=_SourceOnlyLoader(name, str(path)))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _check_keys(path: Path, section: str, table: Mapping[str, Any], allowed: Any) -> None:
    for key in table:
        if key not in allowed:
            where = f"[{section}]" if section else "the top level"
            raise ConfigError(
                f"{path}: unknown key {key!r} in {where}; allowed keys: {sorted(allowed)}"
            )


def _check_type(path: Path, key: str, value: Any, expected: Any) -> None:
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{path}: {key} must be {names}, got {value!r}")


def _resolve(path: Path, key: str, value: str) -> str:
    """``value`` as an absolute path, relative to the config file's folder."""
    if "\0" in value:
        raise ConfigError(f"{path}: {key} contains a NUL character; expected a file path")
    return str((path.parent / value).resolve())


def _coerce(path: Path, key: str, value: Any, expected: Any) -> Any:
    if expected == _PATH:
        _check_type(path, key, value, _STR)
        return _resolve(path, key, value) if value else value
    if expected in (_STRS, _PATHS, _INTS):
        kind = int if expected == _INTS else str
        if not (isinstance(value, list) and all(type(v) is kind for v in value)):
            raise ConfigError(f"{path}: {key} must be a {expected}, got {value!r}")
        return [_resolve(path, key, v) for v in value] if expected == _PATHS else value
    if expected == _SIZES:
        if not (
            isinstance(value, list)
            and all(isinstance(p, list) and len(p) == 2 and all(type(d) is int and d > 0 for d in p) for p in value)
        ):
            raise ConfigError(f"{path}: {key} must be a {_SIZES}, got {value!r}")
        return [tuple(pair) for pair in value]
    if expected == _PAIRS:
        if not (
            isinstance(value, list)
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in value)
        ):
            raise ConfigError(f"{path}: {key} must be a {_PAIRS}, got {value!r}")
        return [tuple(pair) for pair in value]
    if expected is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a table, got {value!r}")
        return value
    _check_type(path, key, value, expected)
    return value
