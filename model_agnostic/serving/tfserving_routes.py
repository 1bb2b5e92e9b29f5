"""TensorFlow Serving's REST API over the same models (``protocol/tfserving.py`` is the
codec): ``GET /v1/models/{name}[/versions/{v}]`` (status), ``.../metadata`` (the
``serving_default`` signature) and ``POST .../{name}[/versions/{v}]:predict``, so a TF
Serving client, or ``RemoteModel(protocol="v1")``, talks to this server unchanged."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..model import Arrays
from ..protocol import tfserving
from ..tensors import TensorSpec
from .messages import Request, Response
from .model_info import signature

if TYPE_CHECKING:
    from .dataplane import DataPlane
    from .repository import ServedVersion

__all__ = ["tfserving_routes"]

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"


def tfserving_routes(
    dataplane: DataPlane,
) -> list[tuple[str, re.Pattern[str], Callable[..., Response]]]:
    """The three routes, as ``(method, path pattern, handler)`` for the data plane."""

    def tfserving_status(request: Request, name: str, version: str | None) -> Response:
        with dataplane.repository.acquire(name, version):
            versions = [version] if version else dataplane.repository.ready_versions(name)
        return Response.json(tfserving.model_status(versions))

    def tfserving_metadata(request: Request, name: str, version: str | None) -> Response:
        with dataplane.repository.acquire(name, version) as served:
            inputs, outputs = signature(served.model)
            return Response.json(
                tfserving.signature_metadata(name, served.version, inputs, outputs)
            )

    def tfserving_predict(request: Request, name: str, version: str | None) -> Response:
        def decode(inputs: list[TensorSpec]) -> tuple[Arrays, tfserving.PredictRequest]:
            doc = protocol.load_object(request.body, "request", dataplane.limits.max_json_depth)
            decoded = tfserving.decode_predict_request(doc, inputs, dataplane.limits.max_elements)
            return decoded.inputs, decoded

        def encode(
            served: ServedVersion, decoded: tfserving.PredictRequest, outputs: Arrays
        ) -> Response:
            return Response.json(tfserving.encode_predict_response(outputs, decoded))

        return dataplane.run_inference(name, version, "tfserving_predict", decode, encode)

    routes: list[tuple[str, str, Any]] = [
        ("GET", _MODEL, tfserving_status),
        ("GET", _MODEL + "/metadata", tfserving_metadata),
        ("POST", _MODEL + ":predict", tfserving_predict),
    ]
    return [(method, re.compile(path), handler) for method, path, handler in routes]
