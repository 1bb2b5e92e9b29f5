"""``model-agnostic perf``: closed-loop load on any Open Inference Protocol server.

Ours, Triton, KServe or MLServer: tensors over HTTP (binary or JSON) or gRPC, shaped and
typed by the model's metadata, or files uploaded to ``/v2/models/{name}/predict``; a
sweep over concurrency levels with warm-up, latency percentiles, throughput and errors by
kind. The modules, each with one job:

* :mod:`.workload`: the tensors (random or ``.npy``) or files to send;
* :mod:`.clients`, :mod:`.grpc_client`: one connection per client, one request per call;
* :mod:`.load`: the closed loop and the sweep; :mod:`.stats`: one level's numbers;
* :mod:`.report`, :mod:`.plot`: the table, the JSON document, the PNG;
* :mod:`.runner`: settings to results.
"""

from .clients import Client, RequestFailed, Target, fetch_signature, file_client, tensor_client
from .grpc_client import grpc_client
from .load import Plan, run_level, sweep
from .plot import plot_png
from .report import document, table, write_json
from .runner import Run, Settings, prepare, run
from .stats import LevelStats
from .workload import build_inputs, parse_data, parse_shapes, read_files

__all__ = [
    "Client",
    "LevelStats",
    "Plan",
    "RequestFailed",
    "Run",
    "Settings",
    "Target",
    "build_inputs",
    "document",
    "fetch_signature",
    "file_client",
    "grpc_client",
    "parse_data",
    "parse_shapes",
    "plot_png",
    "prepare",
    "read_files",
    "run",
    "run_level",
    "sweep",
    "table",
    "tensor_client",
    "write_json",
]
