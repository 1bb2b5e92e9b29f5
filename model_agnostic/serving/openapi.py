"""The OpenAPI document of what the server serves (``GET /openapi.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import __version__

__all__ = ["document"]

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_OBJECT = {"type": "object"}
_INDEX = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
            "details": {"type": "object"},
        },
        "required": ["name", "versions", "state"],
    },
}
_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
_EXPLAIN_QUERY = [
    {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 64}},
    {"name": "label", "in": "query", "schema": {"type": "string"}},
    {"name": "overlay", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}},
]


def _op(
    summary: str,
    method: str = "get",
    params: Sequence[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    errors: Sequence[int] = (),
    answer: dict[str, Any] = _OBJECT,
) -> dict[str, Any]:
    ok = {"description": "OK", "content": {"application/json": {"schema": answer}}}
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok}}
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = {"required": True, "content": body}
    for status in errors:
        op["responses"][str(status)] = _ERROR
    return {method: op}


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    infer_body = {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }
    image_body = {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
    }
    return {
        prefix: _op("Model metadata (inputs, outputs, versions)", params=params, errors=[404, 503]),
        f"{prefix}/ready": _op("Model readiness", params=params, errors=[404, 503]),
        f"{prefix}/infer": _op(
            "Inference on tensors (Open Inference Protocol, JSON or binary tensors)",
            "post",
            params,
            infer_body,
            [400, 404, 413, 500, 503],
        ),
        f"{prefix}/predict": _op(
            "Whole pipeline on one uploaded image: preprocessing, model, process_result",
            "post",
            params,
            image_body,
            [400, 404, 413, 415, 500, 503],
        ),
        f"{prefix}/explain": _op(
            "The /predict result plus class activation maps (?top_k=3, ?label=A,B, ?overlay=0)",
            "post",
            [*params, *_EXPLAIN_QUERY],
            image_body,
            [400, 404, 413, 415, 500, 501, 503],
        ),
    }


def _tfserving_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    return {
        prefix: _op("TF Serving REST: model version status", params=params, errors=[404]),
        f"{prefix}/metadata": _op(
            "TF Serving REST: the serving_default signature", params=params, errors=[404]
        ),
        f"{prefix}:predict": _op(
            "TF Serving REST: predict, row ('instances') or columnar ('inputs') form",
            "post",
            params,
            json_body,
            [400, 404, 413, 500, 503],
        ),
    }


def document(models: Sequence[str]) -> dict[str, Any]:
    """OpenAPI 3.0 for the v2 endpoints, the convenience endpoint, metrics and the page."""
    paths: dict[str, Any] = {
        "/v2/health/live": _op("Liveness"),
        "/v2/health/ready": _op("Readiness: every model loaded", errors=[503]),
        "/v2": _op("Server metadata and protocol extensions"),
        "/v2/repository/index": _op("Served models and their versions", "post", answer=_INDEX),
        "/v2/repository/models/{model_name}/load": _op(
            "Load or reload a model from the repository (Triton model control; off unless enabled)",
            "post",
            [_MODEL],
            errors=[400, 401, 403, 404],
        ),
        "/v2/repository/models/{model_name}/unload": _op(
            "Unload a model (Triton model control; off unless enabled)",
            "post",
            [_MODEL],
            errors=[400, 401, 403, 404],
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
        "/ui": {
            "get": {
                "summary": "Web page: upload an image, see the result",
                "responses": {"200": {"description": "HTML"}},
            }
        },
    }
    paths.update(_model_paths("/v2/models/{model_name}", [_MODEL]))
    paths.update(
        _model_paths("/v2/models/{model_name}/versions/{model_version}", [_MODEL, _VERSION])
    )
    paths.update(_tfserving_paths("/v1/models/{model_name}", [_MODEL]))
    paths.update(
        _tfserving_paths("/v1/models/{model_name}/versions/{model_version}", [_MODEL, _VERSION])
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "model_agnostic inference server",
            "version": __version__,
            "description": "Open Inference Protocol (KServe v2) with Triton's binary "
            "tensor extension, and TF Serving's REST API (/v1). "
            f"Models served: {', '.join(models) or 'none'}.",
        },
        "paths": paths,
    }
