"""Version folders on disk: which to serve (the policy), how to load one, and the checks
that keep names and links inside the repository."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifact import CHECKSUMS
from ..config import Overrides, apply_overrides, load_model, resolve
from ..errors import ConfigError, ModelLoadError
from ..model import Model

__all__ = [
    "Listing",
    "VersionPolicy",
    "folder_listing",
    "is_version",
    "links_outside",
    "load_version",
    "resolves_inside",
    "valid_name",
    "version_key",
]

#: A version folder's files as ``(relative path, size, mtime_ns)``, sorted.
Listing = tuple[tuple[str, int, int], ...]

_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def is_version(name: str) -> bool:
    """A positive integer version folder name."""
    return _VERSION.fullmatch(name) is not None


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: ``latest``, ``latest:N``, ``all``, ``specific:1,3``."""

    kind: str = "latest"
    count: int = 1
    versions: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Read a policy string; :class:`ConfigError` naming the valid forms otherwise."""
        kind, sep, arg = str(text).strip().partition(":")
        try:
            if kind == "all" and not sep:
                return cls("all")
            if kind == "latest" and (arg or not sep):
                count = int(arg) if arg else 1
                if count >= 1:
                    return cls("latest", count)
            if kind == "specific" and arg:
                numbers = frozenset(int(v) for v in arg.split(","))
                if all(n >= 1 for n in numbers):
                    return cls("specific", versions=numbers)
        except ValueError:
            pass
        raise ConfigError(
            f"version policy {text!r} is not valid; use 'latest', 'latest:N' (N >= 1), "
            "'all' or 'specific:1,3' (positive version numbers)"
        )

    def select(self, versions: Iterable[int]) -> set[int]:
        """The versions this policy serves, out of ``versions``."""
        available = set(versions)
        if self.kind == "all":
            return available
        if self.kind == "specific":
            return available & self.versions
        return set(sorted(available)[-self.count :])

    def __str__(self) -> str:
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, sorted(self.versions)))
        return f"latest:{self.count}" if self.kind == "latest" and self.count > 1 else self.kind


def load_version(
    folder: Path, overrides: Sequence[tuple[str, Overrides]] = ()
) -> tuple[Model, dict[str, Any]]:
    """The default loader: verify and load the model in one version folder.

    The folder is an artifact (checksums verified first), holds a ``config.toml``, or
    holds exactly one artifact ``.zip``. ``overrides`` are deploy-time layers
    (:func:`~model_agnostic.config.deploy_layers`). Returns the model and its
    ``[serving]`` options.
    """
    if (folder / CHECKSUMS).is_file():
        target: Path = folder
    elif (folder / "config.toml").is_file():
        target = folder / "config.toml"
    else:
        zips = sorted(folder.glob("*.zip"))
        if len(zips) != 1:
            raise ModelLoadError(
                f"{folder} holds no model: expected an artifact written by "
                f"'model-agnostic export' ({CHECKSUMS}), a config.toml, or one artifact .zip"
            )
        target = zips[0]
    cfg = resolve(target)  # an artifact's checksums are verified here
    _forget_modules(cfg.path.parent)
    cfg = apply_overrides(cfg, *overrides) if overrides else cfg
    return load_model(cfg), cfg.serving


def _forget_modules(folder: Path) -> None:
    """Drop modules imported from ``folder`` so a changed model.py is imported afresh."""
    inside = str(folder.resolve()) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.abspath(file).startswith(inside):
            sys.modules.pop(name, None)


def folder_listing(folder: Path) -> Listing:
    """Every file under ``folder`` (not ``__pycache__``) with its size and mtime."""
    entries = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = os.path.join(top, name)
            try:
                info = os.stat(path)
                size, mtime = info.st_size, info.st_mtime_ns
            except OSError:  # removed meanwhile, or a dangling link
                size, mtime = -1, -1
            entries.append((os.path.relpath(path, folder), size, mtime))
    return tuple(sorted(entries))


def links_outside(folder: Path, root: Path) -> list[str]:
    """Symbolic links under ``folder`` that resolve outside ``root``."""
    found = []
    for top, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = Path(top, name)
            if path.is_symlink() and not resolves_inside(path, root):
                found.append(str(path.relative_to(folder)))
    return sorted(found)


def resolves_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, links followed, is inside ``root``; a loop or dangling link is not."""
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def valid_name(name: object) -> bool:
    """A model name or version usable as one folder name inside the repository."""
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and ".." not in name
        and not any(c in name for c in "/\\\0")
        and name.isprintable()
    )


def version_key(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if is_version(version) else (1, 0, version)
