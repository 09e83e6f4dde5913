"""Cell-classifier and interpretation widgets in a real napari window (Xvfb).

End to end on the sample nuclei image: segment, label cells by clicking,
train with a live confusion matrix, see labels coloured by predicted class,
open a per-cell saliency layer and the embedding, and check that selecting a
point selects its cell (and back).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dlcb._widgets.classifier import (
    EMBEDDING_LAYER,
    PREDICTION_LAYER,
    CellClassifierSettings,
    CellClassifierWidget,
)
from napari_dlcb._widgets.interpret import InterpretSettings, InterpretWidget

pytestmark = pytest.mark.gui


class _Click:
    """The parts of a napari mouse event that the click handler reads."""

    def __init__(self, position, modifiers=()):
        self.type = "mouse_press"
        self.position = tuple(float(p) for p in position)
        self.view_direction = None
        self.dims_displayed = [0, 1]
        self.modifiers = list(modifiers)


def _nuclei_viewer(make_napari_viewer):
    from napari_dlcb._sample_data import nuclei_sample

    viewer = make_napari_viewer(show=True)
    (img, img_kw, _), (gt, _, _) = nuclei_sample()
    viewer.add_image(np.asarray(img), **img_kw)
    try:  # segment with the built-in U-Net when its weights are installed
        from napari_dlcb.inference.segment import segment

        labels = segment("builtin", np.asarray(img), device="cpu").labels
        source = "segmented"
    except Exception:  # noqa: BLE001 - the built-in U-Net is another issue's deliverable
        labels, source = np.asarray(gt), "ground truth"
    viewer.add_labels(labels.astype(np.int32), name="nuclei labels")
    return viewer, source


def test_settings_are_the_core_arguments():
    s = CellClassifierSettings(
        classes=["a", "b"], annotations={3: "a", 5: "b"}, mode="full", crop_size=24, epochs=7
    )
    args = s.as_core_arguments()
    assert args["annotations"] == {3: "a", 5: "b"} and args["mode"] == "full"
    assert args["crop_size"] == 24 and s.as_fit_arguments() == {"epochs": 7}
    i = InterpretSettings(method="occlusion", target="2", window=10)
    assert i.as_core_arguments()["target"] == 2
    assert i.as_core_arguments()["stride"] == 5
    assert InterpretSettings(target="nuclei").as_core_arguments()["target"] == "nuclei"


def test_cell_classifier_end_to_end(make_napari_viewer, qtbot, tmp_path, loop_probe):
    from skimage.measure import regionprops

    from napari_dlcb.models.registry import list_builtin

    viewer, source = _nuclei_viewer(make_napari_viewer)
    if "unet2d-nuclei" in list_builtin():
        assert source == "segmented"  # the built-in U-Net made the instance labels
    labels_layer = viewer.layers["nuclei labels"]
    widget = CellClassifierWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("nuclei")
    widget.labels_combo.setCurrentText("nuclei labels")
    widget.classes_edit.setText("small, large")
    widget.classes_edit.editingFinished.emit()
    widget.annotate_check.setChecked(True)
    assert widget._on_click in labels_layer.mouse_drag_callbacks

    props = [p for p in regionprops(np.asarray(labels_layer.data)) if p.area > 20]
    props.sort(key=lambda p: p.area)
    small, large = props[:4], props[-4:]
    for cls, group in (("small", small), ("large", large)):
        widget.class_combo.setCurrentText(cls)
        for p in group:
            # click inside the object: a pixel of its own (centroids can fall outside)
            r, c = p.coords[len(p.coords) // 2]
            widget._on_click(labels_layer, _Click((r, c)))
    assert widget.annotations == {
        **{p.label: "small" for p in small},
        **{p.label: "large" for p in large},
    }
    # Alt-click removes an annotation
    r, c = small[0].coords[0]
    widget._on_click(labels_layer, _Click((r, c), modifiers=["Alt"]))
    assert small[0].label not in widget.annotations
    widget.class_combo.setCurrentText("small")
    widget._on_click(labels_layer, _Click((r, c)))
    assert len(viewer.layers["cell annotations"].data) == 8

    widget.epochs_spin.setValue(15)
    # measure the event loop while training runs (up to the results); adding the result
    # layers afterwards is a one-off GUI cost, timed separately
    stalls = {}
    apply = widget.apply_predictions

    def apply_timed(results=None):
        import time

        stalls["training"] = loop_probe.stop()
        t0 = time.perf_counter()
        apply(results)
        stalls["apply"] = 1000 * (time.perf_counter() - t0)

    widget.apply_predictions = apply_timed
    loop_probe.start()
    widget.start_training()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    stall_ms = stalls["training"]
    print(
        f"longest event-loop stall while training: {stall_ms:.0f} ms; "
        f"adding result layers: {stalls['apply']:.0f} ms"
    )
    # Crops, training and prediction run in the worker. Measured on the 2-core dev box:
    # 200-600 ms at load 1.5 (GIL hand-offs with the worker), 1-4 s at load 8-12 from OS
    # scheduling alone, so the bound is checked only below 1.5 jobs per core.
    import os

    if os.getloadavg()[0] / (os.cpu_count() or 1) < 1.5:
        assert stall_ms < 1000
    assert widget.n_confusion_updates >= 2  # live updates during training, then final
    assert len(widget.curve.epochs) >= 2  # learning curve, one point per epoch
    cm = widget.last_confusion
    assert cm.shape == (2, 2) and cm.sum() == 8
    # labels coloured by predicted class
    pred = viewer.layers[PREDICTION_LAYER]
    values = set(np.unique(pred.data).tolist())
    assert values <= {0, 1, 2} and {1, 2} <= values
    lab = np.asarray(labels_layer.data)
    assert ((pred.data > 0) == (lab > 0)).all()
    feats = labels_layer.features
    assert "predicted_class" in feats and feats.loc[large[-1].label, "predicted_class"] in (
        "small",
        "large",
    )
    assert np.trace(cm) >= 6, f"training fit too poor on {source} labels: {cm}"

    # CSV export
    table = widget.export_csv(str(tmp_path / "cells.csv"))
    back = pd.read_csv(tmp_path / "cells.csv")
    assert len(back) == len(np.unique(lab)) - 1 == len(table)
    assert {
        "object_id",
        "class",
        "prob_large",
        "prob_small",
        "area",
        "eccentricity",
        "intensity_mean",
        "annotated",
    } <= set(back.columns)

    # per-cell saliency
    labels_layer.selected_label = int(large[0].label)
    sal = widget.show_cell_saliency()
    assert sal is not None and sal.data.shape == (32, 32)
    assert np.abs(sal.data).max() > 0 and sal.colormap.name == "bwr"

    # embedding linked to the labels
    pts = widget.show_embedding()
    assert pts.name == EMBEDDING_LAYER and len(pts.data) == len(table)
    ids = pts.features["object_id"].to_numpy()
    pts.selected_data = {5}
    assert labels_layer.selected_label == ids[5]
    assert labels_layer.show_selected_label
    labels_layer.selected_label = int(ids[9])
    assert pts.selected_data == {9}


def test_classifier_widget_refuses_a_single_class(make_napari_viewer):
    from napari.utils.notifications import notification_manager

    viewer, _ = _nuclei_viewer(make_napari_viewer)
    widget = CellClassifierWidget(viewer)
    widget.labels_combo.setCurrentText("nuclei labels")
    widget.classes_edit.setText("a, b")
    widget.classes_edit.editingFinished.emit()
    ids = np.unique(viewer.layers["nuclei labels"].data)[1:4]
    for i in ids:
        widget.annotate(int(i), "a")
    n = len(notification_manager.records)
    widget.start_training()
    assert widget.worker is None
    msgs = [r.message for r in notification_manager.records[n:]]
    assert any("only one class" in m for m in msgs)


def test_interpret_widget_saliency_filters_patches(make_napari_viewer, qtbot, tmp_path):
    import torch

    from napari_dlcb.models.saved import ModelMeta, save_model
    from napari_dlcb.models.unet import UNet2D

    torch.manual_seed(0)
    net = UNet2D(1, 2, base=4, depth=2).eval()
    folder = save_model(
        net,
        tmp_path / "unet",
        ModelMeta(
            "segmentation",
            net.architecture(),
            ["background", "nuclei"],
            normalization={"mode": "per_image_zscore"},
        ),
    )
    viewer, _ = _nuclei_viewer(make_napari_viewer)
    widget = InterpretWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("nuclei")
    widget.model_edit.setText(str(folder))

    widget.region_combo.setCurrentText("selected object")
    widget.labels_combo.setCurrentText("nuclei labels")
    lab = viewer.layers["nuclei labels"]
    lab.selected_label = int(np.unique(lab.data)[5])
    widget.method_combo.setCurrentText("gradients")
    widget.target_edit.setText("nuclei")
    widget.compute_saliency()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    layer = viewer.layers["saliency gradients (nuclei)"]
    r0, c0 = layer.metadata["saliency"]["offset"]
    assert tuple(layer.translate) == (r0, c0)
    assert np.abs(layer.data).max() > 0
    assert layer.colormap.name == "bwr"
    lo, hi = layer.contrast_limits
    assert lo == -hi

    # zoom in: the viewport map covers the visible part (+ margin), not the whole image
    from napari_dlcb._widgets._common import viewer_camera

    viewer_camera(viewer).zoom = 8
    widget.region_combo.setCurrentText("viewport")
    widget.method_combo.setCurrentText("integrated-gradients")
    widget.compute_saliency()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "completeness error" in widget.status.text()
    ig = viewer.layers["saliency integrated-gradients (nuclei)"]
    assert 0 < ig.data.shape[0] < 512 and 0 < ig.data.shape[1] < 512

    filt = widget.show_filters()
    assert filt.data.ndim == 2 and filt.data.shape[0] > 8

    widget.k_spin.setValue(5)
    widget.channel_spin.setValue(1)
    widget.show_top_patches()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    pts = viewer.layers["top locations ch 1"]
    assert len(pts.data) == 5
    assert "top patches ch 1" in viewer.layers
