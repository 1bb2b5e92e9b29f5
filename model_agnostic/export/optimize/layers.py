"""Which layers a quantised graph diverges at: both graphs run with every intermediate
tensor they share added as an output (on copies), on the same inputs, and each layer is
scored by the error it *adds* to what flows into it.

A layer is the run of FP32 nodes between two shared tensors (the quantiser may fuse a
Conv with its Relu, so the Conv's own output exists in one graph only). A tensor's error
is the relative L2 distance ``||q - f|| / ||f||`` per channel (axis 1), averaged over the
channels: one huge channel cannot hide small ones rounded to zero. The quantised side is
read as the next layer sees it (after its QuantizeLinear/DequantizeLinear pair). What a
layer adds is its output's error minus the largest error among the shared tensors
feeding it. To keep a layer in float, its nodes *and* the consumers of its output must be
excluded (QDQ quantises a tensor when its producer or any consumer is quantised).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...model import Arrays

__all__ = ["LayerError", "layer_errors"]


@dataclass(frozen=True)
class LayerError:
    """One layer's divergence: its output tensor, error and added error, and the nodes
    to exclude to keep it (and its output) in float."""

    label: str
    nodes: tuple[str, ...]
    tensor: str
    error: float
    added: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.label,
            "exclude_nodes": list(self.nodes),
            "tensor": self.tensor,
            "relative_error": self.error,
            "added_error": self.added,
        }

    def line(self) -> str:
        return (
            f"{self.label}: adds {self.added:.3g} relative error (output {self.tensor} at "
            f"{self.error:.3g}); to keep it in float exclude {list(self.nodes)}"
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
    candidate = onnx.load(str(variant))
    seen_as = _as_quantised(candidate.graph)
    shared = [out for node in reference.graph.node for out in node.output if out and out in seen_as]
    theirs = [seen_as[name] for name in shared]
    ours_session = _session(reference, shared, threads)
    theirs_session = _session(candidate, theirs, threads)
    sums: dict[str, list[np.ndarray]] = {}
    skipped: set[str] = set()
    for row in _rows(batches, rows):
        want = ours_session.run(shared, row)
        got = theirs_session.run(theirs, row)
        for name, a, b in zip(shared, want, got):
            a, b = np.asarray(a), np.asarray(b)
            if name in skipped or a.dtype.kind != "f" or a.shape != b.shape:
                skipped.add(name)
                continue
            diff, total = _channel_squares(a.astype(np.float64), b.astype(np.float64))
            if name in sums:
                sums[name][0] += diff
                sums[name][1] += total
            else:
                sums[name] = [diff, total]
    errors = {
        name: _channel_error(diff, total)
        for name, (diff, total) in sums.items()
        if name not in skipped
    }
    return sorted(_layers(reference.graph, errors), key=lambda layer: -layer.added)


def _channel_squares(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (axis 1; the whole tensor below two axes): sum of squared differences
    and of squared reference values."""
    if a.ndim < 2:
        return np.array([np.sum((b - a) ** 2)]), np.array([np.sum(a**2)])
    axes = tuple(i for i in range(a.ndim) if i != 1)
    return np.sum((b - a) ** 2, axis=axes), np.sum(a**2, axis=axes)


def _channel_error(diff: np.ndarray, total: np.ndarray) -> float:
    """Mean over channels of ``sqrt(diff / total)``, channels holding (next to) nothing
    in the reference left out; 0 when every channel is empty."""
    live = total > max(float(total.max()) * 1e-12, np.finfo(np.float64).tiny)
    if not live.any():
        return 0.0
    return float(np.mean(np.sqrt(diff[live] / total[live])))


def _as_quantised(graph: Any) -> dict[str, str]:
    """Each tensor the candidate computes -> the name holding its value as the next layer
    sees it: the dequantised copy when a QuantizeLinear/DequantizeLinear pair follows (a
    QDQ graph drops a Relu that the quantised range already clips), else itself."""
    consumers = _consumers(graph)
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


def _consumers(graph: Any) -> dict[str, list[Any]]:
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _session(model: Any, names: Sequence[str], threads: int) -> Any:
    """A session over a copy of ``model`` with ``names`` added as outputs, graph
    optimisation off (so no tensor is fused away)."""
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {output.name for output in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
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
    consumers = _consumers(graph)
    weights = {init.name for init in graph.initializer}
    order = {id(node): i for i, node in enumerate(graph.node)}
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
        segment.sort(key=lambda node: order[id(node)])
        weighted = [n for n in segment if any(name in weights for name in n.input)]
        head = (weighted or segment)[-1]
        keep = [*segment, *(n for n in consumers.get(tensor, []) if id(n) not in seen)]
        names = tuple(dict.fromkeys(node.name for node in keep if node.name))
        label = f"{head.name or tensor} ({head.op_type})"
        layers.append(LayerError(label, names, tensor, error, error - upstream))
    return layers
