"""Export a PyTorch-backed model to ONNX, then check the file really runs and agrees."""

from __future__ import annotations

import json
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
from .referee import compare

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "export_onnx", "external_data_files"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
#: Tried in this order unless the caller picks one. TorchScript first: on DenseNet-121
#: it exports in 2.3 s against dynamo's 20.7 s with the same error (docs/export.md).
EXPORTERS = ("torchscript", "dynamo")
#: The referee's k: see :mod:`.referee`. ONNX Runtime fuses and reorders operations, so
#: its rounding differs from PyTorch's; it must stay within k times PyTorch's own float32
#: error of the float64 result at every element.
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
    check: bool = True,
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
            fails, or writes another opset than asked, the other is tried and a warning
            says so. The file's metadata records the exporter that wrote it, the opset
            it really has, and each fallback taken.
        atol, rtol: with ``check``, ONNX Runtime must agree with PyTorch elementwise
            within ``atol + rtol * |expected|``, on the example and on perturbed inputs
            of other batch sizes (and image sizes, with ``dynamic_hw``). A gap beyond
            that is refereed element by element against the network run in float64
            (:mod:`.referee`): accepted (with a warning giving the numbers) only where
            it is float32 rounding, refused where it is not; an input on which float32
            itself cannot settle the question is logged as unverifiable.
        check: run that agreement check (``export_model`` leaves it to ``verify``).

    A model with :attr:`~model_agnostic.Model.cam` also gets its classifier weights
    written beside the graph (``<name>.cam_weights.npy``) for torch-free heatmaps.

    Raises:
        ExportError: the opset or exporter is not supported, no exporter succeeded
            (naming the module and op at fault), the file fails the ONNX checker, or
            ONNX Runtime disagrees with PyTorch.
    """
    torch = require("torch", "Exporting to ONNX")
    network = getattr(model, "network", None)
    if not isinstance(network, torch.nn.Module):
        raise ExportError(
            f"{type(model).__name__} runs on {model.backend_name or 'no backend'}; "
            "export needs the PyTorch backend (load_model(config, backend='pytorch'))"
        )
    check_settings(opset, exporter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = model.prepare(example)
    if dynamic_batch:  # a batch of 1 would be specialised away by torch.export
        arrays = {k: np.concatenate([v, v]) if v.shape[0] == 1 else v for k, v in arrays.items()}
    args = tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in model.input_names)
    axes = _dynamic_axes(args, dynamic_batch, dynamic_hw)
    used, fallbacks = _export_with_fallback(
        torch, network, args, model, path, opset, axes, exporter
    )
    _stamp(path, model, used, opset, fallbacks)
    if model.cam is not None:  # the classifier weights heatmaps need, beside the graph
        from ..backends.onnx_runtime import cam_weights_file

        np.save(cam_weights_file(path), model.cam_weights(), allow_pickle=False)
    if check:
        _check_agrees(path, model, _probes(arrays, dynamic_batch, dynamic_hw), atol, rtol)
    return path


def opset_range() -> tuple[int, int]:
    """The opsets the installed exporters and onnx can write, lowest and highest."""
    import onnx
    from torch.onnx import _constants

    return _constants.ONNX_MIN_OPSET, min(_constants.ONNX_MAX_OPSET, onnx.defs.onnx_opset_version())


def check_settings(opset: Any, exporter: Any) -> None:
    """Refuse an exporter or opset the installed torch cannot produce, before any work."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    low, high = opset_range()
    if type(opset) is not int or not low <= opset <= high:
        import torch

        raise ExportError(
            f"opset {opset!r} is not supported: torch {torch.__version__}'s exporters and onnx "
            f"write opsets {low} to {high} (dynamo below 18 only by version conversion, "
            "which is checked after export)"
        )


def _dynamic_axes(args: tuple, batch: bool, hw: bool) -> list[dict[int, str]]:
    axes = []
    for tensor in args:
        dims = {0: "batch"} if batch else {}
        if hw and tensor.dim() == 4:
            dims.update({2: "height", 3: "width"})
        axes.append(dims)
    return axes


def _export_with_fallback(
    torch: Any,
    network: Any,
    args: tuple,
    model: Model,
    path: Path,
    opset: int,
    axes: list[dict[int, str]],
    first: str,
) -> tuple[str, list[dict[str, str]]]:
    """Export with ``first``, else the other exporter; returns the exporter that wrote
    ``path`` and each fallback taken (``{"exporter", "error"}``)."""
    errors: list[dict[str, str]] = []
    for name in [first, *(e for e in EXPORTERS if e != first)]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _run_exporter(torch, name, network, args, model, path, opset, axes)
            written = graph_opset(path)
            if written != opset:
                raise ExportError(
                    f"it wrote opset {written} instead of the requested {opset} "
                    "(its version converter could not convert the graph)"
                )
        except Exception as exc:  # exporters raise many unrelated types
            errors.append({"exporter": name, "error": f"{type(exc).__name__}: {_reason(exc)}"})
            log.warning(
                "the %s exporter failed (%s); trying the next one", name, errors[-1]["error"]
            )
            continue
        for warning in caught:  # e.g. TracerWarning: the trace may not generalise
            if not issubclass(warning.category, DeprecationWarning):
                log.warning("%s exporter: %s", name, str(warning.message).splitlines()[0])
        if name != first:
            log.warning("exported %s with the %s exporter instead of %s", path.name, name, first)
        return name, errors
    from .diagnose import locate_failure

    failure = locate_failure(torch, network, args, opset)
    culprit = failure.explain() if failure else "no single submodule fails on its own"
    raise ExportError(
        f"could not export {type(model).__name__} to ONNX: {culprit}\n"
        "Exporter errors: " + "; ".join(f"{e['exporter']}: {e['error']}" for e in errors)
    )


def graph_opset(path: str | os.PathLike[str]) -> int:
    """The default-domain opset an ONNX file really imports."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)


def _reason(exc: BaseException) -> str:
    """The informative line of an exporter's error (dynamo buries it under advice)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].strip()
    line = text.splitlines()[0] if text else ""
    return line[:300]


def _run_exporter(
    torch: Any,
    name: str,
    network: Any,
    args: tuple,
    model: Model,
    path: Path,
    opset: int,
    axes: list[dict[int, str]],
) -> None:
    names = {"input_names": list(model.input_names), "output_names": list(model.output_names)}
    if name == "dynamo":
        dims = {"batch": torch.export.Dim("batch", min=1)}
        dims |= {k: torch.export.Dim(k, min=8) for k in ("height", "width")}
        shapes = tuple({i: dims[label] for i, label in spec.items()} for spec in axes)
        torch.onnx.export(
            network,
            args,
            str(path),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=shapes if any(axes) else None,
            external_data=_parameter_bytes(network) > 2**31 - 2**27,
            verbose=False,
            **names,
        )
        return
    dynamic = {n: spec for n, spec in zip(model.input_names, axes) if spec}
    if any(0 in spec for spec in axes):
        dynamic |= {n: {0: "batch"} for n in model.output_names}
    torch.onnx.export(
        network,
        args,
        str(path),
        dynamo=False,
        opset_version=opset,
        dynamic_axes=dynamic or None,
        **names,
    )


def _parameter_bytes(network: Any) -> int:
    return sum(t.numel() * t.element_size() for t in network.state_dict().values())


def _stamp(
    path: Path, model: Model, exporter: str, opset: int, fallbacks: list[dict[str, str]]
) -> None:
    """Add our metadata (what happened, read back from the file), gather any external
    weights into one ``<name>.data`` file, check."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    scattered = external_data_files(proto)
    meta = {
        "model_agnostic.version": __version__,
        "model_agnostic.model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_agnostic.weights": str(getattr(model, "weights_source", "unknown")),
        "model_agnostic.exporter": exporter,
        "model_agnostic.opset": str(
            next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)
        ),
        "model_agnostic.opset_requested": str(opset),
        "model_agnostic.fallbacks": json.dumps(fallbacks),
    }
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    if scattered:  # over 2 GiB: the exporter wrote one file per tensor
        onnx.load_external_data_for_model(proto, str(path.parent))
        data = f"{path.name}.data"
        onnx.save(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data,
            size_threshold=1024,
        )
        for name in scattered - {data}:
            (path.parent / name).unlink(missing_ok=True)
    else:
        onnx.save(proto, str(path))
    try:  # by path: the only way the checker handles models over 2 GiB
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{path.name} fails the ONNX checker: {exc}") from exc


def external_data_files(proto: Any) -> set[str]:
    """File names the model's external tensors live in (relative to the model), from every
    place a tensor can sit (subgraphs and functions included)."""
    from ..onnx_safety import external_references

    return {
        location
        for reference in external_references(proto)
        if (location := reference.value("location"))
    }


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
            probes += [
                perturbed(2, (height + 13, width - 9)),
                perturbed(1, (height // 2 + 3, width)),
            ]
    return probes


def _check_agrees(path: Path, model: Model, probes: list[Arrays], atol: float, rtol: float) -> None:
    from ..backends.onnx_runtime import OnnxModel
    from .referee import lazy_float64
    from .report import FAIL, PASS, UNVERIFIED

    try:
        session = OnnxModel(path)
    except Exception as exc:
        raise ExportError(
            f"{path.name} was written but ONNX Runtime cannot load it: {exc}"
        ) from exc
    for arrays in probes:
        shapes = {k: v.shape for k, v in arrays.items()}
        expected = model.infer(arrays)
        try:
            got = session.infer(arrays)
        except Exception as exc:
            raise ExportError(
                f"{path.name} was written but ONNX Runtime cannot run it on inputs {shapes}: {exc}"
            ) from exc
        exact = lazy_float64(model, arrays)
        for name, want in expected.items():
            verdict = compare(
                f"output {name!r}",
                got[name],
                want,
                atol,
                rtol,
                lambda n=name, f=exact: f(n),  # type: ignore[misc]
                FLOAT32_NOISE_FACTOR,
            )
            if verdict.status == PASS and verdict.referee:
                log.warning(
                    "%s: %s on inputs %s: %s", path.name, verdict.name, shapes, verdict.note
                )
            elif verdict.status == UNVERIFIED:
                log.warning(
                    "%s: %s on inputs %s: %s; the export is not proven on this input",
                    path.name,
                    verdict.name,
                    shapes,
                    verdict.note,
                )
            elif verdict.status == FAIL:
                raise ExportError(
                    f"{path.name}: {verdict.name} differs from PyTorch by {verdict.max_abs:.3g} "
                    f"on inputs {shapes}: {verdict.note}; if the "
                    "exporter warned that the trace may be incorrect, data-dependent Python in "
                    "forward was frozen into the graph: use torch ops (torch.where) instead of "
                    "Python branches"
                )
