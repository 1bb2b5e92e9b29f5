"""``POST /v2/models/{name}/explain``: the model's result and its class activation maps.

The body is the same raw upload ``/predict`` takes. Query parameters: ``top_k`` (default
3: the top-scoring classes), or ``label`` (repeatable, or comma-separated) for given
classes; ``overlay=0`` leaves the PNG overlays out. Each heatmap carries its raw map (a
small grid over the image, min-max normalised to [0, 1], with the raw ``range``) and the
overlay as a ``data:image/png;base64,...`` URL (see :mod:`model_agnostic.heatmaps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

from ..errors import ProtocolError, ServingError
from ..heatmaps import explain_results
from ..model import Arrays, Model

__all__ = ["Answer", "explain_answer", "predict_answer", "require_heatmaps"]

#: (model, raw input, its outputs) -> the fields of the JSON answer.
Answer = Callable[[Model, Any, Arrays], dict[str, Any]]
_MAX_TOP_K = 64


def predict_answer(model: Model, raw: Any, outputs: Arrays) -> dict[str, Any]:
    # The batcher fetched every output; process_result sees only what it asked for.
    return {"result": model.process_result(model.outputs_for_result(outputs))}


def require_heatmaps(model: Model) -> None:
    """501 before any work when this model, on this backend, cannot compute heatmaps."""
    if not model.can_explain():
        reason = (
            "declares no class activation maps (its 'cam')"
            if model.cam is None
            else f"has no classifier weights for its heatmaps on the {model.backend_name} backend"
        )
        raise ServingError(
            f"{type(model).__name__} {reason}, so it has no heatmaps; POST the image to "
            "/predict instead",
            501,
        )


def explain_answer(query: str) -> Answer:
    """The answer function for ``query``; a bad query is a 400 before any work."""
    which, overlay = _options(query)

    def answer(model: Model, raw: Any, outputs: Arrays) -> dict[str, Any]:
        require_heatmaps(model)
        result = model.process_result(model.outputs_for_result(outputs))
        explained = explain_results(model, [raw], [outputs], [result], which, overlays=overlay)
        return explained[0].to_dict(overlay)

    return answer


def _options(query: str) -> tuple[int | Sequence[str], bool]:
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ProtocolError(f"the query string {query[:200]!r} is malformed") from None
    unknown = sorted(set(fields) - {"top_k", "label", "overlay"})
    if unknown:
        raise ProtocolError(f"unknown query parameter(s) {unknown}; expected top_k, label, overlay")
    overlay = fields.get("overlay", ["1"])[-1]
    if overlay not in ("0", "1", "true", "false"):
        raise ProtocolError(f"overlay must be 0 or 1, got {overlay[:50]!r}")
    labels = [name for value in fields.get("label", []) for name in value.split(",") if name]
    if labels and "top_k" in fields:
        raise ProtocolError("give top_k or label, not both")
    if labels:
        return labels, overlay in ("1", "true")
    text = fields.get("top_k", ["3"])[-1]
    if not text.isdigit() or not 1 <= int(text) <= _MAX_TOP_K:
        raise ProtocolError(
            f"top_k must be a whole number from 1 to {_MAX_TOP_K}, got {text[:50]!r}"
        )
    return int(text), overlay in ("1", "true")
