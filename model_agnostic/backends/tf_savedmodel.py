"""TensorFlow backend: runs a SavedModel's serving signature with numpy and TensorFlow only.

TensorFlow is imported on construction, never at import. (Not named ``tensorflow.py``, like
``onnx_runtime.py``: a module named after a library can shadow it.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..errors import ConfigError, InferenceError, ModelLoadError
from ..model import Arrays, Model
from ..tensors import TensorSpec
from .onnx_runtime import load_cam_weights

__all__ = ["TensorFlowModel", "SIGNATURE", "cam_weights_file"]

log = logging.getLogger(__name__)

#: The signature TF Serving runs when a request names none.
SIGNATURE = "serving_default"


class TensorFlowModel(Model):
    """Runs a SavedModel's signature (``serving_default``) in TensorFlow; never imports torch.

    Args:
        path: the SavedModel folder (the one holding ``saved_model.pb`` and ``variables/``).
        signature: the signature to run.
        intra_op_num_threads, inter_op_num_threads: 0 keeps the process's setting
            (TensorFlow's choice unless set). TensorFlow has one thread pool per process,
            started with the first model: a later model asking for other numbers is a
            :class:`ConfigError`.
        **options: the user class's options.
    """

    backend_name: ClassVar[str] = "tensorflow"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        signature: str = SIGNATURE,
        intra_op_num_threads: int = 0,
        inter_op_num_threads: int = 0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(path, (str, os.PathLike)):
            raise ModelLoadError(
                f"TensorFlowModel needs a SavedModel folder path, got {type(path).__name__}"
            )
        self.path = Path(path)
        tf = require("tensorflow", "the TensorFlow backend")
        _set_threads(tf, intra_op_num_threads, inter_op_num_threads)
        self._loaded, self._function = _load(tf, self.path, signature)
        self.signature = signature
        _, given = self._function.structured_input_signature
        self.inputs = _ordered(
            [_spec(name, s) for name, s in given.items()], type(self).input_names
        )
        produced = self._function.structured_outputs
        self.outputs = _ordered(
            [_spec(name, s) for name, s in produced.items()], type(self).output_names
        )
        self._adopt_graph_names(self.inputs, self.outputs, f"{self.path.name}:{signature}")
        self._cam_weights: np.ndarray | None = None

    def infer(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        """Run the signature (returning only ``outputs``, when given); inputs are checked
        by the caller (:meth:`Model.check_inputs`)."""
        names = self.output_names if outputs is None else list(outputs)
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise InferenceError(
                f"{self.path.name} has no outputs {unknown}; it has {list(self.output_names)}"
            )
        try:
            answer = self._function(**{k: np.ascontiguousarray(v) for k, v in inputs.items()})
        except Exception as exc:  # tf.errors.* and TypeError/ValueError from the signature
            raise InferenceError(
                f"TensorFlow failed running {self.path.name}:{self.signature}: {_first_line(exc)}"
            ) from exc
        return {name: answer[name].numpy() for name in names}

    def cam_weights(self) -> np.ndarray:
        """The classifier weights export puts in the SavedModel (:func:`cam_weights_file`)."""
        if self._cam_weights is None:
            self._cam_weights = load_cam_weights(
                cam_weights_file(self.path), "in the SavedModel's assets.extra/"
            )
        return self._cam_weights


def cam_weights_file(saved_model: Path) -> Path:
    """Where export puts a CAM model's classifier weights inside a SavedModel:
    ``assets.extra/cam_weights.npy`` (TF Serving ignores that folder's other files)."""
    return saved_model / "assets.extra" / "cam_weights.npy"


def _load(tf: Any, path: Path, signature: str) -> tuple[Any, Any]:
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(
            f"{str(path)!r} is not a SavedModel folder: expected saved_model.pb in it "
            "(point [tensorflow] path at the <name>/<version> folder)"
        )
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # tf.errors.*, ValueError on a malformed graph
        raise ModelLoadError(f"TensorFlow cannot load {str(path)!r}: {_first_line(exc)}") from exc
    signatures = dict(loaded.signatures)
    if signature not in signatures:
        raise ModelLoadError(
            f"{path.name} has no signature {signature!r}; it has {sorted(signatures)}"
        )
    return loaded, signatures[signature]


def _set_threads(tf: Any, intra: int, inter: int) -> None:
    threading = tf.config.threading
    for name, value, setter, getter in (
        ("intra_op_num_threads", intra, threading.set_intra_op_parallelism_threads,
         threading.get_intra_op_parallelism_threads),
        ("inter_op_num_threads", inter, threading.set_inter_op_parallelism_threads,
         threading.get_inter_op_parallelism_threads),
    ):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if value == 0 or value == getter():  # 0: whatever the process has
            continue
        try:
            setter(value)
        except RuntimeError:  # the runtime already started with other settings
            raise ConfigError(
                f"{name} = {value}: TensorFlow's thread pools are per process and already "
                f"started with {getter()}; set it before the first TensorFlow model loads "
                "(or run that model in a process of its own)"
            ) from None


def _spec(name: str, spec: Any) -> TensorSpec:
    try:
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
    except TypeError:
        raise ModelLoadError(f"tensor {name!r} has unsupported type {spec.dtype!r}") from None
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    shape = None if dims is None else tuple(-1 if d is None else d for d in dims)
    return TensorSpec(name, dtype, shape)


def _ordered(specs: list[TensorSpec], declared: tuple[str, ...]) -> list[TensorSpec]:
    """The signature's tensors in the class's declared order when the names are the same
    (a signature's tensors are keyed by name, unordered), else sorted by name."""
    by_name = {spec.name: spec for spec in specs}
    if set(declared) == set(by_name):
        return [by_name[name] for name in declared]
    return [by_name[name] for name in sorted(by_name)]


def _first_line(exc: Exception) -> str:
    """TensorFlow's messages run to pages; the first line says what went wrong."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else repr(exc))[:400]
