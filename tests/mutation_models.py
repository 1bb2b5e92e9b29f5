"""The mutation catalogue: realistic deployment bugs, each applied to a correct model.

``Bugged`` is a small image classifier with torchvision's evaluation preprocessing
(``Resize(20) -> CenterCrop(16) -> ToTensor -> Normalize``) as its declared reference,
a network with BatchNorm, GELU and Dropout, and a ``temperature`` option its
post-processing uses. Each :class:`Mutation` breaks one thing the way a deployment
breaks it, and names the stage that must catch it:

* preprocessing bugs are values of the ``bug`` option (the hand-ported pipeline is
  wrong; the reference is not);
* graph bugs patch the exporter so the exported graph is built from a wrongly prepared
  copy of the network (the PyTorch model stays correct);
* artifact bugs break what is shipped: an option dropped from the artifact's config, or
  hooks whose torch-free code path answers differently.

Used by ``tests/test_mutations.py`` (every case) and ``bench/mutations.py`` (the same
catalogue, timed, with results written to ``bench/results/mutations.json``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model_agnostic import Model, load_image
from model_agnostic import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RESIZE, CROP = 20, 16


class Bugged(Model):
    """A small colour-image classifier; ``bug`` selects a preprocessing or hook bug."""

    bug: str = ""
    temperature: float = 1.0

    input_names = ("image",)
    output_names = ("logits",)
    labels = ("a", "b", "c", "d")

    def create_model(self) -> Any:
        import torch

        network = torch.nn.Sequential(  # a conv stem and a transformer-style MLP head
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
            torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 64),
            torch.nn.GELU(), torch.nn.Linear(64, 4),
        )
        with torch.no_grad():  # activations of a trained network's scale: logits of a few units
            for layer in network:
                if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                    fan_in = layer.weight[0].numel()
                    layer.weight.normal_(0.0, 2.0 / fan_in**0.5)
        network.train()  # measure BatchNorm statistics, as training would have
        with torch.no_grad():
            for _ in range(3):
                network(torch.randn(8, 3, CROP, CROP))
        return network.eval()

    def preprocessing(self, raw: Any) -> np.ndarray:
        image = load_image(raw, mode="RGB")
        return PREPROCESSING.get(self.bug, _correct)(image)[None]

    def reference_preprocessing(self, raw: Any) -> np.ndarray:
        from torchvision import transforms as tv

        pipeline = tv.Compose([tv.Resize(RESIZE), tv.CenterCrop(CROP), tv.ToTensor(),
                               tv.Normalize(MEAN, STD)])
        return pipeline(load_image(raw, mode="RGB"))[None].numpy()

    def process_result(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        logits = outputs["logits"][0].astype(np.float64) / self.temperature
        if self.bug == "torch_fallback_differs":
            probabilities = _softmax_torch_or_fallback(logits)
        else:
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")
        return [{"label": self.labels[i], "probability": float(probabilities[i])} for i in order]


def _softmax_torch_or_fallback(logits: np.ndarray) -> np.ndarray:
    """A hook with a torch path and a numpy fallback that forgot the normalisation."""
    try:
        import torch
    except ImportError:
        return np.exp(logits - logits.max())  # the bug: not divided by the sum
    return torch.softmax(torch.from_numpy(logits), 0).numpy()


# ----------------------------------------------------------- preprocessing
def _correct(image: Image.Image) -> np.ndarray:
    return T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])(image)


def _shorter_side(image: Image.Image, size: int = RESIZE) -> tuple[int, int]:
    width, height = image.size
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _normalise(chw: np.ndarray) -> np.ndarray:
    return T.Normalize(MEAN, STD)(chw.astype(np.float32))


def _pil_default_filter(image: Image.Image) -> np.ndarray:
    resized = image.resize(_shorter_side(image))  # Pillow's default filter: bicubic
    return _normalise(T.ToTensor()(T.CenterCrop(CROP)(resized)))


def _missing_div255(image: Image.Image) -> np.ndarray:
    crop = T.CenterCrop(CROP)(T.Resize(RESIZE)(image))
    return _normalise(np.asarray(crop, dtype=np.float32).transpose(2, 0, 1))


def _hwc_as_chw(image: Image.Image) -> np.ndarray:
    crop = T.CenterCrop(CROP)(T.Resize(RESIZE)(image))
    return _normalise(np.asarray(crop, dtype=np.float32).reshape(3, CROP, CROP) / 255)


def _grayscale_replicate(image: Image.Image) -> np.ndarray:
    return _correct(image.convert("L").convert("RGB"))


def _no_antialias(image: Image.Image) -> np.ndarray:
    """A hand-written bilinear resize (half-pixel centres, no antialiasing), as in cv2."""
    pixels = np.asarray(image, dtype=np.float32)
    width, height = _shorter_side(image)
    ys = np.clip((np.arange(height) + 0.5) * pixels.shape[0] / height - 0.5, 0, pixels.shape[0] - 1)
    xs = np.clip((np.arange(width) + 0.5) * pixels.shape[1] / width - 0.5, 0, pixels.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, pixels.shape[0] - 1), np.minimum(x0 + 1, pixels.shape[1] - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = pixels[y0][:, x0] * (1 - wx) + pixels[y0][:, x1] * wx
    bottom = pixels[y1][:, x0] * (1 - wx) + pixels[y1][:, x1] * wx
    resized = np.clip(np.round(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)
    return _normalise(T.ToTensor()(T.CenterCrop(CROP)(Image.fromarray(resized))))


def _crop_off_by_one(image: Image.Image) -> np.ndarray:
    resized = np.asarray(T.Resize(RESIZE)(image))
    top = (resized.shape[0] - CROP) // 2 + 1
    left = (resized.shape[1] - CROP) // 2 + 1
    crop = resized[top:top + CROP, left:left + CROP]
    return _normalise(crop.astype(np.float32).transpose(2, 0, 1) / 255)


PREPROCESSING: dict[str, Callable[[Image.Image], np.ndarray]] = {
    "pil_default_filter": _pil_default_filter,
    "nearest_filter": lambda im: T.Compose([
        T.Resize(RESIZE, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(CROP),
        T.ToTensor(), T.Normalize(MEAN, STD)])(im),
    "square_resize": lambda im: T.Compose([
        T.Resize((RESIZE, RESIZE)), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])(im),
    "missing_div255": _missing_div255,
    "mean_std_swapped": lambda im: T.Compose([
        T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(STD, MEAN)])(im),
    "bgr_order": lambda im: _correct(im)[::-1].copy(),
    "hwc_as_chw": _hwc_as_chw,
    "crop_before_resize": lambda im: T.Compose([
        T.CenterCrop(CROP), T.Resize((CROP, CROP)), T.ToTensor(), T.Normalize(MEAN, STD)])(im),
    "grayscale_replicate": _grayscale_replicate,
    "float16_roundtrip": lambda im: _correct(im).astype(np.float16).astype(np.float32),
    "no_antialias": _no_antialias,
    "crop_off_by_one": _crop_off_by_one,
    "normalized_twice": lambda im: T.Normalize(MEAN, STD)(_correct(im)),
}


# ------------------------------------------------------------------ graph
def _mutated_export(change: Callable[[Any, Any], Any]) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """A context in which the exporter is handed ``change(torch, copy of network)``."""

    @contextlib.contextmanager
    def applied() -> Iterator[None]:
        from unittest import mock

        from model_agnostic.export import to_onnx

        real = to_onnx._run_exporter

        def exporter(torch: Any, name: str, network: Any, *args: Any) -> None:
            real(torch, name, change(torch, copy.deepcopy(network)), *args)

        with mock.patch.object(to_onnx, "_run_exporter", exporter):
            yield

    return applied


def _gelu_tanh(torch: Any, network: Any) -> Any:
    for index, module in enumerate(network):
        if isinstance(module, torch.nn.GELU):
            network[index] = torch.nn.GELU(approximate="tanh")
    return network


def _bn_epsilon(torch: Any, network: Any) -> Any:
    network[1].eps = 1e-3
    return network


def _stale_layer(torch: Any, network: Any) -> Any:
    with torch.no_grad():
        network[4].weight.mul_(1e-3)
    return network


def _dropout_training(torch: Any, network: Any) -> Any:
    class TrainingDropout(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.nn.functional.dropout(x, 0.2, training=True)

    network[3] = TrainingDropout()
    return network


def _batchnorm_training(torch: Any, network: Any) -> Any:
    norm = network[1]

    class TrainingBatchNorm(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.nn.functional.batch_norm(x, None, None, norm.weight, norm.bias,
                                                  training=True, eps=norm.eps)

    network[1] = TrainingBatchNorm()
    return network


def _half_precision(torch: Any, network: Any) -> Any:
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(parameter.half().float())
    return network


# --------------------------------------------------------------- artifact
@contextlib.contextmanager
def _option_dropped() -> Iterator[None]:
    """The artifact's config loses ``temperature`` (as before: a warning, nothing more)."""
    from unittest import mock

    from model_agnostic.export import artifact

    real = artifact._write_config

    def write(path: Any, class_spec: str, options: dict[str, Any], *rest: Any) -> None:
        real(path, class_spec, {k: v for k, v in options.items() if k != "temperature"}, *rest)

    with mock.patch.object(artifact, "_write_config", write):
        yield


# ---------------------------------------------------------------- catalogue
@dataclass(frozen=True)
class Mutation:
    """One realistic deployment bug and the stage that must catch it."""

    name: str
    stage: str
    what: str
    options: dict[str, Any] = field(default_factory=dict)
    patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    #: ONNX Runtime session settings of the deployment ([onnxruntime] in the config).
    session: dict[str, Any] = field(default_factory=dict)

    def applied(self) -> contextlib.AbstractContextManager[None]:
        return self.patch() if self.patch else contextlib.nullcontext()


CATALOGUE: tuple[Mutation, ...] = (
    Mutation("pil_default_filter", "preprocessing",
             "hand-rolled Image.resize with Pillow's default filter (bicubic), not bilinear",
             {"bug": "pil_default_filter"}),
    Mutation("nearest_filter", "preprocessing", "nearest-neighbour resize instead of bilinear",
             {"bug": "nearest_filter"}),
    Mutation("square_resize", "preprocessing", "Resize((20, 20)) instead of shorter-side Resize(20)",
             {"bug": "square_resize"}),
    Mutation("missing_div255", "preprocessing", "pixels left in 0..255 (no /255)",
             {"bug": "missing_div255"}),
    Mutation("mean_std_swapped", "preprocessing", "Normalize(std, mean)", {"bug": "mean_std_swapped"}),
    Mutation("bgr_order", "preprocessing", "channels in BGR order (an OpenCV habit)",
             {"bug": "bgr_order"}),
    Mutation("hwc_as_chw", "preprocessing", "an HWC array reshaped to CHW instead of transposed",
             {"bug": "hwc_as_chw"}),
    Mutation("crop_before_resize", "preprocessing", "CenterCrop before Resize",
             {"bug": "crop_before_resize"}),
    Mutation("grayscale_replicate", "preprocessing",
             "image converted to grayscale and replicated for a colour model",
             {"bug": "grayscale_replicate"}),
    Mutation("float16_roundtrip", "preprocessing", "preprocessed tensor stored as float16",
             {"bug": "float16_roundtrip"}),
    Mutation("no_antialias", "preprocessing",
             "hand-written bilinear resize without antialiasing (cv2-style)",
             {"bug": "no_antialias"}),
    Mutation("crop_off_by_one", "preprocessing", "centre crop offset by one pixel",
             {"bug": "crop_off_by_one"}),
    Mutation("normalized_twice", "preprocessing", "Normalize applied twice",
             {"bug": "normalized_twice"}),
    Mutation("gelu_tanh", "inference", "tanh-approximated GELU exported for exact (erf) GELU",
             patch=_mutated_export(_gelu_tanh)),
    Mutation("batchnorm_epsilon", "inference", "BatchNorm epsilon 1e-3 in the graph, 1e-5 in training",
             patch=_mutated_export(_bn_epsilon)),
    Mutation("stale_checkpoint", "inference", "weights from a stale checkpoint (one layer scaled by 1e-3)",
             patch=_mutated_export(_stale_layer)),
    # ONNX Runtime's basic graph optimisation deletes Dropout nodes even in training mode,
    # so this bug only shows where a deployment turns optimisation off (measured: 1.7e-6
    # at "basic" and above, 1.2 at "disable"); that is the deployment checked here.
    Mutation("dropout_training_mode", "inference",
             "dropout left in training mode at export, served with graph optimisation off",
             patch=_mutated_export(_dropout_training),
             session={"graph_optimization_level": "disable"}),
    Mutation("batchnorm_training_mode", "inference",
             "BatchNorm left in training mode at export (batch statistics)",
             patch=_mutated_export(_batchnorm_training)),
    Mutation("half_precision_weights", "inference", "weights rounded through float16 for export",
             patch=_mutated_export(_half_precision)),
    Mutation("option_dropped", "artifact",
             "an option (temperature) dropped from the artifact's config", patch=_option_dropped),
    Mutation("torch_fallback_differs", "artifact",
             "post-processing with a torch path and a torch-free fallback that differs",
             {"bug": "torch_fallback_differs"}),
)
