"""The wire formats, with no I/O: the Open Inference Protocol (KServe v2) REST messages with
Triton's binary tensor extension, and TF Serving's v1 REST form.

The server (``model_agnostic.serving``) and the remote backend
(``model_agnostic.backends.remote``) both import this package; it imports neither. Every
malformed message raises :class:`~model_agnostic.errors.ProtocolError`, whose ``status``
hints the HTTP status a server answers (400 malformed, 500 unencodable); the client
translates it into its own errors at its boundary.

* :mod:`.codec`: datatypes; tensor data as JSON or binary, both ways.
* :mod:`.json_body`: the JSON part of a body (header split, depth, parsing).
* :mod:`.v2`: infer requests and responses.
* :mod:`.metadata`: the model metadata document.
* :mod:`.v1`: TF Serving's ``:predict`` instances and predictions.
"""

from .codec import DATATYPES, datatype_of
from .json_body import DEFAULT_MAX_DEPTH, HEADER_LENGTH, dumps, json_depth, load_object
from .metadata import model_metadata, specs_from_metadata, tensor_metadata
from .v1 import decode_v1_response, encode_v1_request
from .v2 import (
    DEFAULT_MAX_ELEMENTS,
    InferRequest,
    RequestedOutput,
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
)

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ELEMENTS",
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "datatype_of",
    "decode_infer_request",
    "decode_infer_response",
    "decode_v1_response",
    "dumps",
    "encode_infer_request",
    "encode_infer_response",
    "encode_v1_request",
    "json_depth",
    "load_object",
    "model_metadata",
    "specs_from_metadata",
    "tensor_metadata",
]
