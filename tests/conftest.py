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


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory):
    """Keep the plugin's user cache (trusted models, autosave, samples) out of $HOME."""
    if os.environ.get("NAPARI_DLCB_CACHE"):
        yield
        return
    os.environ["NAPARI_DLCB_CACHE"] = str(tmp_path_factory.mktemp("dlcb-user-cache"))
    yield
    os.environ.pop("NAPARI_DLCB_CACHE", None)


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throw-away local PostgreSQL server (initdb + pg_ctl), as an SQLAlchemy URL.

    Started by the test session itself (CI has the server binaries but no running
    server); skipped where the binaries are missing. As root, the server runs as the
    ``postgres`` user (PostgreSQL refuses to run as root).
    """
    import shutil
    import subprocess

    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    import tempfile

    # not under pytest's tmp folder: that is private to root, and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="dlcb-pg-"))
    data = base / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        prefix = [runuser, "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        os.chmod(base, 0o700)
    port = _free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], **run)
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-w", "-l", str(base / "log"), "start"],
        **run,
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
