"""Build one variant's ONNX file from the FP32 graph: ONNX Runtime's offline graph
optimisation, INT8 dynamic or static (QDQ) quantisation, or float16 where an execution
provider has float16 kernels. Each builder returns what it did, for the metadata."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import ExportError
from ...model import Arrays

__all__ = ["GPU_PROVIDERS", "build_variant", "fp16_skip_reason", "prepare_for_quantization"]

#: Execution providers with float16 kernels worth converting a graph for.
GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)


#: The graph variant is saved at this level: above it, ONNX Runtime writes layouts that
#: only this machine's instruction set runs (its NCHWc transformer).
_SAVED_LEVEL = "extended"


def fp16_skip_reason(providers: Sequence[str]) -> str | None:
    """Why a float16 variant is not built for ``providers`` (None: it is)."""
    if providers and providers[0] in GPU_PROVIDERS:
        return None
    return (
        f"the artifact runs on {providers[0] if providers else 'CPUExecutionProvider'}, and "
        "ONNX Runtime's CPU kernels are float32: a float16 graph runs most operators through "
        "Cast nodes back to float32, so it saves memory but not time there; build it for a "
        f"GPU execution provider ([onnxruntime] providers = one of {list(GPU_PROVIDERS)})"
    )


def prepare_for_quantization(source: Path, target: Path) -> dict[str, Any]:
    """ONNX Runtime's recommended pre-processing (shape inference, basic graph
    optimisation) into ``target``; on failure, ``source`` copied as is and the reason kept."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_quantizer():
            quant_pre_process(str(source), str(target))
        return {"pre_processing": "onnxruntime.quantization.quant_pre_process"}
    except Exception as exc:  # symbolic shape inference fails on some graphs; not fatal
        target.write_bytes(source.read_bytes())
        return {"pre_processing": f"skipped: {type(exc).__name__}: {str(exc)[:200]}"}


def build_variant(
    variant: str,
    source: Path,
    target: Path,
    *,
    session: dict[str, Any],
    per_channel: bool = True,
    exclude_op_types: Sequence[str] = (),
    exclude_nodes: Sequence[str] = (),
    calibration: Sequence[Arrays] = (),
) -> dict[str, Any]:
    """Write ``variant`` of the graph ``source`` to ``target``; returns its settings.

    ``source`` is the graph to transform (for INT8, the pre-processed graph, whose node
    names ``exclude_nodes`` refers to). ``session`` holds the ``[onnxruntime]`` settings
    (providers, optimisation level) the variant will run with.
    """
    try:
        if variant == "graph":
            return _graph(source, target, session)
        excluded = _excluded(source, exclude_op_types, exclude_nodes)
        settings: dict[str, Any] = {
            "exclude_op_types": list(exclude_op_types),
            "exclude_nodes": list(exclude_nodes),
            "nodes_excluded": len(excluded),
        }
        if variant == "fp16":
            return {**settings, **_fp16(source, target, excluded)}
        settings["per_channel"] = per_channel
        with _quiet_quantizer():
            if variant == "int8-dynamic":
                return {**settings, **_dynamic(source, target, per_channel, excluded)}
            if variant == "int8-static":
                return {**settings, **_static(source, target, per_channel, excluded, calibration)}
    except ExportError:
        raise
    except Exception as exc:  # the quantizer's and ONNX Runtime's own errors
        raise ExportError(
            f"building variant {variant} failed: {type(exc).__name__}: {exc}"
        ) from exc
    raise ExportError(f"unknown variant {variant!r}")


def _graph(source: Path, target: Path, session: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    from ...backends.onnx_runtime import OPTIMIZATION_LEVELS

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[_SAVED_LEVEL]
    )
    options.optimized_model_filepath = str(target)
    providers = list(session.get("providers", ["CPUExecutionProvider"]))
    ort.InferenceSession(str(source), options, providers=providers)
    return {
        "level": _SAVED_LEVEL,
        "providers": providers,
        "note": "saved by SessionOptions.optimized_model_filepath at 'extended', the highest "
        "level whose file is portable ('all' adds layouts for this CPU's instruction set); "
        "the artifact's own graph_optimization_level applies the rest at load",
    }


def _dynamic(source: Path, target: Path, per_channel: bool, excluded: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
    )
    return {"format": "QOperator (ConvInteger / MatMulInteger)", "weights": "int8"}


def _static(
    source: Path,
    target: Path,
    per_channel: bool,
    excluded: list[str],
    calibration: Sequence[Arrays],
) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise ExportError("int8-static needs calibration inputs ([optimize] calibration)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> Arrays | None:
            return next(self.batches, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,  # U8S8: the fast path of the x86 kernels
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )
    rows = sum(len(next(iter(batch.values()))) for batch in calibration)
    return {
        "format": "QDQ",
        "activations": "uint8 (U8S8; S8S8 measured slower on x86, docs/optimize.md)",
        "weights": "int8",
        "calibration_method": "MinMax",
        "calibration_inputs": len(calibration),
        "calibration_rows": rows,
    }


def _fp16(source: Path, target: Path, excluded: list[str]) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(
        onnx.load(str(source)), keep_io_types=True, node_block_list=excluded
    )
    onnx.save(model, str(target))
    return {"inputs_outputs": "float32 (kept)", "weights": "float16"}


def _excluded(source: Path, op_types: Sequence[str], nodes: Sequence[str]) -> list[str]:
    """Node names to leave in float: those named, and every node of the named op types."""
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    names = {node.name for node in graph.node}
    unknown = [n for n in nodes if n not in names]
    if unknown:
        raise ExportError(
            f"exclude_nodes names {unknown[:5]}, which are not nodes of the graph being "
            "quantised; use the names a refusal lists (its diverging layers)"
        )
    return sorted({*nodes, *(node.name for node in graph.node if node.op_type in op_types)})


class _QuantizerChatter(logging.Filter):
    """Drops the quantizer's root-logger warnings (advice, per-tensor notes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname.replace("\\", "/")


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root, chatter = logging.getLogger(), _QuantizerChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)
