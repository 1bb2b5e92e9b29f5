"""Eager PyTorch backend: builds the user's network, loads weights safely, runs it without grad."""

from __future__ import annotations

import hashlib
import logging
import os
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._deps import require
from ..errors import ConfigError, InferenceError, ModelLoadError
from ..model import Arrays, Model

if TYPE_CHECKING:
    import torch

__all__ = ["PyTorchModel"]

log = logging.getLogger(__name__)


class PyTorchModel(Model):
    """Runs ``create_model()``'s ``torch.nn.Module`` in eval mode under ``torch.inference_mode``.

    Args:
        weights: checkpoint to load (any format :mod:`model_agnostic.checkpoints`
            reads). ``None`` keeps the seeded random initialisation and logs a warning.
        device: torch device string, ``"cpu"`` by default.
        strict: every checkpoint key must match the network exactly.
        rename: extra ``(regex, replacement)`` rules applied to checkpoint keys
            after the class's own :attr:`checkpoint_rename`.
        trust_checkpoint: allow full unpickling (can run code; only for trusted files).
        seed: seed of the random initialisation.
        num_threads: ``torch.set_num_threads`` (process-wide) when given.
        **options: the user class's options.
    """

    backend_name: ClassVar[str] = "pytorch"
    #: ``(regex, replacement)`` rules for this architecture's checkpoints.
    checkpoint_rename: ClassVar[Sequence[tuple[str, str]]] = ()
    #: The network ``create_model()`` built, weights loaded, in eval mode.
    network: torch.nn.Module

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        strict: bool = True,
        rename: Sequence[tuple[str, str]] = (),
        trust_checkpoint: bool = False,
        seed: int = 0,
        num_threads: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        torch = require("torch", "The PyTorch backend")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = self.create_model()
        if not isinstance(network, torch.nn.Module):
            raise ModelLoadError(
                f"{type(self).__name__}.create_model() returned {type(network).__name__}; "
                "expected a torch.nn.Module"
            )
        if weights is None:
            self.weights_source = f"random (seed {seed})"
            log.warning(
                "%s: no weights given, running on seeded random weights (seed %d); "
                "its predictions are meaningless",
                type(self).__name__,
                seed,
            )
        else:
            from ..checkpoints import apply_state_dict, load_state_dict

            state = load_state_dict(
                weights,
                rename=[*self.checkpoint_rename, *rename],
                trust_checkpoint=trust_checkpoint,
            )
            apply_state_dict(network, state, strict=strict)
            self.weights_source = _describe_file(Path(weights))
        self.network = network.to(self.device).eval()

    @abstractmethod
    def create_model(self) -> torch.nn.Module:
        """Build the ``torch.nn.Module`` (import torch inside this method)."""

    def infer(self, inputs: Arrays, outputs: Sequence[str] | None = None) -> Arrays:
        """Run the network (it computes every output; ``outputs`` picks those returned)."""
        torch = require("torch", "The PyTorch backend")
        tensors = [_to_tensor(torch, inputs[name], self.device) for name in self.input_names]
        try:
            with torch.inference_mode():
                result = self.network(*tensors)
        except Exception as exc:  # a user's forward can raise anything
            shapes = {name: (a.shape, str(a.dtype)) for name, a in inputs.items()}
            raise InferenceError(
                f"{type(self).__name__} forward failed on inputs {shapes}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        named = self._name_outputs(torch, result)
        return named if outputs is None else {name: named[name] for name in outputs}

    def cam_weights(self) -> np.ndarray:
        """The classifier weight named by ``cam.weights``, from the live network."""
        cam = self.cam
        try:  # a parameter, found without building the whole state dict (metadata asks)
            tensor = self.network.get_parameter(cam.weights) if cam is not None else None
        except AttributeError:
            tensor = None
        if tensor is None:
            state = self.network.state_dict()  # a buffer, or say what there is
            if cam is None or cam.weights not in state:
                raise ConfigError(
                    f"{type(self).__name__}.cam names weights {getattr(cam, 'weights', None)!r}, "
                    f"which the network does not have; e.g. {sorted(state)[-3:]}"
                )
            tensor = state[cam.weights]
        return tensor.detach().cpu().numpy().astype(np.float32)

    def _name_outputs(self, torch: Any, result: Any) -> Arrays:
        if isinstance(result, torch.Tensor):
            result = (result,)
        if isinstance(result, dict):
            items = list(result.items())
        elif isinstance(result, (tuple, list)) and len(result) == len(self.output_names):
            items = list(zip(self.output_names, result))
        else:
            raise InferenceError(
                f"forward returned {type(result).__name__}; expected a tensor or "
                f"{len(self.output_names)} tensors named {list(self.output_names)}"
            )
        return {name: value.detach().cpu().numpy() for name, value in items}


def _describe_file(path: Path) -> str:
    """``name (sha256 0123abcd...)``: identifies the weights without leaking local paths."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name} (sha256 {digest.hexdigest()[:16]})"


def _to_tensor(torch: Any, array: np.ndarray, device: torch.device) -> torch.Tensor:
    if not array.flags.writeable:  # torch.from_numpy needs a writable buffer
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)
