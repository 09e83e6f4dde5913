"""Data-parallel training under torchrun (2 gloo processes on the CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _torchrun() -> str:
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists():
        found = shutil.which("torchrun")
        if found is None:
            pytest.skip("torchrun is not installed")
        return found
    return str(exe)


def test_torchrun_two_processes_write_one_model(tmp_path):
    rng = np.random.default_rng(0)
    motif = "GATAAG"
    rows = []
    for i in range(600):
        s = list(rng.choice(list("ACGT"), 40))
        if i % 2:
            p = int(rng.integers(0, 34))
            s[p : p + 6] = motif
        rows.append(f"{''.join(s)}\t{i % 2}\n")
    table = tmp_path / "t.tsv"
    table.write_text("seq\tBound\n" + "".join(rows))
    cli = Path(sys.executable).with_name("napari-dlcb")
    cmd = [
        _torchrun(), "--nproc-per-node", "2", "--no-python", str(cli), "train", "sequence",
        "--table", str(table), "--out", str(tmp_path / "m"), "--epochs", "15", "--lr", "0.01",
        "--batch-size", "32", "--device", "cpu", "--filters", "8",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr  # torchrun may forward the children's output to either
    assert out.count("saved ") == 1, out[-2000:]  # only rank 0 reports and writes
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["extra"]["world_size"] == 2
    history = meta["extra"]["training"]["history"]
    best = max(h["auroc"] for h in history)
    assert best > 0.8, history  # the planted motif is learnt across both processes
