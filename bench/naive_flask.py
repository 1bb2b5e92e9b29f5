"""The naive baseline for bench/serving.py: a Flask view running PyTorch per request.

What a team writes first: CheXNet's DenseNet-121 in eager PyTorch behind Flask's own
threaded server, each request run alone. ``/predict`` takes a preprocessed 1x3x224x224
FP32 tensor as raw bytes; ``/predict_image`` takes the X-ray file and runs CheXNet's
torchvision preprocessing (Resize 256, TenCrop 224, ToTensor, Normalize) first.

Usage: python bench/naive_flask.py PORT [THREADS]
"""

from __future__ import annotations

import logging
import sys

import io

import numpy as np
import torch
import torchvision
from flask import Flask, jsonify, request
from PIL import Image
from torchvision import transforms as tv


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

    normalize = tv.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tencrop = tv.Compose([
        tv.Resize(256), tv.TenCrop(224),
        tv.Lambda(lambda crops: torch.stack([tv.ToTensor()(crop) for crop in crops])),
        tv.Lambda(lambda crops: torch.stack([normalize(crop) for crop in crops])),
    ])

    @app.post("/predict_image")
    def predict_image() -> object:
        image = Image.open(io.BytesIO(request.get_data())).convert("RGB")
        with torch.no_grad():
            scores = network(tencrop(image)).mean(dim=0)
        return jsonify(probabilities=scores.tolist())

    app.run("127.0.0.1", port, threaded=True)


if __name__ == "__main__":
    main()
