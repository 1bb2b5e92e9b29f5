"""Model instances: copies of one served model that run merged batches in parallel.

``[serving] instances = N`` gives a version N copies of its model, each with its own
intra-op threads (``threads_per_instance``): an ONNX Runtime session each, or a copy of
the PyTorch module. Any other backend (remote, a model's own ``infer``) shares its one
object, whose ``infer`` must then be thread-safe. The version's :class:`~.batching.Batcher`
runs one worker thread per instance, and each merged batch goes to a free one.
``pin_cpus`` pins every worker (and its session's ONNX Runtime threads) to CPUs of its own,
on Linux. Without any of these settings a version keeps one instance, as loaded.
See ``docs/serving.md`` (Model instances).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._deps import require
from ..backends.onnx_runtime import OnnxModel
from ..backends.pytorch import PyTorchModel
from ..errors import ConfigError, ModelLoadError
from ..model import Arrays, Model
from ..onnx_safety import check_onnx_model
from .batching import Batcher, batch_options

if TYPE_CHECKING:
    from .metrics import Metrics
    from .repository import ServedVersion

__all__ = [
    "InstanceObserver",
    "InstancePlan",
    "ModelInstance",
    "OBJECTIVES",
    "available_cpus",
    "plan_instances",
    "start_instances",
    "version_batcher",
]

log = logging.getLogger(__name__)

OBJECTIVES = ("latency", "throughput")
#: Threads per instance under ``objective = "throughput"`` (``"latency"``: one instance with
#: every CPU). From bench/instances.py on 2 cores: see docs/serving.md (Model instances).
THROUGHPUT_THREADS = 1
#: More instances than this is surely a typo (each loads the whole model).
MAX_INSTANCES = 256
MAX_THREADS = 1024
_QUOTA_FILES = (
    ("/sys/fs/cgroup/cpu.max", None),
    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)
_SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
_COPIED = (
    "graph_optimization_level",
    "enable_cpu_mem_arena",
    "enable_mem_pattern",
    "inter_op_num_threads",
    "execution_mode",
    "log_severity_level",
)


class InstanceObserver(Protocol):
    """What instances report to (metrics). Implementations must be thread-safe."""

    def serving(self, count: int) -> None:
        """``count`` instances started (positive) or stopped (negative) serving."""

    def call(self, index: int, running: bool) -> None:
        """A backend call started (``running``) or ended on instance ``index``."""


@dataclass(frozen=True)
class InstancePlan:
    """How a version runs: ``instances`` copies, ``threads`` intra-op threads each (None:
    the backend's own setting), and the CPUs each is pinned to (None: not pinned)."""

    instances: int = 1
    threads: int | None = None
    cpus: tuple[tuple[int, ...], ...] | None = None
    reason: str = "default: one instance, the backend's own threads"

    @property
    def configured(self) -> bool:
        """False for the default plan, which leaves the model exactly as loaded."""
        return self.threads is not None or self.instances != 1


def available_cpus() -> list[int]:
    """The CPUs this process may run on: its affinity on Linux (else all of them), the
    first ones only when a CPU quota (a container's CPU limit) allows fewer."""
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
    else:
        cpus = list(range(os.cpu_count() or 1))
    quota = _cpu_quota()
    return cpus[: max(1, int(quota))] if quota is not None else cpus


def _cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup allows (cgroup v2 ``cpu.max``, v1 CFS quota), if any."""
    for quota_file, period_file in _QUOTA_FILES:
        try:
            text = Path(quota_file).read_text().split()
            period = text[1] if period_file is None else Path(period_file).read_text().strip()
            if text[0] not in ("max", "-1"):
                return int(text[0]) / int(period)
        except (OSError, IndexError, ValueError, ZeroDivisionError):
            continue
    return None


def plan_instances(
    options: Mapping[str, Any], name: str, cpus: list[int] | None = None
) -> InstancePlan:
    """The plan ``[serving]`` asks for, checked; :class:`ConfigError` names the bad key.

    Given one of ``instances`` and ``threads_per_instance``, the other divides the CPUs
    among them; given neither, ``objective`` decides (``"latency"``: one instance with
    every CPU; ``"throughput"``: :data:`THROUGHPUT_THREADS` threads per instance), and
    without an objective the version keeps one instance as loaded.
    """
    where = f"model {name!r}: [serving]"
    cpus = available_cpus() if cpus is None else cpus
    instances = _count(options, "instances", where, MAX_INSTANCES)
    threads = _count(options, "threads_per_instance", where, MAX_THREADS)
    objective, pin = options.get("objective"), options.get("pin_cpus", False)
    if objective is not None and objective not in OBJECTIVES:
        raise ConfigError(f"{where} objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if not isinstance(pin, bool):
        raise ConfigError(f"{where} pin_cpus must be true or false, got {pin!r}")
    cores = len(cpus)
    if instances is None and threads is None:
        if objective == "latency":
            instances, threads, reason = 1, cores, f"objective latency on {cores} CPUs"
        elif objective == "throughput":
            threads = min(THROUGHPUT_THREADS, cores)
            instances, reason = max(1, cores // threads), f"objective throughput on {cores} CPUs"
        elif pin:
            instances, threads, reason = 1, cores, "pinned: one instance on every CPU"
        else:
            return InstancePlan()
    else:
        reason = "configured"
        instances = instances or max(1, cores // (threads or 1))
        threads = threads or max(1, cores // instances)
    return InstancePlan(instances, threads, _pinning(pin, instances, threads, cpus, where), reason)


def _count(options: Mapping[str, Any], key: str, where: str, most: int) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{where} {key} must be an integer from 1 to {most}, got {value!r}")
    return value


def _pinning(
    pin: bool, instances: int, threads: int, cpus: list[int], where: str
) -> tuple[tuple[int, ...], ...] | None:
    """Each instance's CPUs, consecutive blocks of ``threads``; None when not pinning."""
    if not pin:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError(f"{where} pin_cpus works on Linux only (os.sched_setaffinity)")
    if instances * threads > len(cpus):
        raise ConfigError(
            f"{where} pin_cpus needs instances x threads_per_instance ({instances} x {threads}) "
            f"<= the {len(cpus)} CPUs this process may use {cpus}; lower one, or set "
            "pin_cpus = false"
        )
    return tuple(tuple(cpus[i * threads : (i + 1) * threads]) for i in range(instances))


class ModelInstance:
    """One copy of a served model, run by one batcher worker (:class:`~.batching.Instance`)."""

    def __init__(
        self,
        model: Model,
        index: int = 0,
        threads: int | None = None,
        cpus: tuple[int, ...] | None = None,
        observer: InstanceObserver | None = None,
    ) -> None:
        self.model, self.index, self.threads, self.cpus = model, index, threads, cpus
        self._observer = observer
        self._open = True
        _report(observer, "serving", 1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.model).__name__}, index={self.index}, "
            f"threads={self.threads}, cpus={self.cpus})"
        )

    def start(self) -> None:
        """On the worker's thread: pin it to :attr:`cpus`; PyTorch's threads to :attr:`threads`."""
        if self.cpus:
            os.sched_setaffinity(0, self.cpus[:1] if _is_onnx(self.model) else self.cpus)
        if self.threads and isinstance(self.model, PyTorchModel):
            require("torch", "The PyTorch backend").set_num_threads(self.threads)

    def infer(self, inputs: Arrays) -> Arrays:
        """Run one (merged) batch on this instance."""
        _report(self._observer, "call", self.index, True)
        try:
            return self.model.infer(inputs)
        finally:
            _report(self._observer, "call", self.index, False)

    def close(self) -> None:
        """Stop counting this instance as serving (its batcher has closed). Idempotent."""
        if self._open:
            self._open = False
            _report(self._observer, "serving", -1)


def start_instances(
    model: Model, plan: InstancePlan, observer: InstanceObserver | None = None
) -> list[ModelInstance]:
    """``plan.instances`` instances of ``model``; the first is ``model`` itself (its ONNX
    Runtime session replaced when its threads or pinning differ from the plan)."""
    made: list[ModelInstance] = []
    try:
        for index in range(plan.instances):
            cpus = plan.cpus[index] if plan.cpus else None
            copied = _tuned(model, plan.threads, cpus, fresh=index > 0)
            made.append(ModelInstance(copied, index, plan.threads, cpus, observer))
    except BaseException:
        for instance in made:
            instance.close()
        raise
    return made


def version_batcher(served: ServedVersion, metrics: Metrics | None) -> Batcher | None:
    """A served version's batcher over its instances; None with batching off and the
    default plan (requests then call the model directly). With batching off and instances
    configured, each request still goes to a free instance, alone (batches of one)."""
    options = batch_options(served.options, served.model, served.name)
    plan = plan_instances(served.options, served.name)
    merge = bool(options["batching"])
    if not merge and not plan.configured:
        return None
    observer = metrics.instance_observer(served.name, served.version) if metrics else None
    instances = start_instances(served.model, plan, observer)
    log.info(
        "model %r version %s: %d instance(s) x %s thread(s)%s (%s)",
        served.name,
        served.version,
        plan.instances,
        plan.threads or "the backend's",
        f", pinned to {plan.cpus}" if plan.cpus else "",
        plan.reason,
    )
    return Batcher(
        instances,
        max_batch_size=int(options["max_batch_size"]) if merge else 1,
        max_queue_delay_ms=float(options["max_queue_delay_ms"]) if merge else 0.0,
        max_queue_size=int(options["max_queue_size"]),
        name=f"{served.name}-{served.version}",
        observer=metrics.observer(served.name) if metrics else None,
    )


def _tuned(model: Model, threads: int | None, cpus: tuple[int, ...] | None, fresh: bool) -> Model:
    """``model`` (or, if ``fresh``, a copy) with ``threads`` intra-op threads."""
    if isinstance(model, OnnxModel):
        current = model.session.get_session_options().intra_op_num_threads
        pool_pinned = cpus is not None and len(cpus) > 1
        if not fresh and (threads is None or (threads == current and not pool_pinned)):
            return model
        target = copy.copy(model) if fresh else model
        target.session = _session(model, threads or current, cpus)
        return target
    if isinstance(model, PyTorchModel) and fresh:
        replica = copy.copy(model)
        replica.network = copy.deepcopy(model.network)
        return replica
    return model


def _session(model: OnnxModel, threads: int, cpus: tuple[int, ...] | None) -> Any:
    """A new session on ``model``'s file with its settings, ``threads`` intra-op threads
    and (when pinned) ONNX Runtime's own threads on ``cpus[1:]``."""
    ort = require("onnxruntime", "The ONNX Runtime backend")
    if model.path is None:
        raise ConfigError(
            "[serving] instances and threads_per_instance need the ONNX model as a file; "
            "it was given as bytes"
        )
    old = model.session.get_session_options()
    options = ort.SessionOptions()
    for attribute in _COPIED:
        setattr(options, attribute, getattr(old, attribute))
    for key in _SPINNING:
        try:
            options.add_session_config_entry(key, old.get_session_config_entry(key))
        except Exception:  # not set on the original session: ONNX Runtime's default
            pass
    options.intra_op_num_threads = threads
    if cpus and len(cpus) > 1:  # one CPU per pool thread; ids count from 1
        options.add_session_config_entry(
            "session.intra_op_thread_affinities", ";".join(str(c + 1) for c in cpus[1:])
        )
    check_onnx_model(model.path)
    settings = model.session.get_provider_options()
    providers = [(name, settings.get(name, {})) for name in model.session.get_providers()]
    try:
        return ort.InferenceSession(str(model.path), options, providers=providers)
    except Exception as exc:  # onnxruntime's own exception types
        raise ModelLoadError(f"ONNX Runtime cannot load another instance: {exc}") from exc


def _is_onnx(model: Model) -> bool:
    return isinstance(model, OnnxModel)


def _report(observer: InstanceObserver | None, method: str, *args: Any) -> None:
    """Call an observer hook; a failing hook is logged, never fails a request."""
    if observer is None:
        return
    try:
        getattr(observer, method)(*args)
    except Exception:
        log.exception("instance observer %r failed in %s", observer, method)
