"""The Segmentation dock end to end on real nuclei, as a user works (issue 8).

The StarDist sample image (512 x 512, real fluorescence nuclei) with ~18 thin
strokes drawn from its ground truth, the built-in U-Net, quick mode: Train ->
Stop mid-epoch -> Predict -> Save -> reload the saved model and predict again
(same labels) -> a wrong file as "Start from" (one clear line, the dock still
works). Kept short: a few seconds of training.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_dlcb._widgets.segmentation import SegmentationWidget
from napari_dlcb.training import events as E

pytestmark = pytest.mark.gui

DATA = "stardist_sample_nuclei_2d"


@pytest.fixture
def stardist(shared_data):
    from napari_dlcb.data.strokes import simulate_strokes
    from napari_dlcb.io.images import read_image

    folder = shared_data / DATA
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there")
    img = read_image(folder / "img2d.tif")
    truth = read_image(folder / "mask2d.tif").astype(np.int32)
    return img, truth, simulate_strokes(truth, seed=0)


def _errors_since(n: int) -> list[str]:
    return [
        r.message
        for r in notification_manager.records[n:]
        if r.severity == NotificationSeverity.ERROR
    ]


def test_train_stop_predict_save_reload_on_real_nuclei(
    make_napari_viewer, qtbot, stardist, tmp_path
):
    from napari_dlcb.inference.segment import segment

    img, truth, strokes = stardist
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1024, 720)
    viewer.add_image(img, name="nuclei")
    viewer.add_labels(strokes, name="scribbles")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation", area="right")
    widget.select_layers(image="nuclei", labels="scribbles")
    widget.device_combo.setCurrentText("cpu")
    widget.epochs_spin.setValue(1000)  # stopped by the test
    assert "built-in nuclei U-Net" in widget.model_label.text()
    events = []
    qtbot.waitUntil(lambda: widget.warmed_up, timeout=120_000)

    # Train: the click only starts the job; Stop mid-epoch keeps what was learnt
    on_event = widget._on_event
    widget._on_event = lambda ev: (events.append(ev), on_event(ev))
    t0 = time.perf_counter()
    widget.train_btn.click()
    assert time.perf_counter() - t0 < 1.0 and widget.is_training
    qtbot.waitUntil(lambda: widget.n_preview_updates >= 1, timeout=120_000)
    qtbot.waitUntil(lambda: any(isinstance(e, E.Progress) for e in events), timeout=120_000)
    widget.stop_btn.click()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=120_000)
    fin = widget.last_finished
    assert fin is not None and fin.reason == "cancelled" and fin.kept
    assert fin.kept in widget.status.text() and "the model now holds" in widget.status.text()
    assert any(isinstance(e, E.EpochEnd) and e.partial for e in events)  # validated at Stop
    assert "trained here from built-in nuclei U-Net" in widget.model_label.text()

    # Predict: the final segmentation shows, the live prediction is hidden
    assert widget.predict()
    qtbot.waitUntil(lambda: widget.predict_worker is None, timeout=120_000)
    seg = viewer.layers["nuclei segmentation"]
    assert seg.visible and not widget.preview_layer.visible
    assert seg.data.shape == img.shape and seg.data.max() > 50  # ~125 nuclei

    # Save, reload, predict again: the same labels
    assert widget.save_model(tmp_path / "model")
    qtbot.waitUntil(lambda: not widget.jobs.busy("save"), timeout=120_000)
    assert widget.saved_path is not None and (widget.saved_path / "metadata.json").is_file()
    again = segment(str(widget.saved_path), img, device="cpu")
    np.testing.assert_array_equal(np.asarray(seg.data), again.labels)

    # Export to BioImage.IO: a package that the zoo's own test passes, same labels
    assert widget.export_btn.isEnabled()
    assert widget.export_model(tmp_path / "nuclei-model")  # ".zip" is added
    qtbot.waitUntil(lambda: not widget.jobs.busy("export"), timeout=300_000)
    package = tmp_path / "nuclei-model.zip"
    assert package.is_file() and widget.exported.test_passed, widget.status.text()
    assert "bioimageio test" in widget.status.text()
    from_package = segment(str(package), img, device="cpu")
    assert (from_package.labels == again.labels).mean() > 0.999

    # A wrong file as "Start from": one clear line, the dock stays usable
    widget.base_combo.setCurrentIndex(widget.base_combo.findData("saved"))
    widget.base_path.setText(str(tmp_path / "model" / "weights.safetensors"))
    widget.base_path.editingFinished.emit()
    assert widget.trainer is None  # the trained model was from another base
    n = len(notification_manager.records)
    assert widget.start_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=60_000)
    errors = _errors_since(n)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    # the toast names the file, the status line gives its whole path
    wrong = repr(str(tmp_path / "model" / "weights.safetensors"))
    assert "'…/weights.safetensors'" in errors[0], errors
    assert errors[0].replace("'…/weights.safetensors'", wrong) in widget.status.text()
    assert widget.train_btn.isEnabled() and widget.predict_btn.isEnabled()
