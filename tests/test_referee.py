"""The float64 referee: a lowering error is refused even beside large values, rounding is
accepted with its numbers recorded, and a chaotic input is unverifiable, not waived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic.export.referee import compare, noise_floor



def _old_whole_tensor_rule(got: np.ndarray, want: np.ndarray, exact: np.ndarray) -> bool:
    """What export accepted before: ORT within 4x PyTorch's own error, on tensor maxima."""
    return float(np.abs(got - exact).max()) <= 4 * float(np.abs(want - exact).max())


def _outputs_with_a_large_value(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits of order 1 plus one large entry per row, and PyTorch's float32 run."""
    exact = rng.standard_normal((4, 100))
    exact[:, 0] = 1e4  # a large logit: its float32 rounding is ~1e-3
    torch32 = exact.astype(np.float32).astype(np.float64)
    torch32 += rng.standard_normal(exact.shape) * 2e-7 * (1 + np.abs(exact))
    return exact, torch32


def test_a_lowering_error_beside_large_values_is_refused() -> None:
    exact, torch32 = _outputs_with_a_large_value(np.random.default_rng(0))
    gelu_like = 3e-4 * np.tanh(exact)  # a systematic error on the order-1 entries
    candidate = torch32 + gelu_like
    assert _old_whole_tensor_rule(candidate, torch32, exact)  # the old rule waived it
    verdict = compare("logits", candidate, torch32, 1e-5, 1e-5, lambda: exact)
    assert verdict.status == "fail"
    assert "not float32 rounding" in verdict.note
    assert verdict.referee["worst_ratio"] > 5  # far beyond k * float32 noise at its element


def test_float32_rounding_is_accepted_and_its_numbers_recorded() -> None:
    rng = np.random.default_rng(1)
    exact, torch32 = _outputs_with_a_large_value(rng)
    noise = rng.standard_normal(exact.shape) * 3 * 2e-7 * (1 + np.abs(exact))  # 3x PyTorch's
    candidate = exact + noise
    verdict = compare("logits", candidate, torch32, 1e-6, 1e-6, lambda: exact)
    assert verdict.status == "pass", verdict.note
    assert verdict.referee is not None and verdict.referee["worst_ratio"] <= 1
    assert verdict.referee["candidate_vs_f64_max"] == pytest.approx(np.abs(noise).max())


def test_a_chaotic_input_is_unverifiable_not_waived() -> None:
    rng = np.random.default_rng(2)
    exact = rng.standard_normal((2, 50))
    torch32 = exact + rng.standard_normal(exact.shape)  # float32 is off everywhere
    candidate = exact + rng.standard_normal(exact.shape)
    verdict = compare("logits", candidate, torch32, 1e-5, 1e-5, lambda: exact)
    assert verdict.status == "unverified"
    assert "unverifiable" in verdict.note and "100%" in verdict.note


def test_a_candidate_that_matches_float64_passes_where_pytorch_does_not() -> None:
    exact = np.random.default_rng(3).standard_normal((2, 8))
    verdict = compare("logits", exact, exact + 1e-3, 1e-5, 1e-5, lambda: exact)
    assert verdict.status == "pass" and "within tolerance of the float64 result" in verdict.note


def test_without_a_float64_run_a_difference_fails() -> None:
    verdict = compare("logits", np.ones(3), np.zeros(3), 1e-5, 1e-5, lambda: None)
    assert verdict.status == "fail" and "no float64 referee" in verdict.note


def test_the_noise_floor_ignores_larger_elements() -> None:
    noise = np.array([1e-7, 0.0, 1e-3])
    exact = np.array([0.5, 0.4, 1e4])
    floor = noise_floor(noise, exact)
    assert floor[0] == floor[1] == 1e-7  # the 1e4 entry's rounding is not theirs
    assert floor[2] == 1e-3


def test_export_refuses_a_tanh_gelu_graph_whose_output_also_holds_large_values(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from model_agnostic import ExportError, Model, export_onnx
    from model_agnostic.export import to_onnx

    class Net(torch.nn.Module):
        def __init__(self, approximate: str = "none") -> None:
            super().__init__()
            self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(approximate),
                                           torch.nn.Linear(64, 8))
            torch.nn.init.normal_(self.mlp[0].weight, 0, 0.6)

        def forward(self, x: Any) -> Any:
            return torch.cat([self.mlp(x), 1e5 * x[:, :1]], dim=1)  # one large output

    class Mlp(Model):
        def create_model(self) -> Any:
            return Net()

    model = Mlp.with_backend("pytorch")()
    real = to_onnx._run_exporter

    def tanh_gelu(torch_: Any, name: str, network: Any, *args: Any) -> None:
        wrong = Net("tanh")
        wrong.load_state_dict(network.state_dict())
        real(torch_, name, wrong.eval(), *args)

    example = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    export_onnx(model, tmp_path / "right.onnx", example)  # the faithful graph passes
    to_onnx._run_exporter = tanh_gelu
    try:
        with pytest.raises(ExportError, match="not float32 rounding"):
            export_onnx(model, tmp_path / "wrong.onnx", example)
    finally:
        to_onnx._run_exporter = real
