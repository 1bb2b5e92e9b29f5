"""Reading a config: the TOML file (or the artifact holding one) into a validated
:class:`Config`, and importing the Python objects it names (the model class, a reference
pipeline)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import is_artifact, open_artifact
from ..errors import ConfigError, ModelLoadError
from ..model import Model
from .schema import SCHEMA, check_keys, check_type, coerce

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "import_model_class", "import_object", "load_config", "resolve"]

_STR = (str,)


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
    #: Deploy-time settings applied over the file: ``"section.key" -> where from``.
    overridden: dict[str, str] = field(default_factory=dict)
    #: True once deploy-time layers (environment included) were applied to this config.
    deployed: bool = False

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
    check_keys(path, "", data, SCHEMA[""].keys() | (SCHEMA.keys() - {""}))
    sections: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if name in SCHEMA[""]:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        check_keys(path, name, table, SCHEMA[name].keys())
        sections[name] = {
            key: coerce(path, f"{name}.{key}", value, SCHEMA[name][key])
            for key, value in table.items()
        }
    model = sections.pop("model", {})
    if "class" not in model:
        raise ConfigError(
            f"{path}: [model] needs 'class', e.g. class = \"model.py:MyModel\" "
            'or "package.module:MyModel"'
        )
    backend = data.get("backend", "pytorch")
    check_type(path, "backend", backend, _STR)
    options = dict(model.get("options", {}))
    for name in model.get("none_options", []):  # TOML has no null (docs/export.md)
        if name in options:
            raise ConfigError(
                f"{path}: option {name!r} is both in [model.options] and in "
                "[model] none_options; keep one"
            )
        options[name] = None
    return Config(path, model["class"], backend, options, sections)


def resolve(target: str | os.PathLike[str] | Config) -> Config:
    """The config a TOML file, an artifact folder or an artifact ``.zip`` describes.

    An artifact's checksums are verified (a zip unpacked first) before anything in it is
    read; the returned config then records the artifact folder (``Config.artifact``).
    """
    if isinstance(target, Config):
        return target
    if is_artifact(target):
        path = open_artifact(target)
        return dataclasses.replace(load_config(path), artifact=path.parent)
    return load_config(target)


def import_model_class(spec: str, base_dir: str | os.PathLike[str] = ".") -> type[Model]:
    """Import ``"package.module:Class"`` or ``"file.py:Class"`` (relative to ``base_dir``)."""
    cls = import_object(spec, base_dir, what="model class", missing_ok=True)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        module_name = spec.rpartition(":")[0]
        raise ModelLoadError(
            f"{module_name} has no model_agnostic.Model subclass named {spec.rpartition(':')[2]!r}"
        )
    return cls


def import_object(
    spec: str,
    base_dir: str | os.PathLike[str] = ".",
    what: str = "object",
    missing_ok: bool = False,
) -> Any:
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
        name, path, loader=_SourceOnlyLoader(name, str(path))
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
