"""Config files (TOML): validate them, import the model class, build the model on the
chosen backend, with deploy-time overrides layered on top.

See ``docs/config.md`` for the format. Every key is checked; an unknown key is rejected
with the allowed ones, and relative paths are relative to the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from ..artifact import read_parity
from ..backends import BACKENDS, bind
from ..errors import ConfigError, ModelAgnosticError
from ..model import Model
from .files import Config, import_model_class, import_object, load_config, resolve
from .overrides import (
    DEPLOY_SECTIONS,
    Overrides,
    apply_overrides,
    deploy_layers,
    deploy_section,
    overrides_from_env,
    parse_assignments,
)
from .schema import SCHEMA

__all__ = [
    "BACKEND_ENV",
    "DEPLOY_SECTIONS",
    "SCHEMA",
    "Config",
    "Overrides",
    "apply_overrides",
    "deploy_layers",
    "deploy_section",
    "import_model_class",
    "import_object",
    "load_config",
    "load_model",
    "overrides_from_env",
    "parse_assignments",
    "resolve",
]

log = logging.getLogger(__name__)

#: Environment variable that overrides the config's backend.
BACKEND_ENV = "MODEL_AGNOSTIC_BACKEND"


def load_model(
    config: str | os.PathLike[str] | Config,
    backend: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Model:
    """Build the model a config file or an exported artifact describes, ready to ``predict``.

    ``config`` is a TOML file, an artifact folder or its ``.zip``; an artifact's
    checksums are verified before anything in it is read. The backend is, in
    order: the ``backend`` argument, the ``MODEL_AGNOSTIC_BACKEND`` environment
    variable, the config's ``backend``. Deploy-time settings (threads, providers, ...)
    come from ``MODEL_AGNOSTIC_<SECTION>_<KEY>`` environment variables, then
    ``overrides`` (``{"onnxruntime": {"intra_op_num_threads": 1}}``); see
    :mod:`.overrides`.
    """
    cfg = resolve(config)
    environment = [] if cfg.deployed else [("the environment", overrides_from_env())]
    cfg = apply_overrides(cfg, *environment, ("overrides", overrides or {}))
    if cfg.overridden:
        log.info("%s: deploy-time settings %s", cfg.path, cfg.overridden)
    chosen = backend or os.environ.get(BACKEND_ENV) or cfg.backend
    if chosen not in BACKENDS:
        source = (
            "the argument" if backend else BACKEND_ENV if os.environ.get(BACKEND_ENV) else cfg.path
        )
        raise ConfigError(
            f"unknown backend {chosen!r} (from {source}); choose one of {sorted(BACKENDS)}"
        )
    hooks = import_model_class(cfg.model_class, base_dir=cfg.path.parent)
    kwargs = cfg.backend_options(chosen)
    if chosen in ("onnxruntime", "tensorflow") and "path" not in kwargs:
        raise ConfigError(f"{cfg.path}: backend {chosen!r} needs [{chosen}] path")
    if chosen == "remote" and not {"url", "model_name"} <= kwargs.keys():
        raise ConfigError(f"{cfg.path}: backend 'remote' needs [remote] url and model_name")
    try:
        model = bind(hooks, chosen)(**kwargs, **cfg.options)
        if cfg.artifact is not None:
            model.artifact_parity = read_parity(cfg.artifact)
        return model
    except ModelAgnosticError as exc:
        if isinstance(exc, ConfigError) and str(cfg.path) not in str(exc):
            raise ConfigError(f"{cfg.path}: {exc}") from exc
        raise
