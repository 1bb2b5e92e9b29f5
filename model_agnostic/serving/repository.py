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

This module is the registry: the routing table, pinning a version for a request, the
atomic swap, retiring and unloading versions. Scanning the disk (the watcher thread,
version folders' listings and stability, failed loads) is :mod:`.scanner`'s job; its
docstring says how the two share their locks.
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

from ..errors import ConfigError, ModelNotFoundError
from ..model import Model
from .scanner import Loader, Scanner
from .versions import Listing, VersionPolicy, load_version, valid_name, version_key

__all__ = ["ModelRepository", "ServedVersion", "VersionPolicy", "load_version"]

log = logging.getLogger(__name__)


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
        # Lock order: _scan_lock, then _lock. _lock guards the routing table (written
        # holding both), each version's _in_flight and _retired, and what status and
        # errors read of the scanner's state; _scan_lock (the scanner's) runs one scan,
        # add, load, unload or stop at a time. See the scanner module's docstring.
        self._lock = threading.Lock()  # routing table and status
        self._scanner = Scanner(self, self._lock)  # disk state and the watcher thread
        self._scan_lock = self._scanner.scan_lock
        self._routes: dict[str, dict[str, ServedVersion]] = {}

    # ------------------------------------------------------------- lifecycle
    def add(
        self, name: str, model: Model, version: str = "1", options: dict[str, Any] | None = None
    ) -> ServedVersion:
        """Serve ``model`` as ``name``/``version``; the watcher never unloads it.

        Replaces a served version of the same name and version (hot swap); a folder of
        the same name under ``root`` is ignored from then on.
        """
        for label, value in (("model name", name), ("version", version)):
            if not valid_name(value):
                raise ConfigError(
                    f"{label} {value!r} is not valid; use a non-empty name "
                    "without '/', '\\', '..', NUL, or a leading '.'"
                )
        served = self._serve(name, version, model, dict(options or {}))
        with self._scan_lock, self._lock:
            self._scanner.added.add(name)
            self._scanner.forget(name)
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
        self._scanner.start()

    def stop(self) -> None:
        """Stop and join the watcher, then unload everything (after in-flight requests)."""
        self._scanner.stop()
        with self._scan_lock, self._lock:
            everything = [sv for routes in self._routes.values() for sv in routes.values()]
            self._routes.clear()
            self._scanner.reset()
            unload = self._retire(everything)
        self._unload(unload)

    def load(self, name: str) -> None:
        """Load (or reload) ``name`` from ``root`` now, also after :meth:`unload`; raises
        :class:`ModelNotFoundError` if there is no such model folder."""
        if not valid_name(name):
            raise ModelNotFoundError(f"no model is named {name!r}")
        with self._scan_lock:
            self._scanner.unloaded.discard(name)
        self._scanner.scan(lambda: False, now={name})
        with self._lock:
            if name not in self._known():
                raise ModelNotFoundError(
                    f"no model folder is named {name!r}; models: {self._known()}"
                )

    def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (each unloaded after its in-flight
        requests); the watcher leaves it alone until :meth:`load`."""
        with self._scan_lock, self._lock:
            if name not in self._known():
                raise ModelNotFoundError(
                    f"no model is named {name!r}; served models: {self._known()}"
                )
            self._scanner.unloaded.add(name)
            self._scanner.added.discard(name)
            self._scanner.forget(name)
            unload = self._retire(list(self._routes.pop(name, {}).values()))
        self._unload(unload)
        log.info("model %r unloaded on request", name)

    def scan(self) -> None:
        """One synchronous poll: load what the policy wants and is new or changed (and
        stable), swap it in, retire what is no longer wanted. Raises :class:`ConfigError`
        if ``root`` is not a folder (nothing is unloaded then)."""
        self._scanner.scan(lambda: False)

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
            return self._scanner.scanned and any(self._routes.values())

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
                report[name] = {
                    "served": sorted(self._routes.get(name, {}), key=version_key),
                    "loading": sorted(self._scanner.loading.get(name, ()), key=version_key),
                    "failed": self._scanner.failures(name),
                    "source": "added" if name in self._scanner.added else "disk",
                }
            return report

    def _checkout(self, name: str, version: str | None) -> ServedVersion:
        with self._lock:
            routes = self._routes.get(name, {}) if isinstance(name, str) else {}
            if not routes and (not valid_name(name) or name not in self._scanner.disk):
                raise ModelNotFoundError(
                    f"no model is named {name!r}; served models: {self._known()}"
                )
            if version is None:
                if not routes:
                    raise self._scanner.not_ready(name)
                served = routes[max(routes, key=version_key)]
            else:
                found = routes.get(version)
                if found is None:
                    raise self._scanner.missing(name, str(version))
                served = found
            served._in_flight += 1
            return served

    def _known(self) -> list[str]:
        """Model names served or found on disk (call under the lock)."""
        return sorted(set(self._routes) | set(self._scanner.disk))

    # ------------------------------------------------- the scanner's hooks
    def _routed(self, name: str) -> dict[str, ServedVersion]:
        """``name``'s routes as they are (call under the lock)."""
        return self._routes.get(name, {})

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
        served = ServedVersion(name, version, model, options, source=source, listing=listing)
        if self.make_runner is not None:
            served.runner = self.make_runner(served)
        return served

    def _swap(
        self, name: str, wanted: set[int], loaded: dict[int, ServedVersion], gone: bool
    ) -> None:
        """One atomic switch of ``name``'s routes; retire whatever is no longer routed.

        Called by a scan (holding the scan lock); the scanner's state for ``name`` is
        settled under the same hold of the lock as the routes."""
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
            self._scanner.settle(name, gone)
            unload = self._retire(dropped)
        if loaded or dropped:
            log.info(
                "model %r now serves versions %s (retired %s)",
                name,
                sorted(routes, key=version_key),
                [sv.version for sv in dropped],
            )
        self._unload(unload)

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
                    log.exception(
                        "closing the runner of model %r version %s failed",
                        served.name,
                        served.version,
                    )
            log.info("unloaded model %r version %s", served.name, served.version)
