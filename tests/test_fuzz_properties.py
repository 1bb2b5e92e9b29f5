"""Hypothesis properties of the library's input-facing code (generators: tests/fuzz_inputs.py).

- The v2 decoders, in process: v2 requests valid and broken, binary bodies with random
  header lengths and ``binary_data_size`` values for every datatype, raw bodies for random
  input specs. Each gives a request (that checks, answers and reads back) or a 400.
- The transforms on random PIL images of every mode and size, and on random arrays: a
  result or a ValueError/TypeError, equal to torchvision's where torchvision runs too.
- The config loader on generated configs and arbitrary TOML text or bytes: a Config or a
  ConfigError.

``tests/test_protocol.py`` fuzzes the JSON codec itself; ``bench/fuzz.py`` runs all of this
for 100 000+ inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_agnostic.errors import ConfigError
from model_agnostic.tensors import TensorSpec
from tests.fuzz_inputs import (
    TOML_SOUP,
    TransformCase,
    binary_requests,
    config_documents,
    config_problem,
    decode_problem,
    raw_requests,
    response_problem,
    transform_cases,
    transform_problem,
)
from tests.fuzz_requests import HttpCase, infer_cases


def fuzz(examples: int) -> Any:
    """Fixed seed, no example database: the same inputs on every run."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ----------------------------------------------------------------------------------- decoders
@fuzz(300)
@given(case=infer_cases())
def test_v2_requests_decode_in_process_or_give_400(case: HttpCase) -> None:
    header = dict(case.headers).get("Inference-Header-Content-Length")
    assert decode_problem(case.body, header) is None


@fuzz(300)
@given(case=binary_requests())
def test_binary_bodies_with_random_sizes_and_header_lengths_decode_or_give_400(
        case: tuple[bytes, str | None]) -> None:
    assert decode_problem(*case) is None
    assert response_problem(*case) is None


@fuzz(300)
@given(case=raw_requests())
def test_raw_bodies_decode_as_any_single_input_or_give_400(case: tuple[TensorSpec, bytes]) -> None:
    spec, body = case
    assert decode_problem(body, "0", raw_input=spec) is None


# --------------------------------------------------------------------------------- transforms
def test_transforms_give_a_result_or_value_or_type_error_and_match_torchvision() -> None:
    seen: set[tuple[str, bool]] = set()

    @fuzz(150)
    @given(case=transform_cases())
    def run(case: TransformCase) -> None:
        seen.add((case.name, isinstance(case.image, np.ndarray)))
        assert transform_problem(case) is None

    run()
    names = {name for name, _ in seen}  # the generator reaches every call, images and arrays
    assert {"Resize", "CenterCrop", "Pad", "ToTensor", "Normalize", "Grayscale", "FiveCrop",
            "TenCrop", "PILToTensor", "F.crop"} <= names, names
    assert ("Pad", True) in seen and ("Pad", False) in seen


# ------------------------------------------------------------------------------------- config
def check_config(source: str | bytes, folder: Path) -> None:
    found = config_problem(source, folder)
    assert found is None, found


def test_generated_configs_load_or_give_a_config_error(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzz-config")

    @fuzz(300)
    @given(text=config_documents())
    def run(text: str) -> None:
        check_config(text, folder)

    run()


def test_arbitrary_toml_text_and_bytes_load_or_give_a_config_error(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzz-toml")

    @fuzz(300)
    @given(source=TOML_SOUP | st.text(max_size=40) | st.binary(max_size=40))
    def run(source: str | bytes) -> None:
        check_config(source, folder)

    run()


def test_a_path_with_a_nul_character_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[model]\nclass = "x:Y"\n\n[pytorch]\nweights = "a\\u0000b"\n')
    with pytest.raises(ConfigError):
        from model_agnostic.config import load_config

        load_config(path)


@pytest.mark.parametrize("text", ["a = " + "[" * 1000 + "]" * 1000,
                                  "a = " + "{b = " * 1000 + "1" + "}" * 1000],
                         ids=["arrays", "inline-tables"])
def test_toml_nested_too_deeply_is_a_config_error(tmp_path: Path, text: str) -> None:
    from model_agnostic.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)
