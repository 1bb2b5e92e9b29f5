"""Deploy-time settings layered over a config or an artifact: how a model runs, never what
it computes.

Layers, lowest first: the config's (or artifact's) own sections; a TOML file of overrides
(``--overrides FILE``); environment variables ``MODEL_AGNOSTIC_<SECTION>_<KEY>=<value>``;
explicit assignments (``--set section.key=value``, ``load_model(..., overrides=...)``).
Only the sections in :data:`DEPLOY_SECTIONS` can be set, every key is validated as in a
config file, and the graph and weights (``[onnxruntime] path``, ``[pytorch] weights``) are
never overridable: they are what parity verified. An override changes the in-memory
config only, so an artifact's files, and its checksums, stay as exported.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .files import Config
from .schema import SCHEMA, check_keys, coerce

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEPLOY_SECTIONS",
    "ENV_PREFIX",
    "Overrides",
    "apply_overrides",
    "deploy_layers",
    "deploy_section",
    "overrides_from_env",
    "parse_assignments",
    "read_overrides",
]

#: The sections a deployment may set: runtime, serving and server settings.
DEPLOY_SECTIONS = ("onnxruntime", "pytorch", "tensorflow", "remote", "serving", "server")
#: Keys that decide what the model computes, so never overridden.
FROZEN = {("onnxruntime", "path"), ("pytorch", "weights"), ("tensorflow", "path")}
ENV_PREFIX = "MODEL_AGNOSTIC_"

#: section -> key -> value
Overrides = Mapping[str, Mapping[str, Any]]


def overrides_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``MODEL_AGNOSTIC_<SECTION>_<KEY>`` variables of the deploy sections, values read as
    TOML (``2``, ``true``, ``["CPUExecutionProvider"]``) or else as a plain string
    (``all``). Other ``MODEL_AGNOSTIC_*`` variables (``BACKEND``, ``CACHE``, ...) are not
    settings and are left alone."""
    found: dict[str, dict[str, Any]] = {}
    for name, text in (os.environ if environ is None else environ).items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in DEPLOY_SECTIONS if rest.startswith(s + "_")), None)
        if section is not None:
            found.setdefault(section, {})[rest[len(section) + 1 :]] = _value(text)
    return found


def parse_assignments(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["onnxruntime.intra_op_num_threads=1", ...]`` as overrides."""
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (sep and dot and section and key):
            raise ConfigError(
                f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. "
                "onnxruntime.intra_op_num_threads=1"
            )
        found.setdefault(section, {})[key] = _value(text.strip())
    return found


def read_overrides(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A TOML file holding only deploy sections (``[onnxruntime]``, ``[server]``, ...)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"overrides file {str(path)!r} cannot be read: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a table like [onnxruntime]")
    return data


def deploy_layers(
    overrides_file: str | os.PathLike[str] | None = None, assignments: Sequence[str] = ()
) -> list[tuple[str, Overrides]]:
    """The layers a command line gives, lowest first: ``--overrides FILE``, the
    environment, ``--set`` assignments."""
    layers: list[tuple[str, Overrides]] = []
    if overrides_file is not None:
        layers.append((f"--overrides {overrides_file}", read_overrides(overrides_file)))
    layers.append(("the environment", overrides_from_env()))
    if assignments:
        layers.append(("--set", parse_assignments(assignments)))
    return layers


def deploy_section(layers: Sequence[tuple[str, Overrides]], section: str) -> dict[str, Any]:
    """One deploy section (e.g. ``server``) merged from ``layers`` alone, validated: for a
    model repository, which has no config file of its own."""
    base = Config(Path.cwd() / "overrides.toml", "", "")
    return apply_overrides(base, *layers).sections.get(section, {})


def apply_overrides(cfg: Config, *layers: tuple[str, Overrides]) -> Config:
    """``cfg`` with each ``(source, overrides)`` layer applied in order (later wins); every
    key validated. ``Config.overridden`` records ``section.key -> source``."""
    sections = {name: dict(table) for name, table in cfg.sections.items()}
    overridden = dict(cfg.overridden)
    for source, overrides in layers:
        for section, table in overrides.items():
            if section not in DEPLOY_SECTIONS:
                raise ConfigError(
                    f"{source}: [{section}] cannot be set at deploy time; these can: "
                    f"{list(DEPLOY_SECTIONS)} (the model and its options are what was verified)"
                )
            base = Path.cwd() / "overrides.toml"  # relative paths: the deployer's folder
            check_keys(base, section, table, SCHEMA[section].keys())
            for key, value in table.items():
                if (section, key) in FROZEN:
                    raise ConfigError(
                        f"{source}: {section}.{key} cannot be overridden: the "
                        "graph and weights are what parity verified; export again"
                    )
                label = f"{source}: {section}.{key}"
                sections.setdefault(section, {})[key] = _coerced(
                    base, label, value, SCHEMA[section][key]
                )
                overridden[f"{section}.{key}"] = source
    return dataclasses.replace(cfg, sections=sections, overridden=overridden, deployed=True)


def _coerced(base: Path, label: str, value: Any, expected: Any) -> Any:
    try:
        return coerce(base, label.split(": ", 1)[1], value, expected)
    except ConfigError as exc:  # name the layer, not the placeholder path
        raise ConfigError(f"{label.split(': ', 1)[0]}: {str(exc).split(': ', 1)[1]}") from None


def _value(text: str) -> Any:
    """A TOML value (``1``, ``true``, ``[...]``, ``"x"``), else the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
