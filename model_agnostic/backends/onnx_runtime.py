"""ONNX Runtime backend: runs an exported graph with numpy, Pillow and onnxruntime only."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, InferenceError, ModelLoadError
from ..model import Arrays, Model
from ..onnx_safety import check_onnx_model
from ..tensors import TensorSpec

__all__ = ["OnnxModel", "OPTIMIZATION_LEVELS"]

log = logging.getLogger(__name__)

#: config value -> ``onnxruntime.GraphOptimizationLevel`` member name
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64,
    "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


class OnnxModel(Model):
    """Runs an ONNX graph in an ``onnxruntime.InferenceSession``; never imports torch.

    Args:
        path: the ``.onnx`` file, or the serialized model as ``bytes``. External data
            must be a relative path to a file inside the model's folder; a model given
            as bytes may have none (see :mod:`model_agnostic.onnx_safety`).
        providers: execution providers in priority order (default: CPU).
        intra_op_num_threads, inter_op_num_threads: 0 lets ONNX Runtime choose.
        graph_optimization_level: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``.
        enable_cpu_mem_arena, enable_mem_pattern: ONNX Runtime's memory
            planning; turning them off lowers peak memory at some speed cost.
        **options: the user class's options.
    """

    backend_name: ClassVar[str] = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_num_threads: int = 0,
        inter_op_num_threads: int = 0,
        graph_optimization_level: str = "all",
        enable_cpu_mem_arena: bool = True,
        enable_mem_pattern: bool = True,
        allow_spinning: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        source = _source(path)
        self.path: Path | None = source if isinstance(source, Path) else None
        self._label = source.name if isinstance(source, Path) else "the ONNX model bytes"
        self.session = _create_session(
            source,
            list(providers),
            graph_optimization_level,
            intra_op_num_threads=intra_op_num_threads,
            inter_op_num_threads=inter_op_num_threads,
            enable_cpu_mem_arena=enable_cpu_mem_arena,
            enable_mem_pattern=enable_mem_pattern,
            allow_spinning=allow_spinning,
        )
        self.inputs = [_spec(arg) for arg in self.session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self.session.get_outputs()]
        self._adopt_names()
        self._cam_weights: np.ndarray | None = None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.weights_source = meta.get("model_agnostic.weights", "unknown")
        if self.weights_source.startswith("random"):
            log.warning(
                "%s: %s was exported from seeded random weights; its predictions are meaningless",
                type(self).__name__,
                self._label,
            )

    def infer(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        """Run the session (only ``outputs``, when given); inputs are checked by the
        caller (:meth:`Model.check_inputs`)."""
        names = self._output_names if outputs is None else list(outputs)
        try:
            values = self.session.run(names, inputs)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise InferenceError(f"ONNX Runtime failed running {self._label}: {exc}") from exc
        return dict(zip(names, values))

    def cam_weights(self) -> np.ndarray:
        """The classifier weights shipped beside the graph (:func:`cam_weights_file`)."""
        if self._cam_weights is None:
            if self.path is None:
                raise ConfigError(
                    "heatmaps need the model as a file: its CAM weights lie beside it"
                )
            self._cam_weights = load_cam_weights(cam_weights_file(self.path))
        return self._cam_weights

    def _adopt_names(self) -> None:
        self._adopt_graph_names(self.inputs, self.outputs, self._label)
        self._output_names = list(self.output_names)


def cam_weights_file(onnx_path: Path) -> Path:
    """Where export puts a CAM model's classifier weights: ``<graph>.cam_weights.npy``."""
    return onnx_path.with_name(onnx_path.stem + ".cam_weights.npy")


def load_cam_weights(path: Path, kept: str = "beside the graph") -> np.ndarray:
    """A ``classes x channels`` float array from ``path`` (no pickles); ``kept`` says where
    export puts it, for the message when it is missing."""
    try:
        weights = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelLoadError(
            f"heatmaps need {path.name} {kept} (written by export for a model with cam); "
            "re-export, or copy it with the model"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} is not a numpy array file: {exc}") from None
    if weights.ndim != 2 or weights.dtype.kind != "f":
        raise ModelLoadError(
            f"{path.name} holds a {weights.dtype} array of shape {weights.shape}; "
            "expected classes x channels floats"
        )
    return weights


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    return TensorSpec(arg.name, np.dtype(dtype), tuple(arg.shape))


def _source(path: object) -> Path | bytes:
    """The model as a path, or as bytes (``bytearray``/``memoryview`` are copied)."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        if not path:
            raise ModelLoadError("the ONNX model bytes are empty; expected a serialized model")
        return bytes(path)
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise ModelLoadError(
        f"OnnxModel needs a .onnx path or the model's bytes, got {type(path).__name__}"
    )


def _create_session(source: Path | bytes, providers: list[str], level: str, **settings: Any) -> Any:
    import onnxruntime as ort

    if level not in OPTIMIZATION_LEVELS:
        raise ConfigError(
            f"graph_optimization_level {level!r} is not one of {sorted(OPTIMIZATION_LEVELS)}"
        )
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    if unknown or not providers:
        raise ConfigError(
            f"execution providers {unknown or providers} are not available; this "
            f"onnxruntime offers {ort.get_available_providers()}"
        )
    if isinstance(source, Path) and not source.is_file():
        raise ModelLoadError(f"ONNX model {str(source)!r} does not exist")
    check_onnx_model(source)  # before ONNX Runtime opens any external data
    options = ort.SessionOptions()
    spinning = settings.pop("allow_spinning", True)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    for name, value in settings.items():
        setattr(options, name, value)
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level]
    )
    label = repr(str(source)) if isinstance(source, Path) else "the ONNX model bytes"
    try:
        model = str(source) if isinstance(source, Path) else source
        return ort.InferenceSession(model, options, providers=providers)
    except Exception as exc:  # InvalidProtobuf, Fail, ... from onnxruntime's bindings
        raise ModelLoadError(f"ONNX Runtime cannot load {label}: {exc}") from exc
