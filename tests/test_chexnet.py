"""CheXNet end to end: the published checkpoint format, PyTorch vs ONNX Runtime, torch-free from config."""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from model_agnostic import load_model
from tests.conftest import CHEXNET_CLASS, ROOT, XRAY, run_without_torch

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]


def published_format(state: dict[str, Any]) -> dict[str, Any]:
    """The arnoweng/CheXNet checkpoint layout: DataParallel + wrapper prefix, legacy DenseNet keys."""
    legacy = {
        "module.densenet121." + re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", key): value
        for key, value in state.items()
    }
    return {"epoch": 7, "arch": "densenet121", "best_prec1": 0.84, "state_dict": legacy,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}


@pytest.fixture(scope="module")
def original() -> dict[str, Any]:
    """Weights of a CheXNet trained elsewhere (here: a seeded random initialisation)."""
    model = load_model(_config_text_path(None, None), backend="pytorch")
    return {k: v.clone() for k, v in model.network.state_dict().items()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, original: dict[str, Any]) -> Path:
    """A checkpoint saved like the published one (old non-zip format, GPU tensors) and a config."""
    work = tmp_path_factory.mktemp("chexnet")
    checkpoint = published_format({k: v for k, v in original.items()})
    real_tag = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(checkpoint, work / "model.pth.tar", _use_new_zipfile_serialization=False)
    finally:
        torch.serialization.location_tag = real_tag
    _config_text_path(work, "model.pth.tar")
    return work


def _config_text_path(work: Path | None, weights: str | None) -> Path:
    import tempfile

    folder = work or Path(tempfile.mkdtemp())
    lines = [
        'backend = "onnxruntime"',
        "[model]",
        f'class = "{(ROOT / "examples/chexnet/model.py").as_posix()}:CheXNet"',
        "[pytorch]",
        *([f'weights = "{weights}"', "seed = 99"] if weights else []),
        "[onnxruntime]",
        'path = "chexnet.onnx"',
    ]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pytorch_model(workdir: Path) -> Any:
    return load_model(workdir / "config.toml", backend="pytorch")


@pytest.fixture(scope="module")
def onnx_model(workdir: Path, pytorch_model: Any) -> Any:
    from model_agnostic import export_onnx

    export_onnx(pytorch_model, workdir / "chexnet.onnx", XRAY)
    return load_model(workdir / "config.toml")


def xray_variants() -> list[Any]:
    """The real X-ray and three variants: mirrored, portrait crop, small greyscale."""
    image = Image.open(XRAY)
    return [
        XRAY,
        ImageOps.mirror(image.convert("RGB")),
        image.crop((100, 0, 800, 1000)),
        image.convert("L").resize((517, 601)),
    ]


def test_published_checkpoint_loads_to_the_original_weights(original: dict[str, Any], pytorch_model: Any) -> None:
    loaded = pytorch_model.network.state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    assert pytorch_model.weights_source.startswith("model.pth.tar (sha256 ")


@pytest.mark.parametrize("tencrop", [True, False], ids=["tencrop", "centercrop"])
@pytest.mark.parametrize("count", [1, 4])
def test_onnx_runtime_matches_pytorch_on_the_real_xray(
    pytorch_model: Any, onnx_model: Any, tencrop: bool, count: int
) -> None:
    raws = xray_variants()[:count]
    pytorch_model.tencrop = onnx_model.tencrop = tencrop
    try:
        expected, got = pytorch_model.predict_batch(raws), onnx_model.predict_batch(raws)
    finally:
        pytorch_model.tencrop = onnx_model.tencrop = True
    assert len(expected) == len(got) == count
    for want, have in zip(expected, got):
        assert sorted(r["finding"] for r in have) == sorted(FINDINGS)
        scores = [r["probability"] for r in have]
        assert scores == sorted(scores, reverse=True)
        want_by = {r["finding"]: r["probability"] for r in want}
        for r in have:
            assert abs(r["probability"] - want_by[r["finding"]]) <= 1e-4


def test_tencrop_feeds_ten_crops_per_image(onnx_model: Any) -> None:
    assert onnx_model.preprocessing(XRAY).shape == (10, 3, 224, 224)
    onnx_model.tencrop = False
    try:
        assert onnx_model.preprocessing(XRAY).shape == (1, 3, 224, 224)
    finally:
        onnx_model.tencrop = True


def test_onnx_path_runs_from_config_where_torch_cannot_be_imported(
    workdir: Path, onnx_model: Any, pytorch_model: Any
) -> None:
    code = (
        "import json\n"
        "from model_agnostic import load_model\n"
        f"model = load_model({str(workdir / 'config.toml')!r})\n"
        f"print(json.dumps(model.predict({str(XRAY)!r})))\n"
        "assert sys.modules['torch'] is None\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = {r["finding"]: r["probability"] for r in pytorch_model.predict(XRAY)}
    assert [r["finding"] for r in got] and len(got) == 14
    assert max(abs(r["probability"] - want[r["finding"]]) for r in got) <= 1e-4


def test_running_on_random_weights_is_said_loudly(caplog: pytest.LogCaptureFixture, original: dict[str, Any]) -> None:
    with caplog.at_level("WARNING"):
        load_model(_config_text_path(None, None), backend="pytorch")
    assert "random weights" in caplog.text and "meaningless" in caplog.text


def _bad_inputs(tmp: Path) -> dict[str, tuple[Any, str]]:
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "text.jpg").write_text("I am a text file")
    data = XRAY.read_bytes()
    (tmp / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return {
        "missing file": (tmp / "missing.jpg", "does not exist"),
        "zero-byte file": (tmp / "empty.jpg", r"is empty \(0 bytes\)"),
        "text file named .jpg": (tmp / "text.jpg", "not a recognised image"),
        "truncated JPEG": (tmp / "truncated.jpg", "corrupt or truncated"),
    }


@pytest.mark.parametrize("case", ["missing file", "zero-byte file", "text file named .jpg", "truncated JPEG"])
def test_bad_images_raise_a_clear_error_naming_the_file(onnx_model: Any, tmp_path: Path, case: str) -> None:
    from model_agnostic import ImageDecodeError

    raw, message = _bad_inputs(tmp_path)[case]
    with pytest.raises(ImageDecodeError, match=message) as info:
        onnx_model.predict_batch([XRAY, raw])
    assert raw.name in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bit_depth_policy", "stretch", "'bit_depth_policy' must be one of ['scale',"),
    ("exif_orientation", "rotate", "'exif_orientation' must be one of ['ignore', 'apply']"),
    ("tencrop", "yes", "'tencrop' must be true or false, got 'yes'"),
])
def test_bad_options_are_refused_when_the_model_is_made(key: str, value: Any,
                                                         message: str) -> None:
    from model_agnostic import ConfigError

    config = _config_text_path(None, None)
    config.write_text(config.read_text() + f"[model.options]\n{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):  # before the graph is read
        load_model(config)


def test_chexnet_option_annotations_list_the_image_loaders_policies() -> None:
    from model_agnostic.config import import_model_class
    from model_agnostic.images import BIT_DEPTH_POLICIES, EXIF_POLICIES

    chexnet = import_model_class(CHEXNET_CLASS)
    source = vars(sys.modules[chexnet.__module__])  # the class's own annotations, as written
    hints = {name: eval(chexnet.__annotations__[name], source)
             for name in ("bit_depth_policy", "exif_orientation")}
    assert typing.get_args(hints["bit_depth_policy"]) == BIT_DEPTH_POLICIES
    assert typing.get_args(hints["exif_orientation"]) == EXIF_POLICIES
