"""Any torchvision classifier as a model_agnostic ``Model``, for bench/export_coverage.py.

Its preprocessing is the torch-free equivalent of torchvision's ``ImageClassification``
preset (resize, centre crop, scale, normalise), with the preset's settings as options;
its ``reference_preprocessing`` is torchvision's preset itself. torch and torchvision are
imported only inside ``create_model`` and ``reference_preprocessing``, so an artifact of it
runs without them (this file is copied into each artifact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_agnostic import Model, load_image
from model_agnostic import transforms as T


class TorchvisionClassifier(Model):
    """``torchvision.models.get_model(arch, weights=None)`` on an RGB image."""

    arch: str = "resnet18"
    #: BatchNorm statistics measured on random inputs and zero Linear layers redrawn,
    #: so a random network's logits have a trained one's scale (export_coverage.calibrate).
    calibrate: bool = True
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    input_names = ("image",)
    output_names = ("logits",)

    def create_model(self) -> Any:
        import torch
        import torchvision

        network = torchvision.models.get_model(self.arch, weights=None)
        if self.calibrate:
            calibrate(torch, network, self.crop)
        return network

    def preprocessing(self, raw: Any) -> np.ndarray:
        pipeline = T.Compose([
            T.Resize(self.resize, interpolation=T.InterpolationMode(self.interpolation)),
            T.CenterCrop(self.crop), T.ToTensor(), T.Normalize(self.mean, self.std),
        ])
        return pipeline(load_image(raw, mode="RGB"))[None]

    def reference_preprocessing(self, raw: Any) -> np.ndarray:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms._presets import ImageClassification

        preset = ImageClassification(
            crop_size=self.crop, resize_size=self.resize, mean=self.mean, std=self.std,
            interpolation=InterpolationMode(self.interpolation))
        return preset(load_image(raw, mode="RGB"))[None].numpy()

    def process_result(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        logits = outputs["logits"][0].astype(np.float64)
        top = np.argsort(-logits, kind="stable")[:5]
        return [{"class": int(i), "logit": float(logits[i])} for i in top]


def calibrate(torch: Any, network: Any, size: int, batches: int = 4, batch_size: int = 4) -> None:
    """BatchNorm running statistics from a few train-mode passes on random inputs
    (cumulative average); all-zero Linear weights redrawn from N(0, 0.02)."""
    for module in network.modules():
        if isinstance(module, torch.nn.Linear) and not torch.any(module.weight):
            with torch.no_grad():
                module.weight.normal_(0.0, 0.02)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    if norms:
        network.train()
        with torch.no_grad():
            for _ in range(batches):
                network(torch.randn(batch_size, 3, size, size))
    network.eval()
