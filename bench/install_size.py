"""Installed size: a venv with only the core dependencies vs one with the torch extra.

Creates fresh virtual environments in a temporary folder, installs the project
(non-editable) with pip, and reports the size of each venv, of an empty venv,
and of the largest packages.

Usage: python bench/install_size.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def venv(folder: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    if packages:
        subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet", *packages], check=True)
    return folder


def largest(folder: Path, count: int = 6) -> str:
    site = next(folder.glob("lib/python*/site-packages"))
    sizes = sorted(((size_mib(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
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
        for name, folder in (("empty (pip, setuptools)", empty), ("core: numpy, Pillow, onnxruntime, onnx", core),
                             ("core + [torch] extra", torch)):
            total = size_mib(folder)
            print(f"| {name} | {total:.0f} | {total - baseline:.0f} | {largest(folder)} |")


if __name__ == "__main__":
    main()
