"""The conformance matrix (client x transport x server) in docs/backends.md, from tests.

Runs every test marked ``@pytest.mark.interop(client=..., server=..., transport=...)``
(real processes: our server, KServe's ModelServer and MLServer from their venvs,
tritonclient, KServe's client) and records each outcome; a cell is "works" only when its
tests ran and passed. Cells that cannot work say why (``CANNOT``); the rest are "not
tested". Results: ``bench/results/conformance.json``; ``bench/render_docs.py`` draws the
table. Usage: python bench/conformance.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, machine, write_result

SERVERS = ("ours", "KServe", "MLServer")
ROWS = (
    ("tritonclient", "HTTP"),
    ("tritonclient", "gRPC"),
    ("KServe InferenceGRPCClient", "gRPC"),
    ("TF Serving REST client", "TF Serving REST (v1)"),
    ("RemoteModel", "HTTP JSON"),
    ("RemoteModel", "HTTP binary"),
    ("RemoteModel", "gRPC"),
    ("RemoteModel", "TF Serving REST (v1)"),
)
#: Cells that cannot work, and why (each backed by a test where one can show it).
CANNOT = {
    ("RemoteModel", "HTTP binary", "MLServer"): (
        "MLServer 1.7 has no binary tensors (a binary request gets HTTP 500); RemoteModel's "
        'default binary = "auto" reads GET /v2 and speaks JSON to it '
        "(test_remote_model_negotiates_json_with_mlserver_which_lacks_binary)"),
    ("TF Serving REST client", "TF Serving REST (v1)", "MLServer"):
        "MLServer serves the v2 protocol only",
    ("RemoteModel", "TF Serving REST (v1)", "MLServer"): "MLServer serves the v2 protocol only",
}


def run_tests() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "interop.json"
        env = dict(os.environ, MODEL_AGNOSTIC_INTEROP_RESULTS=str(target))
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "interop", "-q",
                               "-p", "no:cacheprovider"], cwd=ROOT, env=env)
        if not target.is_file():
            raise SystemExit(f"pytest wrote no interop results (exit {done.returncode})")
        return json.loads(target.read_text(encoding="utf-8"))


def cell(client: str, transport: str, server: str, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [o for o in outcomes
            if (o["client"], o["transport"], o["server"]) == (client, transport, server)]
    if not mine:
        reason = CANNOT.get((client, transport, server))
        return {"status": "cannot", "why": reason} if reason else {"status": "not tested"}
    failed = [o for o in mine if o["outcome"] == "failed"]
    skipped = [o for o in mine if o["outcome"] == "skipped"]
    tests = sorted({o["test"] for o in mine})
    if failed:
        return {"status": "fails", "tests": tests, "why": failed[0]["reason"]}
    if len(skipped) == len(mine):
        return {"status": "skipped", "tests": tests, "why": skipped[0]["reason"]}
    return {"status": "works", "tests": tests, "passed": len(mine) - len(skipped)}


def main() -> None:
    outcomes = run_tests()
    unknown = sorted({(o["client"], o["transport"]) for o in outcomes} - set(ROWS)
                     | {o["server"] for o in outcomes if o["server"] not in SERVERS})
    if unknown:
        raise SystemExit(f"interop markers outside the matrix: {unknown}")
    matrix = [{"client": client, "transport": transport,
               "servers": {server: cell(client, transport, server, outcomes)
                           for server in SERVERS}}
              for client, transport in ROWS]
    write_result("conformance", {"servers": list(SERVERS), "rows": matrix,
                                 "tests_run": len(outcomes)})
    print(f"Machine: {machine()}")
    for row in matrix:
        print(f"{row['client']:<28} {row['transport']:<22} "
              + "  ".join(f"{s}: {c['status']}" for s, c in row["servers"].items()))


if __name__ == "__main__":
    main()
