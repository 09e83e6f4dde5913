"""The Tune dock in a real napari window: a short study on the sample session."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb._widgets.tune import TuneWidget

pytestmark = pytest.mark.gui


def test_tune_dock_runs_a_study_and_uses_the_best_model(session_viewer, qtbot):
    viewer = session_viewer
    widget = TuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("nuclei")
    widget.labels_combo.setCurrentText("scribbles")
    widget.trials_spin.setValue(2)
    widget.epochs_spin.setValue(1)
    widget.strategy_combo.setCurrentText("random")
    assert widget.start()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=300_000)
    assert widget.table.rowCount() == 2
    states = {widget.table.item(r, 1).text() for r in range(2)}
    assert states <= {"complete", "pruned"} and "complete" in states
    assert widget.best_dir is not None and widget.best_btn.isEnabled()
    assert widget.plot.pixmap() is not None and not widget.plot.pixmap().isNull()
    widget.use_best()
    qtbot.waitUntil(lambda: "tuned segmentation" in viewer.layers, timeout=120_000)
    labels = np.asarray(viewer.layers["tuned segmentation"].data)
    assert labels.shape == viewer.layers["nuclei"].data.shape[:2] and labels.max() > 5


def test_tune_dock_refuses_missing_data_in_one_line(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = TuneWidget(viewer)
    widget.task_combo.setCurrentIndex(2)  # sequence, with no table chosen
    assert not widget.start()
    assert "choose the training data" in widget.status.text()
    assert not widget.jobs.busy()
