"""Tiny servable models, built torch-free with onnx.helper, and a model repository of them.

The graph is TinyNet's contract (``image`` [batch, 3, 8, 8] FP32 -> ``logits`` [batch, 4]):
the per-channel mean times a 3x4 matrix scaled by ``scale``, so versions built with
different scales answer differently and a response can be traced to its version.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

WEIGHTS = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


def write_tiny_onnx(path: Path, scale: float = 1.0, batch: int | str = "batch") -> Path:
    """An ONNX graph: logits = mean(image, axes=(2, 3)) @ (WEIGHTS * scale)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(WEIGHTS * np.float32(scale), "weights")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "weights"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tiny_model(folder: Path, scale: float = 1.0, serving: str = "",
                     batch: int | str = "batch") -> Path:
    """A model folder (config.toml + model.onnx) serving TinyNet's hooks on the tiny graph."""
    write_tiny_onnx(folder / "model.onnx", scale, batch)
    config = folder / "config.toml"
    config.write_text(
        'backend = "onnxruntime"\n\n[model]\nclass = "tests.tiny_models:TinyNet"\n\n'
        '[onnxruntime]\npath = "model.onnx"\nintra_op_num_threads = 1\n'
        + (f"\n[serving]\n{serving}\n" if serving else ""),
        encoding="utf-8",
    )
    return config


def expected_logits(image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return image.mean(axis=(2, 3)) @ (WEIGHTS * np.float32(scale))


def png_bytes(seed: int = 0, size: tuple[int, int] = (12, 10)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, "PNG")
    return buffer.getvalue()
