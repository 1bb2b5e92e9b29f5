"""Describe an artifact, ONNX file or SavedModel: signatures, opset, op counts, size, parity."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from .artifact import is_artifact, open_artifact, summarize
from .errors import ModelAgnosticError, ModelLoadError

__all__ = ["describe", "render"]


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready description of an artifact folder, its ``.zip``, or a ``.onnx`` file."""
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
    elif (path / "saved_model.pb").is_file():
        return {**info, "savedmodel": _savedmodel(path)}
    else:
        raise ModelLoadError(
            f"{str(path)!r} is neither an artifact, an ONNX file nor a SavedModel folder"
        )
    return {**info, **_graph(onnx_file)}


def _savedmodel(path: Path) -> dict[str, Any]:
    """A SavedModel's signatures as TensorFlow reads them (needs the ``tf`` extra)."""
    from ._deps import require

    tf = require("tensorflow", "inspecting a SavedModel")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # tf.errors.* on a damaged folder
        raise ModelLoadError(f"TensorFlow cannot load {str(path)!r}: {exc}") from None
    signatures = {}
    for key, function in sorted(loaded.signatures.items()):
        _, given = function.structured_input_signature
        signatures[key] = {
            "inputs": [_tf_spec(n, s) for n, s in sorted(given.items())],
            "outputs": [_tf_spec(n, s) for n, s in sorted(function.structured_outputs.items())],
        }
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"path": str(path), "size_bytes": size, "signatures": signatures}


def _tf_spec(name: str, spec: Any) -> dict[str, Any]:
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    shape = None if dims is None else [-1 if d is None else d for d in dims]
    return {"name": name, "dtype": spec.dtype.name, "shape": shape}


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
    dims = [
        d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim
    ]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def _numel(dims: Any) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def _parity_summary(report: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(report)
    summary["tolerances"] = report.get("tolerances")
    summary["task"] = report.get("task", {})
    summary["max_abs"] = {s["stage"]: s.get("max_abs") for s in report.get("stages", [])}
    return summary


def render(info: dict[str, Any]) -> str:
    """The description as aligned text."""
    lines = [f"{info['path']}"]
    if "savedmodel" in info and "size_bytes" not in info:  # a bare SavedModel folder
        saved = info["savedmodel"]
        lines.append(f"  size        {saved['size_bytes'] / 2**20:.1f} MiB (TensorFlow SavedModel)")
        for key, signature in saved["signatures"].items():
            lines.append(f"  signature   {key}")
            lines.extend(_signature_lines(signature))
        return "\n".join(lines)
    if "checksums" in info:
        lines.append(f"  checksums   {info['checksums']}")
        if str(info["checksums"]).startswith("FAILED"):
            return "\n".join(lines)
    lines.append(
        f"  size        {info['size_bytes'] / 2**20:.1f} MiB, {info['parameters']:,} parameters"
    )
    lines.append("  opset       " + ", ".join(f"{k} {v}" for k, v in info["opset"].items()))
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            lines.append(f"  {kind[:-1]:<11} {v['name']}: {v['dtype']} {v['shape']}")
    ops = ", ".join(f"{op} {n}" for op, n in info["op_counts"].items())
    lines.append(f"  ops         {sum(info['op_counts'].values())} nodes: {ops}")
    meta = info.get("metadata")
    if meta:
        lines.append(f"  model       {meta['model_class']} (weights: {meta['weights']})")
        lines.append(
            f"  created     {meta['created']} with "
            + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        )
    if meta and meta.get("export"):
        lines.extend(_export_lines(meta["export"]))
    if meta and meta.get("savedmodel"):
        lines.extend(_savedmodel_lines(meta["savedmodel"]))
    parity = info.get("parity")
    if parity:
        lines.extend(_parity_lines(parity))
    return "\n".join(lines)


def _export_lines(export: dict[str, Any]) -> list[str]:
    """What the exporter did, as recorded (artifacts from before this record show less)."""
    if "exporter_used" not in export:
        return [f"  export      {export}"]
    lines = [
        f"  export      {export['exporter_used']} exporter, opset {export.get('opset_written')}"
        f" written (asked {export.get('opset')}, exporter {export.get('exporter')} first)"
    ]
    for fallback in export.get("fallbacks", []):
        lines.append(f"    fallback  {fallback['exporter']} failed: {fallback['error'][:160]}")
    return lines


def _signature_lines(signature: dict[str, Any]) -> list[str]:
    return [
        f"    {kind[:-1]:<9} {v['name']}: {v['dtype']} {v['shape']}"
        for kind in ("inputs", "outputs")
        for v in signature[kind]
    ]


def _savedmodel_lines(saved: dict[str, Any]) -> list[str]:
    """The SavedModel export recorded: where, its signature, the converter's versions."""
    versions = saved.get("versions", {})
    lines = [
        f"  savedmodel  {saved['path']}/ signature {saved['signature']} (onnx2tf "
        f"{versions.get('onnx2tf')}, TensorFlow {versions.get('tensorflow_converter')} converted "
        f"in {saved.get('conversion_s')} s, {versions.get('tensorflow')} verified)"
    ]
    return lines + _signature_lines(saved)


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    verdict = parity["verdict"].upper()
    lines = [f"  parity      {verdict}" + ("  (NOT a pass)" if verdict == "UNVERIFIED" else "")]
    for stage, status in parity["stages"].items():
        value = parity.get("max_abs", {}).get(stage)
        number = f"  max abs {value:.3g}" if isinstance(value, (int, float)) else ""
        lines.append(f"    {stage:<15} {status.upper():<10}{number}")
    for item in parity["unverified"]:
        lines.append(f"    unverified  {item['stage']}: {item['reason'][:200]}")
    for waiver in parity["waivers"]:
        who = f", user {waiver['user']}" if waiver.get("user") else ""
        lines.append(
            f"    waived      {waiver['stage']}: waived by {waiver['flag']} "
            f"({waiver['source']}{who})"
        )
    for waiver in parity["referee_waivers"]:
        lines.append(
            f"    referee     {waiver['stage']} {waiver['comparison']}: accepted as float32 "
            f"rounding (candidate {waiver.get('candidate_vs_f64_max', float('nan')):.3g} from "
            f"float64, PyTorch {waiver.get('torch32_vs_f64_max', float('nan')):.3g}, worst "
            f"{waiver.get('worst_ratio', float('nan')):.2f} of allowed)"
        )
    for output, task in parity.get("task", {}).items():
        if task.get("kind") == "multilabel":
            lines.append(
                f"    task        {output}: {task['flips']} of {task['decisions']} "
                f"decisions flipped at {task['threshold']:g}"
            )
        elif task.get("kind") == "classification":
            lines.append(
                f"    task        {output}: top-1 {task['top1_agree']}/{task['rows']}, "
                f"top-{task['k']} {task['topk_agree']}/{task['rows']} rows agree"
            )
    return lines
