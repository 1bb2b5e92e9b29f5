"""The mutation suite: realistic deployment bugs must be refused and blamed on the right stage.

Each case of ``tests/mutation_models.CATALOGUE`` breaks a correct model the way a
deployment breaks it (a hand-ported preprocessing step, a wrongly exported graph, an
artifact that does not hold what was verified); ``export_model`` must write nothing and
name the stage. The same model without the bug must pass every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_agnostic.export.pipeline import export_model
from tests.conftest import XRAY
from tests.mutation_models import CATALOGUE, Mutation

pytest.importorskip("torch")
pytest.importorskip("torchvision")

CONFIG = """
[model]
class = "@TESTS@/mutation_models.py:Bugged"
[model.options]
temperature = 2.0
{options}
{session}
[export]
example = "{example}"
[verify]
generated = 3
"""


@pytest.fixture
def export(write_config: Callable[..., Path], tmp_path: Path) -> Callable[..., Any]:
    def run(mutation: Mutation | None) -> Any:
        options = "\n".join(f'{k} = "{v}"' for k, v in (mutation.options if mutation else {}).items())
        session = "\n".join(["[onnxruntime]", *(f'{k} = "{v}"' for k, v in mutation.session.items())]
                             ) if mutation and mutation.session else ""
        config = write_config(CONFIG.format(options=options, session=session,
                                            example=XRAY.as_posix()))
        with mutation.applied() if mutation else _nothing():
            return export_model(config, tmp_path / "artifact")

    return run


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def test_the_catalogue_has_at_least_twenty_bugs_across_the_stages() -> None:
    assert len(CATALOGUE) >= 20
    assert {m.stage for m in CATALOGUE} == {"preprocessing", "inference", "artifact"}
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)


def test_the_model_without_a_bug_passes_every_stage(export: Callable[..., Any], tmp_path: Path) -> None:
    result = export(None)
    report = result.report
    assert report.verdict == "passed", report.summary()
    assert [s.stage for s in report.stages] == ["preprocessing", "inference", "postprocessing", "artifact"]
    assert result.artifact == tmp_path / "artifact"


@pytest.mark.parametrize("mutation", CATALOGUE, ids=[m.name for m in CATALOGUE])
def test_each_deployment_bug_is_refused_and_blamed_on_its_stage(
    export: Callable[..., Any], mutation: Mutation, tmp_path: Path
) -> None:
    result = export(mutation)
    report = result.report
    assert result.artifact is None and not (tmp_path / "artifact").exists()
    assert report.verdict == "failed", report.summary()
    assert report.first_failure == mutation.stage, report.summary()
    if mutation.stage == "preprocessing":  # both backends share the bug: later stages agree
        assert [s.status for s in report.stages[1:3]] == ["pass", "pass"]
    if mutation.stage == "artifact":  # only the shipped artifact shows it
        assert [s.status for s in report.stages[:3]] == ["pass", "pass", "pass"]
    assert not list(tmp_path.glob(".artifact.staging-*"))  # the staging folder is gone
