"""Fixtures for the GUI tests: a real napari window under Xvfb (pytest-xvfb).

- every test here is marked ``gui``;
- ``NAPARI_DLCB_CACHE`` points at a temporary folder, so autosave of images
  without a file never writes into the user's cache;
- ``loop_probe`` measures the longest event-loop stall of a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def _dlcb_cache(tmp_path_factory, monkeypatch) -> Path:
    """A private plugin cache for each test."""
    cache = tmp_path_factory.mktemp("dlcb-cache")
    monkeypatch.setenv("NAPARI_DLCB_CACHE", str(cache))
    return cache


@pytest.fixture
def dlcb_cache(_dlcb_cache) -> Path:
    """The temporary ``NAPARI_DLCB_CACHE`` of this test."""
    return _dlcb_cache


@pytest.fixture
def loop_probe(qtbot):
    """A started :class:`EventLoopProbe` (10 ms re-armed single-shot QTimer)."""
    from napari_dlcb._widgets._common import EventLoopProbe

    probe = EventLoopProbe(interval_ms=10)
    yield probe
    probe.stop()
    probe.deleteLater()


@pytest.fixture
def session_viewer(make_napari_viewer):
    """A shown viewer with the plugin's sample session (nuclei image + scribbles)."""
    viewer = make_napari_viewer(show=True)
    # under Xvfb the canvas is rendered and composited in software (Mesa llvmpipe):
    # each repaint costs time in proportion to its pixels, so keep the window modest
    viewer.window.resize(1024, 720)
    try:
        viewer.open_sample("napari-dlcb", "session")
    except Exception as err:  # noqa: BLE001 - plugin not installed in this environment
        pytest.skip(f"napari-dlcb sample data unavailable: {err}")
    return viewer


def pytest_report_header(config):
    return f"napari-dlcb GUI tests: DISPLAY={os.environ.get('DISPLAY', '')!r}"
