"""The README's "Write your own model" example, run as written: its files are taken from
the README's code blocks, its commands from its shell block."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Write your own model", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", SECTION, re.S)


def _file_blocks() -> dict[str, str]:
    """Code blocks whose first line is a comment naming a file, by that name."""
    files = {}
    for _, body in BLOCKS:
        first = body.splitlines()[0]
        match = re.match(r"#\s*([\w.]+\.(?:py|toml))\b", first)
        if match:
            files[match.group(1)] = body
    return files


def _commands(skip: tuple[str, ...] = ("serve",)) -> list[list[str]]:
    """The ``model-agnostic`` lines of the shell block (comments dropped), minus ``skip``."""
    shell = next(body for lang, body in BLOCKS if lang == "bash")
    commands = []
    for line in shell.splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if words and words[0] == "model-agnostic" and words[1] not in skip:
            commands.append(words)
    return commands


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the README's files, a checkpoint of the right shape and two photos."""
    folder = tmp_path_factory.mktemp("readme")
    for name, body in _file_blocks().items():
        (folder / name).write_text(body, encoding="utf-8")
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=2)
    torch.save(network.state_dict(), folder / "checkpoint.pth")
    rng = np.random.default_rng(0)
    for name, size in (("cat.jpg", (320, 240)), ("dog.jpg", (200, 300))):
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(folder / name)
    return folder


def _run(words: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_agnostic", *words[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_the_readme_names_the_files_it_uses() -> None:
    assert set(_file_blocks()) == {"my_model.py", "train.py", "config.toml"}
    assert 'reference = "train.py:val_transform"' in _file_blocks()["config.toml"]
    assert [c[1] for c in _commands()] == ["export", "inspect", "predict", "predict", "verify"]


def test_the_example_runs_as_written_and_parity_passes(project: Path) -> None:
    for words in _commands():
        done = _run(words, project)
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stdout}\n{done.stderr}"
        if words[1] in ("export", "verify"):
            assert "parity PASSED" in done.stderr
            assert "PASS       preprocessing" in done.stderr
        if words[1] == "export":
            assert "PASS       artifact" in done.stderr
    inspect = _run(["model-agnostic", "inspect", "artifact"], project).stdout
    assert "parity      PASSED" in inspect


def test_without_the_reference_the_verdict_is_unverified_with_exit_code_4(project: Path) -> None:
    from model_agnostic.cli import EXIT_UNVERIFIED

    config = project / "config.toml"
    lines = [line for line in config.read_text().splitlines() if not line.startswith("reference")]
    (project / "unreferenced.toml").write_text("\n".join(lines) + "\n")
    verify = next(c for c in _commands() if c[1] == "verify")
    words = [("unreferenced.toml" if w == "config.toml" else w) for w in verify]
    done = _run(words, project)
    assert done.returncode == EXIT_UNVERIFIED, done.stderr
    assert "UNVERIFIED preprocessing" in done.stderr and "NOT a pass" in done.stderr
    export = next(c for c in _commands() if c[1] == "export")
    words = [("unreferenced.toml" if w == "config.toml" else "again" if w == "artifact" else w)
             for w in export]
    done = _run(words, project)
    assert done.returncode == EXIT_UNVERIFIED and not (project / "again").exists()
