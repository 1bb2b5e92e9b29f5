"""Reading model artifacts: resolve, verify, unpack; and the parity verdict they carry.

An artifact is the folder (or ``.zip``) ``model-agnostic export`` writes
(:mod:`model_agnostic.export.artifact` writes it)::

    chexnet/
      model.onnx          the graph
      config.toml         backend = "onnxruntime", the model class, its options
      model.py            the user's hooks, copied when the class came from a file
      labels.json         the model's ``labels``, when it has them
      metadata.json       versions, opset, creation time, signatures, what the exporter did
      parity.json         the report ``verify`` produced, describing these very files
      savedmodel/         with ``export --format savedmodel``: the TensorFlow SavedModel as
        chexnet/1/        TF Serving expects it (saved_model.pb, variables/, assets.extra/)
      CHECKSUMS.sha256    SHA-256 of every other file (``sha256sum -c`` compatible); files
                          under ``savedmodel/`` by their relative path

Opening one verifies every checksum first and refuses a changed, missing or unlisted file
by name; a zip is unpacked into a cache folder (``$MODEL_AGNOSTIC_CACHE``, default
``~/.cache/model_agnostic``) only after every member name is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .errors import ArtifactError

__all__ = [
    "CACHE_ENV",
    "CHECKSUMS",
    "SAVEDMODEL_DIR",
    "file_digests",
    "is_artifact",
    "open_artifact",
    "read_parity",
    "summarize",
    "verify_checksums",
]

CHECKSUMS = "CHECKSUMS.sha256"
#: Where ``.zip`` artifacts are unpacked (a writable folder); default ~/.cache/model_agnostic.
CACHE_ENV = "MODEL_AGNOSTIC_CACHE"
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # always used with fullmatch
#: The one folder an artifact may hold: the TensorFlow SavedModel (``export --format savedmodel``).
SAVEDMODEL_DIR = "savedmodel"
_MAX_MEMBERS, _MAX_UNPACKED = 64, 8 * 2**30
_PASS, _FAIL, _UNVERIFIED = "pass", "fail", "unverified"


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """True for an artifact folder or a ``.zip`` archive of one."""
    path = Path(path)
    return (path.is_dir() and (path / CHECKSUMS).is_file()) or (
        path.is_file() and path.suffix == ".zip"
    )


def open_artifact(path: str | os.PathLike[str]) -> Path:
    """Verify an artifact (unpacking a zip first) and return its ``config.toml``."""
    path = Path(path)
    folder = _unpack(path) if path.is_file() else path
    verify_checksums(folder)
    return folder / "config.toml"


def verify_checksums(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`ArtifactError` naming any file that is changed, missing or unlisted."""
    folder = Path(folder)
    listing = folder / CHECKSUMS
    if not listing.is_file():
        raise ArtifactError(f"{str(folder)!r} is not an artifact: it has no {CHECKSUMS}")
    if listing.is_symlink():
        raise ArtifactError(f"artifact {folder.name}: {CHECKSUMS} is a symbolic link; refused")
    expected: dict[str, str] = {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not (re.fullmatch(r"[0-9a-f]{64}", digest) and is_member_name(name)):
            raise ArtifactError(f"{listing}: line {number} is not '<sha256>  <file name>'")
        expected[name] = digest
    for name, entry in _entries(folder):
        if entry.is_symlink() or not entry.is_file():
            raise ArtifactError(f"artifact {folder.name}: {name!r} is not a regular file; refused")
        if name not in expected:
            raise ArtifactError(
                f"artifact {folder.name}: {name!r} is not listed in {CHECKSUMS}; refused"
            )
    for name, digest in expected.items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"artifact {folder.name}: {name!r} is missing")
        if _sha256(file) != digest:
            raise ArtifactError(
                f"artifact {folder.name}: {name!r} does not match its SHA-256 checksum; "
                "the file was changed after export, refused"
            )


def file_digests(folder: str | os.PathLike[str], skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every regular file in ``folder`` (and its ``savedmodel/``) but the checksum
    listing and ``skip``, keyed by relative path."""
    return {
        name: _sha256(entry)
        for name, entry in _entries(Path(folder))
        if entry.is_file() and not entry.is_symlink() and name not in skip
    }


def is_member_name(name: str) -> bool:
    """A plain file name, or a path of plain names under ``savedmodel/``."""
    parts = name.split("/")
    if len(parts) == 1:
        return bool(PLAIN_NAME.fullmatch(name))
    return parts[0] == SAVEDMODEL_DIR and all(PLAIN_NAME.fullmatch(p) for p in parts[1:])


def _entries(folder: Path) -> list[tuple[str, Path]]:
    """``(relative name, path)`` of every entry but the listing and ``__pycache__``, sorted;
    the ``savedmodel`` folder's files instead of the folder (its empty folders skipped)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name in (CHECKSUMS, "__pycache__"):
            continue
        if entry.name == SAVEDMODEL_DIR and entry.is_dir() and not entry.is_symlink():
            for inner in sorted(entry.rglob("*")):
                if inner.is_symlink() or not inner.is_dir():
                    found.append((inner.relative_to(folder).as_posix(), inner))
            continue
        found.append((entry.name, entry))
    return found


def summarize(parity: dict[str, Any]) -> dict[str, Any]:
    """The verdict of a ``parity.json`` document, for inspect, the server and the web page.

    A report from before three-verdict reports (no ``verdict`` key) counted skipped
    stages as passed: it reads as ``unverified`` unless every stage really passed.
    """
    stages = parity.get("stages", [])
    if "verdict" in parity:
        verdict = parity["verdict"]
        statuses = {s["stage"]: s["status"] for s in stages}
    else:
        old = {s["stage"]: s.get("passed") for s in stages}
        statuses = {
            k: _PASS if v is True else _FAIL if v is False else _UNVERIFIED for k, v in old.items()
        }
        verdict = (
            "failed"
            if _FAIL in statuses.values()
            else "passed"
            if statuses and all(v == _PASS for v in statuses.values())
            else "unverified"
        )
    return {
        "verdict": verdict,
        "stages": statuses,
        "unverified": parity.get(
            "unverified",
            [
                {"stage": k, "reason": "not checked (an older report)"}
                for k, v in statuses.items()
                if v == _UNVERIFIED
            ],
        ),
        "waivers": parity.get("waivers", []),
        "referee_waivers": parity.get("referee_waivers", []),
        "first_failure": parity.get("first_failure"),
    }


def read_parity(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """:func:`summarize` of an artifact folder's ``parity.json`` (None if it has none)."""
    path = Path(folder) / "parity.json"
    if not path.is_file():
        return None
    try:
        return summarize(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return {
            "verdict": "unverified",
            "stages": {},
            "unverified": [{"stage": "all", "reason": "parity.json is not a readable report"}],
            "waivers": [],
            "referee_waivers": [],
            "first_failure": None,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(archive_path: Path) -> Path:
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(
            f"{str(archive_path)!r} is not a valid artifact archive: {exc}"
        ) from None
    with archive:
        _check_members(archive_path.name, archive.infolist())
        cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "model_agnostic")
        target = cache / "artifacts" / _sha256(archive_path)[:32]
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            archive.extractall(staging)
        except Exception as exc:  # bad CRC, truncated data, encryption, unknown compression
            shutil.rmtree(staging, ignore_errors=True)
            raise ArtifactError(
                f"{archive_path.name} cannot be unpacked ({type(exc).__name__}: {exc}); "
                "the archive is corrupt or was not written by 'model-agnostic export'"
            ) from None
    try:
        staging.rename(target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_members(archive: str, members: list[zipfile.ZipInfo]) -> None:
    """Refuse, before anything is written, members that are not plain, unique, small files."""
    if len(members) > _MAX_MEMBERS or sum(m.file_size for m in members) > _MAX_UNPACKED:
        raise ArtifactError(
            f"{archive}: more than {_MAX_MEMBERS} members or {_MAX_UNPACKED} bytes unpacked; "
            "refused"
        )
    seen: set[str] = set()
    for member in members:
        name = member.filename
        if not is_member_name(name) or member.is_dir():
            raise ArtifactError(
                f"{archive}: member {name!r} is not a plain file name; refused (expected "
                f"names like 'model.onnx', with no folders but {SAVEDMODEL_DIR}/, '..' or "
                "absolute paths)"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ArtifactError(f"{archive}: member {name!r} is a symbolic link; refused")
        if name in seen:
            raise ArtifactError(f"{archive}: member {name!r} appears twice; refused")
        seen.add(name)
