"""Exporting PyTorch-backed models to ONNX."""

from .to_onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "export_onnx"]
