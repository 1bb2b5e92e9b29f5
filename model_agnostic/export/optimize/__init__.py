"""``model-agnostic optimize``: faster variants of a verified FP32 artifact, each shipped
only within its task budgets and only when it is faster on this machine.

Variants (:data:`VARIANTS`): ONNX Runtime's offline graph optimisation, INT8 dynamic and
static (QDQ, calibrated through the model's own ``preprocessing``) quantisation, and
float16 where an execution provider has float16 kernels. See docs/optimize.md.
"""

from .budgets import BudgetCheck
from .layers import LayerError, layer_errors
from .outcome import VariantResult, exit_code
from .run import optimize_artifact
from .settings import DEFAULT_VARIANTS, VARIANTS, Budgets, OptimizeSettings, read_settings
from .speed import cpu_info, measure_speedup

__all__ = [
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "BudgetCheck",
    "Budgets",
    "LayerError",
    "OptimizeSettings",
    "VariantResult",
    "cpu_info",
    "exit_code",
    "layer_errors",
    "measure_speedup",
    "optimize_artifact",
    "read_settings",
]
