"""A BioImage.IO package opened from the Segmentation dock: its TorchScript runs only once agreed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dlcb._widgets import _jobs
from napari_dlcb._widgets.segmentation import SegmentationWidget
from napari_dlcb.models.bioimageio_export import export_bioimageio
from napari_dlcb.models.meta import ModelMeta
from napari_dlcb.models.trust import is_trusted
from napari_dlcb.models.unet import UNet2D

pytestmark = pytest.mark.gui


def _package_from_another_installation(tmp_path, monkeypatch):
    """A tiny U-Net package exported with another user cache (so not trusted here)."""
    torch.manual_seed(0)
    net = UNet2D(1, 2, base=4, depth=2).eval()
    meta = ModelMeta("segmentation", net.architecture(), ["background", "nuclei"])
    with monkeypatch.context() as m:
        m.setenv("NAPARI_DLCB_CACHE", str(tmp_path / "elsewhere"))
        report = export_bioimageio(net, tmp_path / "pkg.zip", meta=meta, onnx=False)
    return report.path


def test_dock_asks_before_running_a_package(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    package = _package_from_another_installation(tmp_path, monkeypatch)
    assert not is_trusted(package, sha256=_weights_digest(package))
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((96, 96)).astype(np.float32), name="img")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("bioimageio"))
    widget.base_path.setText(str(package))
    asked = []
    monkeypatch.setattr(_jobs, "ask_to_trust", lambda err: asked.append(err.path) or False)
    assert widget.predict()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert asked == [package]
    assert "can run code" in widget.status.text() and "img segmentation" not in viewer.layers

    monkeypatch.setattr(_jobs, "ask_to_trust", lambda err: asked.append(err.path) or True)
    assert widget.predict()
    qtbot.waitUntil(lambda: "img segmentation" in viewer.layers, timeout=60_000)
    assert len(asked) == 2 and is_trusted(package, sha256=_weights_digest(package))
    assert viewer.layers["img segmentation"].data.shape == (96, 96)


def _weights_digest(package) -> str:
    import hashlib
    import zipfile

    with zipfile.ZipFile(package) as zf:
        return hashlib.sha256(zf.read("weights.pt")).hexdigest()
