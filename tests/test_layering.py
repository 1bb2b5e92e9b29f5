"""The architecture as a test: the layering docs/architecture.md draws, module sizes, and
every path the architecture document names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "model_agnostic"
#: Floors, bottom first: a module may import from its own floor and the floors below.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "tensors", "rows", "_deps", "_venv"),
    ("model", "images", "dicom", "pickle_scan", "onnx_safety"),
    ("protocol", "artifact", "transforms", "checkpoints", "heatmaps"),
    ("backends",),
    ("config",),
    ("export", "serving", "inspection", "evaluate", "perf"),
    ("cli", "__main__", "adapters"),
)
#: Upward imports made inside a function, on purpose (each says why).
LAZY_UPWARD = {
    # Model.with_backend is a convenience over backends.bind, imported on call.
    ("model", "backends"),
    # predict(explain=...) assembles heatmaps, imported on call (and for type hints).
    ("model", "heatmaps"),
}
MAX_LINES = 450
#: Generated code, exempt from the line limit (model_agnostic/protocol/grpc/README.md).
GENERATED = {"protocol.grpc.inference_pb2"}


def _modules() -> list[tuple[str, Path]]:
    found = [(_name(path), path) for path in sorted(PACKAGE.rglob("*.py"))]
    found += [("adapters." + p.stem, p) for p in sorted((ROOT / "adapters").glob("*.py"))]
    return found


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> int:
    top = module.split(".")[0] or "__init__"
    for index, names in enumerate(FLOORS):
        if top in names:
            return index
    raise AssertionError(f"{module} is on no floor of FLOORS; add it where it belongs")


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported model_agnostic module, imported inside a function) pairs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module.startswith("adapters."):
        package = ["adapters"]
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    typing_only = [n for n in ast.walk(tree) if isinstance(n, ast.If)
                   and getattr(n.test, "id", None) == "TYPE_CHECKING"]
    nested |= {id(n) for block in typing_only for n in ast.walk(block) if n is not block}
    for node in ast.walk(tree):
        lazy = id(node) in nested
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("model_agnostic"):
                target = node.module.removeprefix("model_agnostic").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from pkg import module` names a module, else pkg
                candidate = ".".join(p for p in (target, alias.name) if p)
                found.append((candidate if _is_module(candidate) else target, lazy))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("model_agnostic").lstrip("."), lazy)
                      for a in node.names if a.name.startswith("model_agnostic")]
    return [(target, lazy) for target, lazy in found if target]


def _is_module(dotted: str) -> bool:
    parts = dotted.split(".")
    roots = {"adapters": ROOT / "adapters"}
    base = roots.get(parts[0], PACKAGE / parts[0]) if parts[0] in roots else PACKAGE
    rest = parts[1:] if parts[0] in roots else parts
    path = base.joinpath(*rest)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_import_goes_to_the_same_floor_or_below() -> None:
    upward = []
    for module, path in _modules():
        if module in ("", "__init__"):
            continue  # the package's lazy __getattr__ re-exports the public API
        here = _floor(module)
        for target, lazy in _imports(module, path):
            there = _floor(target)
            if there <= here:
                continue
            pair = (module.split(".")[0], target.split(".")[0])
            if lazy and pair in LAZY_UPWARD:
                continue
            upward.append(f"{module} imports {target} ({'in a function' if lazy else 'at the top'})")
    assert upward == []


def test_no_library_module_is_over_450_lines() -> None:
    long = {f"{m} ({n} lines)" for m, p in _modules() if m not in GENERATED
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == set()
    assert all(_is_module(m) for m in GENERATED)  # the allow-list names files that exist


def test_the_protocol_package_imports_neither_serving_nor_backends() -> None:
    """Nor grpc and protobuf: the generated messages load on first use."""
    code = ("import sys, model_agnostic.protocol, model_agnostic.protocol.grpc.convert\n"
            "print(sorted(m for m in sys.modules if m.startswith(('model_agnostic.serving', "
            "'model_agnostic.backends', 'model_agnostic.protocol.grpc.inference_pb2', "
            "'grpc.', 'google.protobuf')) or m == 'grpc'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_path_in_the_architecture_document_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = text.split("```", 2)[1]  # the first code block draws the tree
    missing = []
    stack: list[tuple[int, str]] = []
    for line in tree.splitlines()[1:]:
        match = re.match(r"^(\s*)([\w./-]+/?|[\w.-]+\.\w+)(?=\s|$)", line)
        if not match or not match.group(2).strip():
            continue
        indent, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + name
        if not (ROOT / path.rstrip("/")).exists():
            missing.append(path)
        if name.endswith("/"):
            stack.append((indent, path))
    assert missing == []


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_code_paths_quoted_in_docs_exist(doc: Path) -> None:
    quoted = set(re.findall(r"`((?:model_agnostic|adapters|bench|tests|examples|deploy)/[\w./-]+)`",
                            doc.read_text(encoding="utf-8")))
    missing = sorted(p for p in quoted if not (ROOT / p.split("::")[0].rstrip(".")).exists())
    assert missing == []
