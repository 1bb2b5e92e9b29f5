"""The whole export path a deployment runs: export, write, verify stage by stage, ship.

The artifact is built in a staging folder beside the target and verified there (stage 4
runs it from disk without torch); only a report with no failed stage, and no unverified
stage nobody waived, replaces the target, by a rename. Anything else leaves the previous
artifact untouched.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import CHECKSUMS, file_digests, is_artifact
from ..config import Config, import_model_class, import_object, load_config, load_model, resolve
from ..errors import ConfigError, ExportError, ModelAgnosticError
from ..images import load_image
from ..model import Model
from .artifact import write_artifact, write_parity, write_zip
from .options import encode_options, option_values
from .report import STAGES, ParityReport, Tolerances
from .savedmodel import add_savedmodel, check_format, savedmodel_folder
from .to_onnx import DEFAULT_OPSET, EXPORTERS, check_settings, export_onnx
from .verify import Reference, verify

__all__ = ["ExportResult", "export_model", "generated_images", "load_reference", "verify_config"]

Progress = Callable[[str], None]
_TOLERANCE_KEYS = (
    "atol",
    "rtol",
    "preprocessing_atol",
    "topk",
    "noise_factor",
    "threshold",
    "task",
)
_TASKS = ("auto", "classification", "multilabel", "none")


@dataclass(frozen=True)
class ExportResult:
    """Where the artifact went (None when it was not shipped) and the parity report."""

    artifact: Path | None
    report: ParityReport


def export_model(
    config: str | os.PathLike[str] | Config,
    output: str | os.PathLike[str],
    *,
    example: Any = None,
    samples: Sequence[Any] = (),
    archive: bool = False,
    force: bool = False,
    allow_unverified: Sequence[str] = (),
    waiver_flag: str = "allow_unverified=",
    progress: Progress = lambda message: None,
    **overrides: Any,
) -> ExportResult:
    """Export the config's model, verify it, and ship an artifact only if parity holds.

    ``overrides`` replace ``[export]`` settings (``opset``, ``dynamic_hw``, ``exporter``, ...).
    ``format="savedmodel"`` adds a TensorFlow SavedModel converted from the ONNX graph,
    verified in the same report (:mod:`.savedmodel`).
    ``force`` replaces an existing artifact at ``output`` (only once the new one passed).
    ``allow_unverified`` names stages (or ``"all"``) whose *unverified* status the user
    accepts; each waiver is recorded in the artifact as ``f"{waiver_flag}{stage}"`` with
    the user's name. A failed stage cannot be waived.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    settings = {**cfg.export, **{k: v for k, v in overrides.items() if v is not None}}
    output = Path(output)
    _check_target(output, force)
    export_kwargs = {
        "opset": settings.get("opset", DEFAULT_OPSET),
        "dynamic_batch": settings.get("dynamic_batch", True),
        "dynamic_hw": settings.get("dynamic_hw", False),
        "exporter": settings.get("exporter", EXPORTERS[0]),
    }
    fmt = check_format(settings.get("format", "onnx"))
    waivers = _waivers(cfg, allow_unverified, waiver_flag)
    checked = _samples(cfg, example if example is not None else settings.get("example"), samples)
    tolerances, pipeline = _verify_settings(cfg)
    check_settings(export_kwargs["opset"], export_kwargs["exporter"])
    hooks = import_model_class(cfg.model_class, base_dir=cfg.path.parent)
    encode_options(option_values(hooks, cfg.options))  # refuse what the artifact cannot hold
    reference = _timed(
        progress, "building the PyTorch model", lambda: load_model(cfg, backend="pytorch")
    )
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        _timed(
            progress,
            "exporting to ONNX",
            lambda: export_onnx(reference, onnx_path, checked[0], check=False, **export_kwargs),
        )
        staging = _staging_folder(output)
        try:
            _timed(
                progress,
                "writing the artifact (staging)",
                lambda: write_artifact(
                    reference,
                    onnx_path,
                    staging,
                    export_settings=export_kwargs,
                    serving=cfg.serving,
                    session=_session(cfg),
                ),
            )
            also = {}
            if fmt == "savedmodel":
                location = savedmodel_folder(cfg.serving, output)
                _timed(
                    progress,
                    "converting to a TensorFlow SavedModel (onnx2tf)",
                    lambda: add_savedmodel(reference, staging, checked[0], location, progress),
                )
                also["savedmodel"] = _on_backend(reference, "tensorflow", path=staging / location)
            report = _timed(
                progress,
                "verifying parity, stage by stage",
                lambda: _verify(
                    cfg,
                    reference,
                    _on_onnx(reference, onnx_path, cfg),
                    checked,
                    export_kwargs["dynamic_hw"],
                    tolerances,
                    pipeline,
                    staging,
                    also,
                ),
            )
            report.subject = {
                "kind": "artifact",
                "files": file_digests(staging, skip=("parity.json",)),
                "note": "this report describes the artifact whose files have these SHA-256 "
                "digests; stage 'artifact' loaded it from disk without torch",
            }
            for flag_stages, flag, source in waivers:
                report.waive(flag_stages, flag=flag, source=source, user=_user())
            write_parity(staging, report.to_dict())
            if not report.shippable:
                return ExportResult(None, report)
            _swap_in(staging, output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if archive:
        write_zip(output, output.with_name(output.name + ".zip"))
    return ExportResult(output, report)


def verify_config(
    config: str | os.PathLike[str] | Config,
    onnx: str | os.PathLike[str] | None = None,
    samples: Sequence[Any] = (),
    progress: Progress = lambda message: None,
    allow_unverified: Sequence[str] = (),
    waiver_flag: str = "allow_unverified=",
) -> ParityReport:
    """Verify the config's PyTorch model against an artifact (stages 1-4) or an ONNX
    file (stages 1-3; default: ``[onnxruntime] path``)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    waivers = _waivers(cfg, allow_unverified, waiver_flag)
    tolerances, pipeline = _verify_settings(cfg)
    checked = _samples(cfg, None, samples)
    reference = _timed(
        progress, "building the PyTorch model", lambda: load_model(cfg, backend="pytorch")
    )
    artifact = None
    also: dict[str, Model] = {}
    if onnx is not None and is_artifact(onnx):
        artifact = Path(onnx)
        candidate = load_model(artifact, backend="onnxruntime")
        subject = {"kind": "artifact", "path": str(artifact)}
        if "tensorflow" in resolve(artifact).sections:  # exported with --format savedmodel
            also["savedmodel"] = load_model(artifact, backend="tensorflow")
    else:
        path = onnx or cfg.backend_options("onnxruntime").get("path")
        if not path:
            raise ConfigError(f"{cfg.path}: verify needs --onnx or an [onnxruntime] path")
        candidate = _on_onnx(reference, path, cfg)
        subject = {
            "kind": "onnx",
            "path": str(path),
            "note": "a bare ONNX file: no artifact stage (export or --onnx ARTIFACT runs it)",
        }
    specs = getattr(candidate, "inputs", [])
    dynamic = any(not isinstance(d, int) for spec in specs for d in spec.shape[2:])
    report = _timed(
        progress,
        "verifying parity, stage by stage",
        lambda: _verify(
            cfg, reference, candidate, checked, dynamic, tolerances, pipeline, artifact, also
        ),
    )
    report.subject = subject
    for flag_stages, flag, source in waivers:
        report.waive(flag_stages, flag=flag, source=source, user=_user())
    return report


def load_reference(cfg: Config) -> Reference | None:
    """The training-time pipeline ``[verify] reference`` names, as ``raw -> arrays``.

    The callable is imported only here, when verifying (never on the torch-free path);
    each raw input is first decoded to a PIL image of ``[verify] reference_input``
    (default ``"RGB"``), or passed as is with ``"raw"``.
    """
    spec = cfg.verify.get("reference")
    if not spec:
        return None
    mode = cfg.verify.get("reference_input", "RGB")
    transform = import_object(spec, base_dir=cfg.path.parent, what="[verify] reference")
    if not callable(transform):
        raise ConfigError(
            f"{cfg.path}: [verify] reference {spec!r} is a "
            f"{type(transform).__name__}, not a callable"
        )
    if mode == "raw":
        return transform
    return lambda raw: transform(load_image(raw, mode=mode))


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


# ------------------------------------------------------------------ settings
def _check_target(output: Path, force: bool) -> None:
    """Fail fast, before anything is built, on a target that may not be replaced."""
    if str(output) in ("", "."):
        raise ConfigError("export needs an output folder (--output or [export] output)")
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not force:
        raise ExportError(
            f"{output} exists; pass --force (force=True) to replace the artifact "
            "there once the new one has passed"
        )
    if not (output / CHECKSUMS).is_file():
        raise ExportError(
            f"--force only replaces an artifact, and {output} is not one "
            f"(no {CHECKSUMS}); choose another output"
        )


def _waivers(cfg: Config, given: Sequence[str], flag: str) -> list[tuple[list[str], str, str]]:
    """``(stages, flag, source)`` for each place a waiver came from, names checked."""
    found = []
    if given:
        found.append((list(given), flag, "command line" if flag.startswith("--") else "Python API"))
    configured = cfg.export.get("allow_unverified", [])
    if configured:
        found.append((configured, "[export] allow_unverified", str(cfg.path)))
    for stages, _, source in found:
        unknown = [s for s in stages if s not in (*STAGES, "all")]
        if unknown:
            raise ConfigError(
                f"{source}: cannot waive {unknown}: stages are {list(STAGES)} (or 'all')"
            )
    return [
        ([s], f"{flag}{' ' if flag.startswith('--') else ''}{s}", source)
        for stages, flag, source in found
        for s in stages
    ]


def _verify_settings(cfg: Config) -> tuple[Tolerances, Reference | None]:
    settings = cfg.verify
    tolerances = Tolerances(**{k: settings[k] for k in _TOLERANCE_KEYS if k in settings})
    if tolerances.task not in _TASKS:
        raise ConfigError(
            f"{cfg.path}: [verify] task must be one of {list(_TASKS)}, got {tolerances.task!r}"
        )
    mode = settings.get("reference_input", "RGB")
    from PIL import Image

    if mode != "raw" and mode not in Image.MODES:
        raise ConfigError(
            f"{cfg.path}: [verify] reference_input must be 'raw' or a PIL mode "
            f"({', '.join(Image.MODES)}), got {mode!r}"
        )
    return tolerances, load_reference(cfg)


def _samples(cfg: Config, example: Any, given: Sequence[Any]) -> list[Any]:
    samples = _unique([*given, *cfg.verify.get("samples", [])])
    if example is None and not samples:
        raise ConfigError(
            f"{cfg.path}: export and verify need an example or samples: pass --example / "
            "inputs, or set [export] example or [verify] samples"
        )
    return samples if example is None else _unique([example, *samples])


# ------------------------------------------------------------------ steps
def _verify(
    cfg: Config,
    reference: Model,
    candidate: Model,
    samples: list[Any],
    dynamic_hw: bool,
    tolerances: Tolerances,
    pipeline: Reference | None,
    artifact: Path | None,
    also: dict[str, Model] | None = None,
) -> ParityReport:
    settings = cfg.verify
    generated = generated_images(settings.get("generated", 4))
    if generated and not _takes_images(reference, generated[0]):
        generated = []
    labels = [
        *(str(s) if isinstance(s, (str, Path)) else f"sample {i}" for i, s in enumerate(samples)),
        *(f"generated image {i}" for i in range(len(generated))),
    ]
    sizes = settings.get("image_sizes") or ([(192, 160), (256, 288)] if dynamic_hw else [])
    return verify(
        reference,
        candidate,
        [*samples, *generated],
        tolerances=tolerances,
        batch_sizes=settings.get("batch_sizes", [1, 2, 4]),
        image_sizes=sizes,
        sample_names=labels,
        reference_pipeline=pipeline,
        artifact=artifact,
        also=also,
    )


def _staging_folder(output: Path) -> Path:
    """An empty folder beside ``output`` (same file system, so the swap is a rename)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    mask = os.umask(0)
    os.umask(mask)
    staging.chmod(0o777 & ~mask)  # mkdtemp makes it private; an artifact is not
    return staging


def _swap_in(staging: Path, output: Path) -> None:
    """Replace ``output`` with ``staging`` by renames; the old folder goes only after."""
    if not output.exists():
        staging.rename(output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    old.rmdir()
    output.rename(old)
    try:
        staging.rename(output)
    except OSError:
        old.rename(output)  # put the previous artifact back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _takes_images(model: Model, image: Any) -> bool:
    try:
        model.prepare(image)
    except (ModelAgnosticError, TypeError, ValueError):
        return False
    return True


def _on_onnx(reference: Model, path: str | os.PathLike[str], cfg: Config) -> Model:
    """The reference's hooks and options on ONNX Runtime, with the config's session
    settings (:func:`_session`)."""
    return _on_backend(reference, "onnxruntime", path=path, **_session(cfg))


def _on_backend(reference: Model, backend: str, **settings: Any) -> Model:
    """The reference's hooks and options on ``backend``, made with ``settings``."""
    hooks = type(reference).hooks_class or type(reference)
    runner: Any = hooks.with_backend(backend)
    options = {
        name: getattr(reference, name)
        for name in reference.option_names()
        if hasattr(reference, name)
    }
    return runner(**settings, **options)  # keywords: hooks may take **options


def _session(cfg: Config) -> dict[str, Any]:
    """The config's ``[onnxruntime]`` settings but ``path``: what verify runs with, and
    what the artifact ships (a deployment may override them: config.overrides)."""
    return {k: v for k, v in cfg.backend_options("onnxruntime").items() if k != "path"}


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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return ""


def _timed(progress: Progress, step: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    progress(f"{step} ...")
    result = action()
    progress(f"{step}: done in {time.perf_counter() - start:.1f} s")
    return result
