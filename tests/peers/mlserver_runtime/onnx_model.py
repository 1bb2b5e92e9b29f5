"""An MLServer runtime hosting an ONNX file on ONNX Runtime; runs in the mlserver venv.

``model-settings.json`` names it as ``"implementation": "onnx_model.OnnxModel"`` (this
folder on ``PYTHONPATH``), gives the ONNX file as ``parameters.uri`` and declares the
inputs and outputs that ``GET /v2/models/NAME`` reports (read from the graph when it
declares none). Tensors are decoded and encoded with MLServer's ``NumpyCodec``; the
requested outputs are run (all when none are named). Imports mlserver: not for this
project's venv.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor

#: ONNX Runtime's type strings -> v2 datatypes.
DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def metadata(node: ort.NodeArg) -> MetadataTensor:
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape]
    return MetadataTensor(name=node.name, datatype=DATATYPES[node.type], shape=shape)


class OnnxModel(MLModel):
    """The ONNX file at ``parameters.uri`` on ONNX Runtime (CPU)."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError(f"model {self.name!r}: model-settings.json lacks parameters.uri")
        self.session = ort.InferenceSession(uri, providers=["CPUExecutionProvider"])
        if not self.inputs:
            self.inputs = [metadata(node) for node in self.session.get_inputs()]
        if not self.outputs:
            self.outputs = [metadata(node) for node in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {tensor.name: self.decode(tensor, default_codec=NumpyCodec)
                 for tensor in payload.inputs}
        names = ([output.name for output in payload.outputs] if payload.outputs
                 else [node.name for node in self.session.get_outputs()])
        arrays = self.session.run(names, feeds)
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, array) for name, array in zip(names, arrays)],
        )
