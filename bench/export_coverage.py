"""Export coverage: every torchvision classification model, exported and verified.

For each architecture in ``torchvision.models.list_models(module=torchvision.models)``
(random weights, ``weights=None``), in its own subprocess:

1. build it through the library: a ``Model`` subclass whose ``create_model()`` returns
   ``torchvision.models.get_model(arch, weights=None)``, bound with
   ``.with_backend("pytorch")``;
2. ``model_agnostic.export_onnx`` with a dynamic batch axis and the default exporter
   order (TorchScript, then dynamo); the exporter used is read back from the file's
   ``model_agnostic.exporter`` metadata;
3. ``model_agnostic.export.verify.verify`` PyTorch against ONNX Runtime
   (``.with_backend("onnxruntime")``) at batch sizes 1 and 3 on seeded random inputs of
   the model's input size; pass = max abs error <= 1e-4 on every output.

Models run one at a time, smallest (parameter count) first, each in a fresh process with
a wall-clock timeout and an RSS ceiling, so a crash, hang or OOM costs one row and memory
goes back to the machine. Results accumulate in bench/results/export_coverage.json; a
rerun skips models already there unless --force. The markdown table goes to stdout and
bench/results/export_coverage.md.

Usage:
  python bench/export_coverage.py                    # everything not yet in the JSON
  python bench/export_coverage.py --only resnet18,vit_b_16 --force
  python bench/export_coverage.py --limit 5          # the next 5 models not yet done
  python bench/export_coverage.py --table            # only print the table from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coverage_model  # noqa: E402
from common import RESULTS, machine  # noqa: E402

from model_agnostic import Model  # noqa: E402

WORKDIR = RESULTS / "export_coverage"
ATOL = 1e-4
BATCH_SIZES = (1, 3)
SEED = 0


class TorchvisionClassifier(Model):
    """Any ``torchvision.models`` classifier on random weights; ``arch`` picks which."""

    arch: str = "resnet18"
    calibrate: bool = False
    input_names = ("image",)
    output_names = ("logits",)

    def create_model(self) -> Any:
        import torchvision

        network = torchvision.models.get_model(self.arch, weights=None)
        if self.calibrate:  # recorded on the module for the results row
            network.coverage_calibration = calibrate(network, input_size(self.arch, network))
        return network


def calibrate(network: Any, size: int, batches: int = 4, batch_size: int = 4) -> dict[str, int]:
    """Make a random-weight network's outputs look like a trained one's (``--calibrate``).

    Freshly initialised, BatchNorm keeps its placeholder statistics (mean 0, variance 1),
    so in eval mode nothing is normalised: activations grow with depth in ResNets and
    Inception (logits of 1e2 to 1e12) and vanish in EfficientNets, MobileNets and MNASNets
    (1e-9 to 1e-14); and ViT's classifier head starts at exactly zero, so every logit is 0.
    Then an absolute tolerance is meaningless both ways: float32 rounding of 1e8 exceeds
    1e-4, and logits of 1e-14 pass whatever the graph computes. So BatchNorm running
    statistics are measured with a few train-mode forwards on random inputs (cumulative
    average, ``momentum=None``) and all-zero Linear weights are redrawn from N(0, 0.02)
    (``coverage_model.calibrate``). Weights otherwise stay the seeded random
    initialisation; nothing is downloaded. Returns how many layers of each kind changed.
    """
    import torch

    zero = sum(1 for m in network.modules()
               if isinstance(m, torch.nn.Linear) and not torch.any(m.weight))
    norms = sum(1 for m in network.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    coverage_model.calibrate(torch, network, size, batches, batch_size)
    return {"batchnorm": norms, "zero_linear": zero}


# ---------------------------------------------------------------- model facts
def family(arch: str) -> str:
    """resnet50 -> resnet, efficientnet_v2_s -> efficientnet_v2, wide_resnet50_2 -> wide_resnet."""
    match = re.match(r"[a-z]+(?:_resnet)?(?:_v\d)?", arch)
    return match.group(0) if match else arch


def input_size(arch: str, network: Any = None) -> int:
    """The square input size the ``weights=None`` model expects.

    ViTs are built for a fixed ``image_size`` (224 with ``weights=None``; vit_h_14's
    published weights use 518 but its random-weight builder uses 224), so read it from
    the network. Otherwise the eval crop of the IMAGENET1K_V1 weights (299 for
    inception_v3, 240-600 for EfficientNets, 256 for Swin V2, 224 for most); for
    regnet_y_128gf, which only has SWAG weights, the 224 of SWAG_LINEAR.
    MaxViT and Swin V1 need 224 exactly and get it from their V1 weights.
    """
    if network is not None and hasattr(network, "image_size"):
        return int(network.image_size)
    import torchvision

    weights = list(torchvision.models.get_model_weights(arch))
    preferred = [w for w in weights if w.name == "IMAGENET1K_V1"] or sorted(
        weights, key=lambda w: _crop(w)
    )
    return _crop(preferred[0])


def _crop(weights: Any) -> int:
    crop = getattr(weights.transforms(), "crop_size", [224])
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


def parameter_counts(archs: list[str]) -> dict[str, int]:
    """Exact counts from a meta-device build (no memory); published counts where that fails."""
    import warnings

    import torch
    import torchvision

    counts = {}
    for arch in archs:
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                network = torchvision.models.get_model(arch, weights=None)
            counts[arch] = sum(p.numel() for p in network.parameters())
        except Exception:  # e.g. RegNet's builder computes widths with real tensors
            weights = list(torchvision.models.get_model_weights(arch))
            counts[arch] = int(weights[0].meta["num_params"])
    return counts


# --------------------------------------------------------------------- worker
def worker(arch: str, result_path: Path, threads: int, keep: bool, calibrate_mode: bool) -> None:
    """Export and verify one architecture; writes its row as JSON to ``result_path``."""
    import logging

    import torch

    from model_agnostic import ExportError, export_onnx
    from model_agnostic.export.verify import Tolerances, verify

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage().splitlines()[0][:400])

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("model_agnostic.export").addHandler(Keep())

    row: dict[str, Any] = {"arch": arch, "family": family(arch), "ok": False, "calibrate": calibrate_mode}

    def save() -> None:
        row["export_warnings"] = sorted(set(records))[:20]
        result_path.write_text(json.dumps(row, indent=1))
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

    start = time.perf_counter()
    pytorch = TorchvisionClassifier.with_backend("pytorch")(
        arch=arch, calibrate=calibrate_mode, seed=SEED, num_threads=threads
    )
    row["build_s"] = round(time.perf_counter() - start, 2)
    row["params"] = sum(p.numel() for p in pytorch.network.parameters())
    if calibrate_mode:
        row["calibration"] = getattr(pytorch.network, "coverage_calibration", None)
    size = input_size(arch, pytorch.network)
    row["input_size"] = size
    rng = np.random.default_rng(SEED)
    example = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    samples = [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(max(BATCH_SIZES))]

    folder = WORKDIR / "onnx" / (arch + ("-calibrated" if calibrate_mode else ""))
    shutil.rmtree(folder, ignore_errors=True)
    path = folder / f"{arch}.onnx"
    start = time.perf_counter()
    try:
        export_onnx(pytorch, path, example, dynamic_batch=True, atol=ATOL)
        row["stage"] = "verify"
    except ExportError as exc:
        row["export_s"] = round(time.perf_counter() - start, 2)
        row["stage"] = "export"
        row["error"] = f"ExportError: {exc}"
        if path.is_file():  # written, then refused (checker, agreement): say by which exporter
            from model_agnostic.export.to_onnx import EXPORTERS

            failed = [e for e in EXPORTERS if any(r.startswith(f"the {e} exporter failed") for r in records)]
            row["exporter"] = next(e for e in EXPORTERS if e not in failed)
        if not path.is_file() or "differs from PyTorch" not in str(exc):
            save()
            return
        # the file was written but disagrees: still measure how far, below
    except Exception as exc:  # anything not wrapped by the library is itself a finding
        row["export_s"] = round(time.perf_counter() - start, 2)
        row["stage"] = "export"
        row["error"] = f"unwrapped {type(exc).__name__}: {str(exc).strip().splitlines()[0][:500]}"
        save()
        return
    row.setdefault("export_s", round(time.perf_counter() - start, 2))
    row["onnx_mib"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)

    start = time.perf_counter()
    try:
        candidate = TorchvisionClassifier.with_backend("onnxruntime")(
            path, intra_op_num_threads=threads, inter_op_num_threads=1
        )
        row["exporter"] = candidate.session.get_modelmeta().custom_metadata_map.get(
            "model_agnostic.exporter", "?"
        )
        row["onnx_batch_dims"] = [
            [arg.shape[0] for arg in args]
            for args in (candidate.session.get_inputs(), candidate.session.get_outputs())
        ]
        report = verify(
            pytorch, candidate, samples,
            tolerances=Tolerances(atol=ATOL, rtol=0.0),
            batch_sizes=BATCH_SIZES,
            sample_names=[f"random{i}" for i in range(len(samples))],
        )
    except Exception as exc:
        row["verify_s"] = round(time.perf_counter() - start, 2)
        row["stage"] = row.get("stage") if "error" in row else "verify"
        row.setdefault("error", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:500]}")
        save()
        return
    row["verify_s"] = round(time.perf_counter() - start, 2)
    numeric = [c for stage in report.stages if stage.stage != "preprocessing"
               for c in stage.comparisons if " top-" not in c.name]
    topk = [c for stage in report.stages for c in stage.comparisons if " top-" in c.name]
    row["max_abs"] = max((c.max_abs for c in numeric), default=math.inf)
    row["per_comparison"] = {c.name: c.max_abs for c in numeric}
    row["topk_agree"] = all(c.passed for c in topk)
    want = pytorch.infer({"image": np.concatenate(samples)})["logits"]
    row["max_abs_logit"] = float(np.max(np.abs(want)))
    # how much the logits depend on the input at all (0: a constant, the check is vacuous)
    row["logit_spread"] = float(np.max(np.std(want, axis=0)))
    row["verify_passed"] = report.passed
    within = bool(numeric) and all(math.isfinite(c.max_abs) and c.max_abs <= ATOL for c in numeric)
    if "error" not in row:
        row["ok"] = within
        if not within:
            row["stage"] = "verify"
            row["error"] = f"max abs error {row['max_abs']:.3g} > {ATOL:g}"
    row.update(float64_reference(pytorch, candidate, np.concatenate(samples), want))
    save()


# ----------------------------------------------------------------- gate pass
def preset(arch: str) -> dict[str, Any]:
    """The options of ``coverage_model.TorchvisionClassifier`` for ``arch``: torchvision's
    evaluation preset of the weights ``input_size`` picks, at the network's input size."""
    import torch
    import torchvision

    weights = list(torchvision.models.get_model_weights(arch))
    chosen = [w for w in weights if w.name == "IMAGENET1K_V1"] or sorted(weights, key=_crop)
    transform = chosen[0].transforms()
    crop, resize = _crop(chosen[0]), int(transform.resize_size[0])
    try:
        with torch.device("meta"):
            size = getattr(torchvision.models.get_model(arch, weights=None), "image_size", crop)
    except Exception:  # RegNet's builder computes widths with real tensors; not a ViT
        size = crop
    if size != crop:  # ViTs built with weights=None are fixed at their own size
        resize, crop = round(resize * size / crop), int(size)
    return {"arch": arch, "calibrate": True, "resize": resize, "crop": crop,
            "interpolation": transform.interpolation.value,
            "mean": list(transform.mean), "std": list(transform.std)}


def gate_worker(arch: str, result_path: Path, threads: int) -> None:
    """``export_model`` at its default export and verify settings: the verdict, per stage."""
    import logging

    import torch

    from model_agnostic.export.pipeline import export_model, generated_images

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    logging.basicConfig(level=logging.ERROR)
    folder = WORKDIR / "gate" / arch
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    options = preset(arch)
    lines = [
        f"[model]\nclass = {json.dumps(str(Path(coverage_model.__file__).resolve()) + ':TorchvisionClassifier')}",
        "[model.options]", *(f"{k} = {json.dumps(v)}" for k, v in options.items()),
        f"[pytorch]\nseed = {SEED}\nnum_threads = {threads}",
        f"[onnxruntime]\nintra_op_num_threads = {threads}\ninter_op_num_threads = 1",
    ]
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    row: dict[str, Any] = {"arch": arch, "family": family(arch), "options": options}
    start = time.perf_counter()
    try:
        result = export_model(config, folder / "artifact",
                              example=generated_images(1, seed=SEED + 1)[0])
    except Exception as exc:  # an export error (or anything unwrapped) is itself a finding
        row.update(verdict="error", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}")
    else:
        report = result.report
        row.update(
            verdict=report.verdict, shipped=result.artifact is not None,
            stages={s.stage: {"status": s.status, "reason": s.reason[:400],
                              "max_abs": s.max_abs if math.isfinite(s.max_abs) else "inf"}
                    for s in report.stages},
            referee_waivers=len(report.referee_waivers()),
            worst_referee_ratio=max((w.get("worst_ratio", 0.0) for w in report.referee_waivers()),
                                    default=None),
            task=report.task,
        )
        if result.artifact is not None:
            meta = json.loads((result.artifact / "metadata.json").read_text())["export"]
            row.update(exporter=meta.get("exporter_used"), opset=meta.get("opset_written"),
                       fallbacks=meta.get("fallbacks"))
    row["export_s"] = round(time.perf_counter() - start, 1)
    result_path.write_text(json.dumps(row, indent=1, default=str))
    shutil.rmtree(folder, ignore_errors=True)


def gate_table(results: dict[str, Any]) -> str:
    """Counts by verdict and one row per model, for docs/export-coverage.md."""
    rows = sorted(results["rows"].values(),
                  key=lambda r: (r["family"], results.get("params", {}).get(r["arch"], 0)))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("verdict", "crash")] = counts.get(r.get("verdict", "crash"), 0) + 1
    lines = [", ".join(f"{v}: {n}" for v, n in sorted(counts.items())) + f" (of {len(rows)})", "",
             "| model | verdict | preprocessing | inference | postprocessing | artifact "
             "| referee waivers | export + verify (s) | peak RSS (GiB) | reason |",
             "|---|---|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        stages = r.get("stages", {})
        status = [stages.get(s, {}).get("status", "-") for s in
                  ("preprocessing", "inference", "postprocessing", "artifact")]
        reason = next((st["reason"] for st in stages.values() if st["status"] != "pass"),
                      r.get("error", ""))
        lines.append(
            f"| {r['arch']} | {r.get('verdict', 'crash')} | {' | '.join(status)} | "
            f"{r.get('referee_waivers', '-')} | {_num(r.get('export_s'))} | "
            f"{_num(r.get('peak_rss_gib'))} | {str(reason).replace('|', '/')[:200]} |")
    return "\n".join(lines)


def float64_reference(pytorch: Any, candidate: Any, batch: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """How far each float32 backend is from the same network run in float64.

    ``torch_vs_f64`` is the model's own float32 round-off (its noise floor): when ONNX
    Runtime's distance from PyTorch is of that order, the two differ by rounding, not
    by a wrong graph. Run after the timed stages; the network is left in float64.
    """
    import torch

    start = time.perf_counter()
    try:
        got = candidate.infer({"image": batch})["logits"]
        network = pytorch.network.double()
        with torch.inference_mode():
            exact = network(torch.from_numpy(batch).double()).numpy()
    except Exception as exc:
        return {"f64_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {
        "torch_vs_f64": float(np.max(np.abs(want - exact))),
        "ort_vs_f64": float(np.max(np.abs(got - exact))),
        "f64_s": round(time.perf_counter() - start, 2),
    }


def library_version() -> str:
    """The library's git commit, with '+dirty' when model_agnostic/ has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "model_agnostic"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# --------------------------------------------------------------------- driver
def run_one(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """One architecture in a fresh process, under a timeout and an RSS ceiling."""
    logs = WORKDIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    suffix = "-gate" if args.gate else "-calibrated" if args.calibrate else ""
    result_path = WORKDIR / f"{arch}{suffix}.row.json"
    result_path.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")
    command = [sys.executable, __file__, "--worker", arch, "--result", str(result_path),
               "--threads", str(args.threads)] + (["--keep-onnx"] if args.keep_onnx else []) + (
        ["--calibrate"] if args.calibrate else []) + (["--gate"] if args.gate else [])
    library = library_version()
    start = time.perf_counter()
    peak_kib, killed = 0, ""
    with open(logs / f"{arch}{suffix}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        while process.poll() is None:
            peak_kib = max(peak_kib, _session_rss_kib(process.pid))
            elapsed = time.perf_counter() - start
            if elapsed > args.timeout:
                killed = f"timed out after {args.timeout:.0f} s"
            elif peak_kib > args.max_rss_gib * 2**20:
                killed = f"RSS passed the {args.max_rss_gib:g} GiB ceiling"
            if killed:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.25)
    wall = time.perf_counter() - start
    if result_path.is_file():
        row = json.loads(result_path.read_text())
        result_path.unlink()
    else:
        tail = (logs / f"{arch}{suffix}.log").read_text(errors="replace").strip().splitlines()[-1:]
        reason = killed or f"worker exited with {process.returncode} ({_signal_name(process.returncode)})"
        row = {"arch": arch, "family": family(arch), "ok": False, "stage": "crash",
               "error": reason + (f"; last output: {tail[0][:300]}" if tail else "")}
        shutil.rmtree(WORKDIR / "onnx" / (arch + suffix), ignore_errors=True)
    row["wall_s"] = round(wall, 1)
    row["library"] = library
    row["peak_rss_gib"] = round(peak_kib / 2**20, 2)  # the worker's whole session
    return row


def _session_rss_kib(session: int) -> int:
    """RSS of every process in the worker's session (the worker and what it starts,
    e.g. the export's torch-free artifact check)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # stat field 6 (session), after pid and (comm)
            total += _rss_kib(int(entry.name))
    return total


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return "error"


def results_path(calibrate: bool, ext: str = "json", gate: bool = False) -> Path:
    """export_coverage.json (plain random init), export_coverage_calibrated.json, or
    export_coverage_gate.json (--gate)."""
    name = "_gate" if gate else "_calibrated" if calibrate else ""
    return RESULTS / f"export_coverage{name}.{ext}"


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": {}}


def save_results(results: dict[str, Any], path: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(results, indent=1, sort_keys=True))
    temporary.replace(path)


# ---------------------------------------------------------------------- table
def table(results: dict[str, Any], archs: list[str] | None = None) -> str:
    rows = [r for a, r in results["rows"].items() if archs is None or a in archs]
    rows.sort(key=lambda r: (r["family"], r.get("params") or results.get("params", {}).get(r["arch"], 0)))
    passed = sum(r["ok"] for r in rows)
    total = len(rows)
    relative = sum(_within_relative(r) for r in rows)
    lines = [
        f"{passed} of {total} exported and verified within {ATOL:g} "
        f"({100 * passed / max(total, 1):.1f}%), dynamic batch axis, batch sizes "
        f"{', '.join(map(str, BATCH_SIZES))}"
        + (", random weights calibrated (--calibrate)" if results.get("calibrate") else "")
        + ".",
        f"{relative} of {total} ({100 * relative / max(total, 1):.1f}%) exported and agree within "
        f"{ATOL:g} relative to the largest |logit| (max abs error / max |logit|).",
        "",
        "| family | model | params (M) | input | exporter | ok | max abs error | max abs logit | rel. error | PyTorch f32 vs f64 | export (s) | verify (s) | peak RSS (GiB) | failure |",
        "|---|---|---:|---:|---|:-:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        params = r.get("params") or results.get("params", {}).get(r["arch"])
        max_abs = r.get("max_abs")
        lines.append(
            f"| {r['family']} | {r['arch']} | {params / 1e6:.1f} | {r.get('input_size', '')} | "
            f"{r.get('exporter', '-')} | {'yes' if r['ok'] else '**no**'} | "
            f"{'-' if max_abs is None else f'{max_abs:.1e}'} | {_sci(r.get('max_abs_logit'))} | {_relative(r)} | "
            f"{_exp(r.get('torch_vs_f64'))} | "
            f"{_num(r.get('export_s'))} | "
            f"{_num(r.get('verify_s'))} | {_num(r.get('peak_rss_gib'))} | {_short(r)} |"
        )
    return "\n".join(lines)


def doc_table(plain: dict[str, Any], calibrated: dict[str, Any]) -> str:
    """The table in docs/export-coverage.md: the calibrated pass, with the float64 referee,
    and the plain random-initialisation pass beside it; one row per model."""
    params = calibrated.get("params", {})
    rows = sorted(calibrated["rows"].values(),
                  key=lambda r: (r["family"], params.get(r["arch"], 0)))
    lines = [
        "| model | params (M) | input | exporter | within 1e-4 | max abs error | max abs logit "
        "| ORT vs f64 | PyTorch f32 vs f64 | as close to f64 as PyTorch | export (s) "
        "| verify (s) | peak RSS (GiB) | plain init: within 1e-4 | max abs error "
        "| max abs logit |",
        "|---|---:|---:|---|:-:|---:|---:|---:|---:|:-:|---:|---:|---:|:-:|---:|---:|",
    ]
    for r in rows:
        p = plain["rows"].get(r["arch"], {})
        faithful = faithful_to_f64(r)
        lines.append(
            f"| {r['arch']} | {params.get(r['arch'], 0) / 1e6:.1f} | "
            f"{r.get('input_size', '')} | {r.get('exporter', '-')} | {_ok(r)} | "
            f"{_exp(r.get('max_abs'))} | {_sci(r.get('max_abs_logit'))} | "
            f"{_exp(r.get('ort_vs_f64'))} | {_exp(r.get('torch_vs_f64'))} | "
            f"{'-' if faithful is None else 'yes' if faithful else '**no**'} | "
            f"{_num(r.get('export_s'))} | {_num(r.get('verify_s'))} | "
            f"{_num(r.get('peak_rss_gib'))} | {_ok(p) if p else 'not run'} | "
            f"{_exp(p.get('max_abs'))} | {_sci(p.get('max_abs_logit'))} |"
        )
    return "\n".join(lines)


def faithful_to_f64(row: dict[str, Any]) -> bool | None:
    """ONNX Runtime no farther from the float64 run than ATOL or PyTorch float32 itself."""
    ours, torchs = row.get("ort_vs_f64"), row.get("torch_vs_f64")
    if ours is None or torchs is None:
        return None
    return bool(ours <= max(ATOL, torchs))


def _ok(row: dict[str, Any]) -> str:
    return "yes" if row["ok"] else "**no**"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def _exp(value: Any) -> str:
    return "-" if value is None else f"{value:.1e}"


def _sci(value: Any) -> str:
    return "-" if value is None else f"{value:.2g}"


def _within_relative(row: dict[str, Any]) -> bool:
    """Agreement scaled by the logits' size; False when the failure was not about size."""
    error, scale = row.get("max_abs"), row.get("max_abs_logit")
    if error is None or not scale or not math.isfinite(error):
        return False
    reason = row.get("error", "")
    if reason and "differs from PyTorch" not in reason and not reason.startswith("max abs error"):
        return False
    return error / scale <= ATOL


def _relative(row: dict[str, Any]) -> str:
    """Max abs error over the largest |logit|: what 1e-4 means depends on the logits' scale."""
    error, scale = row.get("max_abs"), row.get("max_abs_logit")
    if error is None or not scale or not math.isfinite(error):
        return "-"
    return f"{error / scale:.1e}"


def _short(row: dict[str, Any]) -> str:
    if row["ok"]:
        return ""
    text = row.get("error", "?").replace("|", "/").replace("\n", " ")
    return f"{row.get('stage', '?')}: {text[:160]}"


# ----------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated architectures")
    parser.add_argument("--limit", type=int, help="run at most N models (after skipping done ones)")
    parser.add_argument("--force", action="store_true", help="rerun models already in the JSON")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model (default 1800)")
    parser.add_argument("--max-rss-gib", type=float, default=20, help="kill a worker above this RSS")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT threads (default 2)")
    parser.add_argument("--keep-onnx", action="store_true", help="keep the .onnx files")
    parser.add_argument("--table", action="store_true", help="only print the table from the JSON")
    parser.add_argument("--doc", action="store_true",
                        help="print both passes side by side (the table in docs/export-coverage.md)")
    parser.add_argument("--calibrate", action="store_true",
                        help="BatchNorm statistics measured on random inputs, all-zero Linear "
                        "layers redrawn, so logits have a trained model's scale "
                        "(separate results: export_coverage_calibrated.json)")
    parser.add_argument("--gate", action="store_true",
                        help="run export_model at its default export and verify settings "
                        "(the four-stage gate, calibrated weights, torchvision's preset as "
                        "the preprocessing reference); results: export_coverage_gate.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.gate:
            gate_worker(args.worker, Path(args.result), args.threads)
        else:
            worker(args.worker, Path(args.result), args.threads, args.keep_onnx, args.calibrate)
        return

    import torchvision

    json_path = results_path(args.calibrate, gate=args.gate)
    results = load_results(json_path)
    results["calibrate"] = args.calibrate or args.gate
    if args.table:
        print(gate_table(results) if args.gate else table(results))
        return
    if args.doc:
        print(doc_table(load_results(results_path(False)), load_results(results_path(True))))
        return
    archs = torchvision.models.list_models(module=torchvision.models)
    if args.only:
        wanted = [a.strip() for a in args.only.split(",") if a.strip()]
        unknown = sorted(set(wanted) - set(archs))
        if unknown:
            parser.error(f"not torchvision classification models: {unknown}")
        archs = [a for a in archs if a in wanted]
    counts = parameter_counts(archs)
    results.setdefault("params", {}).update(counts)
    archs.sort(key=lambda a: counts[a])
    todo = [a for a in archs if args.force or a not in results["rows"]]
    if args.limit is not None:
        todo = todo[: args.limit]
    results["machine"] = machine()
    results["library"] = library_version()
    results["settings"] = {"atol": ATOL, "batch_sizes": list(BATCH_SIZES), "threads": args.threads,
                           "timeout_s": args.timeout, "max_rss_gib": args.max_rss_gib, "seed": SEED}
    print(f"Machine: {results['machine']}; model_agnostic at {results['library']}", flush=True)
    print(f"{len(todo)} to run, {len(archs) - len(todo)} already done", flush=True)
    started = time.perf_counter()
    for index, arch in enumerate(todo, 1):
        row = run_one(arch, args)
        results["rows"][arch] = row
        save_results(results, json_path)
        if args.gate:
            print(f"[{index}/{len(todo)}] {arch:<20} {counts[arch] / 1e6:7.1f}M "
                  f"{row.get('verdict', 'crash'):<10} {row.get('export_s', 0):.1f}s "
                  f"rss {row['peak_rss_gib']:.1f}G {row.get('error', '')[:200]}", flush=True)
            continue
        verdict = "ok" if row["ok"] else f"FAIL ({_short(row)[:200]})"
        print(f"[{index}/{len(todo)}] {arch:<20} {counts[arch] / 1e6:7.1f}M "
              f"{row.get('exporter', '-'):<11} max abs {row.get('max_abs', float('nan')):.1e} "
              f"export {row.get('export_s', 0):.1f}s verify {row.get('verify_s', 0):.1f}s "
              f"rss {row['peak_rss_gib']:.1f}G {verdict}", flush=True)
    results.setdefault("runs", []).append(
        {"models": len(todo), "wall_s": round(time.perf_counter() - started, 1),
         "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    )
    save_results(results, json_path)
    text = gate_table(results) if args.gate else table(results, archs)
    results_path(args.calibrate, "md", gate=args.gate).write_text(f"Machine: {results['machine']}\n\n{text}\n")
    print()
    print(text)


if __name__ == "__main__":
    main()
