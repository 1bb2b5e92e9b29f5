"""Tests for model_agnostic.checkpoints: formats, safety, renames, strictness."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shlex
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch import nn  # noqa: E402

from model_agnostic.checkpoints import (  # noqa: E402
    STATE_DICT_KEYS,
    LoadReport,
    apply_state_dict,
    load_state_dict,
)
from model_agnostic.errors import CheckpointError, UnsafeCheckpointError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Fixes DenseNet keys written by torchvision < 0.2.2 ("norm.1" -> "norm1").
LEGACY_DENSENET_RULE = (r"\.(norm|relu|conv)\.([12])\.", r".\1\2.")
CHEXNET_RENAME = [(r"^densenet121\.", ""), LEGACY_DENSENET_RULE]


# --------------------------------------------------------------------------
# models and helpers
# --------------------------------------------------------------------------


class TinyNet(nn.Module):
    """A conv net small enough to build in microseconds, with BN buffers."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.classifier = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class ExecPayload:
    """Unpickling this writes a marker file through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class SystemPayload:
    """Unpickling this creates a marker file through os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    model.features[1].running_mean.uniform_()  # buffers worth comparing
    model.features[1].num_batches_tracked.fill_(7)
    return model


def make_densenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.DenseNet(
        growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=3
    )


@pytest.fixture
def tiny_densenet() -> nn.Module:
    return make_densenet()


@pytest.fixture
def chexnet_like() -> nn.Module:
    """A tiny DenseNet with CheXNet's head: Sequential(Linear, Sigmoid)."""
    model = make_densenet()
    head = nn.Linear(model.classifier.in_features, 3)
    model.classifier = nn.Sequential(head, nn.Sigmoid())
    return model


def to_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys the way torchvision < 0.2.2 wrote them (norm1 -> norm.1)."""
    pattern = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")
    return {pattern.sub(r"\1.\2.", key): value for key, value in state.items()}


def assert_identical(
    loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    assert sorted(loaded) == sorted(expected)  # safetensors stores keys sorted
    for key, tensor in expected.items():
        assert loaded[key].device.type == "cpu", key
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key


@contextlib.contextmanager
def saved_as_if_on_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make torch.save record 'cuda:0' as every storage's location."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        yield


def error_text(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------
# formats that load to identical weights
# --------------------------------------------------------------------------


def test_import_does_not_import_torch() -> None:
    code = "import sys, model_agnostic.checkpoints; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_bare_state_dict_loads_identical(tiny_net: TinyNet, tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(tiny_net.state_dict(), path)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_numpy_scalars_in_checkpoint_metadata_load_safely(tiny_net: TinyNet, tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "checkpoint.pt"
    checkpoint = {"state_dict": tiny_net.state_dict(), "best_acc": np.float64(0.9), "epoch": np.int64(3)}
    torch.save(checkpoint, path)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


@pytest.mark.parametrize("key", STATE_DICT_KEYS)
def test_checkpoint_dict_loads_the_weights_and_ignores_the_rest(
    tiny_net: TinyNet, tmp_path: Path, key: str
) -> None:
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {
        "epoch": 12,
        "arch": "tinynet",
        "best_prec1": 0.91,
        key: tiny_net.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(checkpoint, path)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_dataparallel_module_prefix_is_stripped(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    path = tmp_path / "dp.pt"
    torch.save(nn.DataParallel(tiny_net).state_dict(), path)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_mixed_module_prefix_is_left_alone(tmp_path: Path) -> None:
    state = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    assert list(load_state_dict(path)) == ["module.a", "b"]


def test_rename_table_fixes_legacy_densenet_keys(
    tiny_densenet: nn.Module, tmp_path: Path
) -> None:
    legacy = to_legacy_densenet_keys(tiny_densenet.state_dict())
    assert any(".norm.1." in key for key in legacy)  # the fixture really is legacy
    path = tmp_path / "legacy_keys.pt"
    torch.save(legacy, path)
    loaded = load_state_dict(path, rename=[LEGACY_DENSENET_RULE])
    assert_identical(loaded, tiny_densenet.state_dict())
    assert apply_state_dict(make_densenet(seed=1), loaded).complete


def test_chexnet_style_checkpoint_loads(
    chexnet_like: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """module.densenet121. prefix + legacy keys + GPU-saved + pre-1.6 format."""
    state = {
        f"module.densenet121.{key}": value
        for key, value in to_legacy_densenet_keys(chexnet_like.state_dict()).items()
    }
    optimizer = torch.optim.Adam(chexnet_like.parameters())
    checkpoint = {
        "epoch": 5,
        "arch": "DenseNet121",
        "state_dict": state,
        "best_prec1": 0.84,
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path / "model.pth.tar"
    with saved_as_if_on_gpu(monkeypatch):
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)

    loaded = load_state_dict(path, rename=CHEXNET_RENAME)
    assert_identical(loaded, chexnet_like.state_dict())


def test_gpu_saved_checkpoint_loads_on_cpu(
    tiny_net: TinyNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gpu.pt"
    with saved_as_if_on_gpu(monkeypatch):
        torch.save(tiny_net.state_dict(), path)
    if not torch.cuda.is_available():  # proves the file really is GPU-tagged
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_safetensors_loads_identical(tiny_net: TinyNet, tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(tiny_net.state_dict(), str(path))
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_safetensors_is_detected_by_content(tiny_net: TinyNet, tmp_path: Path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.bin"
    safetensors_torch.save_file(tiny_net.state_dict(), str(path))
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_legacy_non_zip_format_loads_identical(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    path = tmp_path / "old.pth"
    torch.save(tiny_net.state_dict(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_identical(load_state_dict(path), tiny_net.state_dict())


def test_checkpoint_without_num_batches_tracked_applies_strictly(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    """PyTorch < 0.4.1 checkpoints (CheXNet's) predate BN's num_batches_tracked."""
    state = {k: v for k, v in tiny_net.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "pre041.pt"
    torch.save(state, path)
    report = apply_state_dict(TinyNet(), load_state_dict(path))
    assert report == LoadReport()


def test_safe_load_logs_nothing_even_when_trusted(
    tiny_net: TinyNet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bare.pt"
    torch.save(tiny_net.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="model_agnostic.checkpoints"):
        load_state_dict(path, trust_checkpoint=True)
    assert not caplog.records


# --------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------


def _save_exec_zip(marker: Path, path: Path) -> str:
    torch.save({"weight": torch.zeros(2), "payload": ExecPayload(marker)}, path)
    return "builtins.exec"


def _save_exec_legacy(marker: Path, path: Path) -> str:
    payload = {"weight": torch.zeros(2), "payload": ExecPayload(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    return "builtins.exec"


def _save_system_raw_pickle(marker: Path, path: Path) -> str:
    # Protocol 4 uses STACK_GLOBAL, which torch's own scanner cannot read.
    path.write_bytes(pickle.dumps({"payload": SystemPayload(marker)}, protocol=4))
    return f"{os.system.__module__}.system"


@pytest.mark.parametrize(
    "write", [_save_exec_zip, _save_exec_legacy, _save_system_raw_pickle]
)
def test_malicious_pickle_is_refused_without_running_it(
    tmp_path: Path, write: Callable[[Path, Path], str]
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    global_name = write(marker, path)
    with pytest.raises(UnsafeCheckpointError) as excinfo, warnings.catch_warnings():
        # torch.load warns about protocol 4 (the raw pickle) before refusing it.
        warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        load_state_dict(path)
    message = error_text(excinfo)
    assert not marker.exists()
    assert str(path) in message
    assert global_name in message
    assert "arbitrary code" in message
    assert "trust_checkpoint=True" in message and "trust_checkpoint = true" in message
    assert "safetensors" in message and "state_dict" in message


def test_pickled_whole_model_is_refused_naming_its_class(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny_net, path)
    with pytest.raises(UnsafeCheckpointError) as excinfo:
        load_state_dict(path)
    message = error_text(excinfo)
    assert f"{TinyNet.__module__}.TinyNet" in message
    assert "torch.nn.modules.conv.Conv2d" in message
    assert str(path) in message


def test_trusted_whole_model_loads_and_is_logged(
    tiny_net: TinyNet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "whole.pt"
    torch.save(tiny_net, path)
    with caplog.at_level(logging.WARNING, logger="model_agnostic.checkpoints"):
        loaded = load_state_dict(path, trust_checkpoint=True)
    assert_identical(loaded, tiny_net.state_dict())
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert str(path) in record.getMessage()


# --------------------------------------------------------------------------
# files that are not checkpoints
# --------------------------------------------------------------------------


def test_torchscript_archive_is_refused_naming_supported_formats(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(tiny_net.eval(), torch.zeros(1, 3, 8, 8))
        torch.jit.save(traced, str(path))
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(path)
    message = error_text(excinfo)
    assert "TorchScript" in message and "ONNX" in message
    assert "state_dict" in message and "safetensors" in message


def test_corrupt_safetensors_header_is_reported(
    tiny_net: TinyNet, tmp_path: Path
) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "weights.safetensors"
    safetensors_torch.save_file(tiny_net.state_dict(), str(path))
    data = bytearray(path.read_bytes())
    data[9:40] = b"#" * 31  # garble the JSON header, keep its length
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="safetensors") as excinfo:
        load_state_dict(path)
    assert "corrupt" in error_text(excinfo) and "header" in error_text(excinfo)
    assert str(path) in error_text(excinfo)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.pt", b"", "empty (0 bytes)"),
        ("random.pt", bytes(range(7, 256, 3)) * 20, "corrupt or not a checkpoint"),
    ],
)
def test_unreadable_file_is_reported(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(path)
    assert not isinstance(excinfo.value, UnsafeCheckpointError)
    message = error_text(excinfo)
    assert str(path) in message and problem in message
    assert "Supported checkpoint formats" in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as excinfo:
        load_state_dict(path)
    assert str(path) in error_text(excinfo)


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([torch.zeros(1)], "holds a list"),
        ({"epoch": 3, "arch": "x"}, "'epoch', 'arch'"),
        ({}, "empty dict"),
    ],
)
def test_pickle_that_is_not_a_state_dict_is_reported(
    tmp_path: Path, obj: object, problem: str
) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as excinfo:
        load_state_dict(path)
    assert problem in error_text(excinfo) and str(path) in error_text(excinfo)
    assert "Supported checkpoint formats" in error_text(excinfo)


# --------------------------------------------------------------------------
# rename rules
# --------------------------------------------------------------------------


def test_invalid_rename_regex_is_named(tiny_net: TinyNet, tmp_path: Path) -> None:
    path = tmp_path / "bare.pt"
    torch.save(tiny_net.state_dict(), path)
    with pytest.raises(CheckpointError, match=re.escape("'features.(['")):
        load_state_dict(path, rename=[("features.([", "x")])


def test_rename_rules_that_collide_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "two.pt"
    torch.save({"a.weight": torch.zeros(1), "b.weight": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="'a.weight' and 'b.weight'"):
        load_state_dict(path, rename=[(r"^[ab]\.", "c.")])


# --------------------------------------------------------------------------
# apply_state_dict
# --------------------------------------------------------------------------


def test_strict_mismatch_lists_keys_and_suggests_rename(
    tiny_densenet: nn.Module,
) -> None:
    state = to_legacy_densenet_keys(tiny_densenet.state_dict())
    with pytest.raises(CheckpointError) as excinfo:
        apply_state_dict(make_densenet(seed=1), state)
    message = error_text(excinfo)
    missing = "features.denseblock1.denselayer1.norm1.weight"
    legacy = "features.denseblock1.denselayer1.norm.1.weight"
    assert re.search(r"\d+ missing key\(s\); \d+ unexpected key\(s\)", message)
    suggestion = f"'{missing}' — the checkpoint has '{legacy}'; add a rename rule"
    assert suggestion in message
    assert f"'{legacy}'" in message.split("Unexpected")[1]
    assert "... and" in message  # long lists are cut
    assert "rename" in message and "strict=False" in message


def test_strict_mismatch_suggests_a_prefix_rule(tiny_net: TinyNet) -> None:
    state = {f"backbone.{k}": v for k, v in tiny_net.state_dict().items()}
    with pytest.raises(CheckpointError) as excinfo:
        apply_state_dict(TinyNet(), state)
    assert 'rule (r"^backbone\\.", "") removes it' in error_text(excinfo)


def test_non_strict_loads_what_matches_and_returns_report(
    tiny_net: TinyNet, caplog: pytest.LogCaptureFixture
) -> None:
    state = dict(tiny_net.state_dict())
    del state["classifier.bias"]
    state["extra.weight"] = torch.zeros(1)
    target = TinyNet()
    with caplog.at_level(logging.WARNING, logger="model_agnostic.checkpoints"):
        report = apply_state_dict(target, state, strict=False)
    assert report == LoadReport(("classifier.bias",), ("extra.weight",))
    assert not report.complete
    assert torch.equal(target.classifier.weight, tiny_net.classifier.weight)
    assert "classifier.bias" in caplog.text and "extra.weight" in caplog.text


def test_strict_load_of_matching_state_dict_reports_nothing(tiny_net: TinyNet) -> None:
    target = TinyNet()
    assert apply_state_dict(target, tiny_net.state_dict()) == LoadReport()
    assert_identical(target.state_dict(), tiny_net.state_dict())


@pytest.mark.parametrize("strict", [True, False])
def test_shape_mismatch_is_an_error_and_copies_nothing(
    tiny_net: TinyNet, strict: bool
) -> None:
    target = TinyNet(num_classes=5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as excinfo:
        apply_state_dict(target, tiny_net.state_dict(), strict=strict)
    message = error_text(excinfo)
    assert "'classifier.weight': checkpoint [3, 4] vs model [5, 4]" in message
    assert "1 shape mismatch" in message or "2 shape mismatch" in message
    assert_identical(target.state_dict(), before)


# --------------------------------------------------------------------------
# the opt-in through a config file (the PyTorch backend passes it on)
# --------------------------------------------------------------------------


def _config_with_weights(folder: Path, weights: Path, trust: bool) -> Path:
    config = folder / "config.toml"
    config.write_text(
        'backend = "pytorch"\n[model]\n'
        f'class = "{(ROOT / "tests" / "tiny_models.py").as_posix()}:TinyNet"\n'
        f'[pytorch]\nweights = "{weights.as_posix()}"\n'
        f"trust_checkpoint = {str(trust).lower()}\n"
    )
    return config


def test_config_refuses_an_unsafe_checkpoint_by_default_without_running_it(
    tmp_path: Path,
) -> None:
    from model_agnostic import load_model

    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pt"
    _save_exec_zip(marker, weights)
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        load_model(_config_with_weights(tmp_path, weights, trust=False))
    assert not marker.exists()


def test_config_trust_checkpoint_loads_a_full_pickle_and_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import argparse

    from model_agnostic import load_model
    from tests.tiny_models import TinyNet as TinyModel

    network = TinyModel.with_backend("pytorch")(seed=5).network
    weights = tmp_path / "trainer.pt"  # hyper-parameters as a Namespace: common, not weights-only
    torch.save({"state_dict": network.state_dict(), "args": argparse.Namespace(lr=0.1)}, weights)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        load_model(_config_with_weights(tmp_path, weights, trust=False))
    with caplog.at_level(logging.WARNING, logger="model_agnostic.checkpoints"):
        model = load_model(_config_with_weights(tmp_path, weights, trust=True))
    assert_identical(model.network.state_dict(), network.state_dict())
    [record] = [r for r in caplog.records if r.name.startswith("model_agnostic.checkpoints")]
    assert record.levelno == logging.WARNING
    assert str(weights) in record.getMessage() and "trust_checkpoint=True" in record.getMessage()
    assert "argparse.Namespace" in record.getMessage()
