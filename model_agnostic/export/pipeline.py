"""The whole export path a deployment runs: export, verify stage by stage, write the artifact."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, load_config, load_model
from ..errors import ConfigError, ModelAgnosticError
from ..model import Model
from .artifact import write_artifact
from .to_onnx import DEFAULT_OPSET, EXPORTERS, export_onnx
from .verify import ParityReport, Tolerances, verify

__all__ = ["ExportResult", "export_model", "generated_images", "verify_config"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact went (None when parity failed) and the parity report."""

    artifact: Path | None
    report: ParityReport


def export_model(
    config: str | os.PathLike[str] | Config,
    output: str | os.PathLike[str],
    *,
    example: Any = None,
    samples: Sequence[Any] = (),
    archive: bool = False,
    progress: Progress = lambda message: None,
    **overrides: Any,
) -> ExportResult:
    """Export the config's model, verify it, and write an artifact only if parity holds.

    ``overrides`` replace ``[export]`` settings (``opset``, ``dynamic_hw``, ``exporter``, ...).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    settings = {**cfg.export, **{k: v for k, v in overrides.items() if v is not None}}
    example = example if example is not None else settings.get("example")
    samples = _unique([*samples, *cfg.verify.get("samples", [])])
    if example is None and not samples:
        raise ConfigError(
            f"{cfg.path}: export needs an example input: pass --example or set [export] example"
        )
    checked = samples if example is None else _unique([example, *samples])
    example = checked[0]
    reference = _timed(progress, "building the PyTorch model", lambda: load_model(cfg, backend="pytorch"))
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_kwargs = {
            "opset": settings.get("opset", DEFAULT_OPSET),
            "dynamic_batch": settings.get("dynamic_batch", True),
            "dynamic_hw": settings.get("dynamic_hw", False),
            "exporter": settings.get("exporter", EXPORTERS[0]),
        }
        _timed(
            progress, "exporting to ONNX",
            lambda: export_onnx(reference, onnx_path, example, **export_kwargs),
        )
        candidate = _on_onnx(reference, onnx_path)
        report = _timed(
            progress, "verifying parity",
            lambda: _verify(cfg, reference, candidate, checked, export_kwargs["dynamic_hw"]),
        )
        if not report.passed:
            return ExportResult(None, report)
        artifact = _timed(
            progress, "writing the artifact",
            lambda: write_artifact(
                reference, onnx_path, output, report=report.to_dict(),
                export_settings=export_kwargs, archive=archive, serving=cfg.serving,
            ),
        )
    return ExportResult(artifact, report)


def verify_config(
    config: str | os.PathLike[str] | Config,
    onnx: str | os.PathLike[str] | None = None,
    samples: Sequence[Any] = (),
    progress: Progress = lambda message: None,
) -> ParityReport:
    """Verify the config's PyTorch model against an ONNX file or artifact (default: ``[onnxruntime] path``)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    reference = _timed(progress, "building the PyTorch model", lambda: load_model(cfg, backend="pytorch"))
    if onnx is not None and Path(onnx).suffix != ".onnx":
        candidate = load_model(onnx, backend="onnxruntime")  # an artifact
    else:
        path = onnx or cfg.backend_options("onnxruntime").get("path")
        if not path:
            raise ConfigError(f"{cfg.path}: verify needs --onnx or an [onnxruntime] path")
        candidate = _on_onnx(reference, path)
    samples = [*samples, *cfg.verify.get("samples", [])]
    specs = getattr(candidate, "inputs", [])
    dynamic = any(not isinstance(d, int) for spec in specs for d in spec.shape[2:])
    return _timed(
        progress, "verifying parity", lambda: _verify(cfg, reference, candidate, samples, dynamic)
    )


def generated_images(count: int, seed: int = 0) -> list[Any]:
    """Random images of varied sizes and modes, to run beside the user's samples."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [(333, 517, "RGB"), (640, 480, "L"), (97, 131, "RGBA"), (1024, 768, "RGB")]
    images = []
    for height, width, mode in (shapes * (count // len(shapes) + 1))[:count]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        images.append(Image.fromarray(pixels).convert(mode))
    return images


def _verify(
    cfg: Config, reference: Model, candidate: Model, samples: list[Any], dynamic_hw: bool
) -> ParityReport:
    settings = cfg.verify
    keys = ("atol", "rtol", "preprocessing_atol", "topk")
    tolerances = Tolerances(**{k: settings[k] for k in keys if k in settings})
    if not samples:
        raise ConfigError(
            f"{cfg.path}: verify needs sample inputs: pass them or set [verify] samples"
        )
    generated = generated_images(settings.get("generated", 4))
    if generated and not _takes_images(reference, generated[0]):
        generated = []
    labels = [
        *(str(s) if isinstance(s, (str, Path)) else f"sample {i}" for i, s in enumerate(samples)),
        *(f"generated image {i}" for i in range(len(generated))),
    ]
    sizes = settings.get("image_sizes") or ([(192, 160), (256, 288)] if dynamic_hw else [])
    return verify(
        reference, candidate, [*samples, *generated], tolerances=tolerances,
        batch_sizes=settings.get("batch_sizes", [1, 2, 4]), image_sizes=sizes, sample_names=labels,
    )


def _takes_images(model: Model, image: Any) -> bool:
    try:
        model.prepare(image)
    except (ModelAgnosticError, TypeError, ValueError):
        return False
    return True


def _on_onnx(reference: Model, path: str | os.PathLike[str]) -> Model:
    """The reference's hooks and options on ONNX Runtime."""
    hooks = type(reference).hooks_class or type(reference)
    runner: Any = hooks.with_backend("onnxruntime")
    return runner(path, **_options(reference))


def _unique(samples: list[Any]) -> list[Any]:
    """Drop repeated file names (the example is often also a sample)."""
    seen: set[str] = set()
    kept = []
    for sample in samples:
        key = str(Path(sample).resolve()) if isinstance(sample, (str, Path)) else None
        if key is None or key not in seen:
            kept.append(sample)
            seen.add(key or "")
    return kept


def _options(model: Model) -> dict[str, Any]:
    return {name: getattr(model, name) for name in model.option_names()}


def _timed(progress: Progress, step: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    progress(f"{step} ...")
    result = action()
    progress(f"{step}: done in {time.perf_counter() - start:.1f} s")
    return result
