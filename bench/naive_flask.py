"""The naive baseline for bench/serving.py: a Flask view running PyTorch per request.

What a team writes first: CheXNet's DenseNet-121 in eager PyTorch behind Flask's own
threaded server; each request's 1x3x224x224 FP32 tensor (raw bytes) runs alone.

Usage: python bench/naive_flask.py PORT [THREADS]
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
import torchvision
from flask import Flask, jsonify, request


def main() -> None:
    port, threads = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = torchvision.models.densenet121(weights=None)
    network.classifier = torch.nn.Sequential(torch.nn.Linear(1024, 14), torch.nn.Sigmoid())
    network.eval()
    app = Flask("naive")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @app.get("/health")
    def health() -> object:
        return jsonify(ok=True)

    @app.post("/predict")
    def predict() -> object:
        image = np.frombuffer(request.get_data(), np.float32).reshape(1, 3, 224, 224)
        with torch.no_grad():
            scores = network(torch.from_numpy(image.copy()))[0]
        return jsonify(probabilities=scores.tolist())

    app.run("127.0.0.1", port, threaded=True)


if __name__ == "__main__":
    main()
