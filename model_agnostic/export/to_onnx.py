"""Export a PyTorch-backed model to ONNX with a dynamic batch axis, then check the file runs."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._deps import require
from ..errors import ExportError
from ..model import Arrays, Model

__all__ = ["DEFAULT_OPSET", "export_onnx"]

log = logging.getLogger("model_agnostic.export")

DEFAULT_OPSET = 18
#: Tried in this order unless the caller picks one. TorchScript first: on DenseNet-121
#: it exports in 2.3 s against dynamo's 20.7 s with the same error (docs/export.md).
EXPORTERS = ("torchscript", "dynamo")


def export_onnx(
    model: Model,
    path: str | os.PathLike[str],
    example: Any,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    exporter: str = EXPORTERS[0],
    atol: float = 1e-4,
) -> Path:
    """Write ``model``'s network to ``path`` as ONNX and check ONNX Runtime agrees with PyTorch.

    Args:
        model: a model on the PyTorch backend.
        path: the ``.onnx`` file to write (parent folders are created).
        example: one raw input; ``model.preprocessing(example)`` gives the traced shapes.
        opset: ONNX opset version.
        dynamic_batch: make the leading (batch) axis of every input and output dynamic.
        exporter: ``"torchscript"`` or ``"dynamo"`` (``torch.export``); if it
            fails the other is tried and a warning says so.
        atol: largest absolute difference allowed between PyTorch and ONNX Runtime
            on the example.
    """
    network = getattr(model, "network", None)
    torch = require("torch", "Exporting to ONNX")
    if not isinstance(network, torch.nn.Module):
        raise ExportError(
            f"{type(model).__name__} runs on {model.backend_name or 'no backend'}; "
            "export needs the PyTorch backend (load_model(config, backend='pytorch'))"
        )
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = model._prepare(example)
    if dynamic_batch:  # a batch of 1 would be specialised away by torch.export
        arrays = {k: np.concatenate([v, v]) if v.shape[0] == 1 else v for k, v in arrays.items()}
    args = tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in model.input_names)
    order = [exporter, *(e for e in EXPORTERS if e != exporter)]
    errors = []
    for name in order:
        try:
            _run_exporter(torch, name, network, args, model, path, opset, dynamic_batch)
        except Exception as exc:  # exporters raise many unrelated types
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.warning("the %s exporter failed (%s); trying the next one", name, errors[-1])
            continue
        if name != exporter:
            log.warning("exported %s with the %s exporter instead of %s", path.name, name, exporter)
        _stamp(path, model, name)
        _check_runs(path, model, arrays, atol)
        return path
    raise ExportError(
        f"could not export {type(model).__name__} to ONNX; " + "; ".join(errors)
    )


def _run_exporter(
    torch: Any, name: str, network: Any, args: tuple, model: Model, path: Path,
    opset: int, dynamic_batch: bool,
) -> None:
    names = {"input_names": list(model.input_names), "output_names": list(model.output_names)}
    if name == "dynamo":
        shapes = None
        if dynamic_batch:
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch} for _ in args)
        torch.onnx.export(
            network, args, str(path), dynamo=True, opset_version=opset,
            dynamic_shapes=shapes, external_data=False, verbose=False, **names,
        )
    else:
        axes = None
        if dynamic_batch:
            axes = {n: {0: "batch"} for n in [*model.input_names, *model.output_names]}
        with warnings.catch_warnings():  # chosen on purpose; its deprecation is known
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network, args, str(path), dynamo=False, opset_version=opset,
                dynamic_axes=axes, **names,
            )


def _stamp(path: Path, model: Model, exporter: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    meta = {
        "model_agnostic.version": __version__,
        "model_agnostic.model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_agnostic.weights": str(getattr(model, "weights_source", "unknown")),
        "model_agnostic.exporter": exporter,
    }
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _check_runs(path: Path, model: Model, arrays: Arrays, atol: float) -> None:
    from ..backends.onnx_runtime import OnnxModel

    expected = model.infer(arrays)
    try:
        got = OnnxModel(path).infer(arrays)
    except Exception as exc:
        raise ExportError(f"{path.name} was written but ONNX Runtime cannot run it: {exc}") from exc
    for name, want in expected.items():
        diff = float(np.max(np.abs(got[name].astype(np.float64) - want))) if want.size else 0.0
        if not diff <= atol:
            raise ExportError(
                f"{path.name}: output {name!r} differs from PyTorch by {diff:.3g} "
                f"(allowed {atol:g}) on the example input"
            )
