"""KServe's own gRPC client against a server; runs in the kserve venv (tests/peers/envs.py).

    python kserve_grpc_client.py ADDRESS MODEL INPUTS.npz OUTPUTS.npz

Asks ADDRESS (``host:port``) with ``kserve.InferenceGRPCClient``: ServerLive, ServerReady,
ModelReady, ModelMetadata (through the client's own stub: the client has no method for
it), then one ModelInfer of every array in INPUTS.npz sent as raw contents
(``set_data_from_numpy(binary_data=True)``). The outputs go to OUTPUTS.npz; one JSON line
on stdout says what the server answered. Imports kserve: not for this project's venv.
"""

from __future__ import annotations

import asyncio
import json
import sys

import kserve
import numpy as np
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelMetadataRequest


async def ask(address: str, model: str, inputs: dict[str, np.ndarray]) -> tuple[dict, dict]:
    async with kserve.InferenceGRPCClient(address, retries=0, timeout=120) as client:
        report: dict = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
        }
        metadata = await client._client_stub.ModelMetadata(ModelMetadataRequest(name=model))
        report["metadata"] = {
            "name": metadata.name, "platform": metadata.platform,
            **{key: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                     for t in getattr(metadata, key)] for key in ("inputs", "outputs")},
        }
        tensors = []
        for name, array in inputs.items():
            tensor = kserve.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        request = kserve.InferRequest(model_name=model, infer_inputs=tensors, request_id="kserve")
        report["raw_input_contents"] = len(request.to_grpc().raw_input_contents)
        response = await client.infer(request)
        report["id"] = response.id
        report["model_version"] = response.model_version
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        return report, outputs


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit("usage: kserve_grpc_client.py ADDRESS MODEL INPUTS.npz OUTPUTS.npz")
    address, model, source, target = argv
    with np.load(source) as arrays:
        inputs = {name: arrays[name] for name in arrays.files}
    report, outputs = asyncio.run(ask(address, model, inputs))
    np.savez(target, **outputs)
    report["outputs"] = {name: [str(a.dtype), list(a.shape)] for name, a in outputs.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
