"""A code-carrying model opened from a dock: asked first, remembered once agreed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_dlcb._widgets import _jobs
from napari_dlcb._widgets.segmentation import SegmentationWidget
from napari_dlcb.models.meta import ModelMeta
from napari_dlcb.models.trust import is_trusted

pytestmark = pytest.mark.gui


class _TwoClass(torch.nn.Module):
    def forward(self, x):
        return torch.cat([-x, x], dim=1)


def _foreign_model(tmp_path):
    """A folder with TorchScript this installation did not write (e.g. a download)."""
    from safetensors.torch import save_file

    folder = tmp_path / "foreign"
    folder.mkdir()
    torch.jit.save(torch.jit.script(_TwoClass()), str(folder / "model.pt"))
    save_file({}, str(folder / "weights.safetensors"))
    meta = ModelMeta(
        "segmentation", {"name": "torchscript"}, ["background", "nuclei"], label_kind="classes"
    )
    (folder / "metadata.json").write_text(json.dumps({"format_version": 1, **meta.to_dict()}))
    return folder


def test_dock_asks_before_running_a_models_code(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((96, 96)).astype(np.float32), name="img")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    folder = _foreign_model(tmp_path)
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("saved"))
    widget.base_path.setText(str(folder))
    asked = []
    monkeypatch.setattr(_jobs, "ask_to_trust", lambda err: asked.append(err.path) or False)
    assert widget.predict()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert asked == [folder / "model.pt"]
    assert "can run code" in widget.status.text() and "img segmentation" not in viewer.layers
    assert not is_trusted(folder / "model.pt")

    monkeypatch.setattr(_jobs, "ask_to_trust", lambda err: asked.append(err.path) or True)
    assert widget.predict()
    qtbot.waitUntil(lambda: "img segmentation" in viewer.layers, timeout=60_000)
    assert len(asked) == 2 and is_trusted(folder / "model.pt")
    assert viewer.layers["img segmentation"].data.shape == (96, 96)
