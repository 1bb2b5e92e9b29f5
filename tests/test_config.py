"""Config files: validation with messages that name the key, backend choice and precedence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model_agnostic import ConfigError, ModelLoadError, load_model
from model_agnostic.config import BACKEND_ENV, import_model_class, load_config

Write = Callable[..., Path]

BASE = """
backend = "pytorch"
[model]
class = "@TESTS@/tiny_models.py:TinyNet"
"""


def test_valid_config_builds_the_model_on_its_backend(write_config: Write) -> None:
    pytest.importorskip("torch")
    model = load_model(write_config(BASE + "[model.options]\nrows = 2\n"))
    assert model.backend_name == "pytorch" and model.rows == 2
    assert model.predict(np.zeros((3, 8, 8)))["label"] in range(4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('backnd = "pytorch"\n', r"unknown key 'backnd' in the top level; allowed keys: \['backend'"),
        ("[pytorch]\nweigths = 'x.pt'\n", r"unknown key 'weigths' in \[pytorch\]; allowed keys: .*'weights'"),
        ("[onnxruntime]\nthreads = 2\n", r"unknown key 'threads' in \[onnxruntime\].*intra_op_num_threads"),
        ("[pytorch]\nstrict = 'yes'\n", "pytorch.strict must be bool, got 'yes'"),
        ("[pytorch]\nseed = true\n", "pytorch.seed must be int, got True"),
        ("[pytorch]\nrename = [['a']]\n", r"rename must be a list of \[regex, replacement\] pairs"),
        ("[onnxruntime]\nproviders = 'CPU'\n", "providers must be a list of strings"),
        ("pytorch = 3\n", r"\[pytorch\] must be a table"),
    ],
)
def test_bad_keys_and_types_are_rejected_by_name(write_config: Write, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(text))


def test_missing_model_class_says_how_to_write_it(write_config: Write) -> None:
    with pytest.raises(ConfigError, match=r"\[model\] needs 'class', e.g."):
        load_config(write_config('backend = "pytorch"\n'))


def test_unknown_model_option_names_the_allowed_ones(write_config: Write) -> None:
    pytest.importorskip("torch")
    with pytest.raises(ConfigError, match=r"config.toml: TinyNet has no option 'rowz'.*\['rows', 'scale'\]"):
        load_model(write_config(BASE + "[model.options]\nrowz = 2\n"))


def test_invalid_toml_and_missing_file_are_config_errors(write_config: Write, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write_config("backend = \n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_backend_precedence_argument_then_environment_then_file(
    write_config: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    path = write_config(BASE)
    monkeypatch.setenv(BACKEND_ENV, "onnxruntime")
    with pytest.raises(ConfigError, match=r"backend 'onnxruntime' needs \[onnxruntime\] path"):
        load_model(path)
    assert load_model(path, backend="pytorch").backend_name == "pytorch"
    monkeypatch.delenv(BACKEND_ENV)
    assert load_model(path).backend_name == "pytorch"


def test_unknown_backend_says_where_it_came_from(write_config: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(ConfigError, match=f"unknown backend 'tensorrt' \\(from {BACKEND_ENV}\\)"):
        load_model(write_config(BASE))


def test_paths_are_relative_to_the_config_file(write_config: Write, tmp_path: Path) -> None:
    cfg = load_config(write_config(BASE + "[onnxruntime]\npath = 'sub/m.onnx'\n"))
    assert cfg.backend_options("onnxruntime")["path"] == str(tmp_path / "sub" / "m.onnx")


def test_same_config_runs_on_both_backends_without_code_change(write_config: Write, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from model_agnostic import export_onnx

    path = write_config(BASE + "[pytorch]\nseed = 7\n[onnxruntime]\npath = 'tiny.onnx'\n")
    pt = load_model(path)
    export_onnx(pt, tmp_path / "tiny.onnx", np.zeros((3, 8, 8)))
    ox = load_model(path, backend="onnxruntime")
    raw = np.random.default_rng(1).random((3, 8, 8))
    np.testing.assert_allclose(pt.predict(raw)["logits"], ox.predict(raw)["logits"], atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("tiny_models.py", ConfigError, "must look like 'package.module:Class'"),
        ("nowhere.py:Net", ModelLoadError, "model file .* does not exist"),
        ("tiny_models.py:Nope", ModelLoadError, "no model_agnostic.Model subclass named 'Nope'"),
        ("json:JSONDecoder", ModelLoadError, "no model_agnostic.Model subclass named 'JSONDecoder'"),
        ("no.such.module:Net", ModelLoadError, "cannot import 'no.such.module'"),
    ],
)
def test_bad_model_class_specs_are_explained(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        import_model_class(spec, base_dir=Path(__file__).parent)


def test_module_path_import_works() -> None:
    cls = import_model_class("tests.tiny_models:TinyNet")
    assert cls.__name__ == "TinyNet"
