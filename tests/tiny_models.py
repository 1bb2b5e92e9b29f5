"""Small models the tests build configs and checkpoints for. torch is imported lazily."""

from __future__ import annotations

from typing import Any

import numpy as np

from model_agnostic import Model, load_image


class TinyNet(Model):
    """3x8x8 float image -> 4 logits; ``rows`` copies of the image per raw input."""

    rows: int = 1
    scale: float = 1.0

    input_names = ("image",)
    output_names = ("logits",)

    def create_model(self) -> Any:
        import torch

        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, padding=1),
            torch.nn.BatchNorm2d(6),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(6, 4),
        )

    def preprocessing(self, raw: Any) -> np.ndarray:
        if isinstance(raw, np.ndarray):
            array = raw.astype(np.float32)
        else:
            image = load_image(raw, mode="RGB").resize((8, 8))
            array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255
        return np.repeat(array[None] * self.scale, self.rows, axis=0)

    def reference_preprocessing(self, raw: Any) -> Any:
        """The "training code": torchvision's Resize((8, 8)) with Pillow's bicubic filter."""
        import torch
        from torchvision import transforms as tv

        if isinstance(raw, np.ndarray):
            tensor = torch.as_tensor(raw, dtype=torch.float32)
        else:
            pipeline = tv.Compose([tv.Resize((8, 8), tv.InterpolationMode.BICUBIC), tv.ToTensor()])
            tensor = pipeline(load_image(raw, mode="RGB"))
        return (tensor[None] * self.scale).repeat(self.rows, 1, 1, 1)

    def process_result(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        logits = outputs["logits"].mean(axis=0)
        return {"label": int(np.argmax(logits)), "logits": logits.tolist()}


class TwoHeads(Model):
    """Two inputs (image, bias) and two outputs, to check names and order."""

    input_names = ("image", "bias")
    output_names = ("pooled", "shifted")

    def create_model(self) -> Any:
        import torch

        class Net(torch.nn.Module):
            def forward(self, image: torch.Tensor, bias: torch.Tensor) -> Any:
                pooled = image.mean(dim=(2, 3))
                return pooled, pooled + bias

        return Net()

    def preprocessing(self, raw: Any) -> dict[str, np.ndarray]:
        image = np.asarray(raw, dtype=np.float32)[None]
        return {"image": image, "bias": np.full((1, 3), 0.5, dtype=np.float32)}


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TinyImage(Model):
    """A small image classifier with torchvision-style preprocessing and its reference.

    ``broken`` swaps in a classic porting bug: ``"nearest"`` (PIL nearest-neighbour
    instead of bilinear) or ``"square"`` (a square resize instead of shorter side).
    """

    broken: str = ""

    input_names = ("image",)
    output_names = ("logits",)
    labels = ("a", "b", "c", "d")

    def create_model(self) -> Any:
        import torch

        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32, 4),
        )

    def preprocessing(self, raw: Any) -> np.ndarray:
        from model_agnostic import transforms as T

        image = load_image(raw, mode="RGB")
        if self.broken == "nearest":
            resize = T.Resize(20, interpolation=T.InterpolationMode.NEAREST)
        elif self.broken == "square":
            resize = T.Resize((20, 20))
        else:
            resize = T.Resize(20)
        pipeline = T.Compose([resize, T.CenterCrop(16), T.ToTensor(), T.Normalize(MEAN, STD)])
        return pipeline(image)[None]

    def reference_preprocessing(self, raw: Any) -> np.ndarray:
        from torchvision import transforms as tv

        pipeline = tv.Compose([tv.Resize(20), tv.CenterCrop(16), tv.ToTensor(), tv.Normalize(MEAN, STD)])
        return pipeline(load_image(raw, mode="RGB"))[None].numpy()

    def process_result(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        logits = outputs["logits"][0]
        order = np.argsort(-logits, kind="stable")
        return [{"label": self.labels[i], "score": float(logits[i])} for i in order]


class SlowTinyNet(TinyNet):
    """TinyNet whose preprocessing takes ``delay_s`` seconds: requests stay in flight."""

    delay_s: float = 0.0

    def preprocessing(self, raw: Any) -> np.ndarray:
        import time

        time.sleep(self.delay_s)
        return super().preprocessing(raw)


class TinyImageNoReference(TinyImage):
    """TinyImage as most users first write it: no reference pipeline declared."""

    def reference_preprocessing(self, raw: Any) -> None:
        return None


class CountingTinyImage(TinyImage):
    """TinyImage that records each network build in ``built`` (to prove work not done)."""

    built: list = []  # noqa: RUF012 - shared on purpose: the test reads it

    def create_model(self) -> Any:
        CountingTinyImage.built.append(1)
        return super().create_model()


class Optioned(TinyImage):
    """TinyImage whose post-processing reads options of every TOML kind, and None."""

    thresholds: dict = {"a": 0.5, "b": 0.25}  # noqa: RUF012 - an option's default
    since: Any = None
    note: Any = None
    groups: list = [["a", "b"], ["c"], []]  # noqa: RUF012 - an option's default

    def process_result(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        ranked = super().process_result(outputs)
        top = ranked[0]["label"]
        return {"top": top, "threshold": self.thresholds.get(top, -1.0),
                "since": str(self.since), "note": self.note,
                "group": next((i for i, g in enumerate(self.groups) if top in g), -1)}


class UnstorableOption(CountingTinyImage):
    """An option whose value no config file can hold."""

    seen: frozenset = frozenset({"a"})


class Brightness(Model):
    """Scores three classes by the image's mean red, green and blue (``gamma`` bends them
    without changing their order), so its AUROC can be computed from the pixels alone."""

    gamma: float = 1.0

    input_names = ("image",)
    output_names = ("scores",)
    labels = ("red", "green", "blue")

    def create_model(self) -> Any:
        import torch

        class Means(torch.nn.Module):
            def forward(self, image: torch.Tensor) -> torch.Tensor:
                return image.mean(dim=(2, 3))

        return Means()

    def preprocessing(self, raw: Any) -> np.ndarray:
        image = np.asarray(load_image(raw, mode="RGB"), dtype=np.float32) / 255
        return image.transpose(2, 0, 1)[None]

    def process_result(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        means = outputs["scores"][0].astype(np.float64) ** self.gamma
        return {name: float(value) for name, value in zip(self.labels, means)}
