"""Export a PyTorch-backed model to ONNX, then check the file really runs and agrees."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._deps import require
from ..errors import ExportError
from ..model import Arrays, Model

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "export_onnx", "external_data_files"]

log = logging.getLogger("model_agnostic.export")

DEFAULT_OPSET = 18
#: Tried in this order unless the caller picks one. TorchScript first: on DenseNet-121
#: it exports in 2.3 s against dynamo's 20.7 s with the same error (docs/export.md).
EXPORTERS = ("torchscript", "dynamo")
#: An export whose output misses atol/rtol is still accepted when ONNX Runtime is at most
#: this many times farther than PyTorch float32 from the network run in float64. ONNX
#: Runtime fuses and reorders operations, so its rounding differs from PyTorch's: on
#: ill-conditioned random-weight EfficientNets it measured 2.2-3.7x PyTorch's own error
#: (docs/export-coverage.md), while a wrong graph is off by far more than float32 noise.
FLOAT32_NOISE_FACTOR = 4.0


def export_onnx(
    model: Model,
    path: str | os.PathLike[str],
    example: Any,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    exporter: str = EXPORTERS[0],
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> Path:
    """Write ``model``'s network to ``path`` as ONNX and check ONNX Runtime agrees with PyTorch.

    Args:
        model: a model on the PyTorch backend.
        path: the ``.onnx`` file to write (parent folders are created).
        example: one raw input; ``model.preprocessing(example)`` gives the traced shapes.
        opset: ONNX opset version.
        dynamic_batch: make the leading (batch) axis of every input and output dynamic.
        dynamic_hw: also make height and width (axes 2, 3) of 4-D inputs dynamic.
        exporter: ``"torchscript"`` or ``"dynamo"`` (``torch.export``); if it
            fails the other is tried and a warning says so.
        atol, rtol: ONNX Runtime must agree with PyTorch elementwise within
            ``atol + rtol * |expected|``, on the example and on perturbed inputs of
            other batch sizes (and image sizes, with ``dynamic_hw``). Where it does not,
            the network is also run in float64: if ONNX Runtime is no more than
            ``FLOAT32_NOISE_FACTOR`` times farther from that than PyTorch's own float32
            result, the difference is rounding and the export is accepted with a warning.

    Raises:
        ExportError: no exporter succeeded (naming the module and op at fault), the
            file fails the ONNX checker, or ONNX Runtime disagrees with PyTorch.
    """
    torch = require("torch", "Exporting to ONNX")
    network = getattr(model, "network", None)
    if not isinstance(network, torch.nn.Module):
        raise ExportError(
            f"{type(model).__name__} runs on {model.backend_name or 'no backend'}; "
            "export needs the PyTorch backend (load_model(config, backend='pytorch'))"
        )
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = model.prepare(example)
    if dynamic_batch:  # a batch of 1 would be specialised away by torch.export
        arrays = {k: np.concatenate([v, v]) if v.shape[0] == 1 else v for k, v in arrays.items()}
    args = tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in model.input_names)
    axes = _dynamic_axes(args, dynamic_batch, dynamic_hw)
    used = _export_with_fallback(torch, network, args, model, path, opset, axes, exporter)
    _stamp(path, model, used, opset)
    _check_agrees(path, model, _probes(arrays, dynamic_batch, dynamic_hw), atol, rtol)
    return path


def _dynamic_axes(args: tuple, batch: bool, hw: bool) -> list[dict[int, str]]:
    axes = []
    for tensor in args:
        dims = {0: "batch"} if batch else {}
        if hw and tensor.dim() == 4:
            dims.update({2: "height", 3: "width"})
        axes.append(dims)
    return axes


def _export_with_fallback(
    torch: Any, network: Any, args: tuple, model: Model, path: Path,
    opset: int, axes: list[dict[int, str]], first: str,
) -> str:
    errors = []
    for name in [first, *(e for e in EXPORTERS if e != first)]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _run_exporter(torch, name, network, args, model, path, opset, axes)
        except Exception as exc:  # exporters raise many unrelated types
            errors.append(f"{name}: {type(exc).__name__}: {_reason(exc)}")
            log.warning("the %s exporter failed (%s); trying the next one", name, errors[-1])
            continue
        for warning in caught:  # e.g. TracerWarning: the trace may not generalise
            if not issubclass(warning.category, DeprecationWarning):
                log.warning("%s exporter: %s", name, str(warning.message).splitlines()[0])
        if name != first:
            log.warning("exported %s with the %s exporter instead of %s", path.name, name, first)
        return name
    from .diagnose import locate_failure

    failure = locate_failure(torch, network, args, opset)
    culprit = failure.explain() if failure else "no single submodule fails on its own"
    raise ExportError(
        f"could not export {type(model).__name__} to ONNX: {culprit}\n"
        "Exporter errors: " + "; ".join(errors)
    )


def _reason(exc: BaseException) -> str:
    """The informative line of an exporter's error (dynamo buries it under advice)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
    line = text.splitlines()[0] if text else ""
    return line[:300]


def _run_exporter(
    torch: Any, name: str, network: Any, args: tuple, model: Model, path: Path,
    opset: int, axes: list[dict[int, str]],
) -> None:
    names = {"input_names": list(model.input_names), "output_names": list(model.output_names)}
    if name == "dynamo":
        dims = {"batch": torch.export.Dim("batch", min=1)}
        dims |= {k: torch.export.Dim(k, min=8) for k in ("height", "width")}
        shapes = tuple({i: dims[label] for i, label in spec.items()} for spec in axes)
        torch.onnx.export(
            network, args, str(path), dynamo=True, opset_version=opset,
            dynamic_shapes=shapes if any(axes) else None,
            external_data=_parameter_bytes(network) > 2**31 - 2**27, verbose=False, **names,
        )
        return
    dynamic = {n: spec for n, spec in zip(model.input_names, axes) if spec}
    if any(0 in spec for spec in axes):
        dynamic |= {n: {0: "batch"} for n in model.output_names}
    torch.onnx.export(
        network, args, str(path), dynamo=False, opset_version=opset,
        dynamic_axes=dynamic or None, **names,
    )


def _parameter_bytes(network: Any) -> int:
    return sum(t.numel() * t.element_size() for t in network.state_dict().values())


def _stamp(path: Path, model: Model, exporter: str, opset: int) -> None:
    """Add our metadata, gather any external weights into one ``<name>.data`` file, check."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    scattered = external_data_files(proto)
    meta = {
        "model_agnostic.version": __version__,
        "model_agnostic.model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_agnostic.weights": str(getattr(model, "weights_source", "unknown")),
        "model_agnostic.exporter": exporter,
        "model_agnostic.opset": str(opset),
    }
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    if scattered:  # over 2 GiB: the exporter wrote one file per tensor
        onnx.load_external_data_for_model(proto, str(path.parent))
        data = f"{path.name}.data"
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data, size_threshold=1024)
        for name in scattered - {data}:
            (path.parent / name).unlink(missing_ok=True)
    else:
        onnx.save(proto, str(path))
    try:  # by path: the only way the checker handles models over 2 GiB
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{path.name} fails the ONNX checker: {exc}") from exc


_UNSET = object()


def external_data_files(proto: Any) -> set[str]:
    """File names the model's external tensors live in (relative to the model), from every
    place a tensor can sit (subgraphs and functions included)."""
    from ..onnx_safety import external_references

    return {location for reference in external_references(proto)
            if (location := reference.value("location"))}


def _probes(arrays: Arrays, dynamic_batch: bool, dynamic_hw: bool) -> list[Arrays]:
    """The example, a perturbed copy at another batch size, and other image sizes.

    A perturbed input catches a graph that traced data-dependent code into constants.
    """
    rng = np.random.default_rng(0)

    def perturbed(batch: int, hw: tuple[int, int] | None = None) -> Arrays:
        out = {}
        for key, value in arrays.items():
            take = value[np.arange(batch) % value.shape[0]]
            if hw and value.ndim == 4:
                take = np.resize(take, (batch, value.shape[1], *hw))
            noise = rng.standard_normal(take.shape) * 0.1 if take.dtype.kind == "f" else 0
            out[key] = np.ascontiguousarray(take + noise).astype(value.dtype)
        return out

    probes = [arrays, perturbed(3 if dynamic_batch else next(iter(arrays.values())).shape[0])]
    if dynamic_hw:
        first = next(iter(arrays.values()))
        if first.ndim == 4:
            height, width = first.shape[2:]
            probes += [perturbed(2, (height + 13, width - 9)), perturbed(1, (height // 2 + 3, width))]
    return probes


def _check_agrees(
    path: Path, model: Model, probes: list[Arrays], atol: float, rtol: float
) -> None:
    from ..backends.onnx_runtime import OnnxModel

    try:
        session = OnnxModel(path)
    except Exception as exc:
        raise ExportError(f"{path.name} was written but ONNX Runtime cannot load it: {exc}") from exc
    for arrays in probes:
        shapes = {k: v.shape for k, v in arrays.items()}
        expected = model.infer(arrays)
        try:
            got = session.infer(arrays)
        except Exception as exc:
            raise ExportError(
                f"{path.name} was written but ONNX Runtime cannot run it on inputs {shapes}: {exc}"
            ) from exc
        referee: Any = _UNSET
        for name, want in expected.items():
            diff = np.abs(got[name].astype(np.float64) - want)
            if np.all(diff <= atol + rtol * np.abs(want)):
                continue
            message = (f"{path.name}: output {name!r} differs from PyTorch by {diff.max():.3g} "
                       f"(allowed {atol:g} + {rtol:g} * |expected|) on inputs {shapes}")
            if referee is _UNSET:  # once per probe: it runs the whole network in float64
                referee = _float64_outputs(model, arrays)
            if referee is not None and name in referee:
                exact = referee[name]
                ours = float(np.abs(got[name] - exact).max())
                torchs = float(np.abs(want - exact).max())
                if ours <= max(FLOAT32_NOISE_FACTOR * torchs, atol):
                    log.warning(
                        "%s; but against the same network run in float64, ONNX Runtime is off "
                        "by %.3g and PyTorch float32 itself by %.3g: float32 rounding, not an "
                        "export fault, so the export is accepted. Compare at a looser "
                        "tolerance, or expect the same spread from PyTorch on other hardware",
                        message, ours, torchs)
                    continue
                message += (f"; against the network run in float64, ONNX Runtime is off by "
                            f"{ours:.3g} and PyTorch float32 by {torchs:.3g}, so this is not "
                            "float32 rounding")
            raise ExportError(
                message + "; if the exporter warned that the trace may be incorrect, "
                "data-dependent Python in forward was frozen into the graph: use torch ops "
                "(torch.where) instead of Python branches"
            )


def _float64_outputs(model: Model, arrays: Arrays) -> Arrays | None:
    """The PyTorch model's outputs in float64, the referee when the two float32 runs
    disagree: its network is converted in place and restored exactly (float32 -> float64
    -> float32 is lossless). None when the network cannot run in float64."""
    import torch

    network: Any = getattr(model, "network")
    tensors = [t for t in (*network.parameters(), *network.buffers())
               if t.is_floating_point() and t.dtype != torch.float64]
    dtypes = [t.dtype for t in tensors]
    try:
        for tensor in tensors:
            tensor.data = tensor.data.to(torch.float64)
        return model.infer({k: v.astype(np.float64) if v.dtype.kind == "f" else v
                            for k, v in arrays.items()})
    except Exception as exc:  # a forward that hard-codes float32, an op without float64
        log.info("float64 reference run failed: %s", exc)
        return None
    finally:
        for tensor, dtype in zip(tensors, dtypes):
            tensor.data = tensor.data.to(dtype)
