"""Class activation maps (Zhou et al., 2016; CheXNet's heatmaps) in numpy, torch-free.

For a classifier whose head is global average pooling + a linear layer, the map of
class ``c`` is ``M_c = sum_k w[c, k] * f_k`` over the last convolutional feature map
``f`` (``K x h x w``). A model declares where those come from with :class:`CAM`; the
backends hand over the feature map (a second graph output) and the classifier weights
(from the live network, or ``cam_weights.npy`` in an artifact).

Each row of the batch is a crop of the image (TenCrop: ten rows). :class:`Crop` says
where a row came from in the original image; :func:`to_image` resamples every row's map
onto one grid over the original image (bilinear, PyTorch's ``align_corners=False``
convention), flipping mirrored crops back, and averages where crops overlap. Cells no
crop covers (outside a centre crop) get the map's minimum: no evidence.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .transforms._resize import _compute_resized_output_size

__all__ = [
    "CAM",
    "Crop",
    "Explanation",
    "Heatmap",
    "center_crop_boxes",
    "class_maps",
    "explain_results",
    "normalise",
    "overlay_png",
    "ten_crop_boxes",
    "to_image",
]

#: Heatmaps computed for ``explain=True``: the top-scoring classes.
TOP_K = 3

#: Cells on the longer side of the raw map returned with each heatmap.
GRID = 32
#: Longer side of the overlay PNG, in pixels (the image is never enlarged).
OVERLAY_SIDE = 512
#: Cells on the longer side of the map drawn in the overlay (bilinear up to the pixels).
OVERLAY_GRID = 128


@dataclass(frozen=True)
class CAM:
    """Where a model's class activation maps come from.

    ``features``: the graph output holding the last convolutional feature map
    (``N x K x h x w``); ``weights``: the ``state_dict`` key of the linear classifier's
    weight (``classes x K``); ``scores``: the output whose per-class mean over the rows
    ranks the classes (top-k).
    """

    features: str
    weights: str
    scores: str


@dataclass(frozen=True)
class Crop:
    """The part of the original image one batch row shows: ``box`` is (left, top,
    right, bottom) in original pixels; ``flipped`` when the row is its mirror image."""

    box: tuple[float, float, float, float]
    flipped: bool = False


@dataclass
class Heatmap:
    """One class's map over the image: ``map`` on a small grid, min-max normalised to
    [0, 1]; ``range`` is the raw activation's (min, max) before normalising."""

    label: str
    score: float
    map: np.ndarray
    range: tuple[float, float]
    overlay: bytes | None = None  # PNG

    def to_dict(self, overlay: bool = True) -> dict[str, Any]:
        """JSON-ready; the overlay as a ``data:image/png;base64,...`` URL."""
        doc: dict[str, Any] = {
            "label": self.label,
            "score": self.score,
            "shape": list(self.map.shape),
            "map": np.round(self.map.astype(np.float64), 6).tolist(),
            "range": list(self.range),
        }
        if overlay and self.overlay is not None:
            doc["overlay"] = "data:image/png;base64," + base64.b64encode(self.overlay).decode()
        return doc

    def save_overlay(self, path: str | os.PathLike[str]) -> Path:
        """Write the overlay PNG to ``path``; returns the path."""
        if self.overlay is None:
            raise InputError(f"the {self.label!r} heatmap was computed without an overlay")
        target = Path(path)
        target.write_bytes(self.overlay)
        return target


@dataclass
class Explanation:
    """What ``predict(raw, explain=...)`` returns: the usual result and the heatmaps,
    highest score first."""

    result: Any
    heatmaps: list[Heatmap]

    def to_dict(self, overlay: bool = True) -> dict[str, Any]:
        return {
            "result": self.result,
            "heatmaps": [heatmap.to_dict(overlay) for heatmap in self.heatmaps],
        }


def explain_results(
    model: Any,
    raws: Sequence[Any],
    parts: Sequence[dict[str, np.ndarray]],
    results: Sequence[Any],
    which: bool | int | Sequence[str],
    overlays: bool = True,
) -> list[Explanation]:
    """Each raw input's :class:`Explanation`, from its outputs (``parts``) and the
    model's :attr:`~model_agnostic.Model.cam` weights."""
    cam = model.cam
    if cam is None:
        raise InputError(
            f"{type(model).__name__} declares no class activation maps (its 'cam'); "
            "heatmaps need a global-pool + linear head and cam = CAM(...)"
        )
    weights = np.asarray(model.cam_weights())
    labels = [str(label) for label in (getattr(model, "labels", None) or range(len(weights)))]
    explanations = []
    for raw, outputs, result in zip(raws, parts, results):
        if cam.features not in outputs:
            raise InputError(f"the backend returned no feature map {cam.features!r} to explain")
        scores = (
            np.asarray(outputs[cam.scores], dtype=np.float64)
            .reshape(len(outputs[cam.scores]), -1)
            .mean(axis=0)
        )
        chosen = _choose(which, labels, scores)
        image = model.explain_image(raw)
        crops = model.crops(image)
        maps = class_maps(outputs[cam.features], weights[chosen])
        small = to_image(maps, crops, image.size, grid_for(image.size))
        if overlays:  # a finer grid for the picture; Pillow smooths it up to the pixels
            large = to_image(maps, crops, image.size, grid_for(image.size, OVERLAY_GRID))
        heatmaps = []
        for n, index in enumerate(chosen):
            plane, span = normalise(small[n])
            overlay = overlay_png(image, normalise(large[n])[0]) if overlays else None
            heatmaps.append(Heatmap(labels[index], float(scores[index]), plane, span, overlay))
        explanations.append(Explanation(result, heatmaps))
    return explanations


def _choose(which: bool | int | Sequence[str], labels: list[str], scores: np.ndarray) -> list[int]:
    """Indices of the classes to explain, in the order asked (top-k: by score)."""
    if isinstance(which, bool) or isinstance(which, int):
        count = TOP_K if which is True else int(which)
        if count < 1:
            raise InputError(f"explain asks for {count} heatmaps; expected at least 1")
        return [int(i) for i in np.argsort(-scores, kind="stable")[:count]]
    if isinstance(which, str):
        which = [which]
    unknown = [name for name in which if name not in labels]
    if unknown:
        raise InputError(f"no class {unknown} to explain; the classes are {labels}")
    return [labels.index(name) for name in which]


def class_maps(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``N x C x h x w`` maps from ``N x K x h x w`` features and ``C x K`` weights."""
    features, weights = np.asarray(features), np.asarray(weights)
    if features.ndim != 4 or weights.ndim != 2 or weights.shape[1] != features.shape[1]:
        raise InputError(
            f"class activation maps need features N x K x h x w and weights C x K with the "
            f"same K; got features {features.shape} and weights {weights.shape}"
        )
    return np.einsum("ck,nkhw->nchw", weights.astype(np.float64), features.astype(np.float64))


def to_image(
    maps: np.ndarray, crops: Sequence[Crop], size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """Average ``N x C x h x w`` crop maps onto a ``C x grid_h x grid_w`` grid over an
    image of ``size`` (width, height)."""
    if len(crops) != maps.shape[0]:
        raise InputError(f"{maps.shape[0]} maps for {len(crops)} crops")
    width, height = size
    rows, cols = grid
    total = np.zeros((maps.shape[1], rows, cols))
    count = np.zeros((rows, cols))
    ys = (np.arange(rows) + 0.5) * height / rows  # cell centres in image pixels
    xs = (np.arange(cols) + 0.5) * width / cols
    for crop_map, crop in zip(maps, crops):
        left, top, right, bottom = crop.box
        rows_in = _inside(ys, top, bottom)  # cell centres inside the box: a contiguous run
        cols_in = _inside(xs, left, right)
        if rows_in is None or cols_in is None:
            continue
        h, w = crop_map.shape[-2:]
        down = _interpolation((ys[rows_in] - top) / (bottom - top), h)
        across = _interpolation((xs[cols_in] - left) / (right - left), w)
        if crop.flipped:
            across = across[:, ::-1]
        total[:, rows_in, cols_in] += _resample(crop_map, down, across)
        count[rows_in, cols_in] += 1
    covered = count > 0
    result = np.where(covered, total / np.maximum(count, 1), np.nan)
    for plane in result:
        plane[~covered] = np.nanmin(plane) if covered.any() else 0.0
    return result


def _resample(maps: np.ndarray, down: np.ndarray, across: np.ndarray) -> np.ndarray:
    """``down @ maps[c] @ across.T`` for every class ``c``, as two 2-D matrix products
    (numpy's broadcast matmul over a stack of 7x7 maps is some 30x slower)."""
    classes, h, w = maps.shape
    rows = (maps.reshape(classes * h, w) @ across.T).reshape(classes, h, -1)
    both = down @ rows.transpose(1, 0, 2).reshape(h, -1)
    return both.reshape(down.shape[0], classes, -1).transpose(1, 0, 2)


def _inside(centres: np.ndarray, low: float, high: float) -> slice | None:
    """The run of sorted ``centres`` in ``[low, high)``, as a slice (None if empty)."""
    start, stop = np.searchsorted(centres, [low, high], side="left")
    return slice(int(start), int(stop)) if stop > start else None


def _interpolation(fractions: np.ndarray, n: int) -> np.ndarray:
    """Rows of bilinear weights sampling ``n`` cells at ``fractions`` of the extent
    (``align_corners=False``: cell ``i`` is centred at ``(i + 0.5) / n``)."""
    position = np.clip(fractions * n - 0.5, 0, n - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = position - low
    matrix = np.zeros((fractions.size, n))
    matrix[np.arange(fractions.size), low] += 1 - weight
    matrix[np.arange(fractions.size), high] += weight
    return matrix


def grid_for(size: tuple[int, int], longer: int = GRID) -> tuple[int, int]:
    """(rows, cols) with ``longer`` cells on the image's longer side, same aspect."""
    width, height = size
    scale = longer / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def normalise(plane: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Min-max to [0, 1] (all zeros when flat); returns the map and the raw range."""
    low, high = float(plane.min()), float(plane.max())
    span = high - low
    scaled = (plane - low) / span if span > 0 else np.zeros_like(plane)
    return scaled.astype(np.float32), (low, high)


def ten_crop_boxes(size: tuple[int, int], resize: int, crop: int) -> list[Crop]:
    """Crops of ``Resize(resize) -> TenCrop(crop)`` (torchvision's order: corners and
    centre, then the same of the mirror image) in the original image's pixels."""
    five = _five_boxes(size, resize, crop)
    width = size[0]
    mirrored = [
        Crop((width - box[2], box[1], width - box[0], box[3]), flipped=True) for box in five
    ]
    return [Crop(box) for box in five] + mirrored


def center_crop_boxes(size: tuple[int, int], resize: int, crop: int) -> list[Crop]:
    """The crop of ``Resize(resize) -> CenterCrop(crop)`` in the original image's pixels."""
    return [Crop(_five_boxes(size, resize, crop)[4])]


def _five_boxes(
    size: tuple[int, int], resize: int, crop: int
) -> list[tuple[float, float, float, float]]:
    width, height = size
    new_h, new_w = _compute_resized_output_size((height, width), [resize])
    if crop > new_h or crop > new_w:
        raise InputError(f"a {crop}-pixel crop does not fit a {new_w}x{new_h} resized image")
    sx, sy = width / new_w, height / new_h
    bottom, right = new_h - crop, new_w - crop
    top_c, left_c = round(bottom / 2.0), round(right / 2.0)  # torchvision's center_crop
    corners = ((0, 0), (0, right), (bottom, 0), (bottom, right), (top_c, left_c))
    return [(left * sx, top * sy, (left + crop) * sx, (top + crop) * sy) for top, left in corners]


def overlay_png(image: Any, plane: np.ndarray, alpha: float = 0.45) -> bytes:
    """The image (grayscale, at most :data:`OVERLAY_SIDE` pixels) under ``plane`` (values
    in [0, 1], any grid) drawn in a jet colour map, as PNG bytes."""
    from PIL import Image

    gray = image.convert("L")
    scale = min(1.0, OVERLAY_SIDE / max(gray.size))
    if scale < 1:
        gray = gray.resize((round(gray.width * scale), round(gray.height * scale)))
    heat = Image.fromarray(np.asarray(plane, dtype=np.float32))
    t = np.clip(np.asarray(heat.resize(gray.size, Image.Resampling.BILINEAR)), 0, 1)
    colour = np.stack(
        [np.clip(1.5 - np.abs(4 * t - k), 0, 1) for k in (3, 2, 1)], axis=-1
    )  # jet: red, green, blue
    base = np.asarray(gray, dtype=np.float32)[..., None] / 255
    blended = (1 - alpha) * base + alpha * colour
    buffer = io.BytesIO()
    # zlib level 1: a third of the default level's time for a few percent more bytes
    Image.fromarray((blended * 255 + 0.5).astype(np.uint8)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
