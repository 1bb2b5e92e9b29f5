"""When export fails, find the module responsible and say how to fix it.

The network runs once with forward hooks that record each submodule's inputs;
then, from the root down, each child is exported on its own with those inputs
(TorchScript exporter, in memory). The deepest module that still fails is the
culprit; its error names the unsupported op.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["ExportFailure", "locate_failure"]

_OP_PATTERNS = (
    re.compile(r"operator '([\w:.]+)'"),
    re.compile(r"\b((?:aten|prim|onnx)::\w+)"),
    re.compile(r"Python operator (\w+)"),
)


@dataclass(frozen=True)
class ExportFailure:
    """The module that cannot be exported, the op at fault, and what to do."""

    module: str
    module_type: str
    op: str
    message: str

    def explain(self) -> str:
        where = (
            f"module '{self.module}' ({self.module_type})"
            if self.module
            else f"the forward of {self.module_type}"
        )
        op = f" uses '{self.op}', which" if self.op else ""
        fix = suggest(self.op, self.module_type)
        return f"{where}{op} cannot be exported: {self.message}. Fix: {fix}"


def suggest(op: str, module_type: str) -> str:
    """What to try for a failing op."""
    if "PythonOp" in op or op.endswith("Function") or "autograd" in op:
        return (
            f"the custom torch.autograd.Function in {module_type} has no ONNX form: give it a "
            "`symbolic(g, *inputs)` staticmethod, or swap the module for plain torch ops "
            "before export (e.g. x * torch.sigmoid(x) for a memory-efficient Swish)"
        )
    return (
        f"replace {op or 'the op'} in {module_type} with ops ONNX supports, try another "
        "opset (--opset) or exporter (--exporter), or register a symbolic with "
        "torch.onnx.register_custom_op_symbolic"
    )


def locate_failure(torch: Any, network: Any, args: tuple, opset: int) -> ExportFailure | None:
    """The deepest submodule of ``network`` that fails to export alone, if any."""
    inputs = _record_inputs(torch, network, args)
    error = _try_export(torch, network, args, opset)
    if error is None:
        return None
    name, module = "", network
    while True:
        for child_name, child in module.named_children():
            qualified = f"{name}.{child_name}" if name else child_name
            if id(child) not in inputs:
                continue
            child_error = _try_export(torch, child, inputs[id(child)], opset)
            if child_error is not None:
                name, module, error = qualified, child, child_error
                break
        else:
            return ExportFailure(name, type(module).__name__, _find_op(error), _first_line(error))


def _record_inputs(torch: Any, network: Any, args: tuple) -> dict[int, tuple]:
    seen: dict[int, tuple] = {}

    def hook(module: Any, module_args: tuple) -> None:
        if id(module) not in seen and all(isinstance(a, torch.Tensor) for a in module_args):
            seen[id(module)] = tuple(a.detach() for a in module_args)

    handles = [m.register_forward_pre_hook(hook) for m in network.modules()]
    try:
        with torch.no_grad():
            network(*args)
    except Exception:  # diagnosis is best effort; the export error is reported anyway
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _try_export(torch: Any, module: Any, args: tuple, opset: int) -> BaseException | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, io.BytesIO(), dynamo=False, opset_version=opset)
    except Exception as exc:  # any failure counts; we only need to know where
        return exc
    return None


def _find_op(error: BaseException) -> str:
    text = str(error)
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:300]
