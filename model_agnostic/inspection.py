"""Describe an artifact or ONNX file: signatures, opset, op counts, size, parity."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import ModelAgnosticError, ModelLoadError

__all__ = ["describe", "render"]


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready description of an artifact folder, its ``.zip``, or a ``.onnx`` file."""
    from .export.artifact import is_artifact, open_artifact

    path = Path(path)
    info: dict[str, Any] = {"path": str(path)}
    if is_artifact(path):
        try:
            folder = open_artifact(path).parent
            info["checksums"] = "ok"
        except ModelAgnosticError as exc:
            return {**info, "checksums": f"FAILED: {exc}"}
        onnx_file = folder / "model.onnx"
        info["metadata"] = json.loads((folder / "metadata.json").read_text())
        info["parity"] = _parity_summary(json.loads((folder / "parity.json").read_text()))
    elif path.is_file():
        onnx_file = path
    else:
        raise ModelLoadError(f"{str(path)!r} is neither an artifact nor an ONNX file")
    return {**info, **_graph(onnx_file)}


def _graph(path: Path) -> dict[str, Any]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends from protobuf
        raise ModelLoadError(f"{str(path)!r} is not a readable ONNX model: {exc}") from None
    initializers = {i.name for i in proto.graph.initializer}
    return {
        "size_bytes": path.stat().st_size,
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [_value(v) for v in proto.graph.input if v.name not in initializers],
        "outputs": [_value(v) for v in proto.graph.output],
        "parameters": sum(_numel(i.dims) for i in proto.graph.initializer),
        "op_counts": dict(Counter(n.op_type for n in proto.graph.node).most_common()),
        "metadata_props": {p.key: p.value for p in proto.metadata_props},
    }


def _value(value: Any) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def _numel(dims: Any) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def _parity_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "passed": report.get("passed"),
        "first_failure": report.get("first_failure"),
        "tolerances": report.get("tolerances"),
        "stages": {
            s["stage"]: {"passed": s["passed"], "max_abs": s["max_abs"], "max_rel": s["max_rel"]}
            for s in report.get("stages", [])
        },
    }


def render(info: dict[str, Any]) -> str:
    """The description as aligned text."""
    lines = [f"{info['path']}"]
    if "checksums" in info:
        lines.append(f"  checksums   {info['checksums']}")
        if str(info["checksums"]).startswith("FAILED"):
            return "\n".join(lines)
    lines.append(f"  size        {info['size_bytes'] / 2**20:.1f} MiB, {info['parameters']:,} parameters")
    lines.append("  opset       " + ", ".join(f"{k} {v}" for k, v in info["opset"].items()))
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            lines.append(f"  {kind[:-1]:<11} {v['name']}: {v['dtype']} {v['shape']}")
    ops = ", ".join(f"{op} {n}" for op, n in info["op_counts"].items())
    lines.append(f"  ops         {sum(info['op_counts'].values())} nodes: {ops}")
    meta = info.get("metadata")
    if meta:
        lines.append(f"  model       {meta['model_class']} (weights: {meta['weights']})")
        lines.append(f"  created     {meta['created']} with " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    parity = info.get("parity")
    if parity:
        verdict = {True: "PASSED", False: "FAILED", None: "not verified"}[parity["passed"]]
        lines.append(f"  parity      {verdict}")
        for stage, s in parity["stages"].items():
            status = {True: "pass", False: "FAIL", None: "skip"}[s["passed"]]
            lines.append(f"    {stage:<15} {status}  max abs {s['max_abs']:.3g}  max rel {s['max_rel']:.3g}")
    return "\n".join(lines)
