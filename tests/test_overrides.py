"""Deploy-time settings over an artifact: threads and providers from the environment, a
file or --set, validated like a config, never touching what was verified."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from model_agnostic import ArtifactError, ConfigError, load_model
from model_agnostic.cli import EXIT_ERROR, main
from model_agnostic.config import (
    apply_overrides,
    deploy_layers,
    overrides_from_env,
    parse_assignments,
    resolve,
)
from tests.conftest import XRAY

CONFIG = f"""
[model]
class = "@TESTS@/tiny_models.py:TinyImage"
[onnxruntime]
intra_op_num_threads = 2
graph_optimization_level = "all"
[export]
example = "{XRAY.as_posix()}"
[verify]
generated = 0
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from model_agnostic.export.pipeline import export_model
    from tests.conftest import TESTS

    folder = tmp_path_factory.mktemp("overrides")
    config = folder / "config.toml"
    config.write_text(CONFIG.replace("@TESTS@", TESTS.as_posix()))
    result = export_model(config, folder / "tiny")
    assert result.artifact is not None
    return result.artifact


def _threads(model: object) -> int:
    return int(model.session.get_session_options().intra_op_num_threads)  # type: ignore[attr-defined]


def test_the_artifact_ships_the_session_settings_it_was_verified_with(artifact: Path) -> None:
    text = (artifact / "config.toml").read_text()
    assert "intra_op_num_threads = 2" in text and 'graph_optimization_level = "all"' in text
    assert _threads(load_model(artifact)) == 2


def test_an_artifact_runs_with_one_thread_by_override_and_its_checksums_still_hold(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (artifact / "config.toml").read_bytes()
    assert _threads(load_model(artifact, overrides={"onnxruntime": {"intra_op_num_threads": 1}})) == 1
    monkeypatch.setenv("MODEL_AGNOSTIC_ONNXRUNTIME_INTRA_OP_NUM_THREADS", "1")
    model = load_model(artifact)
    assert _threads(model) == 1 and model.artifact_parity["verdict"] == "passed"
    assert (artifact / "config.toml").read_bytes() == before  # nothing written
    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    (tampered / "config.toml").write_text(before.decode() + "\n# edited\n")
    with pytest.raises(ArtifactError, match="does not match its SHA-256"):
        load_model(tampered, overrides={"onnxruntime": {"intra_op_num_threads": 1}})


def test_layers_apply_file_then_environment_then_set(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deploy.toml").write_text("[onnxruntime]\nintra_op_num_threads = 3\n"
                                          "[server]\nthreads = 4\n")
    monkeypatch.setenv("MODEL_AGNOSTIC_ONNXRUNTIME_INTRA_OP_NUM_THREADS", "1")
    cfg = apply_overrides(resolve(artifact), *deploy_layers(tmp_path / "deploy.toml"))
    assert cfg.sections["onnxruntime"]["intra_op_num_threads"] == 1
    assert cfg.server == {"threads": 4}
    assert cfg.overridden["onnxruntime.intra_op_num_threads"] == "the environment"
    cfg = apply_overrides(resolve(artifact), *deploy_layers(
        tmp_path / "deploy.toml", ["onnxruntime.intra_op_num_threads=2"]))
    assert cfg.sections["onnxruntime"]["intra_op_num_threads"] == 2
    assert _threads(load_model(cfg)) == 2  # the environment is not applied twice


def test_values_read_as_toml_else_as_text() -> None:
    env = {"MODEL_AGNOSTIC_ONNXRUNTIME_PROVIDERS": '["CPUExecutionProvider"]',
           "MODEL_AGNOSTIC_ONNXRUNTIME_GRAPH_OPTIMIZATION_LEVEL": "basic",
           "MODEL_AGNOSTIC_SERVER_MODEL_CONTROL": "true",
           "MODEL_AGNOSTIC_BACKEND": "pytorch", "MODEL_AGNOSTIC_CACHE": "/tmp/x"}
    assert overrides_from_env(env) == {
        "onnxruntime": {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "basic"},
        "server": {"model_control": True},
    }
    assert parse_assignments(["serving.max_batch_size=8"]) == {"serving": {"max_batch_size": 8}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"onnxruntime": {"intra_op_threads": 1}}, "unknown key 'intra_op_threads'"),
        ({"onnxruntime": {"intra_op_num_threads": "one"}}, "must be int"),
        ({"onnxruntime": {"path": "other.onnx"}}, "path cannot be overridden"),
        ({"pytorch": {"weights": "other.pth"}}, "weights cannot be overridden"),
        ({"model": {"class": "x.py:Y"}}, r"\[model\] cannot be set at deploy time"),
    ],
)
def test_bad_overrides_are_config_errors(
    artifact: Path, overrides: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(artifact, overrides=overrides)


def test_the_command_line_takes_set_and_overrides(
    artifact: Path, capsys: pytest.CaptureFixture[str], write_config: Callable[..., Path]
) -> None:
    code = main(["predict", "--config", str(artifact), "--set", "onnxruntime.nope=1", str(XRAY)])
    assert code == EXIT_ERROR and "unknown key 'nope'" in capsys.readouterr().err
    deploy = write_config("[onnxruntime]\nintra_op_num_threads = 1\n", name="deploy.toml")
    assert main(["predict", "--config", str(artifact), "--overrides", str(deploy), str(XRAY)]) == 0
