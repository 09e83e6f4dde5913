"""Fault injection, small: SIGKILL at random moments during train, predict and autosave.

The full run (30 kills each) is ``benchmarks/bench_faults.py``; this runs the
same checks with 2 kills per target: after each kill the model folder loads,
the prediction folder is whole, the annotation store reads one whole array and
saves again, and ``--resume`` finishes an interrupted training run.
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_faults", ROOT / "benchmarks" / "bench_faults.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def world(bench, tmp_path_factory):
    return bench._world(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("target", ["train", "predict", "autosave"])
def test_kills_leave_whole_outputs(bench, world, target):
    check = {"train": bench.check_train, "predict": bench.check_predict,
             "autosave": bench.check_autosave}[target]  # fmt: skip
    kw = {"p_resume": 1.0} if target == "train" else {}
    stats = check(world, 2, 60.0 if target != "autosave" else 1.0, random.Random(1), **kw)
    assert stats["fail"] == [], stats["fail"]
    assert stats["clean"] == 2
