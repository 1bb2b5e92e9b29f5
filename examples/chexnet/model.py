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

from typing import Any, Literal

import numpy as np

from model_agnostic import Model, load_image
from model_agnostic import transforms as T
from model_agnostic.heatmaps import CAM, Crop, center_crop_boxes, ten_crop_boxes

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
    #: How 16-bit PNG/TIFF X-rays become 8-bit (model_agnostic.images.BIT_DEPTH_POLICIES):
    #: "scale" by the bit depth, as the 8-bit NIH PNGs the network was trained on relate to
    #: 16-bit exports of the same pixels (x 257). DICOM goes through its own pipeline.
    bit_depth_policy: Literal["scale", "significant", "minmax", "clip"] = "scale"
    #: EXIF orientation: "ignore", as the training pipeline (PIL + torchvision) did.
    exif_orientation: Literal["ignore", "apply"] = "ignore"

    input_names = ("image",)
    #: "features": DenseNet's last feature map (1024 x 7 x 7 per crop), for the heatmaps.
    output_names = ("probabilities", "features")
    labels = FINDINGS
    cam = CAM(features="features", weights="classifier.0.weight", scores="probabilities")
    checkpoint_rename = (
        (r"^(module\.)?densenet121\.", ""),
        (r"\.(norm|relu|conv)\.([12])\.", r".\1\2."),
    )

    def create_model(self) -> Any:
        import torch
        from torchvision.models import DenseNet

        class DenseNet121(DenseNet):
            """torchvision's densenet121 (same parameter names) returning the feature
            map it pools as well: what CheXNet's heatmaps are made of."""

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                features = torch.nn.functional.relu(self.features(x))
                pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(features, 1), 1)
                return self.classifier(pooled), features

        network = DenseNet121(32, (6, 12, 24, 16), 64)
        network.classifier = torch.nn.Sequential(
            torch.nn.Linear(network.classifier.in_features, len(FINDINGS)), torch.nn.Sigmoid()
        )
        return network

    def preprocessing(self, raw: Any) -> np.ndarray:
        return self.transform(self.read(raw))

    def read(self, raw: Any) -> Any:
        """The X-ray as an RGB image: PNG, JPEG, 16-bit PNG/TIFF or DICOM."""
        return load_image(raw, mode="RGB", bit_depth=self.bit_depth_policy,
                          exif=self.exif_orientation)

    def explain_image(self, raw: Any) -> Any:
        return self.read(raw)

    def crops(self, image: Any) -> list[Crop]:
        """Where each crop of :attr:`transform` lies in the X-ray."""
        boxes = ten_crop_boxes if self.tencrop else center_crop_boxes
        return boxes(image.size, 256, 224)

    def process_result(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        scores = outputs["probabilities"].mean(axis=0)
        order = np.argsort(-scores, kind="stable")
        return [{"finding": FINDINGS[i], "probability": float(scores[i])} for i in order]

    def reference_preprocessing(self, raw: Any) -> np.ndarray:
        """The training-time torchvision pipeline, in arnoweng/CheXNet's order."""
        import torch
        from torchvision import transforms as tv

        normalize = tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        image = self.read(raw)
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
