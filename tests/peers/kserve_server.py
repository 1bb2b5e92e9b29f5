"""KServe's Python ModelServer hosting ONNX files on ONNX Runtime; runs in the kserve venv.

    python kserve_server.py NAME ONNX HTTP_PORT GRPC_PORT [NAME ONNX ...]

Each ``NAME ONNX`` pair becomes one ``kserve.Model`` served over KServe's REST (v2 Open
Inference Protocol) and gRPC endpoints. The metadata (``GET /v2/models/NAME``) lists the
graph's inputs and outputs with their v2 datatype and shape, ``-1`` for a dynamic dim.
``predict`` runs the requested outputs (all when none are named) and lets KServe encode
them, binary or JSON as the request asks. Imports kserve: not for this project's venv.
"""

from __future__ import annotations

import sys
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid

#: ONNX Runtime's type strings -> v2 datatypes.
DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
#: numpy dtype names -> v2 datatypes, for what a session returns.
NUMPY_DATATYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "bool": "BOOL", "object": "BYTES",
}


def tensor_metadata(node: Any) -> dict[str, Any]:
    """One input or output of a session as v2 metadata; dynamic dims as -1."""
    return {
        "name": node.name,
        "datatype": DATATYPES[node.type],
        "shape": [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape],
    }


class OnnxModel(kserve.Model):
    """An ONNX file on ONNX Runtime (CPU), as a KServe v2 model."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return [tensor_metadata(node) for node in self.session.get_inputs()]

    def get_output_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return [tensor_metadata(node) for node in self.session.get_outputs()]

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        assert self.session is not None
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        requested = payload.request_outputs
        names = ([output.name for output in requested] if requested
                 else [node.name for node in self.session.get_outputs()])
        arrays = self.session.run(names, feeds)
        outputs = [
            InferOutput(name=name, shape=list(array.shape),
                        datatype=NUMPY_DATATYPES[array.dtype.name], data=np.asarray(array))
            for name, array in zip(names, arrays)
        ]
        if payload.from_grpc:
            # KServe 0.21's InferResponse.to_grpc tests `infer_output.data` for truth, which
            # fails (INTERNAL) for an array of more than one element; its own runtimes fill
            # gRPC outputs with set_data_from_numpy (utils.get_predict_response), as here.
            for output, array in zip(outputs, arrays):
                output.data = None
                output.set_data_from_numpy(np.asarray(array), binary_data=True)
        # KServe's REST layer insists on a string id (500 otherwise); its own runtimes
        # (utils.get_predict_response) make one up when the request has none, as here.
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name,
                             infer_outputs=outputs, use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=requested)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or len(argv) % 2:
        sys.exit("usage: kserve_server.py NAME ONNX HTTP_PORT GRPC_PORT [NAME ONNX ...]")
    pairs = [(argv[0], argv[1])] + list(zip(argv[4::2], argv[5::2]))
    models = []
    for name, path in pairs:
        model = OnnxModel(name, path)
        model.load()
        models.append(model)
    kserve.ModelServer(http_port=int(argv[2]), grpc_port=int(argv[3])).start(models)


if __name__ == "__main__":
    main(sys.argv[1:])
