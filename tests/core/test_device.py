"""The interactive thread rule: torch leaves one CPU core to the viewer (issue 8)."""

from __future__ import annotations

import pytest

from napari_dlcb.errors import DlcbError


def test_interactive_threads_leave_one_core_for_the_viewer():
    from napari_dlcb.device import interactive_threads

    assert interactive_threads(2, {}) == 1
    assert interactive_threads(16, {}) == 15
    assert interactive_threads(1, {}) == 1
    assert interactive_threads(4, {"OMP_NUM_THREADS": "4"}) is None  # the user's choice stands
    assert interactive_threads(4, {"NAPARI_DLCB_THREADS": "4"}) == 4
    with pytest.raises(DlcbError, match="NAPARI_DLCB_THREADS"):
        interactive_threads(4, {"NAPARI_DLCB_THREADS": "0"})


def test_leave_a_core_sets_torch_threads(monkeypatch):
    import torch

    from napari_dlcb.device import leave_a_core_for_the_viewer

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("NAPARI_DLCB_THREADS", "1")
    try:
        assert leave_a_core_for_the_viewer() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
