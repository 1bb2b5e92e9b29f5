"""A v2-typed version of the server's OpenAPI document, and schemathesis cases from either.

``GET /openapi.json`` types every JSON body as a bare ``object``, so a schema-driven fuzzer
generates almost nothing an inference endpoint would look at twice. :data:`COMPONENTS` is
the Open Inference Protocol written out as OpenAPI 3.0 schemas (inference request and
response, model metadata, the repository index, the error body) and :func:`v2_document`
puts them into a copy of the server's own document; ``model_agnostic/serving/openapi.py``
can adopt them as they are. Shared by ``tests/test_fuzz_api.py`` and ``bench/fuzz.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from model_agnostic.protocol import DATATYPES, HEADER_LENGTH
from tests.fuzz_requests import Answer, HttpCase

__all__ = ["COMPONENTS", "FIXED_PATH", "HEADER_PARAMETER", "call", "schema_cases",
           "v2_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameters(known: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": known, "additionalProperties": {
        "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}}


_ELEMENT = {"anyOf": [{"type": "number", "nullable": True}, {"type": "string"},
                      {"type": "boolean"}, {"type": "array", "items": {}}]}

#: The Open Inference Protocol's messages as OpenAPI 3.0 schemas (``components.schemas``).
COMPONENTS: dict[str, Any] = {
    "Datatype": {"type": "string", "enum": list(DATATYPES)},
    "TensorData": {
        "type": "array", "items": _ELEMENT,
        "description": "Row-major elements, flat or nested as the shape says; null is NaN."},
    "RequestInput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "description": "Exactly one of data and parameters.binary_data_size.",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "shape": {"type": "array", "maxItems": 32, "items": {"type": "integer",
                                                                "minimum": 0}},
            "datatype": _ref("Datatype"),
            "parameters": _parameters({"binary_data_size": {"type": "integer",
                                                            "minimum": 0}}),
            "data": _ref("TensorData")}},
    "RequestOutput": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1},
                       "parameters": _parameters({"binary_data": {"type": "boolean"}})}},
    "InferenceRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _parameters({"binary_data_output": {"type": "boolean"}}),
            "inputs": {"type": "array", "minItems": 1, "items": _ref("RequestInput")},
            "outputs": {"type": "array", "items": _ref("RequestOutput")}}},
    "ResponseOutput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": _ref("Datatype"),
            "parameters": _parameters({"binary_data_size": {"type": "integer",
                                                            "minimum": 0}}),
            "data": _ref("TensorData")}},
    "InferenceResponse": {
        "type": "object", "required": ["model_name", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"},
            "id": {"type": "string"}, "parameters": _parameters({}),
            "outputs": {"type": "array", "items": _ref("ResponseOutput")}}},
    "MetadataTensor": {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"}, "datatype": _ref("Datatype"),
            "shape": {"type": "array", "nullable": True,
                      "items": {"type": "integer", "minimum": -1}}}},
    "ModelMetadata": {
        "type": "object", "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("MetadataTensor")},
            "outputs": {"type": "array", "items": _ref("MetadataTensor")}}},
    "PredictResponse": {
        "type": "object", "required": ["model_name", "model_version", "result", "latency_ms"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "result": {"description": "what the model's process_result returned"},
                       "latency_ms": {"type": "number", "minimum": 0}}},
    "ServerLive": {"type": "object", "required": ["live"],
                   "properties": {"live": {"type": "boolean"}}},
    "ServerReady": {"type": "object", "required": ["ready"],
                    "properties": {"ready": {"type": "boolean"}}},
    "ServerMetadata": {
        "type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "extensions": {"type": "array", "items": {"type": "string"}}}},
    "ModelReady": {"type": "object", "required": ["name", "ready"],
                   "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "RepositoryIndex": {
        "type": "array", "items": {
            "type": "object", "required": ["name", "versions", "state"],
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                           "details": {"type": "object"}}}},
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "minLength": 1}}},
}

#: The binary extension's header, as an optional parameter of the infer operations.
HEADER_PARAMETER: dict[str, Any] = {
    "name": HEADER_LENGTH, "in": "header", "required": False,
    "description": "Length of the JSON part of a body followed by binary tensors; 0: the "
                   "whole body is the single input's raw bytes.",
    "schema": {"type": "integer", "minimum": 0}}

# path -> schema of the 200 answer; model paths by their last segment
_ANSWERS = {"/v2/health/live": "ServerLive", "/v2/health/ready": "ServerReady",
            "/v2": "ServerMetadata", "/v2/repository/index": "RepositoryIndex"}
_MODEL_ANSWERS = {"infer": "InferenceResponse", "ready": "ModelReady",
                  "predict": "PredictResponse"}

#: Path parameters that name what the fuzz server serves.
FIXED_PATH = {"model_name": "tiny", "model_version": "1"}


def v2_document(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the server's OpenAPI ``document`` with the v2 message schemas in place."""
    doc = copy.deepcopy(document)
    doc.setdefault("components", {}).setdefault("schemas", {}).update(
        copy.deepcopy(COMPONENTS))
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            _type_operation(path, method, operation)
    return doc


def _type_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.get("responses", {})
    for status, response in responses.items():
        content = response.get("content", {}).get("application/json")
        if content is None:
            continue
        if status != "200":
            content["schema"] = _ref("Error")
            continue
        answer = _ANSWERS.get(path)
        if path.startswith("/v2/models/"):
            answer = _MODEL_ANSWERS.get(path.rsplit("/", 1)[1], "ModelMetadata")
        if answer:
            content["schema"] = _ref(answer)
    if path.endswith("/infer") and method == "post":
        operation["requestBody"]["content"]["application/json"]["schema"] = \
            _ref("InferenceRequest")
        operation["parameters"] = [*operation.get("parameters", []), HEADER_PARAMETER]


def schema_cases(document: dict[str, Any], *,
                 only: Iterable[str] | None = None) -> st.SearchStrategy[Any]:
    """schemathesis cases (positive and negative) for every operation in ``document``.

    Half the cases name the served model (:data:`FIXED_PATH`) in their path, half get
    generated path parameters; ``only`` keeps the operations whose path ends with one of
    its entries.
    """
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(document)
    wanted = tuple(only) if only is not None else None
    named, generated = [], []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # the document is ours: valid
        if wanted is not None and not operation.path.endswith(wanted):
            continue
        names = [p.name for p in operation.path_parameters]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            generated.append(operation.as_strategy(generation_mode=mode))
            if names:
                named.append(operation.as_strategy(
                    generation_mode=mode, path_parameters={n: FIXED_PATH[n] for n in names}))
    return st.one_of(st.one_of(named), st.one_of(generated)) if named else st.one_of(generated)


def call(case: Any, base_url: str, session: Any) -> tuple[HttpCase, Answer]:
    """Send a schemathesis ``case``; the request and its answer as ``fuzz_requests`` has them."""
    response = case.call(base_url=base_url, session=session, timeout=30)
    headers = {name.lower(): values[0] for name, values in response.headers.items() if values}
    return (HttpCase(case.method.upper(), case.formatted_path),
            Answer(response.status_code, headers, response.content))
