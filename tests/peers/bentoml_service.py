"""A BentoML 1.4 service hosting an ONNX file with ONNX Runtime and BentoML's adaptive
batching, for bench/json_path.py (runs in its own virtual environment: BentoML's
dependencies are not ours). The ONNX file and its input name come from the environment."""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


@bentoml.service(workers=1)
class OnnxModel:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["BENCH_ONNX"], options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=60000)
    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: image.astype(np.float32)})[0]
