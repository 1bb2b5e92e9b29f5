"""Write the measured tables in docs/ from the committed results in bench/results/.

A table lives in a doc between ``<!-- table: NAME -->`` and ``<!-- /table -->``; NAME
picks the renderer below and the result files it reads (``TABLES``). Every rendered
block starts with a ``Source:`` line naming its result file and the machine it was
measured on. ``--check`` changes nothing and exits 1 naming every table that differs from
what its result file says, and every table whose result file is missing, so a number in
docs/ cannot drift from the run that measured it. Without ``--check``, a table whose
result file is missing is left as it is and named (with the command that writes it).
``--list`` prints every table, the docs it is in and the result files it reads.

Usage: python bench/render_docs.py [--check | --list]
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the render_* helpers beside it
from render_common import load as _load  # noqa: E402
from render_common import source as _source  # noqa: E402
from render_instances import instances  # noqa: E402
from render_perf import perf_check  # noqa: E402
from render_quantization import quantization  # noqa: E402
from render_tensorflow import tensorflow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)

#: The command that writes a result file, where it is not ``python bench/<stem>.py``.
PRODUCERS = {
    "export_coverage.json": "python bench/export_coverage.py",
    "export_coverage_calibrated.json": "python bench/export_coverage.py --calibrate",
    "export_coverage_gate.json": "python bench/export_coverage.py --gate",
}


def producer(name: str) -> str:
    return PRODUCERS.get(name, f"python bench/{Path(name).stem}.py")


# ------------------------------------------------------------------ formatting helpers
def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")[:220]


def _target(text: str) -> str:
    return text.replace("<=", "≤").replace(">=", "≥")


def _meets(value: float | None, target: str) -> bool:
    """Whether ``value`` meets ``"<= 1.03"`` / ``">= 2"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


def _verdict(value: float | None, target: str) -> str:
    return "met" if _meets(value, target) else "**not met**"


def _ms(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.{digits}f}"


def _span(values: Iterable[float], digits: int = 2) -> str:
    values = sorted(values)
    low, high = f"{values[0]:.{digits}f}", f"{values[-1]:.{digits}f}"
    return low if low == high else f"{low}–{high}"


def _between(values: Iterable[float], spec: str) -> str:
    """``"a to b"`` for the smallest and largest of ``values`` (one number if they print alike)."""
    values = sorted(values)
    low, high = format(values[0], spec), format(values[-1], spec)
    return low if low == high else f"{low} to {high}"


def _ratio(value: float, target: str | None = None) -> str:
    """Two decimals, three where two would round across the target's bound."""
    text = f"{value:.2f}"
    if target and _meets(float(text), target) != _meets(value, target):
        text = f"{value:.3f}"
    return text


# ------------------------------------------------------------ export: existing tables
def mutations() -> str:
    """bench/mutations.py: the catalogue, caught / total, the stage blamed."""
    data = _load("mutations.json")
    summary = data["summary"]
    lines = [
        f"Source: `bench/results/mutations.json` ({data['machine']}). "
        f"**{summary['caught_and_blamed_right']} of {summary['cases']} caught and blamed on "
        f"the right stage; correct models refused: {summary['controls_refused']} of "
        f"{summary['controls']}.**", "",
        "| bug | expected stage | blamed | caught | max abs at that stage |",
        "|---|---|---|:-:|---:|",
    ]
    for case in [*data["controls"], *data["cases"]]:
        value = case["max_abs_at_blamed_stage"]
        session = f" (ONNX Runtime {case['session']})" if case.get("session") else ""
        lines.append(
            f"| {case['what']}{session} | {case['expected_stage'] or '- (must pass)'} | "
            f"{case['blamed'] or case['verdict']} | {'yes' if case['caught'] else '**no**'} | "
            f"{'-' if value is None else f'{value:.2g}'} |")
    return "\n".join(lines)


def coverage_gate_summary() -> str:
    """bench/export_coverage.py --gate: verdict counts."""
    data = _load("export_coverage_gate.json")
    rows = list(data["rows"].values())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("verdict", "crash")] = counts.get(row.get("verdict", "crash"), 0) + 1
    failed = [r["arch"] for r in rows if r.get("verdict") not in ("passed", "unverified")]
    unverified = sorted(r["arch"] for r in rows if r.get("verdict") == "unverified")
    return "\n".join([
        f"Source: `bench/results/export_coverage_gate.json` ({data['machine']}; model_agnostic "
        f"at {data['library']}).", "",
        "| verdict | models |", "|---|---:|",
        *(f"| {verdict} | {n} |" for verdict, n in sorted(counts.items())),
        f"| **total** | **{len(rows)}** |", "",
        f"Failed as a bug: **{len(failed)}**" + (f" ({', '.join(failed)})" if failed else "") + ".",
        f"Unverified, each with its reason in the per-model table: "
        f"{', '.join(unverified) or 'none'}.",
    ])


def coverage_gate() -> str:
    """bench/export_coverage.py --gate: one row per model."""
    data = _load("export_coverage_gate.json")
    params = data.get("params", {})
    rows = sorted(data["rows"].values(), key=lambda r: (r["family"], params.get(r["arch"], 0)))
    lines = [f"Source: `bench/results/export_coverage_gate.json` ({data['machine']}; "
             f"model_agnostic at {data['library']}).", "",
             "| model | verdict | preprocessing | inference | postprocessing | artifact | "
             "referee waivers | export + verify (s) | peak RSS (GiB) | why not passed |",
             "|---|---|---|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        stages = row.get("stages", {})
        status = [stages.get(s, {}).get("status", "-") for s in
                  ("preprocessing", "inference", "postprocessing", "artifact")]
        reason = next((st["reason"] for st in stages.values() if st["status"] != "pass"),
                      row.get("error", ""))
        lines.append(
            f"| {row['arch']} | {row.get('verdict', 'crash')} | {' | '.join(status)} | "
            f"{row.get('referee_waivers', '-')} | {row.get('export_s', '-')} | "
            f"{row.get('peak_rss_gib', '-')} | {_cell(reason)} |")
    return "\n".join(lines)


def export_cost() -> str:
    """bench/export_cost.py: CheXNet export wall time, now vs before the artifact stage."""
    data = _load("export_cost.json")
    median = data["median_wall_s"]
    steps = data["runs"]["current"][0]["steps_s"]
    return "\n".join([
        f"Source: `bench/results/export_cost.json` ({data['machine']}), median of "
        f"{data['rounds']} alternating runs of `model-agnostic export` on "
        f"`{data['config']}`.", "",
        "| export | wall (s) |", "|---|---:|",
        f"| before the artifact stage (commit {data['baseline_commit']}) | {median['baseline']:.1f} |",
        f"| now (every stage, the artifact run without torch) | {median['current']:.1f} |",
        f"| **ratio** (target ≤ 1.5: {_verdict(data['ratio_current_over_baseline'], '<= 1.5')}) "
        f"| **{data['ratio_current_over_baseline']:.2f}** |", "",
        "Steps of the first current run: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in steps.items()) + ".",
    ])


def exporters() -> str:
    """bench/exporters.py: TorchScript against dynamo on CheXNet, time and error."""
    data = _load("exporters.json")
    lines = [_source("exporters.json", note=(
        f"`export_onnx(..., check=False)` on `{data['config']}` ({data['weights']}), "
        f"opset {data['opset']}, {data['threads']} threads, {data['rounds']} alternating "
        f"rounds, each export in a fresh process (first-use costs included); error: ONNX "
        f"Runtime on the file against PyTorch on the sample X-ray's {data['crops']} crops.")),
        "",
        "| exporter | median export (s) | runs (s) | max abs error vs PyTorch | file written by |",
        "|---|---:|---|---:|---|"]
    for name, runs in sorted(data["runs"].items(), key=lambda kv: data["median_export_s"][kv[0]]):
        seconds = ", ".join(f"{r['export_s']:.1f}" for r in runs)
        lines.append(
            f"| {name} | {data['median_export_s'][name]:.1f} | {seconds} | "
            f"{max(r['max_abs_error'] for r in runs):.1e} | "
            f"{', '.join(sorted({str(r['exporter']) for r in runs}))} |")
    lines += ["", f"dynamo takes **{data['dynamo_over_torchscript']:.1f}×** TorchScript's "
              f"time (medians)."]
    return "\n".join(lines)


# ------------------------------------------------------------------ export coverage
def _coverage_facts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    exported = [r for r in rows if r.get("stage") not in ("export", "crash")]
    ok = [r for r in rows if r.get("ok")]
    faithful = [r for r in rows if _faithful(r)]
    return {"total": len(rows), "exported": len(exported), "ok": len(ok),
            "faithful": len(faithful), "failed": [r for r in rows if not r.get("ok")]}


def _faithful(row: dict[str, Any]) -> bool:
    """ONNX Runtime no farther from float64 than 1e-4 or PyTorch float32 itself."""
    ours, torchs = row.get("ort_vs_f64"), row.get("torch_vs_f64")
    return ours is not None and torchs is not None and ours <= max(1e-4, torchs)


def _share(count: int, total: int) -> str:
    return f"{100 * count / max(total, 1):.1f}%".replace(".0%", "%")


def export_coverage_summary() -> str:
    """bench/export_coverage.py --calibrate (and the plain pass): the headline counts."""
    cal, plain = _load("export_coverage_calibrated.json"), _load("export_coverage.json")
    rows, plain_rows = list(cal["rows"].values()), list(plain["rows"].values())
    c, p = _coverage_facts(rows), _coverage_facts(plain_rows)
    share = 100 * c["ok"] / max(c["total"], 1)
    settings = cal.get("settings", {})
    lines = [_source("export_coverage_calibrated.json", "export_coverage.json", note=(
        f"Batch sizes {', '.join(map(str, settings.get('batch_sizes', [])))}, "
        f"{settings.get('threads', '?')} threads for both runtimes.")), "",
        "| criterion | models | share |", "|---|---|---|",
        f"| exported with a dynamic batch axis, ONNX checker and ONNX Runtime run | "
        f"{c['exported']} / {c['total']} | {_share(c['exported'], c['total'])} |",
        f"| **verify within 1e-4 absolute**, calibrated random weights | **{c['ok']} / "
        f"{c['total']}** | **{_share(c['ok'], c['total'])} (target 95%: "
        f"{'met' if share >= 95 else 'not met'})** |",
        f"| ONNX Runtime no farther from the float64 result than PyTorch float32 itself "
        f"(or within 1e-4) | {c['faithful']} / {c['total']} | "
        f"{_share(c['faithful'], c['total'])} |",
        f"| plain initialisation (`weights=None` as is): verify within 1e-4 | {p['ok']} / "
        f"{p['total']} | {_share(p['ok'], p['total'])} |", ""]
    if c["failed"]:
        torch_err = [r["torch_vs_f64"] for r in c["failed"] if r.get("torch_vs_f64") is not None]
        closer = sum(r.get("ort_vs_f64") is not None and r.get("torch_vs_f64") is not None
                     and r["ort_vs_f64"] <= r["torch_vs_f64"] for r in c["failed"])
        lines.append(
            f"Calibrated, missing 1e-4: {', '.join(sorted(r['arch'] for r in c['failed']))}. "
            + (f"PyTorch float32 against float64 on them: "
               f"{_between(torch_err, '.1e')}; " if torch_err else "")
            + f"ONNX Runtime at least as close to float64 as PyTorch in {closer} of "
            f"{len(c['failed'])}.")
    if p["failed"]:
        logits = [r["max_abs_logit"] for r in p["failed"] if r.get("max_abs_logit") is not None]
        lines.append(
            f"Plain initialisation, missing 1e-4: {', '.join(sorted(r['arch'] for r in p['failed']))}"
            + (f" (max |logit| {_between(logits, '.1g')})" if logits else "") + ".")
    for label, these in (("calibrated", rows), ("plain initialisation", plain_rows)):
        logits = [r["max_abs_logit"] for r in these if r.get("max_abs_logit") is not None]
        if logits:
            lines.append(f"Largest |logit| per model, {label}: {_between(logits, '.2g')}.")
    peaks = sorted(((r["peak_rss_gib"], r["arch"]) for r in rows if r.get("peak_rss_gib")),
                   reverse=True)[:3]
    wall = sum(run.get("wall_s", 0) for run in cal.get("runs", []))
    lines.append(f"Calibrated pass: {wall / 60:.0f} minutes over {len(cal.get('runs', []))} "
                 f"invocation(s); peak RSS " + ", ".join(f"{g:.1f} GiB ({a})" for g, a in peaks)
                 + ".")
    return "\n".join(lines)


def export_coverage() -> str:
    """bench/export_coverage.py: the per-model table (calibrated, plain init beside it)."""
    cal, plain = _load("export_coverage_calibrated.json"), _load("export_coverage.json")
    params = cal.get("params", {})
    rows = sorted(cal["rows"].values(), key=lambda r: (r["family"], params.get(r["arch"], 0)))

    def ok(row: dict[str, Any]) -> str:
        return "yes" if row["ok"] else "**no**"

    def exp(value: Any) -> str:
        return "-" if value is None else f"{value:.1e}"

    def sci(value: Any) -> str:
        return "-" if value is None else f"{value:.2g}"

    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = [_source("export_coverage_calibrated.json", "export_coverage.json"), "",
             "| model | params (M) | input | exporter | within 1e-4 | max abs error | max abs logit "
             "| ORT vs f64 | PyTorch f32 vs f64 | as close to f64 as PyTorch | export (s) "
             "| verify (s) | peak RSS (GiB) | plain init: within 1e-4 | max abs error "
             "| max abs logit |",
             "|---|---:|---:|---|:-:|---:|---:|---:|---:|:-:|---:|---:|---:|:-:|---:|---:|"]
    for r in rows:
        p = plain["rows"].get(r["arch"], {})
        faithful = None if r.get("ort_vs_f64") is None or r.get("torch_vs_f64") is None \
            else _faithful(r)
        lines.append(
            f"| {r['arch']} | {params.get(r['arch'], 0) / 1e6:.1f} | "
            f"{r.get('input_size', '')} | {r.get('exporter', '-')} | {ok(r)} | "
            f"{exp(r.get('max_abs'))} | {sci(r.get('max_abs_logit'))} | "
            f"{exp(r.get('ort_vs_f64'))} | {exp(r.get('torch_vs_f64'))} | "
            f"{'-' if faithful is None else 'yes' if faithful else '**no**'} | "
            f"{num(r.get('export_s'))} | {num(r.get('verify_s'))} | "
            f"{num(r.get('peak_rss_gib'))} | {ok(p) if p else 'not run'} | "
            f"{exp(p.get('max_abs'))} | {sci(p.get('max_abs_logit'))} |")
    return "\n".join(lines)


# ------------------------------------------------------------------- benchmarks.md
def backends() -> str:
    """bench/backends.py: OnnxModel.infer vs bare run, ONNX Runtime vs PyTorch, peak RSS."""
    data = _load("backends.json")
    t = data["targets"]
    lines = [_source("backends.json", note=(
        f"{data['threads']} intra-op threads for both runtimes; median of {data['repeats']} "
        f"interleaved calls.")), "",
        "| measurement | batch | ours (ms) | reference (ms) | ratio | target |",
        "|---|---|---|---|---|---|"]
    for batch, row in sorted(data["infer_vs_bare"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| `OnnxModel.infer` vs the same session's `run` | {batch} | "
            f"{_ms(row['median_s']['ours'], 2)} | {_ms(row['median_s']['bare'], 2)} | "
            f"{row['ratio']:.3f} | {_target(t['infer_over_bare'])} |")
    overhead = data["infer_overhead"]
    lines.append(f"| what `infer` adds per call (input checks, output dict), session stubbed out, "
                 f"mean of {overhead['calls']:,} calls | {overhead['batch']} | "
                 f"{overhead['mean_us']:.1f} µs | | | |")
    vs = data["onnxruntime_vs_pytorch"]
    lines.append(
        f"| ONNX Runtime vs PyTorch eager, DenseNet-121 | {vs['batch']} | "
        f"{_ms(vs['median_s']['onnxruntime'], 2)} | {_ms(vs['median_s']['pytorch'], 2)} | "
        f"{vs['pytorch_over_onnxruntime']:.2f}× faster | "
        f"{_target(t['pytorch_over_onnxruntime'])}× |")
    rss = data["peak_rss"]
    lines.append(
        f"| peak RSS (VmHWM), fresh process, one X-ray, TenCrop | {rss['crops']} crops | "
        f"{rss['onnxruntime']['maxrss_mib']:,.0f} MiB | {rss['pytorch']['maxrss_mib']:,.0f} MiB | "
        f"{rss['onnxruntime_over_pytorch']:.2f} | {_target(t['rss_onnxruntime_over_pytorch'])} |")
    lines += ["", "torch imported in the ONNX Runtime process: "
              f"{'**yes**' if rss['onnxruntime']['torch_imported'] else 'no'}."]
    return "\n".join(lines)


def preprocessing() -> str:
    """bench/preprocessing.py: torchvision vs ours, and the resize alone."""
    data = _load("preprocessing.json")
    plan = data["our_resize_plan"]
    image = data["input"]
    lines = [_source("preprocessing.json", note=(
        f"{image['file']} {image['size'][0]}×{image['size'][1]} {image['mode']} (converted "
        f"once, outside the timed region) to {tuple(data['output']['shape'])} "
        f"{data['output']['dtype']}; torch threads {data['torch_threads']}, resize threads "
        f"{data['resize_threads']} (our resize: "
        + (f"{plan['bands']} bands of {plan['axis']}" if plan else "one call")
        + f"); median of {data['repeats']} interleaved runs.")), "",
        "| pipeline | median (ms) | ratio to (a) | max abs diff vs (a) |", "|---|---|---|---|"]
    for row in data["rows"]:
        diff = (f"{row['max_abs_diff_vs_a']:.1e}" if row["max_abs_diff_vs_a"] is not None
                else "" if row["name"].startswith("PIL")
                else f"pixels equal to PIL's: {data['resize_pixels_equal']}")
        lines.append(f"| {row['name']} | {_ms(row['median_s'], 2)} | {row['ratio_to_a']:.2f} | "
                     f"{diff} |")
    target = data["target"]["fast_over_torchvision"]
    lines += ["", f"(c)/(a) = **{data['fast_over_torchvision']:.2f}** (target {_target(target)}: "
              f"{_verdict(data['fast_over_torchvision'], target)}). PIL's resize alone is "
              f"{data['pil_resize_over_torchvision']:.2f} of (a), ours "
              f"{data['our_resize_over_torchvision']:.2f} ({data['our_resize_over_pil_resize']:.2f} "
              f"of PIL's). All outputs within 1e-6 of (a) and resize pixels identical: "
              f"{'yes' if data['all_within_1e-6_and_resize_identical'] else '**no**'}."]
    return "\n".join(lines)


def serving() -> str:
    """bench/serving.py: our server against bare ONNX Runtime and a naive Flask view."""
    d = _load("serving.json")
    t, bare, lat, enc = d["targets"], d["bare_throughput"], d["latency"], d["binary_vs_json"]
    naive = d.get("naive")
    shape = "×".join(map(str, enc["shape"]))
    lines = [_source("serving.json", note=(
        f"ONNX Runtime / torch threads {d['threads']} (server and bare session); server threads "
        f"{d['server_threads']}; {d['requests']} tensor requests per throughput run, "
        f"{len(lat['served_samples_s'])} latency samples {lat['settle_s'] * 1e3:.0f} ms apart, "
        f"{d['image_requests']} X-ray uploads per run.")), "",
        "| measurement | ours | reference | ratio | target |", "|---|---|---|---|---|",
        f"| throughput, concurrency {d['concurrency']}, vs bare ORT best batch "
        f"({bare['best_batch']}) | {d['served_throughput_img_s']:.2f} img/s | "
        f"{bare['best_img_s']:.2f} img/s | {_ratio(d['throughput_over_bare'], t['throughput_over_bare'])} | "
        f"{_target(t['throughput_over_bare'])} |",
        f"| latency p50, concurrency 1, vs bare ORT batch 1 | {_ms(lat['served_p50_s'])} ms | "
        f"{_ms(lat['bare_p50_s'])} ms | {lat['served_over_bare']:.3f} | "
        f"{_target(t['latency_served_over_bare'])} |",
        f"| one {shape} FP32 request end to end, binary vs JSON | "
        f"{_ms(enc['median_s']['binary'], 0)} ms | {_ms(enc['median_s']['json'], 0)} ms | "
        f"{enc['json_over_binary']:.1f}× faster | {_target(t['json_over_binary'])}× |"]
    if naive:
        lines += [
            f"| throughput, concurrency {d['concurrency']}, vs naive Flask + PyTorch (same "
            f"tensors) | {d['served_throughput_img_s']:.2f} img/s | {naive['tensor_img_s']:.2f} "
            f"img/s | {d['served_over_naive']:.2f}× | {_target(t['served_over_naive'])}× |",
            f"| X-ray uploads, concurrency {d['concurrency']}, TenCrop: `/predict` vs naive Flask "
            f"+ torchvision + PyTorch | {d['xray_uploads']['served_req_s']:.2f} req/s | "
            f"{naive['xray_req_s']:.2f} req/s | {d['xray_served_over_naive']:.2f}× | "
            f"{_target(t['xray_served_over_naive'])}× |"]
    rates = sorted(bare["img_s_by_batch"].items(), key=lambda kv: int(kv[0]))
    batches = d["server_batches"]
    lines += ["", "Bare ORT images/s by batch size: "
              + ", ".join(f"{b}: {r:.1f}" for b, r in rates) + ". "
              f"The server made {batches['backend_calls']:,.0f} backend calls for "
              f"{batches['rows']:,.0f} rows (mean batch {batches['mean_batch']:.1f}). "
              f"Latency: served p50 minus bare p50 = "
              f"{(lat['served_p50_s'] - lat['bare_p50_s']) * 1e3:+.1f} ms, on a bare "
              f"{_ms(lat['bare_p50_s'])} ms call."]
    if naive:
        lines.append(
            f"Naive baseline: bare ONNX Runtime's best batch is "
            f"{bare['best_img_s'] / naive['tensor_img_s']:.1f}× the naive view's "
            f"{naive['tensor_img_s']:.1f} img/s, the most a server with no overhead at all could "
            f"reach here (target {_target(t['served_over_naive'])}×).")
    else:
        lines.append("The naive Flask baseline was not run (`--skip-naive`).")
    return "\n".join(lines)


def thread_interference() -> str:
    """bench/thread_interference.py: one 2-thread session vs two 1-thread sessions."""
    d = _load("thread_interference.json")
    burner = d["burner"]
    lines = [_source("thread_interference.json", note=(
        f"CheXNet's DenseNet-121 graph, batches of {d['batch']} images, {d['calls']} calls per "
        f"session per sample, median of {d['rounds']} interleaved rounds. The burning Python "
        f"thread busy-loops {burner['share']:.0%} of every {burner['period_s'] * 1e3:.0f} ms and "
        f"got {statistics.median(burner['cpu_share_measured']):.0%} of a core (median).")), "",
        "| sessions | alone (img/s) | beside the burning thread (img/s) | ratio |",
        "|---|---:|---:|---:|"]
    for name, row in d["throughput_img_s"].items():
        lines.append(f"| {name} | {row['median']['alone']:.1f} | {row['median']['burning']:.1f} | "
                     f"{row['burning_over_alone']:.2f} |")
    lat = d["latency_batch1"]
    lines += ["", f"One image (batch 1), median of {lat['repeats']}: "
              f"{_ms(lat['median_s']['2 threads'])} ms on the 2-thread session, "
              f"{_ms(lat['median_s']['1 thread'])} ms on a 1-thread session "
              f"({lat['one_thread_over_two']:.2f}×)."]
    return "\n".join(lines)


def _cells(d: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["system"], c["workload"], c["concurrency"]): c for c in d["cells"]}


WORKLOADS = {"tensor": "1x3x224x224 tensor, binary, tritonclient",
             "xray": "X-ray JPEG to `/predict`, TenCrop"}


def _ray_context(d: dict[str, Any]) -> str:
    return (f"ray {d['ray']}, {d['cpus']} CPUs; load average before / after "
            f"{' '.join(map(str, d['load_average_before']))} / "
            f"{' '.join(map(str, d['load_average_after']))}; closed loop, "
            f"{d['requests_per_cell']['tensor']} tensor and {d['requests_per_cell']['xray']} "
            f"X-ray requests per cell; ours and Ray with one replica alternate cell by cell.")


def _ray_verdict(d: dict[str, Any]) -> str:
    cells, target = _cells(d), d["target"]["ray-1_rps_over_ours"]
    parts, missed = [], []
    for workload, label in (("xray", "X-ray uploads"), ("tensor", "single tensors")):
        ratios = {c: cells["ray-1", workload, c]["rps_over_ours"] for c in d["concurrency"]}
        parts.append(f"{label} **{_span(ratios.values())}**")
        missed += [f"{workload} at concurrency {c}: {r:.3f}" for c, r in ratios.items()
                   if not _meets(r, target)]
    total = 2 * len(d["concurrency"])
    return (f"Ray Serve with one replica / ours, throughput: {'; '.join(parts)} (target "
            f"{_target(target)}: met in {total - len(missed)} of {total} cells"
            + (f"; not met: {', '.join(missed)}" if missed else "") + ").")


def _ray_extra_ms(d: dict[str, Any]) -> str:
    cells, low = _cells(d), min(d["concurrency"])
    parts = []
    for workload, label in (("tensor", "a tensor request"), ("xray", "an X-ray upload")):
        ours, ray = cells["ours", workload, low]["p50_s"], cells["ray-1", workload, low]["p50_s"]
        parts.append(f"{(ray - ours) * 1e3:+.0f} ms on {label} ({_ms(ray, 0)} vs "
                     f"{_ms(ours, 0)} ms)")
    return f"At concurrency {low}, Ray's p50 against ours: " + "; ".join(parts) + "."


def ray_serving_summary() -> str:
    """bench/ray_serving.py: throughput, ours vs Ray with one and two replicas."""
    d = _load("ray_serving.json")
    cells = _cells(d)
    lines = [_source("ray_serving.json", note=_ray_context(d) + " Throughput in requests/s:"), "",
             "| workload | concurrency | ours | Ray, 1 replica | ratio | Ray, 2 replicas |",
             "|---|---|---|---|---|---|"]
    for workload, label in WORKLOADS.items():
        for c in d["concurrency"]:
            ours, one, two = (cells[s, workload, c] for s in ("ours", "ray-1", "ray-2"))
            first = c == d["concurrency"][0]
            lines.append(f"| {label if first else ''} | {c} | {ours['rps']:.2f} | "
                         f"{one['rps']:.2f} | "
                         f"{_ratio(one['rps_over_ours'], d['target']['ray-1_rps_over_ours'])} | "
                         f"{two['rps']:.2f} |")
    lines += ["", _ray_verdict(d) + " " + _ray_extra_ms(d)]
    return "\n".join(lines)


def ray_serving() -> str:
    """bench/ray_serving.py: every cell, latency included (docs/scaling.md)."""
    d = _load("ray_serving.json")
    names = {"ours": "ours", "ray-1": "Ray, 1 replica", "ray-2": "Ray, 2 replicas"}
    cells = _cells(d)
    lines = [_source("ray_serving.json", note=_ray_context(d)), "",
             "| workload | concurrency | system | req/s | p50 ms | p99 ms | vs ours |",
             "|---|---|---|---|---|---|---|"]
    for workload in WORKLOADS:
        for c in d["concurrency"]:
            for system, label in names.items():
                cell = cells[system, workload, c]
                lines.append(f"| {workload} | {c} | {label} | {cell['rps']:.2f} | "
                             f"{_ms(cell['p50_s'], 0)} | {_ms(cell['p99_s'], 0)} | "
                             f"{_ratio(cell['rps_over_ours'], d['target']['ray-1_rps_over_ours'])} |")
    lines += ["", _ray_verdict(d) + " " + _ray_extra_ms(d)]
    return "\n".join(lines)


def ray_replicas() -> str:
    """bench/ray_serving.py: two Ray replicas against one on the same cores."""
    d = _load("ray_serving.json")
    cells = _cells(d)
    lines = [_source("ray_serving.json"), "",
             "| workload | concurrency | Ray, 2 replicas / 1 replica (throughput) |",
             "|---|---|---:|"]
    ratios = []
    for workload in WORKLOADS:
        for c in d["concurrency"]:
            ratio = cells["ray-2", workload, c]["rps"] / cells["ray-1", workload, c]["rps"]
            ratios.append(ratio)
            lines.append(f"| {workload} | {c} | {ratio:.2f} |")
    below = [1 - r for r in ratios if r < 1]
    lines += ["", f"Two replicas gave {_span(ratios)} of one replica's throughput on "
              f"{d['cpus']} CPUs: {len(below)} of {len(ratios)} cells below the prediction "
              f"(equal throughput)" + (f", by {_span([100 * b for b in below], 0)}%"
                                       if below else "") + "."]
    return "\n".join(lines)


#: The sizing example of docs/scaling.md and the manifest's settings it checks
#: (deploy/kserve-inferenceservice.yaml): demand, utilisation, p99 budget, scaleTarget,
#: memory request per replica.
DEMAND_XRAYS_S, UTILISATION, P99_BUDGET_S, SCALE_TARGET, MEMORY_GIB = 100, 0.7, 1.0, 2, 1.5


def capacity_model() -> str:
    """bench/ray_serving.py: the capacity model's numbers and the sizing built on them."""
    d = _load("ray_serving.json")
    cells, cores = _cells(d), d["cpus"]
    conc = sorted(d["concurrency"])
    loaded = [c for c in conc if c > conc[0]] or conc
    ours = {c: cells["ours", "xray", c] for c in conc}
    mu = statistics.mean(ours[c]["rps"] for c in loaded)
    tensors = max(cells["ours", "tensor", c]["rps"] for c in conc)
    alone = ours[conc[0]]
    tails = [ours[c]["p99_s"] / ours[c]["p50_s"] for c in conc]
    per_replica = UTILISATION * mu
    replicas = math.ceil(DEMAND_XRAYS_S / per_replica)
    in_flight_p50 = SCALE_TARGET / mu
    ray = {w: min(cells["ray-1", w, c]["rps_over_ours"] for c in conc) for w in WORKLOADS}
    checks = "; ".join(f"at c = {c}: {ours[c]['p50_s']:.2f} s measured, c / mu = {c / mu:.2f} s "
                       f"predicted" for c in loaded)
    return "\n".join([
        _source("ray_serving.json"), "",
        f"- a replica of {cores} cores saturates at `mu = {mu:.2f}` TenCrop X-rays/s (ours, "
        f"mean at concurrency {', '.join(map(str, loaded))}), so `mu_core = {mu / cores:.2f}` "
        f"X-rays/s, or {tensors / cores:.1f} single images/s (ours, best tensor cell), per core;",
        f"- one X-ray alone: `S = {alone['p50_s']:.2f} s` p50, {alone['p99_s']:.2f} s p99 (ours, "
        f"concurrency {conc[0]});",
        f"- queueing: {checks}; p99 is {min(tails):.1f} to {max(tails):.1f}x p50 (ours, X-rays);",
        f"- per replica at {UTILISATION:.0%}: `{UTILISATION} * {mu:.2f} = {per_replica:.2f}` "
        f"X-rays/s;",
        f"- {SCALE_TARGET} requests in flight per replica (the manifest's `scaleTarget`): "
        f"`p50 ~ {SCALE_TARGET} / mu = {in_flight_p50:.2f} s`, p99 ~ "
        f"{in_flight_p50 * max(tails):.2f} s ({'within' if in_flight_p50 * max(tails) < P99_BUDGET_S else '**over**'} "
        f"the {P99_BUDGET_S:g} s budget);",
        f"- replicas: `{DEMAND_XRAYS_S} / {per_replica:.2f}` rounded up = **{replicas}**, i.e. "
        f"**{replicas * cores} cores** and {replicas} x {MEMORY_GIB} GiB = "
        f"{replicas * MEMORY_GIB:.0f} GiB of memory requests;",
        f"- on Ray Serve instead of our server, budget its measured throughput ratio: "
        f"{ray['xray']:.2f} for X-rays "
        f"({math.ceil(DEMAND_XRAYS_S / (per_replica * ray['xray']))} replicas), "
        f"{ray['tensor']:.2f} for single small tensors.",
    ])


def ray_overhead() -> str:
    """bench/ray_overhead.py: where Ray's per-request cost goes."""
    d = _load("ray_overhead.json")
    labels = {"live": "`GET /v2/health/live` (no model work)",
              "infer": "tiny infer, 1x3x8x8 JSON (one backend call)"}
    lines = [_source("ray_overhead.json", note=(
        f"ray {d['ray']}; median ms of the last {d['requests'] - d['warmup']} of "
        f"{d['requests']} sequential requests on one keep-alive connection, tiny model.")), "",
        "| request | ours (ms) | Ray adapter (ms) | difference (ms) |", "|---|---:|---:|---:|"]
    for name, case in sorted(d["cases"].items(), key=lambda kv: kv[1]["body_bytes"]):
        label = labels.get(name, f"{case['body_bytes'] / 1024:.0f} KiB `{case['method']} "
                                 f"{case['path']}` (the body travels, then 405)")
        lines.append(f"| {label} | {case['ours_median_ms']:.2f} | {case['ray_median_ms']:.2f} | "
                     f"{case['ray_minus_ours_ms']:+.2f} |")
    empty, live = d["empty"]["median_ms"], d["cases"]["live"]["ray_median_ms"]
    lines += ["", f"An **empty** Ray Serve deployment (an async method returning a constant) "
              f"takes {empty:.2f} ms per GET, so the adapter's own path (read the body, one "
              f"thread hop, the data plane) adds {live - empty:.2f} ms to Ray's "
              f"{live:.2f} ms `GET /v2/health/live`; the rest is Ray's."]
    return "\n".join(lines)


def server_memory() -> str:
    """bench/server_memory.py: the server's RSS idle and under load."""
    d = _load("server_memory.json")
    return "\n".join([
        _source("server_memory.json", note="`model-agnostic serve` on the CheXNet artifact."), "",
        "| server RSS | MiB |", "|---|---:|",
        f"| idle, model loaded | {d['idle_rss_mib']:,.0f} |",
        f"| peak (VmHWM) over {d['rounds']} rounds of {d['concurrency']} concurrent TenCrop "
        f"X-ray uploads | {d['peak_rss_mib']:,.0f} |",
        f"| after the load | {d['after_rss_mib']:,.0f} |"])


def cold_start() -> str:
    """bench/cold_start.py: process start to first CheXNet prediction."""
    d = _load("cold_start.json")
    lines = [_source("cold_start.json", note=(
        f"A fresh `python` process from start to its first CheXNet prediction, "
        f"{d['repeats']} interleaved runs each.")), "",
        "| path | median (s) | runs (s) |", "|---|---|---|"]
    for path in d["paths"].values():
        # Artifacts are written by `make demo`, not committed: quote only committed paths.
        source = path["source"]
        source = f"{source} (from `make demo`)" if "/artifacts/" in f"{source}/" else f"`{source}`"
        lines.append(f"| {path['label']}, {source} | {path['median_s']:.2f} | "
                     f"{', '.join(f'{s:.2f}' for s in path['samples_s'])} |")
    target = d["target"]["onnxruntime_over_pytorch"]
    lines += ["", f"Ratio ONNX Runtime / PyTorch: **{d['onnxruntime_over_pytorch']:.2f}** "
              f"(target {_target(target)}: {_verdict(d['onnxruntime_over_pytorch'], target)})."]
    return "\n".join(lines)


def install_size() -> str:
    """bench/install_size.py: venv sizes, core vs torch."""
    d = _load("install_size.json")
    venvs = d["venvs"]
    lines = [_source("install_size.json", note=(
        "Fresh virtual environments, `pip install` of this project (not editable).")), "",
        "| venv | size (MiB) | over an empty venv (MiB) | largest packages (MiB) |",
        "|---|---|---|---|"]
    for key in sorted(venvs, key=lambda k: venvs[k]["size_mib"]):
        venv = venvs[key]
        top = sorted(venv["packages_mib"].items(), key=lambda kv: -kv[1])[:6]
        size = f"{venv['size_mib']:,.0f}"
        lines.append(f"| {venv['label']} | {f'**{size}**' if key == 'core' else size} | "
                     f"{venv['over_empty_mib']:,.0f} | "
                     f"{', '.join(f'{n} {m:.0f}' for n, m in top)} |")
    core, packages = venvs["core"]["size_mib"], venvs["core"]["packages_mib"]
    runtime = sum(packages.get(n, 0) for n in ("onnxruntime", "numpy", "numpy.libs", "PIL",
                                               "pillow.libs"))
    onnx = packages.get("onnx", 0)
    target = d["target"]["core_size"]
    lines += ["", f"Core venv: {core * 2**20 / 1e6:,.0f} MB ({core:,.0f} MiB) against the "
              f"{_target(target)} target: {'met' if d['target']['met'] else '**not met**'}. "
              f"onnxruntime, numpy and Pillow (with their `.libs` folders) take {runtime:,.0f} "
              f"MiB of it and onnx {onnx:,.0f} MiB: without onnx it would be about "
              f"{core - onnx:,.0f} MiB. The venv with the torch extra is "
              f"{venvs['torch']['size_mib'] / core:.0f}× the core one."]
    return "\n".join(lines)


SUMMARY_SOURCES = ("backends.json", "preprocessing.json", "cold_start.json", "install_size.json",
                   "serving.json", "ray_serving.json", "fuzz.json",
                   "export_coverage_calibrated.json")


def benchmarks_summary() -> str:
    """The summary table of docs/benchmarks.md, one row per claim, from every result."""
    b, p, c, i, s, r, f, e = (_load(n) for n in SUMMARY_SOURCES)
    bt, st = b["targets"], s["targets"]
    rows = []

    def row(claim: str, target: str, measured: str, script: str, met: bool | None = None) -> None:
        flag = "" if met is None or met else " (not met)"
        rows.append(f"| {claim} | {_target(target)} | {measured.replace('@', flag)} | `{script}` |")

    for batch in ("1", "8"):
        v = b["infer_vs_bare"][batch]["ratio"]
        extra = (f" (overhead {b['infer_overhead']['mean_us']:.1f} µs per call)"
                 if batch == "1" else "")
        row(f"`OnnxModel.infer` vs bare `InferenceSession.run`, batch {batch}",
            bt["infer_over_bare"] + "×", f"**{v:.3f}×@**{extra}", "bench/backends.py",
            _meets(v, bt["infer_over_bare"]))
    v = b["onnxruntime_vs_pytorch"]["pytorch_over_onnxruntime"]
    row(f"CheXNet DenseNet-121, ONNX Runtime vs PyTorch eager, batch 1, {b['threads']} threads "
        "each", bt["pytorch_over_onnxruntime"] + "× faster", f"**{v:.2f}× faster@**",
        "bench/backends.py", _meets(v, bt["pytorch_over_onnxruntime"]))
    rss = b["peak_rss"]
    row("peak memory, fresh process predicting one X-ray: ONNX Runtime / PyTorch",
        bt["rss_onnxruntime_over_pytorch"], f"**{rss['onnxruntime_over_pytorch']:.2f}@** "
        f"({rss['onnxruntime']['maxrss_mib']:,.0f} vs {rss['pytorch']['maxrss_mib']:,.0f} MiB)",
        "bench/backends.py", _meets(rss["onnxruntime_over_pytorch"], bt["rss_onnxruntime_over_pytorch"]))
    times = {r_["name"]: r_["median_s"] for r_ in p["rows"]}
    fast, base = times["(c) model_agnostic, fast path"], times["(a) torchvision, canonical order"]
    row("CheXNet preprocessing, torch-free fast path / torchvision",
        p["target"]["fast_over_torchvision"] + "×", f"**{p['fast_over_torchvision']:.2f}@** "
        f"({_ms(fast, 2)} vs {_ms(base, 2)} ms), outputs "
        f"{'identical' if p['all_within_1e-6_and_resize_identical'] else '**differ**'}",
        "bench/preprocessing.py", p["target"]["met"])
    onnx, torch = c["paths"]["onnxruntime"]["median_s"], c["paths"]["pytorch"]["median_s"]
    row("cold start to first CheXNet prediction, artifact on ONNX Runtime / PyTorch",
        c["target"]["onnxruntime_over_pytorch"], f"**{c['onnxruntime_over_pytorch']:.2f}@** "
        f"({onnx:.2f} s vs {torch:.1f} s)", "bench/cold_start.py", c["target"]["met"])
    row("installed size, venv with only the core dependencies", i["target"]["core_size"],
        f"**{i['venvs']['core']['size_mib']:,.0f} MiB@**", "bench/install_size.py",
        i["target"]["met"])
    row("serving throughput, CheXNet, tritonclient binary, concurrency 8 / bare ORT best batch",
        st["throughput_over_bare"], f"**{_ratio(s['throughput_over_bare'], st['throughput_over_bare'])}@** "
        f"({s['served_throughput_img_s']:.2f} vs {s['bare_throughput']['best_img_s']:.2f} img/s)",
        "bench/serving.py", _meets(s["throughput_over_bare"], st["throughput_over_bare"]))
    lat = s["latency"]
    row("serving latency p50, concurrency 1 / bare ORT batch 1", st["latency_served_over_bare"] + "×",
        f"**{lat['served_over_bare']:.3f}×@** ({_ms(lat['served_p50_s'])} vs "
        f"{_ms(lat['bare_p50_s'])} ms)", "bench/serving.py",
        _meets(lat["served_over_bare"], st["latency_served_over_bare"]))
    enc = s["binary_vs_json"]
    row("10×3×224×224 FP32 request, binary tensors vs JSON, end to end",
        st["json_over_binary"] + "× faster", f"**{enc['json_over_binary']:.1f}× faster@** "
        f"({_ms(enc['median_s']['binary'], 0)} vs {_ms(enc['median_s']['json'], 0)} ms)",
        "bench/serving.py", _meets(enc["json_over_binary"], st["json_over_binary"]))
    if s.get("naive"):
        ceiling = s["bare_throughput"]["best_img_s"] / s["naive"]["tensor_img_s"]
        row("throughput vs naive Flask + PyTorch per request, concurrency 8",
            st["served_over_naive"] + "×", f"**{s['served_over_naive']:.2f}×@**; bare ORT itself "
            f"is {ceiling:.1f}× the naive view here", "bench/serving.py",
            _meets(s["served_over_naive"], st["served_over_naive"]))
    cells, target = _cells(r), r["target"]["ray-1_rps_over_ours"]
    spans, missed = [], 0
    for workload, label in (("xray", "X-ray uploads"), ("tensor", "single tensors")):
        ratios = [cells["ray-1", workload, k]["rps_over_ours"] for k in r["concurrency"]]
        missed += sum(not _meets(x, target) for x in ratios)
        spans.append(f"{label} **{_span(ratios)}**")
    row(f"Ray Serve, 1 replica / our server, throughput, same load, concurrency "
        f"{min(r['concurrency'])}-{max(r['concurrency'])}", target, "; ".join(spans)
        + (f" (not met in {missed} of {len(cells) // 3} cells)" if missed else ""),
        "bench/ray_serving.py")
    totals = f["totals"]
    requests = sum(t["inputs"] for t in f["targets"] if t["name"].startswith(("api-", "decode-")))
    row("fuzzing: generated requests across API and decoders", ">= 100,000, 0 server errors",
        f"**{requests:,} requests + {totals['inputs'] - requests:,} other inputs, "
        f"{totals['errors']:,} errors@** ([reliability.md](reliability.md))", "bench/fuzz.py",
        requests >= 100_000 and totals["errors"] == 0)
    facts = _coverage_facts(list(e["rows"].values()))
    share = 100 * facts["ok"] / max(facts["total"], 1)
    row("torchvision classifiers that export and verify within 1e-4, dynamic batch", ">= 95%",
        f"**{facts['ok']}/{facts['total']} = {share:.1f}%@**; {facts['exported']} of "
        f"{facts['total']} export ([export-coverage.md](export-coverage.md))",
        "bench/export_coverage.py --calibrate", share >= 95)
    return "\n".join([_source(*SUMMARY_SOURCES), "", "| claim | target | measured | script |",
                      "|---|---|---|---|", *rows])


# ----------------------------------------------------------------- reliability.md
def _pair(values: list[int]) -> str:
    return f"{values[0]} → {values[1]}"


def load() -> str:
    """bench/load.py: the scenarios' table and the properties checked."""
    d = _load("load.json")
    res = d["scenarios"]
    lines = [_source("load.json", note=f"The whole run took {d['seconds']:.0f} s."), "",
             "| scenario | measured | result |", "|---|---|---|"]
    if "sustained" in res:
        r = res["sustained"]
        lines += [
            f"| sustained | {r['requests']:,} infer requests at concurrency {r['concurrency']} "
            f"(JSON and binary, checked) | {r['errors']} errors; {r['throughput']:,.0f} req/s; "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms |",
            f"| sustained | server RSS after warm-up → end; threads; open files | "
            f"{r['rss_warm_mib']:.1f} → {r['rss_end_mib']:.1f} MiB ({r['rss_growth_pct']:+.1f} %); "
            f"{_pair(r['threads'])}; {_pair(r['fds'])} |",
            f"| sustained | CPU cores busy: server, client | {r['server_cpu_per_s']:.2f}, "
            f"{r['client_cpu_per_s']:.2f} |"]
    if "burst" in res:
        r = res["burst"]
        lines.append(
            f"| burst | {r['requests']} simultaneous requests, queue of 8, ~50 ms a call | "
            f"{r['accepted']} answered 200 (all correct, slowest {r['max_200_ms']:.0f} ms), "
            f"{r['rejected']} got 503 (p50 {r['p50_503_ms']:.0f} ms, p99 "
            f"{r['p99_503_ms']:.0f} ms); {len(r['errors'])} errors |")
    for key, what in (("disconnects", "clients gone mid-request (half body, reset, unread "
                                      "answer, half headers)"),
                      ("disconnects_slow", "clients gone the same ways on the slow model "
                                           "(requests queued or running as the client leaves)")):
        if key in res:
            r = res[key]
            lines.append(
                f"| disconnects | {r['rounds']} {what} | threads {_pair(r['threads'])}, open "
                f"files {_pair(r['fds'])}, RSS {r['rss_growth_pct']:+.1f} %; next request "
                f"{'succeeds' if r['after_ok'] else '**fails**'} |")
    if "drain" in res:
        r = res["drain"]
        lines.append(
            f"| SIGTERM | {r['requests']} requests accepted, {r['in_flight_at_sigterm']} still "
            f"running at the signal | {r['answered']} answered 200; new connections "
            f"{'refused' if r['new_connection_refused'] else '**accepted**'}; exit code "
            f"{r['exit_code']} after {r['exit_s']:.2f} s |")
    if "hot_swap" in res:
        r = res["hot_swap"]
        lines.append(
            f"| hot swap | {r['swaps']} new versions (v{r['broken']} broken) during "
            f"{r['requests']:,} requests at concurrency {r['concurrency']} | {r['errors']} failed; "
            f"answers by version {r['versions_seen']}, each matching its version; "
            f"v{r['broken']} {'reported failed' if str(r['broken']) in r['failed_at_end'] else '**not reported failed**'}, "
            f"{'never served' if str(r['broken']) not in r['versions_seen'] else '**served**'} |")
    checks = d["checks"]
    lines += ["", f"Properties checked: {sum(checks.values())} of {len(checks)} pass"
              + ("" if all(checks.values()) else "; **failed**: "
                 + ", ".join(k for k, ok in checks.items() if not ok)) + "."]
    return "\n".join(lines)


FUZZ_TARGETS = {
    "api-openapi": "schemathesis from the server's own `GET /openapi.json`, positive and negative",
    "api-openapi-v2": "the same document with Open Inference Protocol request schemas",
    "api-infer": "v2 infer requests, JSON and binary, valid and broken in every field",
    "api-predict": "image uploads of every format and mode, raw and multipart, valid and corrupted",
    "api-routes": "any method, path and headers",
    "decode-v2": "the api-infer bodies decoded in process, answered and read back",
    "decode-binary": "binary tensors of every datatype, sizes and header lengths often wrong",
    "decode-raw": "raw bodies for random single-input specs",
    "decode-bytes": "arbitrary bytes and header values, as a request and as a response",
    "transforms": "every transform on random images and arrays, compared with torchvision",
    "config": "schema-guided generated configs through `load_config`",
    "config-text": "arbitrary TOML-like text and bytes through `load_config`",
}


def fuzz() -> str:
    """bench/fuzz.py: per target, inputs, errors, violations."""
    d = _load("fuzz.json")
    server = d["server"]
    lines = [_source("fuzz.json", note=(
        f"Seed {d['seed']}, scale {d['scale']}, {d['seconds']:.0f} s.")), "",
        "| target | what is generated | inputs | errors | other violations | distinct problems "
        "| seconds |", "|---|---|---:|---:|---:|---:|---:|"]
    for t in d["targets"]:
        lines.append(f"| {t['name']} | {FUZZ_TARGETS.get(t['name'], '')} | {t['inputs']:,} | "
                     f"{t['errors']:,} | {t['violations']:,} | {len(t['problems'])} | "
                     f"{t['seconds']:.0f} |")
    totals = d["totals"]
    lines.append(f"| **total** | | **{totals['inputs']:,}** | **{totals['errors']:,}** | "
                 f"**{totals['violations']:,}** | | **{sum(t['seconds'] for t in d['targets']):.0f}** |")
    lines += ["", f"Server: live at the end: {'yes' if server['live_at_end'] else '**no**'}; "
              f"exit code after SIGTERM: {server['exit_code_after_sigterm']}; RSS "
              f"{server['rss_start_mib']:.1f} → {server['rss_end_mib']:.1f} MiB over the run."]
    for t in d["targets"]:
        for problem in t["problems"]:
            lines.append(f"- {t['name']}: {problem['count']}× {_cell(problem['kind'])}")
    return "\n".join(lines)


def reliability_summary() -> str:
    """The summary of docs/reliability.md, from bench/load.py and bench/fuzz.py."""
    ld, fz = _load("load.json"), _load("fuzz.json")
    s, h = ld["scenarios"]["sustained"], ld["scenarios"]["hot_swap"]
    totals = fz["totals"]
    http = sum(t["inputs"] for t in fz["targets"] if t["name"].startswith("api-"))
    decoders = sum(t["inputs"] for t in fz["targets"] if t["name"].startswith("decode-"))
    return "\n".join([
        _source("load.json", "fuzz.json"), "",
        "| claim | target | measured | where |", "|---|---|---|---|",
        "| bad-input cases against the real server | 0 status 500, 0 crashes, 0 hangs | every "
        "case of the catalogue, asserted by the tests | `tests/test_bad_inputs.py`, "
        "`tests/test_library_bad_inputs.py` |",
        f"| {s['requests']:,} requests at concurrency {s['concurrency']} | 0 errors, RSS growth "
        f"< 10% after warm-up | **{s['errors']} errors, {s['rss_growth_pct']:+.1f}%** "
        f"({s['rss_warm_mib']:.1f} → {s['rss_end_mib']:.1f} MiB), threads {_pair(s['threads'])} "
        f"| `bench/load.py`; `tests/test_load_faults.py` (smaller) |",
        f"| hot swap under load | 0 failed across ≥ 5 swaps incl. a broken one | **{h['errors']} "
        f"failed of {h['requests']:,} across {h['swaps']} swaps** (v{h['broken']} broken, "
        f"{'never served' if str(h['broken']) not in h['versions_seen'] else '**served**'}) | "
        f"`bench/load.py`; `tests/test_load_faults.py`, `tests/test_serving_load.py` |",
        f"| fuzzing | ≥ 100,000 generated requests, 0 server errors | **{totals['inputs']:,} "
        f"inputs, {totals['errors']:,} errors** ({http:,} HTTP requests to the server, "
        f"{decoders:,} requests to the decoders, {totals['inputs'] - http - decoders:,} "
        f"transform and config inputs) | `bench/fuzz.py`; `tests/test_fuzz_*.py`, "
        f"`tests/test_protocol.py` |"])


# -------------------------------------------------------------- serving, transforms
def batcher_overhead() -> str:
    """bench/batcher.py: what Batcher.infer adds over a direct call."""
    d = _load("batcher.json")
    return "\n".join([_source("batcher.json", note=(
        f"Median of {d['repeats']:,} interleaved calls, one client, "
        f"`max_queue_delay_ms={d['max_queue_delay_ms']}`, identity model on a "
        f"{'x'.join(map(str, d['input_shape']))} array: direct `infer` "
        f"{d['median_us']['direct']:.1f} µs, `Batcher.infer` {d['median_us']['batcher']:.1f} µs; "
        f"**the batcher adds {d['added_us']:.1f} µs**."))])


def resize_bands() -> str:
    """bench/resize_bands.py: banded resize against one call, by size."""
    d = _load("resize_bands.json")
    lines = [_source("resize_bands.json", note=(
        f"{d['filter'].capitalize()}, {d['threads']} threads, median of {d['repeats']} "
        f"interleaved calls; the sample X-ray converted and resized to the source size "
        f"first.")), "",
        "| resize | bands | one call (ms) | banded (ms) | banded / one call | cost / `MIN_COST` "
        "| identical |", "|---|---|---:|---:|---:|---:|:-:|"]
    for r in d["cases"]:
        lines.append(
            f"| {r['mode']} {r['source']}×{r['source']} → {r['output']}×{r['output']} | "
            f"{r['bands']} {r['axis']} | {_ms(r['median_s']['single'], 3)} | "
            f"{_ms(r['median_s']['banded'], 3)} | {r['banded_over_single']:.2f} | "
            f"{r['cost'] / d['min_cost']:.2f} | {'yes' if r['identical'] else '**no**'} |")
    lines += ["", f"`MIN_COST` ({d['min_cost']:,}) is about {d['min_cost_single_ms']:.2f} ms of "
              f"one call here (median over the cases); the pass-order probe takes "
              f"{_ms(d['pass_order_probe']['median_s'], 2)} ms, once per process."]
    return "\n".join(lines)


def conformance() -> str:
    """bench/conformance.py: client x transport x server, from the interop-marked tests."""
    d = _load("conformance.json")

    def shown(cell: dict[str, Any]) -> str:
        status = cell["status"]
        if status == "works":
            return f"works ({cell['passed']} test{'s' if cell['passed'] != 1 else ''})"
        if status == "fails":
            return f"**FAILS**: {_cell(cell['why'])}"
        if status in ("cannot", "skipped"):
            return f"{status}: {_cell(cell['why'])}"
        return "not tested"

    lines = [_source("conformance.json", note=(
        f"{d['tests_run']} interop tests ran as real processes; a cell says works only "
        "when its tests ran and passed in that run, and not tested claims nothing")), "",
        "| client | transport | " + " | ".join(d["servers"]) + " |",
        "|---|---|" + "---|" * len(d["servers"])]
    for row in d["rows"]:
        cells = " | ".join(shown(row["servers"][server]) for server in d["servers"])
        lines.append(f"| {row['client']} | {row['transport']} | {cells} |")
    return "\n".join(lines)


def peers() -> str:
    """bench/peers.py: ours, KServe's ModelServer and MLServer on the same ONNX model."""
    d = _load("peers.json")
    target = d["targets"]["ours_over_kserve_c8_json"]
    lines = [_source("peers.json", note=(
        f"{d['model']}, one {'x'.join(map(str, d['input_shape']))} FP32 tensor per request, "
        f"{d['requests']} requests x {d['rounds']} alternating rounds per cell; "
        + "; ".join(f"{k}: {v}" for k, v in d["servers"].items()))), "",
        "| server, encoding | c=1 req/s | c=1 p50 | c=8 req/s | c=8 p50 | c=8 p99 |",
        "|---|---:|---:|---:|---:|---:|"]
    for combo, stats in d["stats"].items():
        one, eight = stats["1"], stats["8"]
        lines.append(f"| {combo} | {one['req_s']:.2f} | {_ms(one['p50_s'], 0)} ms | "
                     f"{eight['req_s']:.2f} | {_ms(eight['p50_s'], 0)} ms | "
                     f"{_ms(eight['p99_s'], 0)} ms |")
    r = d["ratios"]
    lines += ["", "Ours / KServe at concurrency 8: JSON **"
              f"{_ratio(r['ours_over_kserve_c8_json'], target)}**, binary **"
              f"{_ratio(r['ours_over_kserve_c8_binary'], target)}** (target {_target(target)}: "
              f"{_verdict(min(r['ours_over_kserve_c8_json'], r['ours_over_kserve_c8_binary']), target)}"
              f"). Ours / MLServer (JSON): {r['ours_over_mlserver_c1_json']:.2f} at concurrency 1, "
              f"{r['ours_over_mlserver_c8_json']:.2f} at 8. All answers equal ours: "
              + ("yes" if not any(d["agreement_max_abs"].values()) else "**no**") + "."]
    return "\n".join(lines)


def json_path() -> str:
    """bench/json_path.py: JSON decoding against orjson + numpy; ours against BentoML."""
    d = _load("json_path.json")
    decode_target = d["targets"]["decode_ours_over_orjson_numpy"]
    bento_target = d["targets"]["ours_over_bentoml"]
    lines = [_source("json_path.json"), "",
             "| decoding one 1x3x224x224 FP32 JSON request | ours | orjson + numpy | ratio | "
             "stdlib json.loads alone |", "|---|---:|---:|---:|---:|"]
    for form, row in d["decode"].items():
        m = row["median_s"]
        lines.append(f"| `data` {form} ({row['body_bytes']:,} B) | {_ms(m['ours'])} ms | "
                     f"{_ms(m['orjson_numpy'])} ms | "
                     f"{_ratio(row['ours_over_orjson_numpy'], decode_target)} "
                     f"({_verdict(row['ours_over_orjson_numpy'], decode_target)}) | "
                     f"{_ms(m['stdlib_json_loads'])} ms |")
    lines += ["", "| JSON tensors, same payload | ours req/s | BentoML req/s | ratio |",
              "|---|---:|---:|---:|"]
    for concurrency, row in d["throughput"].items():
        lines.append(f"| concurrency {concurrency} | {row['ours']:.2f} | {row['bentoml']:.2f} | "
                     f"{_ratio(row['ours_over_bentoml'], bento_target)} "
                     f"({_verdict(row['ours_over_bentoml'], bento_target)}) |")
    lines += ["", f"Targets: decoding {_target(decode_target)} orjson + numpy; ours "
              f"{_target(bento_target)} BentoML 1.4 (adaptive batching, same ONNX model)."]
    return "\n".join(lines)


def grpc_vs_http() -> str:
    """bench/grpc_vs_http.py: tritonclient over gRPC and over HTTP (binary), our server."""
    d = _load("grpc_vs_http.json")
    t, p50, p99, r = d["throughput_rps"], d["p50_s"], d["p99_s"], d["ratios"]
    lines = [_source("grpc_vs_http.json", note=(
        f"CheXNet, one {'x'.join(map(str, d['input_shape']))} tensor per request, output "
        f"`{d['output']}`, {d['requests']} requests x {d['rounds']} rounds per cell; answers "
        + ("equal bit for bit" if d["answers_equal_bit_for_bit"] else "**differ**"))), "",
        "| concurrency | transport | req/s | p50 | p99 |", "|---|---|---:|---:|---:|"]
    for c in d["concurrencies"]:
        for proto, name in (("http", "HTTP, binary tensors"), ("grpc", "gRPC, raw contents")):
            lines.append(f"| {c} | {name} | {t[f'{proto}_c{c}']:.2f} | "
                         f"{_ms(p50[f'{proto}_c{c}'])} ms | {_ms(p99[f'{proto}_c{c}'])} ms |")
    targets = d["targets"]
    lines += ["", "gRPC / HTTP throughput: "
              f"{_ratio(r['grpc_over_http_throughput_c1'])} at concurrency 1, "
              f"{_ratio(r['grpc_over_http_throughput_c8'])} at 8 (target "
              f"{_target(targets['grpc_over_http_throughput_c8'])}: "
              f"{_verdict(min(r['grpc_over_http_throughput_c1'], r['grpc_over_http_throughput_c8']), targets['grpc_over_http_throughput_c8'])}"
              f"); p50 at concurrency 1: {_ratio(r['grpc_over_http_p50_c1'])} (target "
              f"{_target(targets['grpc_over_http_p50_c1'])}: "
              f"{_verdict(r['grpc_over_http_p50_c1'], targets['grpc_over_http_p50_c1'])})."]
    return "\n".join(lines)


def remote_overhead() -> str:
    """bench/remote_overhead.py: RemoteModel.infer against tritonclient, same requests."""
    d = _load("remote_overhead.json")
    lines = [_source("remote_overhead.json", note="sequential requests, callers interleaved"), "",
             "| model | transport | RemoteModel | tritonclient | ratio |",
             "|---|---|---:|---:|---:|"]
    for model, row in d["models"].items():
        m = row["median_s"]
        for proto in ("http", "grpc"):
            target = d["targets"][f"remote_over_triton_{proto}"]
            ratio = row["ratios"][f"remote_over_triton_{proto}"]
            lines.append(f"| {model} {'x'.join(map(str, row['input_shape']))} | {proto} | "
                         f"{_ms(m[f'remote_{proto}'], 2)} ms | {_ms(m[f'triton_{proto}'], 2)} ms | "
                         f"{_ratio(ratio, target)} ({_verdict(ratio, target)}) |")
    lines += ["", f"Target: RemoteModel {_target(d['targets']['remote_over_triton_http'])} "
              "tritonclient's time per request."]
    return "\n".join(lines)


def explain_cost() -> str:
    """bench/explain_cost.py: /explain against /predict on the same server."""
    d = _load("explain_cost.json")
    target = d["target"]["explain_over_predict"]
    lines = [_source("explain_cost.json"), "",
             "| endpoint | median | vs /predict | answer size |", "|---|---:|---:|---:|"]
    for name, path in (("predict", "/predict"), ("explain", "/explain (top 3, overlays)"),
                       ("explain_map_only", "/explain?top_k=1&overlay=0")):
        ratio = d["over_predict"][name]
        shown = _ratio(ratio, target) + (f" ({_verdict(ratio, target)})" if name == "explain"
                                         else "")
        lines.append(f"| {path} | {_ms(d['median_s'][name])} ms | {shown} | "
                     f"{d['response_bytes'][name]:,} B |")
    return "\n".join(lines)


def dicom_decode() -> str:
    """bench/dicom_decode.py: a 2048x2048 12-bit DICOM against the same pixels as PNG."""
    d = _load("dicom_decode.json")
    target = d["target"]["dicom_over_png"]
    ratio = d["dicom_over_png"]
    return "\n".join([
        _source("dicom_decode.json"), "",
        "| input | median | file size |", "|---|---:|---:|",
        f"| DICOM {d['side']}x{d['side']}, {d['bits_stored']}-bit, windowed | "
        f"{_ms(d['median_s']['dicom'])} ms | {d['dicom_bytes']:,} B |",
        f"| the same pixels as an 8-bit PNG | {_ms(d['median_s']['png'])} ms | "
        f"{d['png_bytes']:,} B |",
        "", f"DICOM / PNG: **{_ratio(ratio, target)}** (target {_target(target)}: "
        f"{_verdict(ratio, target)}).",
    ])


# ------------------------------------------------------------------------ the tables
@dataclass(frozen=True)
class Table:
    """A renderer and the result files (in bench/results) it reads."""

    render: Callable[[], str]
    sources: tuple[str, ...]


TABLES: dict[str, Table] = {
    "mutations": Table(mutations, ("mutations.json",)),
    "coverage-gate-summary": Table(coverage_gate_summary, ("export_coverage_gate.json",)),
    "coverage-gate": Table(coverage_gate, ("export_coverage_gate.json",)),
    "export-cost": Table(export_cost, ("export_cost.json",)),
    "exporters": Table(exporters, ("exporters.json",)),
    "export-coverage-summary": Table(export_coverage_summary, (
        "export_coverage_calibrated.json", "export_coverage.json")),
    "export-coverage": Table(export_coverage, ("export_coverage_calibrated.json",
                                               "export_coverage.json")),
    "benchmarks-summary": Table(benchmarks_summary, SUMMARY_SOURCES),
    "backends": Table(backends, ("backends.json",)),
    "preprocessing": Table(preprocessing, ("preprocessing.json",)),
    "serving": Table(serving, ("serving.json",)),
    "thread-interference": Table(thread_interference, ("thread_interference.json",)),
    "ray-serving-summary": Table(ray_serving_summary, ("ray_serving.json",)),
    "ray-serving": Table(ray_serving, ("ray_serving.json",)),
    "ray-replicas": Table(ray_replicas, ("ray_serving.json",)),
    "capacity-model": Table(capacity_model, ("ray_serving.json",)),
    "ray-overhead": Table(ray_overhead, ("ray_overhead.json",)),
    "server-memory": Table(server_memory, ("server_memory.json",)),
    "cold-start": Table(cold_start, ("cold_start.json",)),
    "install-size": Table(install_size, ("install_size.json",)),
    "load": Table(load, ("load.json",)),
    "fuzz": Table(fuzz, ("fuzz.json",)),
    "reliability-summary": Table(reliability_summary, ("load.json", "fuzz.json")),
    "batcher-overhead": Table(batcher_overhead, ("batcher.json",)),
    "resize-bands": Table(resize_bands, ("resize_bands.json",)),
    "conformance": Table(conformance, ("conformance.json",)),
    "perf-check": Table(perf_check, ("perf_check.json",)),
    "instances": Table(instances, ("instances.json",)),
    "quantization": Table(quantization, ("quantization.json",)),
    "peers": Table(peers, ("peers.json",)),
    "json-path": Table(json_path, ("json_path.json",)),
    "grpc-vs-http": Table(grpc_vs_http, ("grpc_vs_http.json",)),
    "remote-overhead": Table(remote_overhead, ("remote_overhead.json",)),
    "explain-cost": Table(explain_cost, ("explain_cost.json",)),
    "dicom-decode": Table(dicom_decode, ("dicom_decode.json",)),
    "tensorflow": Table(tensorflow, ("tensorflow_backend.json",)),
}
#: name -> renderer, as before TABLES recorded the result files too.
RENDERERS: dict[str, Callable[[], str]] = {name: table.render for name, table in TABLES.items()}


def missing_sources(name: str) -> list[str]:
    return [source for source in TABLES[name].sources if not (RESULTS / source).is_file()]


def render(text: str) -> tuple[str, list[str], list[str]]:
    """``text`` with every table block whose result files exist re-rendered; the names of
    the blocks that changed; the names of the blocks left as they were, results missing."""
    changed: list[str] = []
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r}; known: {sorted(TABLES)}")
        if missing_sources(name):
            missing.append(name)
            return match.group(0)
        try:
            body = TABLES[name].render() + "\n"
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
            raise SystemExit(
                f"table {name!r}: {', '.join(TABLES[name].sources)} lacks what the renderer "
                f"reads ({type(exc).__name__}: {exc}); rerun {producer(TABLES[name].sources[0])}"
            ) from exc
        if body != match.group("body"):
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed, missing


def placements() -> dict[str, list[str]]:
    """Table name -> the docs it is in."""
    found: dict[str, list[str]] = {}
    for doc in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(doc.read_text(encoding="utf-8")):
            found.setdefault(match.group("name"), []).append(str(doc.relative_to(ROOT)))
    return found


def list_tables() -> None:
    where = placements()
    for name, table in TABLES.items():
        docs = ", ".join(dict.fromkeys(where.get(name, []))) or "(in no doc)"
        files = ", ".join(f"bench/results/{s}" + ("" if (RESULTS / s).is_file() else " (missing)")
                          for s in table.sources)
        print(f"{name}\t{docs}\t{files}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="change nothing; exit 1 on drift or a missing result")
    group.add_argument("--list", action="store_true",
                       help="print each table, the docs it is in and its result files")
    args = parser.parse_args(argv)
    if args.list:
        list_tables()
        return 0
    stale, absent = [], []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        new, changed, missing = render(text)
        where = doc.relative_to(ROOT)
        stale += [f"{where}: {name}" for name in changed]
        absent += [f"{where}: {name} (needs "
                   + ", ".join(f"bench/results/{s}: {producer(s)}" for s in missing_sources(name))
                   + ")" for name in missing]
        if changed and not args.check:
            doc.write_text(new, encoding="utf-8")
    if stale:
        verb = "differ from their results" if args.check else "rewritten"
        print(f"tables {verb}: " + "; ".join(stale), file=sys.stderr)
    if absent:
        verb = "results missing" if args.check else "results missing, left as they are"
        print(f"tables whose {verb}:\n  " + "\n  ".join(absent), file=sys.stderr)
    return 1 if args.check and (stale or absent) else 0


if __name__ == "__main__":
    sys.exit(main())
