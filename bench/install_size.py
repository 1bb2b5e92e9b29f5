"""Installed size: a venv with only the core dependencies vs one with the torch extra.

Creates fresh virtual environments in a temporary folder, installs the project
(non-editable) with pip, and reports the size of each venv, of an empty venv,
and of the largest packages. Every venv's size and the size of every folder in its
site-packages go to bench/results/install_size.json.

Usage: python bench/install_size.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, write_result

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def venv(folder: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    if packages:
        subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet", *packages], check=True)
    return folder


def packages(folder: Path) -> dict[str, float]:
    """MiB of every folder in the venv's site-packages."""
    site = next(folder.glob("lib/python*/site-packages"))
    return {p.name: size_mib(p) for p in site.iterdir() if p.is_dir()}


def largest(folder: Path, count: int = 6) -> str:
    sizes = sorted(((mib, name) for name, mib in packages(folder).items()), reverse=True)
    return ", ".join(f"{name} {mib:.0f}" for mib, name in sizes[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="build the venvs here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.keep or scratch)
        empty = venv(base / "empty")
        core = venv(base / "core", str(ROOT))
        torch = venv(base / "torch", *TORCH_PINS, f"{ROOT}[torch]")
        print(f"Machine: {machine()}\n")
        print("| venv | size (MiB) | over an empty venv (MiB) | largest packages (MiB) |")
        print("|---|---|---|---|")
        baseline = size_mib(empty)
        venvs = {}
        for key, name, folder in (("empty", "empty (pip, setuptools)", empty),
                                  ("core", "core: numpy, Pillow, onnxruntime, onnx", core),
                                  ("torch", "core + [torch] extra", torch)):
            total = size_mib(folder)
            print(f"| {name} | {total:.0f} | {total - baseline:.0f} | {largest(folder)} |")
            venvs[key] = {"label": name, "size_mib": total, "over_empty_mib": total - baseline,
                          "packages_mib": packages(folder)}
    write_result("install_size", {
        "torch_pins": TORCH_PINS, "venvs": venvs,
        "target": {"core_size": "<= 150 MB", "met": venvs["core"]["size_mib"] * 2**20 <= 150e6}})


if __name__ == "__main__":
    main()
