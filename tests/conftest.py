"""Shared fixtures: real data location, torch device, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("NAPARI_DLCB_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the real public datasets (``../shared/data``); skip if absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not available")
    return path


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> str:
    """Run on CPU always, and on CUDA when one exists (as tangermeme does)."""
    if request.param == "cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _limit_threads():
    """Keep tests deterministic and polite on small CI machines."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


@pytest.fixture
def slow_saliency(monkeypatch):
    """``make(cost)``: make ``interpret.saliency.saliency`` take ``cost`` s more; returns call times."""
    import time

    import napari_dlcb.interpret.saliency as sal

    def make(cost: float) -> list[float]:
        real, calls = sal.saliency, []

        def slow(*args, **kwargs):
            time.sleep(cost)
            calls.append(time.perf_counter())
            return real(*args, **kwargs)

        monkeypatch.setattr(sal, "saliency", slow)
        return calls

    return make
