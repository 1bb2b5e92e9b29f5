"""The user's contract: :class:`Model`, its three hooks and the pipeline that runs them.

A user subclasses :class:`Model` and writes ``create_model()``,
``preprocessing(raw)`` and ``process_result(outputs)`` once. A backend
(:class:`~model_agnostic.PyTorchModel`, :class:`~model_agnostic.OnnxModel`, ...)
is also a :class:`Model` subclass; it supplies :meth:`Model.infer`. The two are
combined by :meth:`Model.with_backend` (which :func:`~model_agnostic.load_model`
calls for you), so the same hooks run on every backend.

Array conventions
-----------------
* ``preprocessing(raw)`` returns the model-ready arrays for *one* raw input: a
  numpy array (single-input models) or a ``{input_name: array}`` dict. Every
  array carries a leading batch axis holding the rows this input contributes,
  usually 1 (``array[None]``), 10 for TenCrop.
* ``infer(inputs)`` runs the network on a batch and returns ``{output_name: array}``.
* ``process_result(outputs)`` receives ``{output_name: array}`` restricted to the
  rows of one raw input (and, for a model with :attr:`Model.cam`, to
  :meth:`Model.result_outputs`: never the feature map), and returns whatever the user
  wants to hand back.

Heatmaps
--------
A model whose head is global pooling + a linear layer can declare :attr:`Model.cam`
(:class:`~model_agnostic.heatmaps.CAM`): its network then returns the last feature map
as an extra output, ``predict(raw, explain=True)`` returns an
:class:`~model_agnostic.heatmaps.Explanation` with a class activation map per class,
and plain ``predict`` does not fetch the feature map at all. :meth:`Model.crops` says
where each row of ``preprocessing(raw)`` lies in the image.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args, get_origin

import numpy as np

from . import rows
from .errors import ConfigError, InputError, ModelAgnosticError, ModelLoadError, TensorSpecError
from .tensors import TensorSpec, check_arrays

if TYPE_CHECKING:
    from PIL import Image

    from .heatmaps import CAM, Crop

__all__ = ["Model", "Arrays"]

Arrays = dict[str, np.ndarray]


class Model(ABC):
    """Base class of every model: the hooks a user writes and the pipeline running them.

    Subclasses declare user options as annotated class attributes (for example
    ``tencrop: bool = True``); keyword arguments and a config's ``[model.options]``
    table override them, and unknown names are rejected.
    """

    #: Names of the network's inputs and outputs, in ``forward`` order.
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    #: Short name of the backend (``"pytorch"``, ``"onnxruntime"``); set by backends.
    backend_name: ClassVar[str] = ""
    #: The user's class holding the hooks, when bound to a backend by ``with_backend``.
    hooks_class: ClassVar[type[Model] | None] = None
    #: The parity verdict of the artifact this model was loaded from (``load_model``
    #: sets it from ``parity.json``); None when it was not loaded from an artifact.
    artifact_parity: dict[str, Any] | None = None
    #: Where class activation maps come from (see :mod:`.heatmaps`); None: no heatmaps.
    cam: ClassVar[CAM | None] = None

    def __init__(self, **options: Any) -> None:
        allowed = self.option_names()
        for key, value in options.items():
            if key not in allowed:
                raise ConfigError(
                    f"{type(self).__name__} has no option {key!r}; "
                    f"allowed options: {sorted(allowed) or 'none'} "
                    "(declare one as an annotated class attribute)"
                )
            _check_option(type(self), key, value)
            setattr(self, key, value)

    # ------------------------------------------------------------------ hooks
    def create_model(self) -> Any:
        """Build the framework model (a ``torch.nn.Module`` for the PyTorch backend).

        Import torch *inside* this method, so the class stays importable where
        torch is not installed (the ONNX Runtime path never calls it).
        """
        raise NotImplementedError(
            f"{type(self).__name__}.create_model() is not defined; the "
            f"{self.backend_name or 'chosen'} backend needs it to build the network"
        )

    def preprocessing(self, raw: Any) -> np.ndarray | Mapping[str, np.ndarray]:
        """Turn one raw input into model-ready arrays (default: ``np.asarray(raw)``)."""
        return np.asarray(raw)

    def process_result(self, outputs: Arrays) -> Any:
        """Turn one input's network outputs into the user's result (default: identity)."""
        return outputs

    def reference_preprocessing(self, raw: Any) -> np.ndarray | Mapping[str, np.ndarray] | None:
        """The training-time pipeline (e.g. torchvision's) that ``preprocessing`` must match.

        ``verify`` compares the two on real inputs. Return ``None`` (the default)
        when there is no separate reference; import torch inside, like ``create_model``.
        """
        return None

    def crops(self, image: Image.Image) -> list[Crop]:
        """Where each row of ``preprocessing(raw)`` lies in ``image`` (heatmaps only).

        Default: one row showing the whole image. A TenCrop model returns
        :func:`~model_agnostic.heatmaps.ten_crop_boxes`.
        """
        from .heatmaps import Crop

        return [Crop((0.0, 0.0, float(image.width), float(image.height)))]

    def explain_image(self, raw: Any) -> Image.Image:
        """The raw input as the image heatmaps are drawn over (default: ``load_image``)."""
        from .images import load_image

        return load_image(raw, mode="RGB")

    # ---------------------------------------------------------------- backend
    @abstractmethod
    def infer(self, inputs: Arrays) -> Arrays:
        """Run the network on a batch of model-ready arrays; provided by the backend.

        The built-in backends also take ``outputs=[names]`` to fetch only those outputs;
        ``predict`` passes it only for a model with :attr:`cam` (to skip the feature map).
        """

    def cam_weights(self) -> np.ndarray:
        """The classifier weights (``classes x channels``) of :attr:`cam`; from the backend."""
        raise ConfigError(f"the {self.backend_name or 'chosen'} backend cannot compute heatmaps")

    def can_explain(self) -> bool:
        """Whether heatmaps can be computed here: the model declares :attr:`cam` and its
        backend has the classifier weights (a remote backend, or an artifact exported
        without them, has not)."""
        if self.cam is None:
            return False
        try:
            self.cam_weights()
        except ModelAgnosticError:
            return False
        return True

    def result_outputs(self) -> list[str] | None:
        """The outputs ``process_result`` needs: all but the CAM feature map (None: all)."""
        if self.cam is None:
            return None
        return [name for name in self.output_names if name != self.cam.features]

    def outputs_for_result(self, outputs: Arrays) -> Arrays:
        """``outputs`` cut to :meth:`result_outputs`: what ``process_result`` is given."""
        wanted = self.result_outputs()
        if wanted is None:
            return outputs
        return {name: outputs[name] for name in wanted}

    # --------------------------------------------------------------- pipeline
    def predict(self, raw: Any, explain: bool | int | Sequence[str] = False) -> Any:
        """Run the whole pipeline on one raw input; see :meth:`predict_batch` for ``explain``."""
        return self.predict_batch([raw], explain=explain)[0]

    def predict_batch(
        self, raws: Sequence[Any], explain: bool | int | Sequence[str] = False
    ) -> list[Any]:
        """Run the pipeline on many raw inputs with one backend call; one result per input.

        ``explain`` (models with :attr:`cam`): ``True`` for the three top-scoring classes'
        heatmaps, a number for that many, or class labels; each result is then an
        :class:`~model_agnostic.heatmaps.Explanation` holding the result and the maps.
        """
        if isinstance(raws, (str, bytes)) or not isinstance(raws, Sequence):
            raise InputError(
                f"predict_batch expects a list of raw inputs, got {type(raws).__name__}; "
                "use predict() for a single input"
            )
        if not raws:
            return []
        prepared = [self.prepare(raw) for raw in raws]
        for arrays in prepared:
            self.check_inputs(arrays)
        counts = [rows.count(arrays) for arrays in prepared]
        merged = rows.merge(prepared, self.input_names)
        wanted = None if explain is not False else self.result_outputs()
        if wanted is None:
            outputs = self.infer(merged)
        else:  # the built-in backends take outputs=; see infer
            outputs = self.infer(merged, outputs=wanted)  # type: ignore[call-arg]
        parts = rows.split(outputs, counts)
        results = [self.process_result(self.outputs_for_result(part)) for part in parts]
        if explain is False:
            return results
        from .heatmaps import explain_results

        return explain_results(self, raws, parts, results, explain)

    def prepare(self, raw: Any) -> Arrays:
        """``preprocessing(raw)`` as ``{input_name: array}``, checked against the contract."""
        arrays = self.preprocessing(raw)
        if isinstance(arrays, np.ndarray):
            if len(self.input_names) != 1:
                raise TensorSpecError(
                    f"preprocessing returned one array but {type(self).__name__} has "
                    f"inputs {list(self.input_names)}; return a dict keyed by input name"
                )
            arrays = {self.input_names[0]: arrays}
        elif not isinstance(arrays, Mapping):
            raise TensorSpecError(
                "preprocessing must return a numpy array or a dict of numpy arrays, "
                f"got {type(arrays).__name__}"
            )
        missing = set(self.input_names) - set(arrays)
        extra = set(arrays) - set(self.input_names)
        if missing or extra:
            raise TensorSpecError(
                f"preprocessing returned inputs {sorted(arrays)}, expected exactly "
                f"{list(self.input_names)}"
            )
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray) or array.ndim == 0:
                raise TensorSpecError(
                    f"preprocessing returned {type(array).__name__} for input {name!r}; "
                    "expected a numpy array with a leading batch axis (e.g. array[None])"
                )
        return dict(arrays)

    def input_specs(self) -> list[TensorSpec] | None:
        """The backend's input signature (``inputs``), None when it does not know one."""
        specs = getattr(self, "inputs", None)
        return specs if isinstance(specs, list) else None

    def check_inputs(self, arrays: Mapping[str, np.ndarray], source: str = "preprocessing") -> None:
        """Check arrays against :meth:`input_specs` (:class:`TensorSpecError` if they do not
        fit). The one input check: ``predict_batch`` and the server call it before merging
        requests; backends' ``infer`` trusts its caller."""
        specs = self.input_specs()
        if specs is not None:
            check_arrays(specs, arrays, source)

    def _adopt_graph_names(
        self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], where: str
    ) -> None:
        """For backends that read a graph (ONNX, SavedModel): the class's declared input
        and output names, unless left at the defaults, must be the graph's (``where``
        names it); the graph's names become this model's."""
        for kind, specs in (("input", inputs), ("output", outputs)):
            declared = getattr(type(self), f"{kind}_names")
            found = tuple(spec.name for spec in specs)
            if declared != getattr(Model, f"{kind}_names") and declared != found:
                raise ModelLoadError(
                    f"{type(self).__name__} declares {kind}_names {list(declared)}, but "
                    f"{where} has {kind}s {list(found)}; re-export or fix the names"
                )
            setattr(self, f"{kind}_names", found)

    # ----------------------------------------------------------------- options
    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The user options this class declares (annotated, public class attributes)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass is Model or not issubclass(klass, Model) or _is_backend(klass):
                continue
            hints = klass.__dict__.get("__annotations__", {})
            names.update(
                name
                for name, hint in hints.items()
                if not name.startswith("_")
                and "ClassVar" not in str(hint)
                and not hasattr(Model, name)
            )
        return frozenset(names)

    @classmethod
    def with_backend(cls, backend: str | type[Model]) -> type[Model]:
        """This class's hooks on a backend, e.g. ``CheXNet.with_backend("onnxruntime")``."""
        from .backends import bind

        return bind(cls, backend)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} on {self.backend_name or 'no backend'}>"


def _is_backend(klass: type) -> bool:
    return bool(klass.__dict__.get("backend_name"))


def _check_option(cls: type[Model], name: str, value: Any) -> None:
    """Refuse a value its annotation rules out: outside a ``Literal[...]``, or not a
    bool for a ``bool`` option. Other annotations are not checked."""
    for klass in cls.__mro__:
        hint = klass.__dict__.get("__annotations__", {}).get(name)
        if hint is not None:
            break
    else:
        return
    if isinstance(hint, str):  # from __future__ import annotations
        try:
            hint = eval(hint, vars(sys.modules[klass.__module__]))  # the class's own source
        except Exception:  # a name only imported for type checking: not checked
            return
    if get_origin(hint) is Literal and value not in get_args(hint):
        raise ConfigError(
            f"{cls.__name__} option {name!r} must be one of {list(get_args(hint))}, got {value!r}"
        )
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{cls.__name__} option {name!r} must be true or false, got {value!r}")
