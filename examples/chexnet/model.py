"""CheXNet: DenseNet-121 scoring 14 findings on a chest X-ray (Rajpurkar et al., 2017).

Mirrors the public PyTorch reimplementation (arnoweng/CheXNet): torchvision's
``densenet121`` with ``classifier = Sequential(Linear(1024, 14), Sigmoid())``,
``Resize(256) -> TenCrop(224) -> ToTensor -> Normalize(ImageNet)``, and the
scores averaged over the ten crops. It loads that project's published
checkpoint as is: ``{"state_dict": ...}`` with ``module.densenet121.`` prefixes and
DenseNet's legacy ``norm.1``-style key names, saved from a GPU by an old PyTorch.

torch is imported only inside ``create_model``, so this file imports without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_agnostic import Model, load_image
from model_agnostic import transforms as T

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
    "Pleural_Thickening", "Hernia",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheXNet(Model):
    """Chest X-ray image (path, bytes or PIL image) -> the 14 findings, most likely first."""

    #: Average over ten 224x224 crops (corners, centre and their mirror images);
    #: off: one centre crop.
    tencrop: bool = True

    input_names = ("image",)
    output_names = ("probabilities",)
    labels = FINDINGS
    checkpoint_rename = (
        (r"^(module\.)?densenet121\.", ""),
        (r"\.(norm|relu|conv)\.([12])\.", r".\1\2."),
    )

    def create_model(self) -> Any:
        import torch
        import torchvision

        network = torchvision.models.densenet121(weights=None)
        network.classifier = torch.nn.Sequential(
            torch.nn.Linear(network.classifier.in_features, len(FINDINGS)), torch.nn.Sigmoid()
        )
        return network

    def preprocessing(self, raw: Any) -> np.ndarray:
        return self.transform(load_image(raw, mode="RGB"))

    def process_result(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        scores = outputs["probabilities"].mean(axis=0)
        order = np.argsort(-scores, kind="stable")
        return [{"finding": FINDINGS[i], "probability": float(scores[i])} for i in order]

    def reference_preprocessing(self, raw: Any) -> np.ndarray:
        """The training-time torchvision pipeline, in arnoweng/CheXNet's order."""
        import torch
        from torchvision import transforms as tv

        normalize = tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        image = load_image(raw, mode="RGB")
        if not self.tencrop:
            pipeline = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(), normalize])
            return pipeline(image)[None].numpy()
        crops = tv.TenCrop(224)(tv.Resize(256)(image))
        return torch.stack([normalize(tv.ToTensor()(crop)) for crop in crops]).numpy()

    @property
    def transform(self) -> T.Compose:
        """The torch-free pipeline: normalise once, then crop (same numbers, ~3x faster)."""
        if self.tencrop:
            return T.Compose([
                T.Resize(256), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
                T.TenCrop(224), T.Lambda(np.stack),
            ])
        return T.Compose([
            T.Resize(256), T.CenterCrop(224), T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD), T.Lambda(lambda x: x[None]),
        ])
