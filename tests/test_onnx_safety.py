"""ONNX external data: only files inside the model's folder, checked before ONNX Runtime runs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic import ModelLoadError, OnnxModel, load_model
from model_agnostic.onnx_safety import check_onnx_model, external_references
from model_agnostic.serving.repository import ModelRepository

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

WEIGHTS = np.arange(4, dtype=np.float32)
SECRET = np.full(4, 99, dtype=np.float32)
ALLOWED = "allowed: a relative path"
PLAIN_MODEL = """
from model_agnostic import Model


class Plain(Model):
    pass
"""


# ------------------------------------------------------------------ building models
def external(location: str | None = "w.bin", name: str = "w", **extra: str) -> TensorProto:
    """A float[4] tensor whose data lives in ``location`` (entries in the given order)."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    entries = ([("location", location)] if location is not None else []) + list(extra.items())
    for key, value in entries:
        tensor.external_data.add(key=key, value=value)
    return tensor


def add_model(
    initializers: list[TensorProto] | None = None, nodes: list[Any] | None = None, **fields: Any
) -> Any:
    """y = x + w, float[4]; ``w`` comes from ``initializers`` or ``nodes``."""
    graph = helper.make_graph(
        [*(nodes or []), helper.make_node("Add", ["x", "w"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializers if initializers is not None else [external()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **fields)
    model.ir_version = 8
    return model


def save(model: Any, folder: Path) -> Path:
    """Write the proto as is (onnx.save would write external tensors' data itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/model/w.bin (the weights) and tmp/outside/secret.bin (what must never be read)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(WEIGHTS.tobytes())
    (tmp_path / "outside" / "secret.bin").write_bytes(SECRET.tobytes())
    return tmp_path


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every InferenceSession created during the test (it still really runs)."""
    ort = pytest.importorskip("onnxruntime")
    made: list[Any] = []
    real = ort.InferenceSession

    def spy(model: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    yield made


def refusal(source: Path | bytes, sessions: list[Any]) -> str:
    """The ModelLoadError message for ``source``; no session may have been created."""
    with pytest.raises(ModelLoadError) as info:
        OnnxModel(source)
    assert sessions == [], "an ONNX Runtime session was created before the refusal"
    return str(info.value)


def run(model: OnnxModel) -> np.ndarray:
    return model.infer({"x": np.ones(4, np.float32)})["y"]


# ------------------------------------------------------------------ what is allowed
@pytest.mark.parametrize("location", ["w.bin", "./w.bin", "sub/w.bin", "link.bin"])
def test_external_data_inside_the_model_folder_loads_and_runs(
    layout: Path, location: str
) -> None:
    folder = layout / "model"
    (folder / "sub").mkdir()
    shutil.copy(folder / "w.bin", folder / "sub" / "w.bin")
    (folder / "link.bin").symlink_to(folder / "sub" / "w.bin")  # a link that stays inside
    path = save(add_model([external(location, offset="0", length="16")]), folder)
    np.testing.assert_array_equal(run(OnnxModel(path)), WEIGHTS + 1)


def test_data_written_by_onnx_save_loads(layout: Path) -> None:
    model = add_model([onnx.numpy_helper.from_array(WEIGHTS, "w")])  # raw_data: movable
    path = layout / "model" / "saved.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="saved.data",
              size_threshold=0)
    assert [ref.value("location") for ref in external_references(onnx.load(
        str(path), load_external_data=False))] == ["saved.data"]
    np.testing.assert_array_equal(run(OnnxModel(path)), WEIGHTS + 1)


def test_model_folder_reached_through_a_symlink_is_accepted(layout: Path) -> None:
    save(add_model(), layout / "model")
    (layout / "alias").symlink_to(layout / "model", target_is_directory=True)
    np.testing.assert_array_equal(run(OnnxModel(layout / "alias" / "model.onnx")), WEIGHTS + 1)


# ------------------------------------------------------------------ escapes by name
@pytest.mark.parametrize(("location", "reason"), [
    ("../outside/secret.bin", "climbs out with '..'"),
    ("a/../../outside/secret.bin", "climbs out with '..'"),
    ("../../../../../../../../etc/passwd", "climbs out with '..'"),
    ("@ABS@", "is an absolute path"),
    ("/etc/passwd", "is an absolute path"),
    ("//server/share/w.bin", "is an absolute path"),
    ("C:/Windows/win.ini", "is an absolute path"),
    ("C:w.bin", "is an absolute path"),
    ("..\\outside\\secret.bin", "a NUL or a backslash"),
    ("w.bin\0../../outside/secret.bin", "a NUL or a backslash"),
    ("", "it has no location"),
    (None, "it has no location"),
])
def test_location_outside_the_folder_is_refused_before_a_session_exists(
    layout: Path, sessions: list[Any], location: str | None, reason: str
) -> None:
    if location == "@ABS@":
        location = str(layout / "outside" / "secret.bin")
    folder = layout / "model"
    message = refusal(save(add_model([external(location)]), folder), sessions)
    assert "tensor 'w'" in message and repr(location) in message
    assert repr(str(folder)) in message and reason in message
    assert f"{ALLOWED}, with '/' separators and no '..', to a regular file inside" in message


def test_onnx_runtime_memory_address_tag_is_refused(layout: Path, sessions: list[Any]) -> None:
    # ONNX Runtime reserves this location for data at a process memory address (= offset).
    tensor = external("*/_ORT_MEM_ADDR_/*", offset=str(SECRET.ctypes.data), length="16")
    message = refusal(save(add_model([tensor]), layout / "model"), sessions)
    assert "does not resolve to an existing file" in message


# ------------------------------------------------------------------ escapes by link
def link_file(folder: Path, outside: Path) -> str:
    (folder / "stolen.bin").symlink_to(outside / "secret.bin")
    return "stolen.bin"


def link_folder(folder: Path, outside: Path) -> str:
    (folder / "weights").symlink_to(outside, target_is_directory=True)
    return "weights/secret.bin"


def link_to_device(folder: Path, outside: Path) -> str:
    (folder / "zero.bin").symlink_to("/dev/zero")
    return "zero.bin"


def link_chain(folder: Path, outside: Path) -> str:
    (folder / "one.bin").symlink_to("two.bin")  # inside, then out
    (folder / "two.bin").symlink_to(outside / "secret.bin")
    return "one.bin"


@pytest.mark.parametrize("make_link", [link_file, link_folder, link_to_device, link_chain])
def test_symlink_out_of_the_folder_is_refused(
    layout: Path, sessions: list[Any], make_link: Callable[[Path, Path], str]
) -> None:
    folder = layout / "model"
    location = make_link(folder, layout / "outside")
    message = refusal(save(add_model([external(location)]), folder), sessions)
    assert repr(location) in message and "resolves (through a symbolic link) to" in message
    assert "outside the folder" in message and ALLOWED in message


# ------------------------------------------------------------------ files that are not data
def fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.bin")  # opening it would block ONNX Runtime forever
    return "pipe.bin"


def directory(folder: Path) -> str:
    (folder / "dir.bin").mkdir()
    return "dir.bin"


def missing(folder: Path) -> str:
    return "missing.bin"


def loop(folder: Path) -> str:
    (folder / "a.bin").symlink_to("b.bin")
    (folder / "b.bin").symlink_to("a.bin")
    return "a.bin"


@pytest.mark.parametrize(("make", "reason"), [
    (fifo, "it is not a regular file"),
    (directory, "it is not a regular file"),
    (missing, "does not resolve to an existing file"),
    (loop, "does not resolve to an existing file"),
])
def test_data_file_that_is_not_a_regular_file_is_refused_without_opening_it(
    layout: Path, sessions: list[Any], make: Callable[[Path], str], reason: str
) -> None:
    if make is fifo and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    folder = layout / "model"
    location = make(folder)
    message = refusal(save(add_model([external(location)]), folder), sessions)
    assert repr(location) in message and reason in message


# ------------------------------------------------------------------ offset and length
@pytest.mark.parametrize(("entries", "reason"), [
    ({"offset": "-4"}, "its offset '-4' is not a non-negative integer"),
    ({"length": "-1"}, "its length '-1' is not a non-negative integer"),
    ({"offset": "0x10"}, "its offset '0x10' is not a non-negative integer"),
    ({"offset": " 4"}, "its offset ' 4' is not a non-negative integer"),
    ({"length": "1e3"}, "its length '1e3' is not a non-negative integer"),
    ({"length": "16.0"}, "its length '16.0' is not a non-negative integer"),
    ({"offset": "٣"}, "its offset '٣' is not a non-negative integer"),  # a non-ASCII digit
    ({"offset": "9" * 30}, "is not a non-negative integer"),
    ({"offset": "0", "length": "17"}, "bytes 0 to 17 lie beyond the end of the 16-byte file"),
    ({"offset": "16", "length": "4"}, "bytes 16 to 20 lie beyond the end of the 16-byte file"),
    ({"offset": "20"}, "bytes 20 to 20 lie beyond the end of the 16-byte file"),
])
def test_offset_and_length_must_be_non_negative_and_inside_the_file(
    layout: Path, sessions: list[Any], entries: dict[str, str], reason: str
) -> None:
    message = refusal(save(add_model([external(**entries)]), layout / "model"), sessions)
    assert "tensor 'w'" in message and reason in message


@pytest.mark.parametrize(("entries", "reason"), [
    ([("location", "w.bin"), ("location", "../outside/secret.bin")], "repeats"),
    ([("location", "../outside/secret.bin"), ("location", "w.bin")], "repeats"),
    ([("location", "w.bin"), ("length", "16"), ("length", "4")], "repeats"),
    ([("location", "w.bin"), ("basepath", "/")], "unknown external_data keys ['basepath']"),
])
def test_repeated_or_unknown_external_data_keys_are_refused(
    layout: Path, sessions: list[Any], entries: list[tuple[str, str]], reason: str
) -> None:
    tensor = external(None)
    for key, value in entries:
        tensor.external_data.add(key=key, value=value)
    message = refusal(save(add_model([tensor]), layout / "model"), sessions)
    assert reason in message


def test_external_data_entries_without_the_external_flag_are_still_checked(
    layout: Path, sessions: list[Any]
) -> None:
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], WEIGHTS.tolist())
    tensor.external_data.add(key="location", value="../outside/secret.bin")
    message = refusal(save(add_model([tensor]), layout / "model"), sessions)
    assert "'../outside/secret.bin'" in message


# ------------------------------------------------------------------ every place a tensor hides
def constant_node(tensor: TensorProto) -> dict[str, Any]:
    return {"initializers": [], "nodes": [helper.make_node("Constant", [], ["w"], "const",
                                                            value=tensor)]}


def sparse_initializer(tensor: TensorProto) -> dict[str, Any]:
    indices = helper.make_tensor("w_idx", TensorProto.INT64, [4], [0, 1, 2, 3])
    model = add_model([])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(tensor, indices, [4]))
    return {"model": model}


def tensor_list_attribute(tensor: TensorProto) -> dict[str, Any]:
    node = helper.make_node("Custom", ["x"], ["w"], "custom", domain="my.ops", tables=[tensor])
    return {"initializers": [], "nodes": [node]}


def subgraph(tensor: TensorProto) -> dict[str, Any]:
    out = [helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])]
    branch = helper.make_graph([helper.make_node("Identity", ["v_in"], ["v"])], "then", [], out,
                               [tensor])
    branch.initializer[0].name = "v_in"
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["v"])], "else", [], out)
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["cond"], ["w"], "branch", then_branch=branch, else_branch=other)
    return {"initializers": [cond], "nodes": [node]}


def function(tensor: TensorProto) -> dict[str, Any]:
    body = [helper.make_node("Constant", [], ["c"], "inner", value=tensor)]
    fn = helper.make_function("my.fns", "MakeW", [], ["c"], body,
                              [helper.make_opsetid("", 17)])
    call = helper.make_node("MakeW", [], ["w"], "call", domain="my.fns")
    model = add_model([], [call], functions=[fn])
    model.opset_import.append(helper.make_opsetid("my.fns", 1))
    return {"model": model}


def training_info(tensor: TensorProto) -> dict[str, Any]:
    model = add_model([helper.make_tensor("w", TensorProto.FLOAT, [4], WEIGHTS.tolist())])
    init = helper.make_graph([], "init", [], [], [tensor])
    model.training_info.add(initialization=init)
    return {"model": model}


@pytest.mark.parametrize(("place", "where"), [
    (constant_node, "'w' in attribute 'value' of node 'const'"),
    (sparse_initializer, "'w' in sparse_initializer"),
    (tensor_list_attribute, "'w' in attribute 'tables' of node 'custom'"),
    (subgraph, "'v_in' in graph 'then' of attribute 'then_branch' of node 'branch'"),
    (function, "'w' in attribute 'value' of node 'inner' of function 'MakeW'"),
    (training_info, "'w' in graph 'init' of training_info"),
])
def test_external_tensor_anywhere_in_the_model_is_found_and_refused(
    layout: Path, sessions: list[Any], place: Callable[[TensorProto], dict[str, Any]],
    where: str,
) -> None:
    built = place(external("../outside/secret.bin"))
    model = built.pop("model", None) or add_model(**built)
    message = refusal(save(model, layout / "model"), sessions)
    assert f"tensor {where} keeps its data in '../outside/secret.bin'" in message


def test_external_references_lists_only_external_tensors_with_their_entries() -> None:
    inline = helper.make_tensor("b", TensorProto.FLOAT, [4], WEIGHTS.tolist())
    model = add_model([inline, external("w.bin", offset="0", length="16")])
    [ref] = external_references(model)
    assert ref.tensor == "'w'"
    assert ref.entries == (("location", "w.bin"), ("offset", "0"), ("length", "16"))
    assert ref.value("length") == "16" and ref.value("checksum") is None
    assert external_references(add_model([inline])) == []


# ------------------------------------------------------------------ models given as bytes
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_model_given_as_bytes_runs(wrap: Callable[[bytes], Any]) -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], WEIGHTS.tolist())
    model = OnnxModel(wrap(add_model([weights]).SerializeToString()))
    assert model.path is None and model.input_names == ("x",)
    np.testing.assert_array_equal(run(model), WEIGHTS + 1)


@pytest.mark.parametrize("location", ["w.bin", "../outside/secret.bin", "/etc/passwd"])
def test_model_bytes_with_any_external_reference_are_refused(
    layout: Path, sessions: list[Any], location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(layout / "model")  # ONNX Runtime would resolve against the cwd
    message = refusal(add_model([external(location)]).SerializeToString(), sessions)
    assert "the ONNX model given as bytes: tensor 'w'" in message and repr(location) in message
    assert "has no folder to resolve external data against" in message
    assert "load it from its .onnx path instead" in message


@pytest.mark.parametrize(("source", "message"), [
    (b"", "the ONNX model bytes are empty"),
    (b"\xff\xff not a protobuf", "it is not a valid ONNX model"),
    (42, "needs a .onnx path or the model's bytes, got int"),
])
def test_empty_corrupt_or_mistyped_sources_are_load_errors(
    sessions: list[Any], source: Any, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        OnnxModel(source)
    assert sessions == []


def test_check_can_be_called_on_its_own(layout: Path) -> None:
    good = save(add_model(), layout / "model")
    check_onnx_model(good)
    check_onnx_model(str(good))
    evil = save(add_model([external("../outside/secret.bin")]), layout / "evil")
    with pytest.raises(ModelLoadError, match="climbs out"):
        check_onnx_model(evil)


# ------------------------------------------------------------------ through config and repository
def plain_config(folder: Path) -> Path:
    (folder / "plain.py").write_text(PLAIN_MODEL)
    config = folder / "config.toml"
    config.write_text('backend = "onnxruntime"\n[model]\nclass = "plain.py:Plain"\n'
                      '[onnxruntime]\npath = "model.onnx"\n')
    return config


def test_config_that_loads_an_escaping_model_fails_with_the_refusal(
    layout: Path, sessions: list[Any]
) -> None:
    folder = layout / "model"
    save(add_model([external("../outside/secret.bin")]), folder)
    with pytest.raises(ModelLoadError, match="climbs out with '..'"):
        load_model(plain_config(folder))
    assert sessions == []


def test_repository_refuses_an_escaping_version_and_keeps_serving_the_good_one(
    layout: Path,
) -> None:
    root = layout / "models"
    good, bad = root / "add" / "1", root / "add" / "2"
    for folder, location in ((good, "w.bin"), (bad, "stolen.bin")):
        save(add_model([external(location)]), folder)
        plain_config(folder)
    shutil.copy(layout / "model" / "w.bin", good / "w.bin")
    (bad / "stolen.bin").symlink_to(good / "w.bin")  # inside the repository, outside its folder
    repo = ModelRepository(root)
    try:
        repo.scan()
        error = repo.status()["add"]["failed"]["2"]["error"]
        assert "'stolen.bin'" in error and "resolves (through a symbolic link)" in error
        assert repo.ready_versions("add") == ["1"]
        with repo.acquire("add") as served:
            np.testing.assert_array_equal(run(served.model), WEIGHTS + 1)
    finally:
        repo.stop()
