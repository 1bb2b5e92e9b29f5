"""What every rendered block shares: reading a result file, and its ``Source:`` line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any]:
    """``bench/results/<name>``, parsed."""
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def source(*names: str, note: str = "") -> str:
    """``Source: `bench/results/x.json` (machine; `command`, date).`` naming every result
    file the block reads; the machine once when they share it."""
    runs, machines = [], []
    for name in names:
        data = load(name)
        machines.append(data.get("machine", "machine not recorded"))
        run = [f"`{data['command']}`"] if data.get("command") else []
        if data.get("finished"):
            run.append(str(data["finished"])[:10])
        runs.append((name, ", ".join(run)))
    if len(set(machines)) == 1:
        parts = [f"`bench/results/{name}`" + (f" ({run})" if run and len(names) > 1 else "")
                 for name, run in runs]
        only = runs[0][1] if len(names) == 1 and runs[0][1] else ""
        text = ", ".join(parts) + f" ({machines[0]}" + (f"; {only}" if only else "") + ")"
    else:
        text = "; ".join(f"`bench/results/{name}` ({machine}" + (f"; {run}" if run else "") + ")"
                         for (name, run), machine in zip(runs, machines))
    return "Source: " + text + (f". {note}" if note else ".")
