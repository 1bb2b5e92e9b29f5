"""Artifacts: what they hold, loading torch-free, and refusing anything tampered with."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from model_agnostic import ArtifactError, ExportError, load_model
from model_agnostic.cli import EXIT_OK, main
from model_agnostic import artifact as artifact_module
from model_agnostic.artifact import CHECKSUMS, open_artifact, verify_checksums
from tests.conftest import ROOT, XRAY, run_without_torch

CONFIG = f"""
[model]
class = "@TESTS@/../tests/tiny_models.py:TinyImage"
[export]
example = "{XRAY.as_posix()}"
[verify]
generated = 2
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from model_agnostic.export.pipeline import export_model

    work = tmp_path_factory.mktemp("artifact")
    config = work / "config.toml"
    config.write_text(CONFIG.replace("@TESTS@", (ROOT / "tests").as_posix()))
    result = export_model(config, work / "tiny", archive=True)
    assert result.artifact is not None
    return result.artifact


@pytest.fixture
def artifact(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(built, copy)
    return copy


def test_artifact_holds_model_config_source_labels_metadata_parity_and_checksums(artifact: Path) -> None:
    names = sorted(p.name for p in artifact.iterdir())
    assert names == sorted(
        [CHECKSUMS, "config.toml", "labels.json", "metadata.json", "model.onnx", "parity.json", "tiny_models.py"]
    )
    meta = json.loads((artifact / "metadata.json").read_text())
    assert meta["format"] == "model-agnostic-artifact/1"
    assert {"model_agnostic", "torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["export"]["opset"] == 18 and meta["created"]
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": [-1, 3, 16, 16]}]
    assert meta["preprocessing"]["options"] == {"broken": ""}
    assert json.loads((artifact / "labels.json").read_text()) == ["a", "b", "c", "d"]
    assert json.loads((artifact / "parity.json").read_text())["passed"] is True
    assert 'backend = "onnxruntime"' in (artifact / "config.toml").read_text()


def test_artifact_runs_where_torch_cannot_be_imported(artifact: Path) -> None:
    code = (
        "from model_agnostic import load_model\n"
        f"model = load_model({str(artifact)!r})\n"
        f"print(model.backend_name, model.predict({str(XRAY)!r})[0]['label'])\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    backend, label = done.stdout.split()
    assert backend == "onnxruntime" and label in "abcd"


def test_zip_archive_loads_like_the_folder(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    from_zip = load_model(built.with_name("tiny.zip")).predict(XRAY)
    assert from_zip == load_model(built).predict(XRAY)


@pytest.mark.parametrize("victim", ["model.onnx", "config.toml", "tiny_models.py", "parity.json"])
def test_a_changed_file_is_refused_by_name(artifact: Path, victim: str) -> None:
    with (artifact / victim).open("ab") as stream:
        stream.write(b"\n# tampered\n")
    with pytest.raises(ArtifactError, match=f"'{victim}' does not match its SHA-256 checksum"):
        load_model(artifact)


def test_missing_unlisted_and_linked_files_are_refused(artifact: Path) -> None:
    (artifact / "labels.json").unlink()
    with pytest.raises(ArtifactError, match="'labels.json' is missing"):
        verify_checksums(artifact)
    (artifact / "labels.json").write_text("[]")
    (artifact / "sitecustomize.py").write_text("print('hi')")
    with pytest.raises(ArtifactError, match="'sitecustomize.py' is not listed"):
        verify_checksums(artifact)


def test_symlinked_file_is_refused(artifact: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    shutil.move(artifact / "model.onnx", outside)
    os.symlink(outside, artifact / "model.onnx")
    with pytest.raises(ArtifactError, match="'model.onnx' is not a regular file"):
        verify_checksums(artifact)


def test_zip_with_a_path_escaping_member_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../escaped.txt", "x")
    with pytest.raises(ArtifactError, match="not a plain file name"):
        load_model(evil)
    assert not (tmp_path / "escaped.txt").exists()


def test_corrupt_zip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(ArtifactError, match="not a valid artifact archive"):
        load_model(bad)


def test_export_refuses_to_overwrite_a_non_empty_folder(built: Path) -> None:
    pytest.importorskip("torch")
    from model_agnostic.export.artifact import write_artifact

    with pytest.raises(ExportError, match="exists and is not empty"):
        write_artifact(load_model(built), built / "model.onnx", built)


def test_class_defined_in_a_script_cannot_be_packaged(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from model_agnostic import Model
    from model_agnostic.export.artifact import write_artifact

    class Script(Model):
        def create_model(self) -> object:
            return torch.nn.Identity()

    model = Script.with_backend("pytorch")()
    with pytest.raises(ExportError, match="defined inside a function; define it at module level"):
        write_artifact(model, tmp_path / "x.onnx", tmp_path / "out")
    Script.__qualname__, Script.__module__ = "Script", "__main__"
    with pytest.raises(ExportError, match="move it to its own module"):
        write_artifact(model, tmp_path / "x.onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_inspect_shows_signature_ops_and_parity(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(built)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "checksums   ok" in text and "input       image: float32 ['batch', 3, 16, 16]" in text
    assert "Conv 1" in text and "parity      PASSED" in text
    assert main(["inspect", "--json", str(built / "model.onnx")]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["opset"] == {"ai.onnx": 18} and info["op_counts"]["Conv"] == 1


def test_cli_predict_runs_an_artifact_without_torch(built: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "model_agnostic", "predict", "--forbid-torch", "--config", str(built), str(XRAY)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["torch_imported"] is False


# ------------------------------------------------------------------ zip members and the cache
DIGITS = ROOT / "examples" / "digits" / "artifact"


def zip_of(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def unpacked(cache: Path) -> list[str]:
    folder = cache / "artifacts"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def link_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(("members", "message"), [
    ([("/etc/cron.d/evil", b"x")], "'/etc/cron.d/evil' is not a plain file name"),
    ([("sub/model.onnx", b"x")], "'sub/model.onnx' is not a plain file name"),
    ([("..", b"x")], "'..' is not a plain file name"),
    ([("..\\escaped.txt", b"x")], "is not a plain file name"),
    ([("C:/escaped.txt", b"x")], "is not a plain file name"),
    ([("config.toml\n", b"x")], "'config.toml\\n' is not a plain file name"),
    ([(".hidden", b"x")], "'.hidden' is not a plain file name"),
    ([("model.onnx", b"x"), ("model.onnx", b"y")], "'model.onnx' appears twice"),
    ([(link_member("model.onnx"), b"/etc/passwd")], "'model.onnx' is a symbolic link"),
    ([(f"f{i}.txt", b"x") for i in range(65)], "more than 64 members"),
])
def test_zip_members_that_are_not_plain_unique_files_are_refused_before_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    members: list[tuple[str | zipfile.ZipInfo, bytes]], message: str,
) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    evil = zip_of(tmp_path / "evil.zip", members)
    with pytest.raises(ArtifactError, match=re.escape(message)):
        open_artifact(evil)
    assert unpacked(tmp_path / "cache") == []


def test_zip_larger_than_the_unpacked_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(artifact_module, "_MAX_UNPACKED", 10)
    with pytest.raises(ArtifactError, match="more than 64 members or 10 bytes unpacked"):
        open_artifact(zip_of(tmp_path / "big.zip", [("model.onnx", b"x" * 11)]))


def corrupt_crc(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b"A" * 64) + 10] ^= 0xFF
    path.write_bytes(bytes(data))


def mark_encrypted(path: Path) -> None:
    data = bytearray(path.read_bytes())  # set bit 0 of the flags in both headers
    data[data.index(b"PK\x03\x04") + 6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(data))


def understate_size(path: Path) -> None:
    data = bytearray(path.read_bytes())  # a bomb that claims to be small
    struct.pack_into("<I", data, data.index(b"PK\x03\x04") + 22, 10)
    struct.pack_into("<I", data, data.index(b"PK\x01\x02") + 24, 10)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [corrupt_crc, mark_encrypted, understate_size])
def test_zip_that_fails_to_unpack_is_an_artifact_error_and_leaves_no_staging_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None]
) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    bad = zip_of(tmp_path / "bad.zip", [("model.onnx", b"A" * 64)])
    damage(bad)
    with pytest.raises(ArtifactError, match="bad.zip cannot be unpacked"):
        load_model(bad)
    assert unpacked(tmp_path / "cache") == []


def test_checksum_listing_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "digits"
    shutil.copytree(DIGITS, copy)
    shutil.move(copy / CHECKSUMS, tmp_path / "listing")
    (copy / CHECKSUMS).symlink_to(tmp_path / "listing")
    with pytest.raises(ArtifactError, match=f"{CHECKSUMS} is a symbolic link"):
        verify_checksums(copy)


def test_planted_bytecode_cache_does_not_run_instead_of_the_verified_source(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "digits"
    shutil.copytree(DIGITS, copy)
    marker = tmp_path / "pwned"
    source = (copy / "model.py").read_bytes()
    payload = source + f"\n__import__('pathlib').Path({str(marker)!r}).touch()\n".encode()
    code = compile(payload, str(copy / "model.py"), "exec")
    pyc = Path(importlib.util.cache_from_source(str(copy / "model.py")))
    pyc.parent.mkdir()
    pyc.write_bytes(importlib._bootstrap_external._code_to_hash_pyc(  # type: ignore[attr-defined]
        code, importlib.util.source_hash(source), checked=False))
    try:
        load_model(copy)
    except ArtifactError:
        pass  # refusing the planted cache is a fix too
    assert not marker.exists(), "code from a planted __pycache__ .pyc ran"


OPTIONED = f"""
[model]
class = "@TESTS@/tiny_models.py:{{cls}}"
[model.options]
thresholds = {{{{ a = 0.75, "b c" = 0.125, nested = {{{{ x = [1, 2.5] }}}} }}}}
since = 2026-12-03
groups = [["d"], ["a", "b"]]
[export]
example = "{XRAY.as_posix()}"
[verify]
generated = 1
"""


def test_options_of_every_toml_kind_and_none_round_trip_into_the_artifact(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from datetime import date

    from model_agnostic.config import load_config
    from model_agnostic.export.pipeline import export_model

    config = write_config(OPTIONED.format(cls="Optioned"))
    result = export_model(config, tmp_path / "a")
    assert result.report.verdict == "passed", result.report.summary()
    shipped = load_config(result.artifact / "config.toml")
    assert shipped.options == {
        "thresholds": {"a": 0.75, "b c": 0.125, "nested": {"x": [1, 2.5]}},
        "since": date(2026, 12, 3), "note": None, "groups": [["d"], ["a", "b"]],
        "broken": "",
    }
    model = load_model(result.artifact)
    assert model.note is None and model.since == date(2026, 12, 3)
    assert result.report.stages[3].status == "pass"  # the artifact answers as verified


def test_an_option_the_artifact_cannot_hold_is_refused_before_any_work(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from model_agnostic.export.pipeline import export_model
    from tests.tiny_models import CountingTinyImage

    CountingTinyImage.built.clear()
    config = write_config(CONFIG.replace("TinyImage", "UnstorableOption"))
    with pytest.raises(ExportError, match=r"option 'seen' = frozenset\(\{'a'\}\) \(frozenset\) "
                                          r"cannot be stored"):
        export_model(config, tmp_path / "a")
    assert CountingTinyImage.built == []


def test_none_options_in_a_config_are_read_back_as_none(write_config: Callable[..., Path]) -> None:
    from model_agnostic import ConfigError
    from model_agnostic.config import load_config

    config = write_config('[model]\nclass = "m.py:M"\nnone_options = ["note"]\n')
    assert load_config(config).options == {"note": None}
    both = write_config('[model]\nclass = "m.py:M"\nnone_options = ["note"]\n'
                        '[model.options]\nnote = "x"\n', name="both.toml")
    with pytest.raises(ConfigError, match="both in \\[model.options\\] and in \\[model\\] none_options"):
        load_config(both)
