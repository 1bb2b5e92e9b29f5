"""What the remote backend accepts: its settings, and the outputs a server answers with.

Shared by every transport of :class:`~model_agnostic.backends.remote.RemoteModel` (HTTP
and gRPC), so both refuse the same things with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, RemoteResponseError
from ..model import Arrays
from ..tensors import TensorSpec, describe_spec, is_fixed
from .grpc_transport import TRANSPORTS, GrpcTransport

__all__ = ["PROTOCOLS", "check_outputs", "check_settings", "check_transport", "refuse_non_finite"]

#: The protocols :class:`~model_agnostic.backends.remote.RemoteModel` speaks.
PROTOCOLS = ("v2", "v1")


def check_outputs(outputs: Arrays, specs: Sequence[TensorSpec], count: int, where: str) -> Arrays:
    """The outputs ``specs`` names, each with ``count`` rows and the spec's dtype and dims."""
    result = {}
    for spec in specs:
        if spec.name not in outputs:
            raise RemoteResponseError(
                f"{where}: the answer lacks output {spec.name!r}; it has {sorted(outputs)}"
            )
        array = outputs[spec.name]
        dims = spec.shape
        fits = dims is None or (
            array.ndim == len(dims)
            and all(not is_fixed(want) or want == got for want, got in zip(dims, array.shape))
        )
        if array.ndim == 0 or array.shape[0] != count or not fits or array.dtype != spec.dtype:
            raise RemoteResponseError(
                f"{where}: output {spec.name!r} came back as {list(array.shape)} "
                f"{array.dtype}, expected {describe_spec(spec)} with {count} rows (the batch)"
            )
        result[spec.name] = array
    return result


def refuse_non_finite(outputs: Arrays, where: str) -> None:
    """A :class:`RemoteResponseError` naming the first output with NaN or infinity."""
    for name, array in outputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            count = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise RemoteResponseError(
                f"{where}: output {name!r} holds {count} non-finite value(s) (NaN or infinity); "
                "expected finite numbers. If the model may produce them, set "
                "[remote] allow_non_finite = true"
            )


def check_settings(
    url: str,
    model_name: str,
    protocol: str,
    timeout_s: float,
    headers: Mapping[str, str] | None,
) -> None:
    """A :class:`ConfigError` for a bad protocol, url, model name, timeout or headers."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"remote protocol {protocol!r} is not one of {list(PROTOCOLS)}")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"remote url must be a non-empty string, got {url!r}")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"remote model_name must be a non-empty string, got {model_name!r}")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    bad = {
        k: v for k, v in (headers or {}).items() if not (isinstance(k, str) and isinstance(v, str))
    }
    if bad:
        raise ConfigError(f"remote headers must map strings to strings, got {bad!r}")


def check_transport(transport: object, protocol: str, binary: bool | str) -> None:
    """A :class:`ConfigError` for an unknown transport, or settings gRPC cannot honour."""
    if isinstance(transport, str) and transport not in TRANSPORTS:
        raise ConfigError(f"remote transport {transport!r} is not one of {list(TRANSPORTS)}")
    if transport == "grpc" or isinstance(transport, GrpcTransport):
        if protocol != "v2":
            raise ConfigError(f'remote protocol {protocol!r} has no gRPC form; use "v2"')
        if binary is False:
            raise ConfigError(
                "remote binary = false asks for JSON, which gRPC does not have: tensors "
                'travel as raw bytes there; leave binary out or use transport = "http"'
            )
