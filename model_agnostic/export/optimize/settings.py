"""What ``optimize`` builds and what it must keep: the ``[optimize]`` section, checked.

Keyword arguments (and command-line flags) override the config's keys one by one. Task
budgets are the gate; element-wise errors are reported beside them, never gated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "Budgets", "OptimizeSettings", "read_settings"]

#: Variant name -> what it is (the names ``[optimize] variants`` and ``--variant`` take).
VARIANTS = {
    "graph": "ONNX Runtime offline graph optimisation (the optimised graph saved to a file)",
    "int8-dynamic": "INT8 dynamic quantisation (weights INT8, activations quantised per call)",
    "int8-static": "INT8 static quantisation (QDQ, activation ranges calibrated on samples)",
    "fp16": "float16 weights and activations, for execution providers with float16 kernels",
}
DEFAULT_VARIANTS = ("int8-static",)
_FRACTIONS = ("min_top1_agreement", "min_topk_agreement")


@dataclass(frozen=True)
class Budgets:
    """Task-level limits a variant must stay within, against the FP32 PyTorch reference.

    Agreements are fractions of output rows (top-1, top-k with ``[verify] topk``);
    ``max_flips`` counts multi-label decisions flipped at ``[verify] threshold``;
    ``max_auroc_drop`` applies when ``labels`` and ``images`` name a labelled folder.
    None means not gated.
    """

    min_top1_agreement: float | None = 0.99
    min_topk_agreement: float | None = None
    max_flips: int | None = 0
    max_auroc_drop: float | None = 0.01
    labels: str | None = None
    images: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class OptimizeSettings:
    """Every ``[optimize]`` setting, defaults filled in and values checked."""

    variants: tuple[str, ...] = DEFAULT_VARIANTS
    calibration: str | None = None
    calibration_size: int = 32
    per_channel: bool = True
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    #: A variant slower than this ratio (FP32 time / variant time) is not shipped.
    min_speedup: float = 1.05
    output: str | None = None

    def quantizer_settings(self) -> dict[str, Any]:
        return {
            "per_channel": self.per_channel,
            "exclude_op_types": list(self.exclude_op_types),
            "exclude_nodes": list(self.exclude_nodes),
        }


def read_settings(section: Mapping[str, Any], overrides: Mapping[str, Any]) -> OptimizeSettings:
    """``[optimize]`` with ``overrides`` (None values ignored) on top, checked."""
    merged = {**section, **{k: v for k, v in overrides.items() if v is not None}}
    known = set(OptimizeSettings.__dataclass_fields__) | set(Budgets.__dataclass_fields__)
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(f"unknown optimize settings {unknown}; known: {sorted(known)}")
    variants = tuple(merged.get("variants") or DEFAULT_VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"[optimize] variants {bad} are unknown; choose from {list(VARIANTS)}")
    for name in _FRACTIONS:
        value = merged.get(name)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(
                f"[optimize] {name} is a fraction of rows, 0 to 1 (0.99 = 99%), got {value}"
            )
    for name in ("max_flips", "calibration_size"):
        if merged.get(name) is not None and merged[name] < (1 if name == "calibration_size" else 0):
            raise ConfigError(f"[optimize] {name} must be positive, got {merged[name]}")
    if merged.get("max_auroc_drop") is not None and merged["max_auroc_drop"] < 0:
        raise ConfigError(
            f"[optimize] max_auroc_drop must be 0 or more, got {merged['max_auroc_drop']}"
        )
    if merged.get("min_speedup") is not None and merged["min_speedup"] <= 0:
        raise ConfigError(f"[optimize] min_speedup must be above 0, got {merged['min_speedup']}")
    if bool(merged.get("labels")) != bool(merged.get("images")):
        raise ConfigError("[optimize] labels and images go together: the CSV and its image folder")
    budgets = Budgets(**{k: merged[k] for k in Budgets.__dataclass_fields__ if k in merged})
    plain: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in merged.items()
        if k in OptimizeSettings.__dataclass_fields__ and k != "variants"
    }
    return OptimizeSettings(variants=variants, budgets=budgets, **plain)
