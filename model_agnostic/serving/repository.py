"""A model repository with versions and hot swap, like TF Serving's and Triton's.

::

    root/
      digits/            a model, named after its folder
        1/               a version: an artifact folder, a folder with a config.toml,
        2/               or a folder holding one artifact .zip
      chexnet/
        7/

The initial scan loads synchronously; afterwards a watcher thread polls the folder,
loads new or changed versions in the background and switches to them with one atomic
swap of the routing table. A request that acquired a version finishes on it; the
version is unloaded when its last request is done. See ``docs/serving.md``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    load_version,
    resolves_inside,
    valid_name,
    version_key,
)

__all__ = ["ModelRepository", "ServedVersion", "VersionPolicy", "load_version"]

log = logging.getLogger("model_agnostic.serving")

Loader = Callable[[Path], tuple[Model, dict[str, Any]]]


@dataclass(eq=False)
class ServedVersion:
    """One loaded version of one model, as a request sees it.

    Once retired (replaced, unwanted or deleted) and its last request finished, it is
    unloaded: the runner is closed and ``model`` and ``runner`` are set to ``None``.
    """

    name: str
    version: str
    model: Model
    #: The version's ``[serving]`` options (batching, max_batch_size, ...).
    options: dict[str, Any] = field(default_factory=dict)
    #: What ``make_runner`` returned (e.g. a Batcher); closed on unload if it has ``close``.
    runner: Any = None
    loaded_at: float = field(default_factory=time.time)
    #: The version folder it was loaded from; ``None`` for :meth:`ModelRepository.add`.
    source: Path | None = None
    listing: Listing | None = field(default=None, repr=False)
    _in_flight: int = field(default=0, init=False, repr=False)
    _retired: bool = field(default=False, init=False, repr=False)

    @property
    def in_flight(self) -> int:
        """Requests holding this version now."""
        return self._in_flight

    @property
    def retired(self) -> bool:
        """True once removed from routing (it may still finish requests)."""
        return self._retired


@dataclass
class _Tracked:
    """What the scanner knows of one version folder."""

    path: Path
    listing: Listing
    stable: bool
    #: (listing it failed at, error message, time) of the last failed load.
    failed: tuple[Listing, str, float] | None = None

    @property
    def failed_now(self) -> bool:
        return self.failed is not None and self.failed[0] == self.listing


class ModelRepository:
    """Served models by name and version, loaded from ``root`` and/or added in code.

    Args:
        root: the repository folder (``root/<name>/<version>/``); ``None`` serves only
            what :meth:`add` gives.
        version_policy: ``"latest"``, ``"latest:N"``, ``"all"`` or ``"specific:1,3"``.
        poll_interval_s: seconds between the watcher's scans.
        loader: ``folder -> (model, serving options)``; default :func:`load_version`.
        make_runner: called with each loaded version before it is served; its result
            becomes ``ServedVersion.runner`` and is closed on unload.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        version_policy: str = "latest",
        poll_interval_s: float = 1.0,
        loader: Loader | None = None,
        make_runner: Callable[[ServedVersion], Any] | None = None,
    ) -> None:
        if not poll_interval_s > 0:
            raise ConfigError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s!r}")
        self.root = Path(root) if root is not None else None
        self.policy = VersionPolicy.parse(version_policy)
        self.poll_interval_s = float(poll_interval_s)
        self.loader: Loader = loader or load_version
        self.make_runner = make_runner
        self._lock = threading.Lock()  # routing table and status
        self._scan_lock = threading.Lock()  # one scan (or add/stop) at a time
        self._routes: dict[str, dict[str, ServedVersion]] = {}
        self._disk: dict[str, dict[int, _Tracked]] = {}
        self._loading: dict[str, set[str]] = {}
        self._added: set[str] = set()
        self._ignored: set[str] = set()
        self._unloaded: set[str] = set()  # names unloaded by request; scans skip them
        self._scanned = root is None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def add(self, name: str, model: Model, version: str = "1",
            options: dict[str, Any] | None = None) -> ServedVersion:
        """Serve ``model`` as ``name``/``version``; the watcher never unloads it.

        Replaces a served version of the same name and version (hot swap); a folder of
        the same name under ``root`` is ignored from then on.
        """
        for label, value in (("model name", name), ("version", version)):
            if not valid_name(value):
                raise ConfigError(f"{label} {value!r} is not valid; use a non-empty name "
                                  "without '/', '\\', '..', NUL, or a leading '.'")
        served = ServedVersion(name, version, model, dict(options or {}))
        if self.make_runner is not None:
            served.runner = self.make_runner(served)
        with self._scan_lock, self._lock:
            self._added.add(name)
            self._disk.pop(name, None)
            self._loading.pop(name, None)
            routes = self._routes.setdefault(name, {})
            old = [sv for sv in routes.values() if sv.source is not None or sv.version == version]
            for sv in old:
                del routes[sv.version]
            routes[version] = served
            unload = self._retire(old)
        self._unload(unload)
        log.info("serving model %r version %s (added in code)", name, version)
        return served

    def start(self) -> None:
        """Scan once (synchronously: ready on return), then poll in a daemon thread.

        Raises :class:`ConfigError` if ``root`` is not a folder. A second call is a no-op.
        """
        if self._thread is not None:
            return
        self._stopping.clear()
        self.scan()
        if self.root is not None:
            self._thread = threading.Thread(
                target=self._watch, name="model_agnostic-repository-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the watcher, then unload everything (after in-flight requests)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._scan_lock, self._lock:
            everything = [sv for routes in self._routes.values() for sv in routes.values()]
            self._routes.clear()
            self._disk.clear()
            self._loading.clear()
            self._added.clear()
            self._scanned = self.root is None
            unload = self._retire(everything)
        self._unload(unload)

    def load(self, name: str) -> None:
        """Load (or reload) ``name`` from ``root`` now, also after :meth:`unload`; raises
        :class:`ModelNotFoundError` if there is no such model folder."""
        if not valid_name(name):
            raise ModelNotFoundError(f"no model is named {name!r}")
        with self._scan_lock:
            self._unloaded.discard(name)
        self._scan(lambda: False, now={name})
        with self._lock:
            if name not in self._known():
                raise ModelNotFoundError(f"no model folder is named {name!r}; models: "
                                         f"{self._known()}")

    def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (each unloaded after its in-flight
        requests); the watcher leaves it alone until :meth:`load`."""
        with self._scan_lock, self._lock:
            if name not in self._known():
                raise ModelNotFoundError(f"no model is named {name!r}; served models: "
                                         f"{self._known()}")
            self._unloaded.add(name)
            self._added.discard(name)
            self._disk.pop(name, None)
            self._loading.pop(name, None)
            unload = self._retire(list(self._routes.pop(name, {}).values()))
        self._unload(unload)
        log.info("model %r unloaded on request", name)

    def _watch(self) -> None:
        last_error = ""
        while not self._stopping.wait(self.poll_interval_s):
            try:
                self._scan(self._stopping.is_set)
                last_error = ""
            except Exception as exc:  # keep watching; say it once, not every poll
                if str(exc) != last_error:
                    log.error("model repository scan failed: %s", exc,
                              exc_info=not isinstance(exc, ModelAgnosticError))
                last_error = str(exc)

    # ------------------------------------------------------------ requests
    def names(self) -> list[str]:
        """Every model known: served, loading, or failed."""
        with self._lock:
            return self._known()

    def ready_versions(self, name: str) -> list[str]:
        """The versions of ``name`` being served, ascending numerically."""
        with self._lock:
            return sorted(self._routes.get(name, {}), key=version_key)

    @property
    def ready(self) -> bool:
        """True once the initial scan is done and some model has a served version."""
        with self._lock:
            return self._scanned and any(self._routes.values())

    @contextmanager
    def acquire(self, name: str, version: str | None = None) -> Iterator[ServedVersion]:
        """Pin a served version for one request: ``with repo.acquire("m") as served: ...``.

        ``version=None`` takes the highest served version. Raises
        :class:`ModelNotFoundError` (404) for an unknown model or version and
        :class:`ModelNotReadyError` (503) for one still loading or failed to load.
        """
        served = self._checkout(name, version)
        try:
            yield served
        finally:
            with self._lock:
                served._in_flight -= 1
                done = served._retired and served._in_flight == 0
            if done:
                self._unload([served])

    def status(self) -> dict[str, Any]:
        """Per model: served versions, versions loading, failed versions with error and time."""
        with self._lock:
            report: dict[str, Any] = {}
            for name in self._known():
                failed = {str(v): {"error": t.failed[1], "time": t.failed[2]}
                          for v, t in sorted(self._disk.get(name, {}).items()) if t.failed}
                report[name] = {
                    "served": sorted(self._routes.get(name, {}), key=version_key),
                    "loading": sorted(self._loading.get(name, ()), key=version_key),
                    "failed": failed,
                    "source": "added" if name in self._added else "disk",
                }
            return report

    def _checkout(self, name: str, version: str | None) -> ServedVersion:
        with self._lock:
            routes = self._routes.get(name, {}) if isinstance(name, str) else {}
            if not routes and (not valid_name(name) or name not in self._disk):
                raise ModelNotFoundError(f"no model is named {name!r}; served models: "
                                         f"{self._known()}")
            if version is None:
                if not routes:
                    raise self._not_ready(name)
                served = routes[max(routes, key=version_key)]
            else:
                found = routes.get(version)
                if found is None:
                    raise self._missing(name, str(version))
                served = found
            served._in_flight += 1
            return served

    def _known(self) -> list[str]:
        """Model names served or found on disk (call under the lock)."""
        return sorted(set(self._routes) | set(self._disk))

    def _not_ready(self, name: str) -> ModelNotReadyError:
        tracked = self._disk.get(name, {})
        errors = [f"version {v} failed to load: {t.failed[1]}"
                  for v, t in sorted(tracked.items()) if t.failed]
        if errors:
            return ModelNotReadyError(
                f"model {name!r} has no version ready; " + "; ".join(errors)
                + ". Fix the version folder: it is retried when its files change")
        loading = sorted(self._loading.get(name, ()), key=version_key)
        if loading:
            return ModelNotReadyError(f"model {name!r} is loading versions {loading}; "
                                      "retry shortly")
        return ModelNotReadyError(
            f"model {name!r} has no version to serve: version policy '{self.policy}' "
            f"selects none of the version folders {sorted(tracked)}")

    def _missing(self, name: str, version: str) -> ModelNotFoundError | ModelNotReadyError:
        served = sorted(self._routes.get(name, {}), key=version_key)
        tracked = self._disk.get(name, {}).get(int(version)) if is_version(version) \
            else None
        if version in self._loading.get(name, ()):
            return ModelNotReadyError(f"version {version} of model {name!r} is still loading; "
                                      f"served versions: {served}")
        if tracked is not None and tracked.failed is not None:
            return ModelNotReadyError(f"version {version} of model {name!r} failed to load: "
                                      f"{tracked.failed[1]}; served versions: {served}")
        why = (f" (its folder exists, but version policy '{self.policy}' does not serve it)"
               if tracked is not None else "")
        return ModelNotFoundError(f"model {name!r} has no version {version!r}{why}; "
                                  f"served versions: {served}")

    # ---------------------------------------------------------------- scanning
    def scan(self) -> None:
        """One synchronous poll: load what the policy wants and is new or changed (and
        stable), swap it in, retire what is no longer wanted. Raises :class:`ConfigError`
        if ``root`` is not a folder (nothing is unloaded then)."""
        self._scan(lambda: False)

    def _scan(self, stopping: Callable[[], bool], now: set[str] | None = None) -> None:
        """One poll; models named in ``now`` load at once (no two-poll stability wait)."""
        if self.root is None:
            self._scanned = True
            return
        with self._scan_lock:
            root = self.root.resolve()
            if not root.is_dir():
                raise ConfigError(f"model repository {str(self.root)!r} is not a folder; "
                                  "expected root/<model name>/<version number>/")
            try:
                found = {name: path for name, path in self._children(root, root, "model")
                         if name not in self._added and name not in self._unloaded}
            except OSError as exc:
                raise ConfigError(f"cannot list model repository {str(root)!r}: {exc}") from None
            initial = not self._scanned
            for name in sorted(found.keys() | self._disk.keys()):
                if stopping():
                    return
                self._scan_model(name, found.get(name), root, initial or name in (now or ()))
            with self._lock:
                self._scanned = True

    def _scan_model(self, name: str, folder: Path | None, root: Path, initial: bool) -> None:
        try:
            versions = {int(v): p for v, p in self._children(folder, root, "version")} \
                if folder is not None else {}
        except OSError as exc:  # keep what it serves; look again next poll
            self._ignore(f"{folder}: {exc}", f"cannot list {folder}: {exc}", logging.WARNING)
            return
        tracked = self._track(name, versions, initial)
        with self._lock:
            current = dict(self._routes.get(name, {}))
        loaded: dict[int, ServedVersion] = {}
        while True:
            candidates = {v for v, t in tracked.items()
                          if str(v) in current or (t.stable and not t.failed_now)}
            wanted = self.policy.select(candidates)
            todo = [v for v in sorted(wanted, reverse=True) if v not in loaded
                    and _needs_load(tracked[v], current.get(str(v)))]
            if not todo:
                break
            for v in todo:
                served = self._load(name, v, tracked[v], root)
                if served is not None:
                    loaded[v] = served
        self._swap(name, wanted, loaded, gone=folder is None)

    def _track(self, name: str, versions: dict[int, Path], initial: bool) -> dict[int, _Tracked]:
        """Record each version folder's listing; stable if unchanged since the last poll."""
        previous = self._disk.get(name, {})
        tracked: dict[int, _Tracked] = {}
        for number, path in versions.items():
            listing = folder_listing(path)
            before = previous.get(number)
            stable = initial or (before is not None and before.listing == listing)
            tracked[number] = _Tracked(path, listing, stable, before.failed if before else None)
        with self._lock:
            self._disk[name] = tracked
            self._loading[name] = self._pending(name)
        return tracked

    def _pending(self, name: str) -> set[str]:
        """Versions the policy picks from the folders on disk, not served and not failed."""
        tracked, served = self._disk.get(name, {}), self._routes.get(name, {})
        return {str(v) for v in self.policy.select(tracked)
                if str(v) not in served and not tracked[v].failed_now}

    def _load(self, name: str, version: int, tracked: _Tracked,
              root: Path) -> ServedVersion | None:
        """Load one version folder outside the locks; record a failure instead of raising."""
        log.info("loading model %r version %d from %s", name, version, tracked.path)
        try:
            links = links_outside(tracked.path, root)
            if links:
                raise ModelLoadError(f"{tracked.path}: {links} link to outside the model "
                                     "repository; refused (copy the files in instead)")
            model, options = self.loader(tracked.path)
            served = ServedVersion(name, str(version), model, dict(options),
                                   source=tracked.path, listing=tracked.listing)
            if self.make_runner is not None:
                served.runner = self.make_runner(served)
        except Exception as exc:  # a bad folder or a bug in user code: the server lives on
            message = f"{type(exc).__name__}: {exc}"
            log.error("model %r version %d (%s) failed to load: %s", name, version,
                      tracked.path, message, exc_info=not isinstance(exc, ModelAgnosticError))
            with self._lock:
                tracked.failed = (tracked.listing, message, time.time())
            return None
        with self._lock:
            tracked.failed = None
        return served

    def _swap(self, name: str, wanted: set[int], loaded: dict[int, ServedVersion],
              gone: bool) -> None:
        """One atomic switch of ``name``'s routes; retire whatever is no longer routed."""
        with self._lock:
            current = self._routes.get(name, {})
            routes: dict[str, ServedVersion] = {}
            for v in sorted(wanted):
                served = loaded.get(v) or current.get(str(v))
                if served is not None:
                    routes[str(v)] = served
            kept = {id(sv) for sv in routes.values()}
            dropped = [sv for sv in (*current.values(), *loaded.values()) if id(sv) not in kept]
            if routes:
                self._routes[name] = routes
            else:
                self._routes.pop(name, None)
            self._loading[name] = self._pending(name)
            if gone:
                self._disk.pop(name, None)
                self._loading.pop(name, None)
            unload = self._retire(dropped)
        if loaded or dropped:
            log.info("model %r now serves versions %s (retired %s)", name,
                     sorted(routes, key=version_key), [sv.version for sv in dropped])
        self._unload(unload)

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
                self._ignore(entry.path, f"ignoring {path}: a link to outside the repository",
                             logging.WARNING)
            elif entry.is_dir():
                yield entry.name, path
            else:
                self._ignore(entry.path, f"ignoring {path}: not a folder")

    def _ignore(self, key: str, message: str, level: int = logging.DEBUG) -> None:
        if key not in self._ignored:
            self._ignored.add(key)
            log.log(level, message)

    # --------------------------------------------------------------- unloading
    @staticmethod
    def _retire(versions: Iterable[ServedVersion]) -> list[ServedVersion]:
        """Mark versions retired (call under the lock); return those to unload now."""
        unload = []
        for served in versions:
            if not served._retired:
                served._retired = True
                if served._in_flight == 0:
                    unload.append(served)
        return unload

    @staticmethod
    def _unload(versions: Iterable[ServedVersion]) -> None:
        for served in versions:
            runner, served.runner = served.runner, None
            served.model = None  # type: ignore[assignment]  # free it: nothing routes here
            close = getattr(runner, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("closing the runner of model %r version %s failed",
                                  served.name, served.version)
            log.info("unloaded model %r version %s", served.name, served.version)


def _needs_load(tracked: _Tracked, served: ServedVersion | None) -> bool:
    """New, or changed since it was loaded; in both cases stable and not failed as is."""
    if not tracked.stable or tracked.failed_now:
        return False
    return served is None or (served.source is not None and served.listing != tracked.listing)
