"""What the server says about a served model (signature, platform, parity verdict), and
the arrays it hands to one (:func:`aligned`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..tensors import TensorSpec

__all__ = ["aligned", "parity_parameters", "platform", "signature"]

#: Byte boundary of the arrays a request hands to a model (a cache line; AVX-512's width).
ALIGNMENT = 64


def signature(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's input and output specs: the graph's (ONNX Runtime, remote) when the
    backend knows them, else the names with FP32 and unknown shape (PyTorch)."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if isinstance(inputs, list) and isinstance(outputs, list):
        return inputs, outputs
    f32 = np.dtype(np.float32)
    return (
        [TensorSpec(n, f32, None) for n in model.input_names],
        [TensorSpec(n, f32, None) for n in model.output_names],
    )


def parity_parameters(parity: dict[str, Any] | None) -> dict[str, str]:
    """The verdict as Open Inference Protocol ``parameters`` (string values only)."""
    if parity is None:
        return {
            "parity": "unverified",
            "parity_note": "no parity report: served from a config, not an exported artifact",
        }
    parameters = {
        "parity": parity["verdict"],
        "parity_stages": ",".join(f"{k}={v}" for k, v in parity["stages"].items()),
    }
    if parity["unverified"]:
        parameters["parity_unverified"] = "; ".join(
            f"{u['stage']}: {u['reason']}" for u in parity["unverified"]
        )
    if parity["waivers"]:
        parameters["parity_waived"] = "; ".join(
            f"{w['stage']} by {w['flag']} ({w['source']}"
            + (f", user {w['user']}" if w.get("user") else "")
            + ")"
            for w in parity["waivers"]
        )
    if parity["referee_waivers"]:
        parameters["parity_referee_waivers"] = str(len(parity["referee_waivers"]))
    return parameters


def platform(model: Model) -> str:
    """The metadata ``platform`` of a model's backend (Triton's names where they exist)."""
    return {
        "onnxruntime": "onnxruntime_onnx",
        "pytorch": "pytorch_libtorch",
        "tensorflow": "tensorflow_savedmodel",
        "remote": "remote",
    }.get(model.backend_name, model.backend_name or "unknown")


def aligned(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with every numeric array starting on an :data:`ALIGNMENT` boundary (a copy
    where one does not). ONNX Runtime's kernels sum in an order that depends on where the
    data start, and where a decoded tensor starts depends on the transport (over HTTP, on
    the JSON header's length), so without this the same tensor could get answers that
    differ in the last bit by transport or header."""
    result = {}
    for name, array in arrays.items():
        if array.dtype.kind != "O" and array.ctypes.data % ALIGNMENT:
            buffer = np.empty(array.nbytes + ALIGNMENT, np.uint8)
            start = -buffer.ctypes.data % ALIGNMENT
            copy = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
            np.copyto(copy, array)
            array = copy
        result[name] = array
    return result
