"""The config file's schema: every section and key, its type, and the checks and coercions
that turn a TOML value into what the library uses (paths resolved, pairs as tuples).

Every key is checked; an unknown key is rejected with the allowed ones. See
``docs/config.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["PATH", "PATHS", "SCHEMA", "check_keys", "check_type", "coerce"]

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
    "tensorflow": {
        "path": _PATH,
        "signature": _STR,
        "intra_op_num_threads": _INT,
        "inter_op_num_threads": _INT,
    },
    "remote": {
        "url": _STR,
        "model_name": _STR,
        "model_version": _STR,
        "protocol": _STR,
        "binary": (bool, str),  # true, false or "auto" (RemoteModel checks the string)
        "allow_non_finite": _BOOL,
        "transport": _STR,
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
        "instances": _INT,
        "threads_per_instance": _INT,
        "pin_cpus": _BOOL,
        "objective": _STR,
    },
    "server": {
        "host": _STR,
        "port": _INT,
        "grpc_port": _INT,
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
        "format": _STR,
        "example": _PATH,
        "output": _PATH,
        "allow_unverified": _STRS,
    },
    "optimize": {
        "variants": _STRS,
        "calibration": _PATH,
        "calibration_size": _INT,
        "per_channel": _BOOL,
        "exclude_op_types": _STRS,
        "exclude_nodes": _STRS,
        "min_top1_agreement": _FLOAT,
        "min_topk_agreement": _FLOAT,
        "max_flips": _INT,
        "max_auroc_drop": _FLOAT,
        "labels": _PATH,
        "images": _PATH,
        "min_speedup": _FLOAT,
        "output": _PATH,
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

PATH, PATHS = _PATH, _PATHS


def check_keys(path: Path, section: str, table: Mapping[str, Any], allowed: Any) -> None:
    for key in table:
        if key not in allowed:
            where = f"[{section}]" if section else "the top level"
            raise ConfigError(
                f"{path}: unknown key {key!r} in {where}; allowed keys: {sorted(allowed)}"
            )


def check_type(path: Path, key: str, value: Any, expected: Any) -> None:
    ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{path}: {key} must be {names}, got {value!r}")


def _resolve(path: Path, key: str, value: str) -> str:
    """``value`` as an absolute path, relative to the config file's folder."""
    if "\0" in value:
        raise ConfigError(f"{path}: {key} contains a NUL character; expected a file path")
    return str((path.parent / value).resolve())


def coerce(path: Path, key: str, value: Any, expected: Any) -> Any:
    if expected == _PATH:
        check_type(path, key, value, _STR)
        return _resolve(path, key, value) if value else value
    if expected in (_STRS, _PATHS, _INTS):
        kind = int if expected == _INTS else str
        if not (isinstance(value, list) and all(type(v) is kind for v in value)):
            raise ConfigError(f"{path}: {key} must be a {expected}, got {value!r}")
        return [_resolve(path, key, v) for v in value] if expected == _PATHS else value
    if expected == _SIZES:
        if not (
            isinstance(value, list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(type(d) is int and d > 0 for d in p)
                for p in value
            )
        ):
            raise ConfigError(f"{path}: {key} must be a {_SIZES}, got {value!r}")
        return [tuple(pair) for pair in value]
    if expected == _PAIRS:
        if not (
            isinstance(value, list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                for p in value
            )
        ):
            raise ConfigError(f"{path}: {key} must be a {_PAIRS}, got {value!r}")
        return [tuple(pair) for pair in value]
    if expected is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a table, got {value!r}")
        return value
    check_type(path, key, value, expected)
    return value
