"""TensorFlow vs ONNX Runtime vs PyTorch on CheXNet (DenseNet-121), one process, same threads.

Exports CheXNet with ``format="savedmodel"`` (ONNX, then onnx2tf to a SavedModel, both
verified against PyTorch in one report), records the conversion time and the SavedModel's
size (and, for comparison, onnx2tf's own command left to write its TFLite files too), then times ``infer`` at batch 1 and 8 on the three backends in interleaved rounds
(every backend asked for both outputs, each with the same intra-op thread count and one
inter-op thread). Each backend runs in a process of its own, one call at a time: in one
process, the idle runtimes' thread pools slowed PyTorch's batch of 8 from 0.26 s to 1.5 s.
Writes bench/results/tensorflow_backend.json. Seeded random weights:
the cost of a DenseNet does not depend on its weights. (Not named ``tensorflow.py``: with
bench/ on ``sys.path``, as the test suite puts it, that file would shadow the library.)

Usage: python bench/tensorflow_backend.py [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import CHEXNET_CONFIG, medians, write_result  # noqa: E402

BATCHES = (1, 8)
TARGET = "report only: TensorFlow / ONNX Runtime and TensorFlow / PyTorch latency per batch"


def _onnx2tf_with_tflite(onnx_path: Path, scratch: Path) -> tuple[float, list[str]]:
    """(seconds, files written) of onnx2tf's own command left to run to its end (its TFLite
    files included) with export's flags, on a copy of ``onnx_path``: what the stop in
    model_agnostic/export/_tf_onnx2tf.py saves."""
    import shutil

    from model_agnostic.export import tf_converter

    work = scratch / "onnx2tf-full"
    work.mkdir()
    shutil.copyfile(onnx_path, work / "model.onnx")
    command = [str(tf_converter.ensure_converter().parent / "onnx2tf"), "-i",
               str(work / "model.onnx"), "-o", str(work / "out"), "-osd", "-k", "image",
               "-sh", "image:2,3,224,224"]
    started = time.perf_counter()
    done = tf_converter._subprocess(command, work)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"onnx2tf failed: {done.stdout[-2000:]}")
    return seconds, sorted(p.name for p in (work / "out").iterdir())


def _converter_venv() -> dict[str, Any]:
    """The converter venv's size on disk and how long its install took (its marker)."""
    from model_agnostic._venv import marker
    from model_agnostic.export import tf_converter

    folder = tf_converter.converter_dir()
    return {"bytes": _size(folder), "created_s": (marker(folder) or {}).get("created_s")}


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _worker(conn: Any, target: str, backend: str, overrides: dict[str, Any]) -> None:
    """One backend in its own process: load, then time ``infer`` on each batch sent."""
    if backend == "tensorflow":
        from model_agnostic._deps import require

        require("tensorflow", "bench/tensorflow_backend.py")
    from model_agnostic import load_model

    model = load_model(target, backend=backend, overrides=overrides)
    conn.send("ready")
    while (message := conn.recv()) is not None:
        inputs, keep = message
        start = time.perf_counter()
        outputs = model.infer(inputs)
        seconds = time.perf_counter() - start
        conn.send((seconds, outputs if keep else None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds at batch 1")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    threads = args.threads
    from model_agnostic._deps import require

    require("tensorflow", "bench/tensorflow_backend.py")  # Triton first: see _deps
    from model_agnostic.export.pipeline import export_model

    with tempfile.TemporaryDirectory(prefix="bench-tensorflow-") as scratch:
        out = Path(scratch) / "chexnet"
        started = time.perf_counter()
        result = export_model(CHEXNET_CONFIG, out, format="savedmodel",
                              progress=lambda m: print(f"export: {m}", file=sys.stderr))
        export_s = time.perf_counter() - started
        if result.artifact is None:
            print(result.report.summary(), file=sys.stderr)
            return 1
        saved = json.loads((out / "metadata.json").read_text())["savedmodel"]
        full_s, full_files = _onnx2tf_with_tflite(out / "model.onnx", Path(scratch))
        venv = _converter_venv()
        stages = {s.stage: {"status": s.status, "max_abs": s.max_abs} for s in result.report.stages}
        settings = {
            "tensorflow": {"intra_op_num_threads": threads, "inter_op_num_threads": 1},
            "onnxruntime": {"intra_op_num_threads": threads, "inter_op_num_threads": 1},
            "pytorch": {"num_threads": threads},
        }
        context = multiprocessing.get_context("spawn")
        workers = {}
        for name in ("pytorch", "onnxruntime", "tensorflow"):
            parent, child = context.Pipe()
            target = str(CHEXNET_CONFIG if name == "pytorch" else out)
            process = context.Process(target=_worker, args=(child, target, name,
                                                           {name: settings[name]}))
            process.start()
            assert parent.recv() == "ready"
            workers[name] = (parent, process)

        def call(name: str, inputs: Any, keep: bool = False) -> Any:
            workers[name][0].send((inputs, keep))
            return workers[name][0].recv()

        rng = np.random.default_rng(0)
        samples: dict[str, list[float]] = {}
        agreement: dict[str, float] = {}
        try:
            for batch in BATCHES:
                inputs = {"image": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
                answers = {name: call(name, inputs, keep=True)[1] for name in workers}
                agreement[f"b{batch}"] = float(max(
                    np.abs(answers["tensorflow"][k] - answers["onnxruntime"][k]).max()
                    for k in answers["onnxruntime"]))
                for name in workers:  # warm-up
                    call(name, inputs)
                repeats = args.repeats if batch == 1 else max(5, args.repeats // 2)
                for name in workers:
                    samples[f"{name} b{batch}"] = []
                for _ in range(repeats):
                    for name in workers:
                        samples[f"{name} b{batch}"].append(call(name, inputs)[0])
                print(f"batch {batch}: "
                      f"{medians({k: v for k, v in samples.items() if k.endswith(f'b{batch}')})}",
                      file=sys.stderr)
        finally:
            for parent, process in workers.values():
                parent.send(None)
                process.join(timeout=60)
        median = medians(samples)
        ratios = {}
        for batch in BATCHES:
            tf_s = median[f"tensorflow b{batch}"]
            ratios[f"tensorflow/onnxruntime b{batch}"] = tf_s / median[f"onnxruntime b{batch}"]
            ratios[f"tensorflow/pytorch b{batch}"] = tf_s / median[f"pytorch b{batch}"]
            ratios[f"onnxruntime/pytorch b{batch}"] = (median[f"onnxruntime b{batch}"]
                                                      / median[f"pytorch b{batch}"])
        import tensorflow as tf

        write_result("tensorflow_backend", {
            "model": "CheXNet DenseNet-121, 3x224x224 FP32, outputs probabilities and features "
                     "(seeded random weights)",
            "threads": {"intra_op": threads, "inter_op": 1},
            "isolation": "each backend in its own process, one call at a time, timed inside it",
            "settings": settings,
            "batches": list(BATCHES),
            "samples_s": samples,
            "median_s": median,
            "ratios": ratios,
            "tf_vs_onnxruntime_max_abs": agreement,
            "export_s": export_s,
            "conversion_s": saved["conversion_s"],
            "onnx2tf_with_tflite_s": full_s,
            "onnx2tf_with_tflite_files": full_files,
            "converter_venv": venv,
            "savedmodel_bytes": _size(out / saved["path"]),
            "onnx_bytes": (out / "model.onnx").stat().st_size,
            "savedmodel_versions": saved["versions"],
            "tensorflow": tf.__version__,
            "parity": {"verdict": result.report.verdict, "stages": stages},
            "target": TARGET,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
