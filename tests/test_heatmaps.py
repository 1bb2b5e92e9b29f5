"""Class activation maps: the numpy geometry (crops mapped back, flips undone), CheXNet's
maps on PyTorch vs ONNX Runtime, the artifact without torch, /explain and the verify stage."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_agnostic import transforms as T
from model_agnostic.errors import ConfigError, InputError
from model_agnostic.model import Model
from model_agnostic.heatmaps import (
    CAM,
    Crop,
    center_crop_boxes,
    class_maps,
    normalise,
    overlay_png,
    ten_crop_boxes,
    to_image,
)
from tests.conftest import XRAY, chexnet_config, run_without_torch


def test_class_maps_weight_the_feature_channels() -> None:
    rng = np.random.default_rng(0)
    features, weights = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(7, 5))
    expected = np.array([[sum(w[k] * f[k] for k in range(5)) for w in weights] for f in features])
    np.testing.assert_allclose(class_maps(features, weights), expected, atol=1e-12)
    with pytest.raises(InputError, match="the same K"):
        class_maps(features, weights[:, :4])


def test_a_whole_image_crop_on_its_own_grid_is_the_identity() -> None:
    maps = np.random.default_rng(1).normal(size=(1, 2, 7, 7))
    out = to_image(maps, [Crop((0, 0, 70, 70))], (70, 70), (7, 7))
    np.testing.assert_allclose(out, maps[0], atol=1e-12)


@pytest.mark.parametrize("size", [(300, 260), (260, 300), (256, 256), (411, 257)])
def test_ten_crop_boxes_are_where_tencrop_cut_the_pixels(size: tuple[int, int]) -> None:
    image = Image.fromarray(
        np.random.default_rng(2).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    )
    resized = T.Resize(64)(image)
    crops = T.TenCrop(48)(resized)
    scale = image.width / resized.width, image.height / resized.height
    pixels = np.asarray(resized)
    for crop, box in zip(crops, ten_crop_boxes(image.size, 64, 48)):
        left, top = round(box.box[0] / scale[0]), round(box.box[1] / scale[1])
        right, bottom = round(box.box[2] / scale[0]), round(box.box[3] / scale[1])
        cut = pixels[top:bottom, left:right]
        np.testing.assert_array_equal(np.asarray(crop), cut[:, ::-1] if box.flipped else cut)
    assert center_crop_boxes(image.size, 64, 48)[0] == ten_crop_boxes(image.size, 64, 48)[4]


def test_crop_maps_of_a_linear_field_are_mapped_back_exactly() -> None:
    """Sample f(x, y) = 3x - 2y at each TenCrop crop's cell centres (mirrored crops
    mirrored), map back, and f comes out exactly wherever no crop clamps (bilinear
    sampling is exact on a linear field between cell centres)."""
    size, cells = (300, 260), 7
    crops = ten_crop_boxes(size, 256, 224)
    maps = np.empty((len(crops), 1, cells, cells))
    for n, crop in enumerate(crops):
        left, top, right, bottom = crop.box
        xs = left + (np.arange(cells) + 0.5) * (right - left) / cells
        ys = top + (np.arange(cells) + 0.5) * (bottom - top) / cells
        field = 3 * xs[None, :] - 2 * ys[:, None]
        maps[n, 0] = field[:, ::-1] if crop.flipped else field
    grid = (52, 60)
    out = to_image(maps, crops, size, grid)[0]
    xs = (np.arange(grid[1]) + 0.5) * size[0] / grid[1]
    ys = (np.arange(grid[0]) + 0.5) * size[1] / grid[0]
    truth = 3 * xs[None, :] - 2 * ys[:, None]
    clean = np.ones(grid, dtype=bool)
    for crop in crops:
        left, top, right, bottom = crop.box
        fx, fy = (xs - left) / (right - left), (ys - top) / (bottom - top)
        inside = ((fy >= 0) & (fy < 1))[:, None] & ((fx >= 0) & (fx < 1))[None, :]
        clamped = ((fy < 0.5 / cells) | (fy > 1 - 0.5 / cells))[:, None] | (
            (fx < 0.5 / cells) | (fx > 1 - 0.5 / cells)
        )[None, :]
        clean &= ~(inside & clamped)
    assert clean.sum() > 400  # most of the image
    np.testing.assert_allclose(out[clean], truth[clean], atol=1e-9)


def test_cells_outside_a_centre_crop_read_as_no_evidence() -> None:
    crops = center_crop_boxes((400, 256), 256, 224)
    out = to_image(np.ones((1, 1, 7, 7)) * 5, crops, (400, 256), (8, 25))[0]
    assert out.min() == out.max() == 5  # filled with the map's minimum, not zeros or NaN


def test_normalise_and_overlay() -> None:
    plane, span = normalise(np.array([[1.0, 3.0], [2.0, 5.0]]))
    assert span == (1.0, 5.0) and plane.min() == 0 and plane.max() == 1
    assert normalise(np.full((2, 2), 4.0))[0].max() == 0
    image = Image.new("L", (1000, 800), 128)
    png = overlay_png(image, np.array([[0.0, 1.0]]))
    with Image.open(io.BytesIO(png)) as shown:
        assert shown.format == "PNG" and shown.size == (512, 410)
        left, right = shown.getpixel((5, 200)), shown.getpixel((506, 200))
    assert left[2] > left[0] and right[0] > right[2]  # jet: cold blue to hot red


@pytest.fixture(scope="module")
def chexnet_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bool, object]]:
    """CheXNet on PyTorch (seeded) for TenCrop on and off, and its exported graph."""
    pytest.importorskip("torch")
    from model_agnostic import export_onnx, load_model

    folder = tmp_path_factory.mktemp("cam")
    models = {}
    for tencrop in (True, False):
        (folder / str(tencrop)).mkdir()
        config = chexnet_config(folder / str(tencrop), "pytorch", "[pytorch]\nseed = 0", tencrop)
        models[tencrop] = load_model(config)
    export_onnx(models[True], folder / "chexnet.onnx", XRAY)
    return folder, models


@pytest.mark.parametrize("tencrop", [True, False])
def test_chexnet_heatmaps_agree_between_pytorch_and_onnx_runtime(
    chexnet_pair: tuple[Path, dict[bool, object]], tencrop: bool
) -> None:
    from model_agnostic import load_model

    folder, models = chexnet_pair
    onnx = load_model(chexnet_config(folder, "onnxruntime",
                                     '[onnxruntime]\npath = "chexnet.onnx"', tencrop))
    labels = list(onnx.labels)
    ours = models[tencrop].predict(XRAY, explain=labels)
    theirs = onnx.predict(XRAY, explain=labels)
    assert [h.label for h in ours.heatmaps] == labels == [h.label for h in theirs.heatmaps]
    for a, b in zip(ours.heatmaps, theirs.heatmaps):
        assert a.map.shape == b.map.shape == (32, 32)
        assert np.abs(a.map - b.map).max() <= 1e-4
        assert np.corrcoef(a.map.ravel(), b.map.ravel())[0, 1] > 0.9999
    top = onnx.predict(XRAY, explain=True)
    assert [h.label for h in top.heatmaps] == [r["finding"] for r in top.result[:3]]
    with Image.open(io.BytesIO(top.heatmaps[0].overlay)) as overlay:
        assert overlay.format == "PNG" and max(overlay.size) == 512


def test_plain_predict_does_not_fetch_the_feature_map(
    chexnet_pair: tuple[Path, dict[bool, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_agnostic import load_model

    folder, _ = chexnet_pair
    onnx = load_model(chexnet_config(folder, "onnxruntime", '[onnxruntime]\npath = "chexnet.onnx"'))
    asked: list[list[str]] = []
    run = onnx.session.run
    monkeypatch.setattr(onnx.session, "run", lambda names, feed: asked.append(names) or run(names, feed))
    onnx.predict(XRAY)
    onnx.predict(XRAY, explain=1)
    assert asked == [["probabilities"], ["probabilities", "features"]]


def test_missing_cam_weights_and_a_model_without_cam_say_what_to_do(
    chexnet_pair: tuple[Path, dict[bool, object]], tmp_path: Path
) -> None:
    from model_agnostic import load_model

    folder, _ = chexnet_pair
    (tmp_path / "chexnet.onnx").write_bytes((folder / "chexnet.onnx").read_bytes())
    onnx = load_model(chexnet_config(tmp_path, "onnxruntime", '[onnxruntime]\npath = "chexnet.onnx"'))
    with pytest.raises(Exception, match="chexnet.cam_weights.npy beside the graph"):
        onnx.predict(XRAY, explain=True)
    with pytest.raises(InputError, match=r"no class \['Flu'\]"):
        load_model(chexnet_config(folder, "onnxruntime", '[onnxruntime]\npath = "chexnet.onnx"')
                   ).predict(XRAY, explain=["Flu"])
    from tests.tiny_models import TinyImage

    tiny = TinyImage.with_backend("pytorch")()
    with pytest.raises(InputError, match="declares no class activation maps"):
        tiny.predict(np.zeros((20, 20, 3), np.uint8), explain=True)


def test_the_artifact_explains_without_torch(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from model_agnostic.config import load_config
    from model_agnostic.export.pipeline import export_model

    config = chexnet_config(tmp_path, "pytorch", "[pytorch]\nseed = 0", tencrop=False)
    result = export_model(load_config(config), tmp_path / "artifact", example=XRAY)
    assert result.artifact is not None, result.report.summary()
    report = result.report.to_dict()
    stage = next(s for s in report["stages"] if s["stage"] == "heatmaps")
    assert stage["status"] == "pass" and "14 classes" in stage["comparisons"][0]["note"]
    files = {p.name for p in (tmp_path / "artifact").iterdir()}
    assert "model.cam_weights.npy" in files
    code = (
        "from model_agnostic import load_model\n"
        f"e = load_model({str(tmp_path / 'artifact')!r}).predict({str(XRAY)!r}, explain=2)\n"
        "print([h.label for h in e.heatmaps], e.heatmaps[0].map.shape, len(e.heatmaps[0].overlay) > 1000)\n"
    )
    done = run_without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(32, 32) True" in done.stdout
    # the command line, as make demo runs it: overlay and raw map written, both named
    done = subprocess.run(
        [sys.executable, "-m", "model_agnostic", "predict", "--forbid-torch", "--config",
         str(tmp_path / "artifact"), "--explain", "1", "--heatmaps", str(tmp_path / "maps"),
         str(XRAY)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["results"]
    [heatmap] = result["result"]["heatmaps"]
    top = result["result"]["result"][0]["finding"]
    assert heatmap["label"] == top and heatmap["overlay"].endswith(f".{top}.png")
    assert f"heatmap of {top}" in done.stderr and heatmap["overlay"] in done.stderr
    with Image.open(heatmap["overlay"]) as overlay:
        assert overlay.format == "PNG"
    assert np.load(heatmap["map"]).shape == (32, 32)


def test_explain_endpoint_returns_maps_and_overlays(chexnet_onnx_config: Path) -> None:
    from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane

    options = ServerOptions(port=0)
    with BackgroundServer(build_dataplane(chexnet_onnx_config, options=options), options) as server:
        def post(path: str) -> tuple[int, Any]:
            request = urllib.request.Request(server.url + path, data=XRAY.read_bytes(), method="POST",
                                             headers={"Content-Type": "image/png"})
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    return answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as error:
                with error:
                    return error.code, json.loads(error.read())

        status, doc = post("/v2/models/chexnet/explain?top_k=2")
        assert status == 200, doc
        assert [h["label"] for h in doc["heatmaps"]] == [r["finding"] for r in doc["result"][:2]]
        first = doc["heatmaps"][0]
        assert first["shape"] == [32, 32] and np.asarray(first["map"]).max() == 1.0
        assert first["overlay"].startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(first["overlay"].split(",", 1)[1]))) as png:
            assert png.format == "PNG"
        status, doc = post("/v2/models/chexnet/explain?label=Hernia,Mass&overlay=0")
        assert status == 200 and [h["label"] for h in doc["heatmaps"]] == ["Hernia", "Mass"]
        assert "overlay" not in doc["heatmaps"][0]
        for query, message in (("top_k=0", "top_k must be"), ("label=Flu", "no class"),
                               ("colour=red", "unknown query parameter")):
            status, doc = post(f"/v2/models/chexnet/explain?{query}")
            assert status == 400 and message in doc["error"], (query, doc)
        from model_agnostic import load_model

        local = load_model(chexnet_onnx_config)
        with type(local).hooks_class.with_backend("remote")(
            url=server.url, model_name="chexnet"
        ) as remote:  # the weights stay on the server: the error says where to ask
            with pytest.raises(ConfigError, match="/v2/models/chexnet/explain"):
                remote.predict(XRAY, explain=True)


class _NumpyCam(Model):
    """A pure-numpy CAM model: scores = mean of the features per channel, weights = I."""

    input_names = ("image",)
    output_names = ("scores", "features")
    cam = CAM(features="features", weights="w", scores="scores")
    seen: list[set[str]]

    def __init__(self, weights: bool = True) -> None:
        super().__init__()
        self.has_weights = weights
        self.seen = []

    def preprocessing(self, raw: Any) -> np.ndarray:
        return np.asarray(raw, dtype=np.float32)[None]

    def infer(self, inputs: dict[str, np.ndarray], outputs: Any = None) -> dict[str, np.ndarray]:
        features = inputs["image"]
        every = {"scores": features.mean(axis=(2, 3)), "features": features}
        return every if outputs is None else {name: every[name] for name in outputs}

    def explain_image(self, raw: Any) -> Image.Image:
        return Image.new("RGB", (4, 4))

    def cam_weights(self) -> np.ndarray:
        if not self.has_weights:
            raise ConfigError("no weights on this backend")
        return np.eye(2, dtype=np.float32)

    def process_result(self, outputs: dict[str, np.ndarray]) -> Any:
        self.seen.append(set(outputs))
        return outputs["scores"][0].tolist()


def test_process_result_never_sees_the_feature_map() -> None:
    model = _NumpyCam()
    image = np.random.default_rng(0).random((2, 4, 4))
    model.predict(image)
    explained = model.predict(image, explain=1)
    batch = model.predict_batch([image, image], explain=["1"])
    assert model.seen == [{"scores"}] * 4
    # the maps were made, from the feature map process_result did not see
    assert len(explained.heatmaps) == 1 and all(len(r.heatmaps) == 1 for r in batch)


def test_can_explain_needs_a_cam_and_its_weights() -> None:
    assert _NumpyCam().can_explain()
    assert not _NumpyCam(weights=False).can_explain()


def test_a_served_model_without_its_weights_refuses_explain_before_any_work(
    chexnet_onnx_config: Path, tmp_path: Path
) -> None:
    from model_agnostic.serving.server import BackgroundServer, ServerOptions, build_dataplane

    # the same graph, exported before weights were shipped beside it
    folder = chexnet_onnx_config.parent
    for name in ("onnxruntime.toml", "chexnet.onnx"):
        shutil.copy(folder / name, tmp_path / name)
    assert not (tmp_path / "chexnet.cam_weights.npy").exists()
    assert (folder / "chexnet.cam_weights.npy").exists()  # the one difference from the original
    options = ServerOptions(port=0)
    with BackgroundServer(build_dataplane(tmp_path / "onnxruntime.toml", options=options),
                          options) as server:
        with urllib.request.urlopen(server.url + "/v2/models/chexnet", timeout=60) as answer:
            assert "heatmaps" not in json.loads(answer.read())["parameters"]
        request = urllib.request.Request(server.url + "/v2/models/chexnet/explain",
                                         data=b"not even an image", method="POST",
                                         headers={"Content-Type": "image/png"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        with caught.value as error:
            assert error.code == 501
            assert "no classifier weights" in json.loads(error.read())["error"]
