"""Which layers a quantised graph diverges at: both graphs run with every intermediate
tensor they share added as an output (on copies), on the same inputs, and each layer is
scored by the error it *adds* to what flows into it.

A layer is the run of FP32 nodes between two shared tensors (the quantiser may fuse a
Conv with its Relu, so the Conv's own output exists in one graph only). Its error is the
relative L2 distance ``||q - f|| / ||f||`` of its output over every row; what it adds is
that minus the largest error among the shared tensors feeding it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...model import Arrays

__all__ = ["LayerError", "layer_errors"]


@dataclass(frozen=True)
class LayerError:
    """One layer's divergence: its FP32 nodes, output tensor, error and added error."""

    label: str
    nodes: tuple[str, ...]
    tensor: str
    error: float
    added: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.label,
            "nodes": list(self.nodes),
            "tensor": self.tensor,
            "relative_error": self.error,
            "added_error": self.added,
        }

    def line(self) -> str:
        return (
            f"{self.label}: adds {self.added:.3g} relative error (output {self.tensor} at "
            f"{self.error:.3g}); exclude with nodes {list(self.nodes)}"
        )


def layer_errors(
    fp32: Path,
    variant: Path,
    batches: Sequence[Arrays],
    *,
    rows: int = 8,
    threads: int = 0,
) -> list[LayerError]:
    """Layers of ``fp32`` by the error ``variant`` adds there, worst first, measured on
    up to ``rows`` rows of ``batches`` (run one row at a time to bound memory)."""
    import onnx

    reference = onnx.load(str(fp32))
    candidate = onnx.load(str(variant), load_external_data=False)
    seen_as = _as_quantised(candidate.graph)
    shared = [
        out for node in reference.graph.node for out in node.output if out and out in seen_as
    ]
    squares: dict[str, list[float]] = {name: [0.0, 0.0] for name in shared}
    theirs = [seen_as[name] for name in shared]
    ours_session = _session(reference, shared, threads)
    theirs_session = _session(candidate, theirs, threads)
    for row in _rows(batches, rows):
        want = dict(zip(shared, ours_session.run(shared, row)))
        got = dict(zip(shared, theirs_session.run(theirs, row)))
        for name in shared:
            a, b = np.asarray(want[name]), np.asarray(got[name])
            if a.dtype.kind != "f" or a.shape != b.shape:
                squares.pop(name, None)
                continue
            if name in squares:
                a64 = a.astype(np.float64)
                squares[name][0] += float(np.sum((b.astype(np.float64) - a64) ** 2))
                squares[name][1] += float(np.sum(a64**2))
    errors = {
        name: math.sqrt(diff / max(total, np.finfo(np.float64).tiny))
        for name, (diff, total) in squares.items()
    }
    return sorted(_layers(reference.graph, errors), key=lambda layer: -layer.added)


def _as_quantised(graph: Any) -> dict[str, str]:
    """Each tensor the candidate computes -> the name holding its value as the next layer
    sees it: the dequantised copy when a QuantizeLinear/DequantizeLinear pair follows (a
    QDQ graph drops a Relu that the quantised range already clips), else itself."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    seen_as = {}
    for node in graph.node:
        for out in node.output:
            seen_as[out] = out
            for quantize in consumers.get(out, []):
                if quantize.op_type != "QuantizeLinear":
                    continue
                for dequantize in consumers.get(quantize.output[0], []):
                    if dequantize.op_type == "DequantizeLinear":
                        seen_as[out] = dequantize.output[0]
    return seen_as


def _session(model: Any, names: Sequence[str], threads: int) -> Any:
    """A session over ``model`` with ``names`` added as outputs, graph optimisation off
    (so no tensor is fused away)."""
    import onnx
    import onnxruntime as ort

    present = {output.name for output in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _rows(batches: Sequence[Arrays], limit: int) -> list[Arrays]:
    """Single-row batches, at most ``limit``, spread over the inputs."""
    rows = []
    for batch in batches:
        count = len(next(iter(batch.values())))
        rows += [{k: v[i : i + 1] for k, v in batch.items()} for i in range(count)]
    step = max(1, len(rows) // max(limit, 1))
    return rows[::step][:limit]


def _layers(graph: Any, errors: dict[str, float]) -> list[LayerError]:
    """Each measured tensor's layer: its producer and the unmeasured nodes feeding it."""
    producer = {out: node for node in graph.node for out in node.output}
    weights = {init.name for init in graph.initializer}
    layers = []
    for tensor, error in errors.items():
        segment, upstream, stack, seen = [], 0.0, [producer[tensor]], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            segment.append(node)
            for name in node.input:
                if name in errors:
                    upstream = max(upstream, errors[name])
                elif name in producer and name not in weights:
                    stack.append(producer[name])
        order = {id(node): i for i, node in enumerate(graph.node)}
        segment.sort(key=lambda node: order[id(node)])
        weighted = [n for n in segment if any(name in weights for name in n.input)]
        head = (weighted or segment)[-1]
        label = f"{head.name or tensor} ({head.op_type})"
        names = tuple(node.name for node in segment if node.name)
        layers.append(LayerError(label, names, tensor, error, error - upstream))
    return layers
