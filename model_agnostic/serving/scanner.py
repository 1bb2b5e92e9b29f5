"""The disk half of the model repository: watch ``root/<name>/<version>/`` and load versions.

:class:`Scanner` lists the model and version folders, tracks each version folder's listing
(stable once unchanged for one poll), loads the versions the policy wants that are new or
changed, remembers failed loads until their folder changes, and hands each model's result
to the registry (:class:`~model_agnostic.serving.repository.ModelRepository`), which swaps
its routing table. Its watcher thread repeats the scan every ``poll_interval_s``.

Locks, always taken in this order (the registry's own methods follow the same rules):

1. ``scan_lock`` (the scanner's): one scan, or one ``add``/``load``/``unload``/``stop`` of
   the registry, at a time. A scan holds it from start to end, loads included.
2. ``lock`` (the registry's routing lock, shared with the scanner): guards the routing table
   and, with it, what request threads read of the disk state here.

``disk``, ``loading``, ``added``, ``scanned`` and each ``Tracked.failed`` are written only
holding both locks, so a scan reads them under ``scan_lock`` alone and requests (status,
errors) read them under ``lock`` alone. ``unloaded`` and the set of ignored entries are
never read by requests: ``scan_lock`` alone guards them. (With no ``root``, ``scanned`` is
set without a lock: there is no watcher thread then.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import (
    ConfigError,
    ModelAgnosticError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from ..model import Model
from .versions import (
    Listing,
    VersionPolicy,
    folder_listing,
    is_version,
    links_outside,
    resolves_inside,
    valid_name,
    version_key,
)

if TYPE_CHECKING:
    from .repository import ServedVersion

__all__ = ["Loader", "Registry", "Scanner", "Tracked"]

log = logging.getLogger(__name__)

Loader = Callable[[Path], tuple[Model, dict[str, Any]]]


@dataclass
class Tracked:
    """What the scanner knows of one version folder."""

    path: Path
    listing: Listing
    stable: bool
    #: (listing it failed at, error message, time) of the last failed load.
    failed: tuple[Listing, str, float] | None = None

    @property
    def failed_now(self) -> bool:
        return self.failed is not None and self.failed[0] == self.listing


class Registry(Protocol):
    """What the scanner uses of the registry: its settings, read on each use, and hooks."""

    root: Path | None
    policy: VersionPolicy
    poll_interval_s: float
    loader: Loader

    def _routed(self, name: str) -> dict[str, ServedVersion]:
        """``name``'s routes as they are (call under the lock)."""

    def _serve(
        self,
        name: str,
        version: str,
        model: Model,
        options: dict[str, Any],
        source: Path | None = None,
        listing: Listing | None = None,
    ) -> ServedVersion:
        """A new version with its runner made (call outside the locks)."""

    def _swap(
        self, name: str, wanted: set[int], loaded: dict[int, ServedVersion], gone: bool
    ) -> None:
        """Route ``wanted`` atomically; calls :meth:`Scanner.settle` under the lock."""


class Scanner:
    """Scans ``registry.root`` for the registry; see the module's note on locking."""

    def __init__(self, registry: Registry, lock: threading.Lock) -> None:
        self.registry = registry
        self.lock = lock  # the registry's routing lock
        self.scan_lock = threading.Lock()  # one scan (or add/stop) at a time
        self.disk: dict[str, dict[int, Tracked]] = {}
        self.loading: dict[str, set[str]] = {}
        self.added: set[str] = set()  # names added in code; scans skip them
        self.unloaded: set[str] = set()  # names unloaded by request; scans skip them
        self.scanned = registry.root is None
        self._ignored: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- watcher
    def start(self) -> None:
        """Scan once, then poll in a daemon thread if there is a root; a second call is a
        no-op."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self.scan(lambda: False)
        if self.registry.root is not None:
            self._thread = threading.Thread(
                target=self._watch, name="model_agnostic-repository-watcher", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the watcher thread."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _watch(self) -> None:
        last_error = ""
        while not self._stopping.wait(self.registry.poll_interval_s):
            try:
                self.scan(self._stopping.is_set)
                last_error = ""
            except Exception as exc:  # keep watching; say it once, not every poll
                if str(exc) != last_error:
                    log.error(
                        "model repository scan failed: %s",
                        exc,
                        exc_info=not isinstance(exc, ModelAgnosticError),
                    )
                last_error = str(exc)

    # ------------------------------------------- state the registry changes
    def forget(self, name: str) -> None:
        """Drop what is known of ``name``'s folders (call holding both locks)."""
        self.disk.pop(name, None)
        self.loading.pop(name, None)

    def reset(self) -> None:
        """Forget every folder and added name; the next scan is an initial one (call
        holding both locks)."""
        self.disk.clear()
        self.loading.clear()
        self.added.clear()
        self.scanned = self.registry.root is None

    def settle(self, name: str, gone: bool) -> None:
        """After ``name``'s routes changed: what is still loading (call under the lock,
        inside a scan)."""
        self.loading[name] = self._pending(name)
        if gone:
            self.forget(name)

    # ---------------------------------------------------- answers (under lock)
    def failures(self, name: str) -> dict[str, dict[str, Any]]:
        """``name``'s failed versions with error and time (call under the lock)."""
        return {
            str(v): {"error": t.failed[1], "time": t.failed[2]}
            for v, t in sorted(self.disk.get(name, {}).items())
            if t.failed
        }

    def not_ready(self, name: str) -> ModelNotReadyError:
        """Why ``name`` has no version routed (call under the lock)."""
        tracked = self.disk.get(name, {})
        errors = [
            f"version {v} failed to load: {t.failed[1]}"
            for v, t in sorted(tracked.items())
            if t.failed
        ]
        if errors:
            return ModelNotReadyError(
                f"model {name!r} has no version ready; "
                + "; ".join(errors)
                + ". Fix the version folder: it is retried when its files change"
            )
        loading = sorted(self.loading.get(name, ()), key=version_key)
        if loading:
            return ModelNotReadyError(
                f"model {name!r} is loading versions {loading}; retry shortly"
            )
        return ModelNotReadyError(
            f"model {name!r} has no version to serve: version policy "
            f"'{self.registry.policy}' selects none of the version folders {sorted(tracked)}"
        )

    def missing(self, name: str, version: str) -> ModelNotFoundError | ModelNotReadyError:
        """Why ``name`` has no version ``version`` routed (call under the lock)."""
        served = sorted(self.registry._routed(name), key=version_key)
        tracked = self.disk.get(name, {}).get(int(version)) if is_version(version) else None
        if version in self.loading.get(name, ()):
            return ModelNotReadyError(
                f"version {version} of model {name!r} is still loading; served versions: {served}"
            )
        if tracked is not None and tracked.failed is not None:
            return ModelNotReadyError(
                f"version {version} of model {name!r} failed to load: "
                f"{tracked.failed[1]}; served versions: {served}"
            )
        why = (
            f" (its folder exists, but version policy '{self.registry.policy}' does not serve it)"
            if tracked is not None
            else ""
        )
        return ModelNotFoundError(
            f"model {name!r} has no version {version!r}{why}; served versions: {served}"
        )

    # ---------------------------------------------------------------- scanning
    def scan(self, stopping: Callable[[], bool], now: set[str] | None = None) -> None:
        """One poll; models named in ``now`` load at once (no two-poll stability wait)."""
        if self.registry.root is None:
            self.scanned = True
            return
        with self.scan_lock:
            root = self.registry.root.resolve()
            if not root.is_dir():
                raise ConfigError(
                    f"model repository {str(self.registry.root)!r} is not a "
                    "folder; expected root/<model name>/<version number>/"
                )
            try:
                found = {
                    name: path
                    for name, path in self._children(root, root, "model")
                    if name not in self.added and name not in self.unloaded
                }
            except OSError as exc:
                raise ConfigError(f"cannot list model repository {str(root)!r}: {exc}") from None
            initial = not self.scanned
            for name in sorted(found.keys() | self.disk.keys()):
                if stopping():
                    return
                self._scan_model(name, found.get(name), root, initial or name in (now or ()))
            with self.lock:
                self.scanned = True

    def _scan_model(self, name: str, folder: Path | None, root: Path, initial: bool) -> None:
        try:
            versions = (
                {int(v): p for v, p in self._children(folder, root, "version")}
                if folder is not None
                else {}
            )
        except OSError as exc:  # keep what it serves; look again next poll
            self._ignore(f"{folder}: {exc}", f"cannot list {folder}: {exc}", logging.WARNING)
            return
        tracked = self._track(name, versions, initial)
        with self.lock:
            current = dict(self.registry._routed(name))
        loaded: dict[int, ServedVersion] = {}
        while True:
            candidates = {
                v
                for v, t in tracked.items()
                if str(v) in current or (t.stable and not t.failed_now)
            }
            wanted = self.registry.policy.select(candidates)
            todo = [
                v
                for v in sorted(wanted, reverse=True)
                if v not in loaded and _needs_load(tracked[v], current.get(str(v)))
            ]
            if not todo:
                break
            for v in todo:
                served = self._load(name, v, tracked[v], root)
                if served is not None:
                    loaded[v] = served
        self.registry._swap(name, wanted, loaded, gone=folder is None)

    def _track(self, name: str, versions: dict[int, Path], initial: bool) -> dict[int, Tracked]:
        """Record each version folder's listing; stable if unchanged since the last poll."""
        previous = self.disk.get(name, {})
        tracked: dict[int, Tracked] = {}
        for number, path in versions.items():
            listing = folder_listing(path)
            before = previous.get(number)
            stable = initial or (before is not None and before.listing == listing)
            tracked[number] = Tracked(path, listing, stable, before.failed if before else None)
        with self.lock:
            self.disk[name] = tracked
            self.loading[name] = self._pending(name)
        return tracked

    def _pending(self, name: str) -> set[str]:
        """Versions the policy picks from the folders on disk, not served and not failed
        (call under the lock)."""
        tracked, served = self.disk.get(name, {}), self.registry._routed(name)
        return {
            str(v)
            for v in self.registry.policy.select(tracked)
            if str(v) not in served and not tracked[v].failed_now
        }

    def _load(self, name: str, version: int, tracked: Tracked, root: Path) -> ServedVersion | None:
        """Load one version folder outside the locks; record a failure instead of raising."""
        log.info("loading model %r version %d from %s", name, version, tracked.path)
        try:
            links = links_outside(tracked.path, root)
            if links:
                raise ModelLoadError(
                    f"{tracked.path}: {links} link to outside the model "
                    "repository; refused (copy the files in instead)"
                )
            model, options = self.registry.loader(tracked.path)
            served = self.registry._serve(
                name,
                str(version),
                model,
                dict(options),
                source=tracked.path,
                listing=tracked.listing,
            )
        except Exception as exc:  # a bad folder or a bug in user code: the server lives on
            message = f"{type(exc).__name__}: {exc}"
            log.error(
                "model %r version %d (%s) failed to load: %s",
                name,
                version,
                tracked.path,
                message,
                exc_info=not isinstance(exc, ModelAgnosticError),
            )
            with self.lock:
                tracked.failed = (tracked.listing, message, time.time())
            return None
        with self.lock:
            tracked.failed = None
        return served

    def _children(self, folder: Path, root: Path, kind: str) -> Iterator[tuple[str, Path]]:
        """Sub-folders that are valid model names / version numbers and stay inside root.

        Raises ``OSError`` when ``folder`` cannot be listed."""
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        valid: Callable[[str], object] = valid_name if kind == "model" else is_version
        for entry in entries:
            path = Path(entry.path)
            if not valid(entry.name):
                self._ignore(entry.path, f"ignoring {path}: not a {kind} folder name")
            elif entry.is_symlink() and not resolves_inside(path, root):
                self._ignore(
                    entry.path,
                    f"ignoring {path}: a link to outside the repository",
                    logging.WARNING,
                )
            elif entry.is_dir():
                yield entry.name, path
            else:
                self._ignore(entry.path, f"ignoring {path}: not a folder")

    def _ignore(self, key: str, message: str, level: int = logging.DEBUG) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            log.log(level, message)


def _needs_load(tracked: Tracked, served: ServedVersion | None) -> bool:
    """New, or changed since it was loaded; in both cases stable and not failed as is."""
    if not tracked.stable or tracked.failed_now:
        return False
    return served is None or (served.source is not None and served.listing != tracked.listing)
