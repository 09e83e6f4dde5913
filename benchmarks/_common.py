"""Shared helpers for the ratio benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench_out"


def shared_data() -> Path:
    """The real public datasets (``../shared/data``)."""
    env = os.environ.get("NAPARI_DLCB_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise SystemExit(f"shared data not found at {path}")
    return path


def machine() -> str:
    """One line naming the machine the numbers come from."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def record(name: str, result: dict) -> Path:
    """Write a JSON result under ``bench_out/`` and echo it."""
    OUT.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": machine(), "when": time.strftime("%F %T"), **result}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))
    return path


def add_user_options(ap: argparse.ArgumentParser, passed: str) -> None:
    """``--seed`` and ``--plain`` (run the CLI with only ``passed``: what a user gets)."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--plain",
        action="store_true",
        help=f"what a user gets: only {passed}; every other option at the CLI's default",
    )
