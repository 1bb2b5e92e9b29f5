"""The model repository: version policies, hot swap, pinning, retirement, failures, safety."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import ConfigError, Model, ModelLoadError
from model_agnostic.errors import ModelNotFoundError, ModelNotReadyError, ServingError
from model_agnostic.serving.repository import (
    ModelRepository,
    ServedVersion,
    VersionPolicy,
)
from tests.conftest import ROOT

DIGITS = ROOT / "examples" / "digits" / "artifact"
POLL = 0.02


class Tagged(Model):
    """A fake model: its output is its tag, so an answer can be traced to a version."""

    tag: str = ""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(inputs.values())).shape[0]
        return {"output": np.full((rows, 1), int(self.tag))}


class Runner:
    """A fake make_runner result that refuses work once closed."""

    def __init__(self, served: ServedVersion) -> None:
        self.model = served.model
        self.closed = False

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert not self.closed, "runner used after close()"
        return self.model.infer(inputs)

    def close(self) -> None:
        self.closed = True
        self.model = None  # type: ignore[assignment]


class FakeLoader:
    """Loads ``model.txt`` (the tag) from a version folder; counts calls per folder."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, folder: Path) -> tuple[Model, dict[str, Any]]:
        self.calls.append(f"{folder.parent.name}/{folder.name}")
        text = (folder / "model.txt").read_text()
        if text.startswith("broken"):
            raise ModelLoadError(f"{folder / 'model.txt'} says it is broken")
        return Tagged(tag=text), {"batching": False}


def put(root: Path, name: str, version: int | str, tag: str | None = None) -> Path:
    """Write a version folder atomically (a hidden staging folder, then a rename)."""
    folder = root / name / str(version)
    staging = root / name / f".staging-{version}"
    staging.mkdir(parents=True)
    (staging / "model.txt").write_text(tag if tag is not None else str(version))
    staging.rename(folder)
    return folder


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def tag(served: ServedVersion) -> str:
    assert isinstance(served.model, Tagged)
    return served.model.tag


def refusal(repo: ModelRepository, expected: type[ServingError], pattern: str, name: str,
            version: str | None = None) -> ServingError:
    """The error acquire() raises for ``name``/``version``, checked against expectations."""
    with pytest.raises(expected, match=pattern) as info, repo.acquire(name, version):
        pass
    return info.value


def no_filesystem(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"the filesystem was touched: {args}")


def collected(ref: weakref.ref[Any]) -> bool:
    gc.collect()
    return ref() is None


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
def repo_factory(tmp_path: Path, loader: FakeLoader) -> Iterator[Callable[..., ModelRepository]]:
    made: list[ModelRepository] = []

    def make(**kwargs: Any) -> ModelRepository:
        kwargs.setdefault("loader", loader)
        kwargs.setdefault("poll_interval_s", POLL)
        repo = ModelRepository(tmp_path / "models", **kwargs)
        made.append(repo)
        return repo

    (tmp_path / "models").mkdir()
    yield make
    for repo in made:
        repo.stop()


def model_ref(repo: ModelRepository, name: str, version: str | None = None) -> weakref.ref[Any]:
    with repo.acquire(name, version) as served:
        return weakref.ref(served.model)


# ------------------------------------------------------------------ policies
def test_initial_scan_serves_the_latest_version_and_ignores_other_folders(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], loader: FakeLoader,
) -> None:
    root = tmp_path / "models"
    for version in (1, 2, 10):
        put(root, "m", version)
    for junk in ("0", "007", "abc", ".hidden"):
        (root / "m" / junk).mkdir()
    (root / "m" / "11").write_text("a file, not a folder")
    repo = repo_factory()
    assert not repo.ready
    repo.scan()
    assert repo.ready and repo.names() == ["m"] and repo.ready_versions("m") == ["10"]
    with repo.acquire("m") as served:
        assert (served.name, served.version, served.options) == ("m", "10", {"batching": False})
        assert served.model.infer({"x": np.zeros((2, 1))})["output"].tolist() == [[10], [10]]
    assert loader.calls == ["m/10"]


@pytest.mark.parametrize("policy, served", [
    ("latest", ["3"]), ("latest:2", ["2", "3"]), ("all", ["1", "2", "3"]),
    ("specific:1,3", ["1", "3"]), ("specific:3,7", ["3"]),
])
def test_version_policy_chooses_the_served_versions(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], policy: str,
    served: list[str],
) -> None:
    for version in (1, 2, 3):
        put(tmp_path / "models", "m", version)
    repo = repo_factory(version_policy=policy)
    repo.scan()
    assert repo.ready_versions("m") == served
    with repo.acquire("m") as default:
        assert default.version == served[-1]


@pytest.mark.parametrize("text", ["newest", "latest:0", "latest:", "all:2", "specific:",
                                  "specific:a", "specific:0,1"])
def test_invalid_version_policy_is_rejected_naming_the_valid_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="'latest', 'latest:N'.*'all'.*'specific:1,3'"):
        ModelRepository(version_policy=text)
    assert str(VersionPolicy.parse("specific:3,1")) == "specific:1,3"


# ---------------------------------------------------------------- hot swap
def test_new_version_is_picked_up_swapped_in_and_the_old_one_collected(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    runners: list[Runner] = []

    def make_runner(served: ServedVersion) -> Runner:
        runners.append(Runner(served))
        return runners[-1]

    repo = repo_factory(make_runner=make_runner)
    repo.start()
    assert repo.ready_versions("m") == ["1"]
    old = model_ref(repo, "m")
    put(root, "m", 2)
    wait_for(lambda: repo.ready_versions("m") == ["2"])
    with repo.acquire("m") as served:
        assert served.version == "2" and tag(served) == "2"
        assert served.runner is runners[1] and not runners[1].closed
    wait_for(lambda: runners[0].closed and collected(old))  # unloaded just after the swap


def test_in_flight_request_finishes_on_the_old_version_while_new_ones_get_the_new(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    repo = repo_factory(make_runner=Runner)
    repo.scan()
    with repo.acquire("m") as pinned:
        old = weakref.ref(pinned.model)
        put(root, "m", 2)
        repo.scan()  # first sighting: not stable yet
        assert repo.ready_versions("m") == ["1"]
        repo.scan()  # unchanged since the last poll: loaded, then swapped
        assert repo.ready_versions("m") == ["2"]
        with repo.acquire("m") as fresh:
            assert fresh.version == "2"
        assert pinned.retired and pinned.version == "1"
        runner = pinned.runner
        assert runner.infer({"x": np.zeros((1, 1))})["output"].tolist() == [[1]]
        assert not runner.closed
    assert runner.closed and pinned.model is None and pinned.runner is None
    del pinned
    assert collected(old)


def test_changed_version_folder_is_reloaded_and_swapped(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    folder = put(tmp_path / "models", "m", 1, tag="5")
    repo = repo_factory()
    repo.scan()
    old = model_ref(repo, "m")
    (folder / "model.txt").write_text("66")
    repo.scan()
    assert model_ref(repo, "m")() is old()  # changed, but not stable yet
    repo.scan()
    with repo.acquire("m") as served:
        assert (served.version, tag(served)) == ("1", "66")
    assert collected(old)


def test_acquisitions_during_several_swaps_are_consistent_and_never_fail(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    repo = repo_factory(make_runner=Runner, poll_interval_s=0.01)
    repo.start()
    errors: list[BaseException] = []
    seen: dict[int, set[str]] = {}
    stop = threading.Event()

    def client(index: int) -> None:
        seen[index] = set()
        while not stop.is_set():
            try:
                with repo.acquire("m") as served:
                    answer = served.runner.infer({"x": np.zeros((1, 1))})["output"]
                    assert int(answer[0, 0]) == int(served.version) == int(tag(served))
                    seen[index].add(served.version)
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    def served_everywhere(version: str) -> bool:
        swapped = repo.ready_versions("m") == [version]
        return swapped and all(version in s for s in seen.values()) or bool(errors)

    wait_for(lambda: len(seen) == len(threads) and all(seen.values()) or bool(errors))
    refs = []
    for version in range(2, 6):
        refs.append(model_ref(repo, "m"))
        put(root, "m", version)
        wait_for(partial(served_everywhere, str(version)))
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(s == {"1", "2", "3", "4", "5"} for s in seen.values())
    wait_for(lambda: all(collected(ref) for ref in refs))


# ----------------------------------------------------------------- stability
def test_half_written_version_is_not_loaded_until_its_listing_is_stable(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], loader: FakeLoader,
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    repo = repo_factory()
    repo.scan()
    folder = root / "m" / "2"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * 100)
    repo.scan()
    assert repo.status()["m"]["loading"] == ["2"]
    with (folder / "weights.bin").open("ab") as stream:  # the copy goes on
        stream.write(b"x" * 100)
    repo.scan()
    (folder / "model.txt").write_text("2")
    repo.scan()
    assert repo.ready_versions("m") == ["1"] and loader.calls == ["m/1"]
    refusal(repo, ModelNotReadyError, "version 2 .*still loading", "m", "2")
    repo.scan()
    assert repo.ready_versions("m") == ["2"] and loader.calls == ["m/1", "m/2"]
    assert repo.status()["m"]["loading"] == []


# ----------------------------------------------------------------- failures
def test_broken_new_version_is_reported_and_the_old_one_keeps_serving(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], loader: FakeLoader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    repo = repo_factory()
    repo.scan()
    broken = put(root, "m", 2, tag="broken")
    with caplog.at_level(logging.ERROR, logger="model_agnostic.serving"):
        repo.scan()
        repo.scan()
    assert "version 2" in caplog.text and "broken" in caplog.text
    failed = repo.status()["m"]["failed"]["2"]
    assert "model.txt" in failed["error"] and failed["time"] <= time.time()
    assert repo.ready_versions("m") == ["1"]
    with repo.acquire("m") as served:
        assert served.version == "1"
    info = refusal(repo, ModelNotReadyError, "version 2 .*failed to load.*broken", "m", "2")
    assert info.status == 503
    repo.scan()
    repo.scan()
    assert loader.calls.count("m/2") == 1  # not retried while the folder is unchanged
    (broken / "model.txt").write_text("2")
    repo.scan()
    repo.scan()
    assert repo.ready_versions("m") == ["2"] and repo.status()["m"]["failed"] == {}


def test_model_whose_only_version_fails_is_known_but_not_ready(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    put(tmp_path / "models", "m", 1, tag="broken")
    repo = repo_factory()
    repo.start()
    assert repo.names() == ["m"] and not repo.ready
    info = refusal(repo, ModelNotReadyError, "no version ready.*version 1 failed", "m")
    assert info.status == 503


# ---------------------------------------------------------------- retiring
def test_removed_version_folders_are_retired(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    root = tmp_path / "models"
    for version in (1, 2, 3):
        put(root, "m", version)
    put(root, "other", 1)
    repo = repo_factory(version_policy="latest:2", make_runner=Runner)
    repo.scan()
    assert repo.ready_versions("m") == ["2", "3"]
    with repo.acquire("m", "3") as three:
        gone = weakref.ref(three.model)
        runner = three.runner
    shutil.rmtree(root / "m" / "3")
    repo.scan()  # 1 has been stable all along: it is loaded at once
    assert repo.ready_versions("m") == ["1", "2"] and runner.closed
    del three
    assert collected(gone)
    refusal(repo, ModelNotFoundError, r"no version '3'.*\['1', '2'\]", "m", "3")
    shutil.rmtree(root / "m")
    repo.scan()
    assert repo.names() == ["other"] and "m" not in repo.status()


def test_unknown_model_or_version_is_404_listing_what_exists(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    for version in (1, 2):
        put(tmp_path / "models", "m", version)
    repo = repo_factory()
    repo.scan()
    info = refusal(repo, ModelNotFoundError, r"'nope'.*served models: \['m'\]", "nope")
    assert info.status == 404
    refusal(repo, ModelNotFoundError, r"no version '9'; served versions: \['2'\]", "m", "9")
    refusal(
        repo, ModelNotFoundError, r"version '1' \(its folder exists.*'latest'", "m", "1")


@pytest.mark.parametrize("name", ["../m", "m/../m", "..", "a/b", "x\0y", "..\\m", ".", ""])
def test_path_traversal_names_are_refused(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], loader: FakeLoader,
    monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    put(tmp_path / "models", "m", 1)
    repo = repo_factory()
    repo.scan()
    with monkeypatch.context() as patch:  # refused without touching the filesystem
        for function in ("stat", "lstat", "scandir", "listdir", "open"):
            patch.setattr(os, function, no_filesystem)
        refusal(repo, ModelNotFoundError, "no model is named", name)
    assert loader.calls == ["m/1"]


def test_links_to_outside_the_repository_are_ignored(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    root = tmp_path / "models"
    put(tmp_path / "outside", "evil", 1)
    put(root, "m", 1)
    (root / "evil").symlink_to(tmp_path / "outside" / "evil")
    (root / "m" / "2").symlink_to(tmp_path / "outside" / "evil" / "1")
    (root / "alias").symlink_to(root / "m")  # inside the repository: served
    stolen = put(root, "stolen", 1)
    (stolen / "secret.txt").symlink_to(tmp_path / "outside" / "evil" / "1" / "model.txt")
    repo = repo_factory()
    repo.scan()
    assert repo.names() == ["alias", "m", "stolen"]
    assert repo.ready_versions("m") == ["1"] and repo.ready_versions("alias") == ["1"]
    assert "secret.txt" in repo.status()["stolen"]["failed"]["1"]["error"]


# ------------------------------------------------------------ real artifacts
def digits_version(root: Path, version: int, tamper: str | None = None) -> Path:
    staging = root / "digits" / f".staging-{version}"
    shutil.copytree(DIGITS, staging)
    if tamper == "byte":
        data = bytearray((staging / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (staging / "model.onnx").write_bytes(bytes(data))
    elif tamper == "delete":
        (staging / "model.onnx").unlink()
    return staging.rename(root / "digits" / str(version))


def predict_digit(repo: ModelRepository, version: str | None = None) -> tuple[str, int]:
    image = np.load(ROOT / "examples" / "digits" / "test_split.npz")["X"][0]
    with repo.acquire("digits", version) as served:
        return served.version, served.model.predict(image)["digit"]


@pytest.mark.parametrize("tamper, message", [
    ("byte", "'model.onnx' does not match its SHA-256 checksum"),
    ("delete", "'model.onnx' is missing"),
])
def test_tampered_artifact_version_is_refused_naming_the_file(
    tmp_path: Path, tamper: str, message: str,
) -> None:
    root = tmp_path / "models"
    digits_version(root, 1)
    repo = ModelRepository(root)
    try:
        repo.scan()
        assert predict_digit(repo) == ("1", 2)
        digits_version(root, 2, tamper)
        repo.scan()
        repo.scan()
        assert message in repo.status()["digits"]["failed"]["2"]["error"]
        assert repo.ready_versions("digits") == ["1"] and predict_digit(repo) == ("1", 2)
        shutil.copyfile(DIGITS / "model.onnx", root / "digits" / "2" / "model.onnx")
        repo.scan()
        repo.scan()
        assert predict_digit(repo) == ("2", 2) and repo.ready_versions("digits") == ["2"]
    finally:
        repo.stop()


def test_plain_folder_and_zip_versions_load_with_their_serving_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_AGNOSTIC_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "models"
    plain = digits_version(root, 1)
    (plain / "CHECKSUMS.sha256").unlink()
    with (plain / "config.toml").open("a") as stream:
        stream.write("\n[serving]\nmax_batch_size = 4\n")
    (root / "digits" / "2").mkdir()
    with zipfile.ZipFile(root / "digits" / "2" / "digits.zip", "w") as archive:
        for file in sorted(DIGITS.iterdir()):
            archive.write(file, file.name)
    repo = ModelRepository(root, version_policy="all")
    try:
        repo.scan()
        with repo.acquire("digits", "1") as served:
            assert served.options == {"max_batch_size": 4}
        assert predict_digit(repo, "1") == ("1", 2) and predict_digit(repo, "2") == ("2", 2)
    finally:
        repo.stop()


def test_changed_model_source_is_imported_afresh_on_reload(tmp_path: Path) -> None:
    root = tmp_path / "models"
    plain = digits_version(root, 1)
    (plain / "CHECKSUMS.sha256").unlink()
    repo = ModelRepository(root)
    try:
        repo.scan()
        with repo.acquire("digits") as served:
            assert not hasattr(served.model, "MARK")
        with (plain / "model.py").open("a") as stream:
            stream.write("\nDigits.MARK = 2\n")
        repo.scan()
        repo.scan()
        with repo.acquire("digits") as served:
            assert served.model.MARK == 2  # type: ignore[attr-defined]
    finally:
        repo.stop()


# --------------------------------------------------------------- lifecycle
def test_add_serves_a_model_not_from_disk() -> None:
    repo = ModelRepository(make_runner=Runner)
    assert not repo.ready
    first = repo.add("m", Tagged(tag="1"))
    repo.add("m", Tagged(tag="2"), "2", {"batching": True})
    assert repo.ready and repo.ready_versions("m") == ["1", "2"]
    with repo.acquire("m") as served:
        assert (served.version, served.options) == ("2", {"batching": True})
    repo.add("m", Tagged(tag="11"), "1")  # same version: swapped
    assert first.retired and first.runner is None
    with pytest.raises(ConfigError, match="model name '../x' is not valid"):
        repo.add("../x", Tagged(tag="1"))
    repo.start()
    repo.stop()
    assert repo.names() == [] and not repo.ready


def test_added_model_is_never_unloaded_by_the_watcher(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    put(tmp_path / "models", "m", 1)
    repo = repo_factory()
    repo.start()
    repo.add("m", Tagged(tag="7"), "7")
    repo.scan()
    repo.scan()
    assert repo.ready_versions("m") == ["7"] and repo.status()["m"]["source"] == "added"


def test_no_thread_at_construction_and_stop_leaves_none_alive(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    def watchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "repository" in t.name]

    put(tmp_path / "models", "m", 1)
    repo = repo_factory(make_runner=Runner)
    assert watchers() == []
    repo.start()
    assert len(watchers()) == 1 and repo.ready
    with repo.acquire("m") as served:
        runner = served.runner
    repo.stop()
    assert watchers() == [] and runner.closed and not repo.ready and repo.names() == []


def test_missing_root_fails_the_start(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is not a folder"):
        repo.start()
    repo.stop()
    assert os.listdir(tmp_path) == []


def test_vanished_root_keeps_everything_serving(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository],
) -> None:
    put(tmp_path / "models", "m", 1)
    repo = repo_factory()
    repo.scan()
    (tmp_path / "models").rename(tmp_path / "moved")
    with pytest.raises(ConfigError, match="is not a folder"):
        repo.scan()
    assert repo.ready_versions("m") == ["1"] and repo.ready


@pytest.mark.parametrize("where", ["model", "version"])
def test_symlink_loop_is_ignored_and_the_rest_of_the_repository_serves(
    tmp_path: Path, repo_factory: Callable[..., ModelRepository], where: str,
) -> None:
    root = tmp_path / "models"
    put(root, "m", 1)
    put(root, "n", 1)
    loop = root / "loop" if where == "model" else root / "m" / "2"
    loop.symlink_to(loop)
    repo = repo_factory()
    repo.scan()
    assert repo.names() == ["m", "n"]
    assert repo.ready_versions("m") == ["1"] and repo.ready_versions("n") == ["1"]
