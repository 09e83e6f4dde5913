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


def _classifier_dock(viewer):
    """The Cell classifier dock on the nuclei image and labels, classes small / large."""
    widget = CellClassifierWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.setCurrentText("nuclei")
    widget.labels_combo.setCurrentText("nuclei labels")
    widget.classes_edit.setText("small, large")
    widget.classes_edit.editingFinished.emit()
    return widget


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


def test_tall_dock_scrolls_instead_of_growing_the_window(make_napari_viewer, qtbot):
    """The Cell classifier dock is taller than a laptop screen: it scrolls, the window stays."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    qtbot.wait(50)
    widget = CellClassifierWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell classifier", area="right")
    qtbot.wait(200)
    area = widget.findChild(QScrollArea)
    assert area is not None and area.widget().isAncestorOf(widget.train_button)
    assert area.widget().sizeHint().height() > 800  # the content is taller than the window
    assert window.height() <= 800, window.height()


def test_empty_learning_curve_shows_a_hint_not_axes(make_napari_viewer, qtbot):
    from napari_dlcb._widgets._plot import EMPTY_HINT

    viewer = make_napari_viewer(show=True)
    widget = CellClassifierWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell classifier", area="right")
    curve = widget.curve
    qtbot.waitUntil(lambda: curve.n_renders >= 1 and not curve.rendering, timeout=5000)
    texts = [t.get_text() for t in curve._ax.texts]
    assert texts == [EMPTY_HINT] and not curve._ax.xaxis.get_tick_params()["labelbottom"]
    n = curve.n_renders
    curve.add_epoch(1, 0.9, 1.0, is_best=True)
    qtbot.waitUntil(lambda: curve.n_renders > n and not curve.rendering, timeout=5000)
    assert len(curve._ax.texts) == 0 and curve._ax.get_xlim() == (0.5, 1.5)


def test_dock_builds_the_core_config(make_napari_viewer):
    """The dock's fields become the same CellsConfig that Python callers build."""
    from napari_dlcb.tasks.cells import CellsConfig

    widget = CellClassifierWidget(make_napari_viewer())
    assert [widget.mode_combo.itemText(i) for i in range(2)] == ["quick", "full"]
    # issue 8: UMAP took 81 s while the tooltip said "a few seconds"
    assert "a minute or more" in widget.embedding_method.toolTip()
    assert widget.crop_spin.text() == "auto" and widget.config() == CellsConfig().validate()
    widget.mode_combo.setCurrentText("full")
    widget.crop_spin.setValue(24)
    widget.epochs_spin.setValue(7)
    assert widget.config() == CellsConfig(mode="full", crop_size=24, epochs=7).validate()
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
    widget = _classifier_dock(viewer)
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
    # a path that cannot be written: a one-line error, the file already there untouched
    from napari_dlcb.errors import DlcbError

    with pytest.raises(DlcbError, match="could not write"):
        widget.export_csv(str(tmp_path / "no such folder" / "cells.csv"))
    assert len(pd.read_csv(tmp_path / "cells.csv")) == len(table)

    # per-cell saliency, in a job; the crop size was chosen from the nuclei (auto)
    labels_layer.selected_label = int(large[0].label)
    assert widget.show_cell_saliency() is not None
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    sal = widget._cell_saliency_layer(large[0].label)
    size = widget.task.crop_size
    assert size > 32 and size % 8 == 0
    assert sal is not None and sal.data.shape == (size, size)
    assert np.abs(sal.data).max() > 0 and sal.colormap.name == "dlcb_attribution"

    # embedding (computed in a worker) linked to the labels
    assert widget.show_embedding() is not None
    qtbot.waitUntil(lambda: widget.embedding_worker is None, timeout=60_000)
    pts = widget.embedding_layer
    assert pts.name == EMBEDDING_LAYER and len(pts.data) == len(table)
    ids = pts.features["object_id"].to_numpy()
    pts.selected_data = {5}
    assert labels_layer.selected_label == ids[5]
    assert labels_layer.show_selected_label
    labels_layer.selected_label = int(ids[9])
    assert pts.selected_data == {9}


def _rgba(color) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]


def test_embedding_colour_by_measurement_and_methods(make_napari_viewer, qtbot):
    from napari.utils.colormaps import ensure_colormap
    from skimage.measure import regionprops

    from napari_dlcb._widgets.classifier import CLASS_COLORS, UNANNOTATED_COLOR
    from napari_dlcb.interpret.embedding import available_methods

    viewer, _ = _nuclei_viewer(make_napari_viewer)
    labels_layer = viewer.layers["nuclei labels"]
    lab = np.asarray(labels_layer.data)
    widget = _classifier_dock(viewer)
    area = {p.label: p.area for p in regionprops(lab)}  # measured here, independently
    by_area = sorted((a, i) for i, a in area.items() if a > 20)
    for _, i in by_area[:4]:
        widget.annotate(i, "small")
    for _, i in by_area[-4:]:
        widget.annotate(i, "large")
    widget.epochs_spin.setValue(10)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.probs is not None

    methods = [widget.embedding_method.itemText(i) for i in range(widget.embedding_method.count())]
    assert methods == available_methods() and methods[0] == "pca"
    assert not widget.color_by.isEnabled()  # nothing to colour yet
    widget.embedding_button.click()
    qtbot.waitUntil(lambda: widget.embedding_worker is None, timeout=60_000)
    pts = widget.embedding_layer
    assert pts.metadata["method"] == "pca" and widget.n_embeddings == 1
    ids = pts.features["object_id"].to_numpy()
    assert sorted(ids.tolist()) == sorted(area)
    choices = [widget.color_by.itemText(i) for i in range(widget.color_by.count())]
    assert choices[:4] == [
        "predicted class",
        "annotated class",
        "probability of small",
        "probability of large",
    ]
    # every numeric measurement of the export table is offered
    table = widget.task.table(widget.probs)
    for col in ("area", "perimeter", "eccentricity", "solidity", "intensity_mean"):
        assert col in choices and col in table.columns

    # categorical: predicted class colours (default), then annotated / not annotated
    pred = widget.probs.argmax(1)
    assert widget.color_by.currentText() == "predicted class"
    np.testing.assert_allclose(pts.face_color, [_rgba(CLASS_COLORS[k]) for k in pred], atol=1e-6)
    widget.color_by.setCurrentText("annotated class")
    annotated = {**{i: 0 for _, i in by_area[:4]}, **{i: 1 for _, i in by_area[-4:]}}
    want = [_rgba(CLASS_COLORS[annotated[i]] if i in annotated else UNANNOTATED_COLOR) for i in ids]
    np.testing.assert_allclose(pts.face_color, want, atol=1e-6)

    # continuous: colours climb the colormap with the area; the biggest cell is at the top
    coords = np.array(pts.data, copy=True)
    widget.color_by.setCurrentText("area")
    assert widget.embedding_layer is pts and widget.n_embeddings == 1  # recoloured only
    np.testing.assert_array_equal(pts.data, coords)
    cmap = ensure_colormap("viridis")
    lut = cmap.map(np.linspace(0, 1, 1001))
    position = np.array(
        [np.abs(lut - c).sum(1).argmin() / 1000 for c in np.asarray(pts.face_color)]
    )
    areas = np.array([area[i] for i in ids], float)
    order = np.argsort(areas, kind="stable")
    assert (np.diff(position[order]) >= -1e-3).all()  # monotone in the area
    np.testing.assert_allclose(pts.face_color[areas.argmax()], cmap.map([1.0])[0], atol=1e-6)
    np.testing.assert_allclose(pts.face_color[areas.argmin()], cmap.map([0.0])[0], atol=1e-6)
    np.testing.assert_allclose(
        position, (areas - areas.min()) / (areas.max() - areas.min()), atol=2e-3
    )
    assert pts.metadata["colour_by"]["contrast_limits"] == (areas.min(), areas.max())
    # a class probability, from the widget's predictions
    widget.color_embedding("probability of large")
    p_large = widget.probs[:, 1]
    top = int(np.argmax(p_large))
    np.testing.assert_allclose(pts.face_color[top], cmap.map([1.0])[0], atol=1e-6)
    lo, hi = pts.metadata["colour_by"]["contrast_limits"]
    assert (lo, hi) == pytest.approx((p_large.min(), p_large.max()))

    # the per-cell saliency button explains the selected cell (not the click's `checked`)
    labels_layer.selected_label = int(ids[top])
    widget.saliency_button.click()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert any(ly.name.startswith(f"saliency cell {ids[top]} (") for ly in viewer.layers)

    # another method recomputes; the colouring and the cell link stay
    if "tsne" not in methods:
        pytest.skip("scikit-learn is not installed")
    widget.color_by.setCurrentText("area")
    widget.embedding_method.setCurrentText("tsne")
    widget.embedding_button.click()
    qtbot.waitUntil(lambda: widget.embedding_worker is None, timeout=120_000)
    tsne = widget.embedding_layer
    assert tsne.metadata["method"] == "tsne" and widget.n_embeddings == 2
    assert tsne.name == EMBEDDING_LAYER and len(tsne.data) == len(ids)
    assert np.isfinite(tsne.data).all() and not np.allclose(tsne.data, coords)
    assert widget.color_by.currentText() == "area"
    ids = tsne.features["object_id"].to_numpy()
    biggest = int(np.argmax([area[i] for i in ids]))
    np.testing.assert_allclose(tsne.face_color[biggest], cmap.map([1.0])[0], atol=1e-6)
    tsne.selected_data = {biggest}
    assert labels_layer.selected_label == ids[biggest]


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

    folder = _unet_folder(tmp_path)
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
    assert layer.colormap.name == "dlcb_attribution"
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

    assert widget.show_filters() is not None  # a job
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    filt = viewer.layers["filters (first layer)"]
    assert filt.data.ndim == 2 and filt.data.shape[0] > 8

    widget.k_spin.setValue(5)
    widget.channel_spin.setValue(1)
    widget.show_top_patches()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    pts = viewer.layers["top locations ch 1"]
    assert len(pts.data) == 5
    assert "top patches ch 1" in viewer.layers

    # activation maximisation of the same channel, from the button, in a worker
    from napari_dlcb.interpret.network import layer_activations
    from napari_dlcb.interpret.saliency import resolve_layer
    from napari_dlcb.models.state import hook_counts

    model = widget.model()[0]
    default = resolve_layer(model, None)  # the empty layer field means this one
    lname = next(n for n, m in model.named_modules() if m is default)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    widget.actmax_button.click()
    assert widget.worker is not None  # runs off the GUI thread
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    act = viewer.layers[f"act-max {lname}[1]"]
    gen = np.asarray(act.data, np.float32)
    assert gen.shape == (64, 64) and np.isfinite(gen).all() and np.ptp(gen) > 0
    info = act.metadata["activation_maximisation"]
    assert info["layer"] == lname and info["channel"] == 1 and len(info["trace"]) == 128
    # placed beside the image, not over it, and not offered as an input image
    assert act.translate[1] > viewer.layers["nuclei"].data.shape[1]
    # issue 8: the filter grid and the act-max image were drawn over the image / each other
    views = ["nuclei", "filters (first layer)", "top patches ch 1", f"act-max {lname}[1]"]
    boxes = [_world_box(viewer.layers[v]) for v in views]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (alo, ahi), (blo, bhi) = boxes[i], boxes[j]
            apart = (ahi <= blo).any() or (bhi <= alo).any()
            assert apart, f"{views[i]} overlaps {views[j]}"
    assert act.name not in [
        widget.image_combo.itemText(i) for i in range(widget.image_combo.count())
    ]

    def mean_act(x):
        return float(layer_activations(model, x, layer=lname)[1].mean())

    rng = np.random.default_rng(0)
    generated = mean_act(gen)
    baselines = [mean_act(np.zeros_like(gen))] + [  # zero, and noise of the same spread
        mean_act(rng.normal(0, gen.std(), gen.shape).astype(np.float32)) for _ in range(3)
    ]
    assert generated > 0 and generated > 3 * max(baselines), (generated, baselines)
    # the model is handed back unchanged
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert hook_counts(model) == {} and model.training == was_training


def test_cell_saliency_refreshes_live_while_training(make_napari_viewer, qtbot, loop_probe):
    import os

    from napari.layers import Image
    from skimage.measure import regionprops

    from napari_dlcb._widgets.classifier import CELL_SALIENCY_KEY

    viewer, _ = _nuclei_viewer(make_napari_viewer)
    labels_layer = viewer.layers["nuclei labels"]
    lab = np.asarray(labels_layer.data)
    widget = _classifier_dock(viewer)
    props = sorted((p for p in regionprops(lab) if p.area > 20), key=lambda p: p.area)
    for p in props[:4]:
        widget.annotate(p.label, "small")
    for p in props[-4:]:
        widget.annotate(p.label, "large")
    cell, other = props[len(props) // 2], props[len(props) // 2 + 1]  # not labelled
    labels_layer.selected_label = int(cell.label)  # the user selects a cell
    widget.saliency_method.setCurrentText("gradients")
    # full fine-tuning of 64-px crops with a long patience: training lasts long enough to
    # watch the map change, and the test stops it (as a user would) once it has
    widget.mode_combo.setCurrentText("full")
    widget.crop_spin.setValue(64)
    widget.epochs_spin.setValue(500)

    # observe the layers through napari's own events: every map the viewer receives
    seen: dict[int, list[tuple[np.ndarray, bool]]] = {}

    def watch(layer):
        oid = layer.metadata.get(CELL_SALIENCY_KEY)
        if not isinstance(layer, Image) or oid is None:
            return
        training = widget.worker is not None
        seen.setdefault(oid, []).append((np.array(layer.data, copy=True), training))
        layer.events.data.connect(
            lambda e: seen[oid].append((np.array(layer.data, copy=True), widget.worker is not None))
        )

    viewer.layers.events.inserted.connect(lambda e: watch(e.value))
    loop_probe.start()
    widget.start_training()
    assert widget.worker is not None

    def live_maps(oid):
        return [m for m, training in seen.get(oid, []) if training]

    # two different maps of the selected cell while the classifier trains
    qtbot.waitUntil(
        lambda: (
            widget.worker is None
            or (len(live_maps(cell.label)) >= 2 and not np.allclose(*live_maps(cell.label)[-2:]))
        ),
        timeout=120_000,
    )
    assert widget.worker is not None, "training ended before two live maps arrived"
    # the button, while training runs, moves the live map to another cell
    labels_layer.selected_label = int(other.label)
    assert widget.saliency_button.isEnabled()
    widget.saliency_button.click()
    qtbot.waitUntil(lambda: widget.worker is None or bool(live_maps(other.label)), timeout=60_000)
    assert live_maps(other.label), "the live map did not follow the button"
    widget.stop_training()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    stall_ms = loop_probe.stop()
    print(f"longest event-loop stall while training with live saliency: {stall_ms:.0f} ms")
    if os.getloadavg()[0] / (os.cpu_count() or 1) < 1.5:  # see the end-to-end test
        assert stall_ms < 1000

    # one layer per cell, over the cell's crop, refreshed in place (never re-added)
    layers = [ly for ly in viewer.layers if ly.metadata.get(CELL_SALIENCY_KEY) is not None]
    assert sorted(ly.metadata[CELL_SALIENCY_KEY] for ly in layers) == sorted(
        [cell.label, other.label]
    )
    task = widget.task
    for p in (cell, other):
        layer = widget._cell_saliency_layer(p.label)
        i = int(np.flatnonzero(task.crops.ids == p.label)[0])
        r0, c0 = task.crops.origins[i]
        assert tuple(layer.translate) == (r0, c0) and layer.data.shape == (64, 64)
        rr, cc = p.centroid  # the cell lies inside the map
        assert r0 <= rr < r0 + 64 and c0 <= cc < c0 + 64
        assert layer.name.startswith(f"saliency cell {p.label} (gradients, ")
        assert layer.colormap.name == "dlcb_attribution"
        lo, hi = layer.contrast_limits
        assert lo == -hi and hi == pytest.approx(np.abs(layer.data).max())
    maps = live_maps(cell.label)
    assert len(maps) >= 2 and not np.allclose(maps[0], maps[-1])
    # at most about one refresh a second: the training thread offers a map every 0.5 s
    assert widget._live_saliency_throttle.interval_ms == 1000
    # the last map (after training) explains the final weights
    final = widget._cell_saliency_layer(other.label)
    ref, _, _ = task.cell_saliency(other.label, method="gradients")
    np.testing.assert_allclose(final.data, ref, rtol=1e-4, atol=1e-7)
    assert widget.n_live_saliency_updates == sum(len(v) for v in seen.values())

    # the button after training reuses the cell's layer
    n_layers = len(viewer.layers)
    labels_layer.selected_label = int(cell.label)
    widget.saliency_button.click()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert len(viewer.layers) == n_layers
    before = widget._cell_saliency_layer(cell.label)
    ref, _, _ = task.cell_saliency(cell.label, method="gradients")
    np.testing.assert_allclose(before.data, ref, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- issue 8
def _unet_folder(tmp_path):
    import torch

    from napari_dlcb.models.saved import ModelMeta, save_model
    from napari_dlcb.models.unet import UNet2D

    torch.manual_seed(0)
    net = UNet2D(1, 2, base=4, depth=2).eval()
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "nuclei"],
        normalization={"mode": "per_image_zscore"},
    )
    return save_model(net, tmp_path / "unet", meta)


def _messages(start: int) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(r.message) for r in notification_manager.records[start:]]


def _n_messages() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def _world_box(layer) -> tuple[np.ndarray, np.ndarray]:
    shape = np.asarray(layer.data.shape[-2:], float)
    lo = np.asarray(layer.translate[-2:], float)
    return lo, lo + shape * np.asarray(layer.scale[-2:], float)


def test_errors_are_one_line_in_the_status_and_the_docks_stay_usable(
    make_napari_viewer, qtbot, tmp_path, caplog
):
    """Issue 8: user errors leaked as tracebacks, status lines stayed "computing..."."""
    import logging

    caplog.set_level(logging.ERROR)
    viewer, _ = _nuclei_viewer(make_napari_viewer)
    interp = InterpretWidget(viewer)
    interp.image_combo.setCurrentText("nuclei")
    # a model path that does not exist: refused before any job, in the status and a toast
    n = _n_messages()
    interp.model_edit.setText(str(tmp_path / "missing"))
    assert interp.compute_saliency() is None and interp.worker is None
    assert interp.status.text().startswith("model not found:")
    assert any("model not found" in m for m in _messages(n))
    # a folder that looks like a model but is broken: the job fails, one line, dock idle
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    interp.model_edit.setText(str(broken))
    n = _n_messages()
    assert interp.compute_saliency() is not None
    qtbot.waitUntil(lambda: interp.worker is None, timeout=60_000)
    assert interp.status.text().startswith("Saliency failed: ")
    assert "\n" not in interp.status.text() and len(_messages(n)) == 1
    assert not interp.stop_button.isEnabled() and interp.saliency_button.isEnabled()
    # the dock works again with a good model
    interp.model_edit.setText(str(_unet_folder(tmp_path)))
    interp.method_combo.setCurrentText("gradients")
    interp.compute_saliency()
    qtbot.waitUntil(lambda: interp.worker is None, timeout=60_000)
    assert interp.status.text().startswith("gradients for class 'nuclei'")

    # the cell classifier: an error inside the training job
    clf = _classifier_dock(viewer)
    ids = np.unique(viewer.layers["nuclei labels"].data)[1:3]
    clf.annotate(int(ids[0]), "small")
    clf.annotations[999_999] = "large"  # an object that is not in the labels layer
    n = _n_messages()
    assert clf.start_training() is not None
    qtbot.waitUntil(lambda: clf.worker is None, timeout=60_000)
    assert clf.status.text() == (
        "Training failed: annotated object 999999 is not in the labels layer"
    )
    assert _messages(n) == ["annotated object 999999 is not in the labels layer"]
    assert clf.train_button.isEnabled() and not clf.stop_button.isEnabled()
    # a click with a class that is not in the list: a message, not an exception
    clf.classes_edit.setText("x, y")
    clf.class_combo.clear()
    clf.class_combo.addItem("gone")
    clf.annotate_check.setChecked(True)
    lab = viewer.layers["nuclei labels"]
    r, c = np.argwhere(np.asarray(lab.data) == ids[1])[0]
    clf._on_click(lab, _Click((r, c)))
    assert clf.status.text() == "class 'gone' is not in the class list"
    assert not [r for r in caplog.records if r.name.startswith("napari_dlcb")]


def test_interpret_click_returns_at_once_and_whole_image_ig_stops(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Issue 8: the first click blocked 4-5.6 s on model loading; whole-image IG had no Stop."""
    import threading
    import time

    import napari_dlcb.interpret.saliency as sal
    import napari_dlcb.models.registry as registry

    folder = _unet_folder(tmp_path)
    real_load, loads = registry.resolve_base, []

    def slow_load(source, **kwargs):
        if str(source) != "builtin":  # the test's own segmentation loads the built-in U-Net
            loads.append(threading.current_thread() is threading.main_thread())
            time.sleep(2.0)
        return real_load(source, **kwargs)

    monkeypatch.setattr(registry, "resolve_base", slow_load)
    viewer, _ = _nuclei_viewer(make_napari_viewer)
    widget = InterpretWidget(viewer)
    widget.image_combo.setCurrentText("nuclei")
    widget.model_edit.setText(str(folder))
    widget.method_combo.setCurrentText("gradients")
    t0 = time.perf_counter()
    assert widget.compute_saliency() is not None
    assert time.perf_counter() - t0 < 1.5  # the model (2 s more to load) loads in the job
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert loads == [False] and "saliency gradients (nuclei)" in viewer.layers
    # committing a model field loads it in the background at once (warm-up)
    other = _unet_folder(tmp_path / "b")
    widget.model_edit.setText(str(other))
    widget.model_edit.editingFinished.emit()
    assert widget.jobs.busy("load")
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert widget.models.cached(str(other)) and loads == [False, False]
    assert widget.status.text().startswith(f"model {other}: segmentation")

    # whole-image integrated gradients report progress and Stop cancels them
    real_ig = sal.iter_integrated_gradients

    def slow_ig(*args, **kwargs):
        gen = real_ig(*args, **kwargs)
        while True:
            try:
                item = next(gen)
            except StopIteration as done:
                return done.value
            time.sleep(0.5)
            yield item

    monkeypatch.setattr(sal, "iter_integrated_gradients", slow_ig)
    widget.region_combo.setCurrentText("whole image")
    widget.method_combo.setCurrentText("integrated-gradients")
    assert "minutes" in widget.region_combo.toolTip()  # the dock says so
    job = widget.compute_saliency()
    assert widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: job.pbar.n >= 1, timeout=60_000)
    assert job.pbar.total == 32 and job.pbar.n % 8 == 0  # 32 path steps, 8 per batch
    widget.stop_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.text() == "Saliency stopped."
    assert "saliency integrated-gradients (nuclei)" not in viewer.layers


def test_interpret_browse_sets_a_checked_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Issue 8: the model field was free text without Browse."""
    import napari_dlcb._widgets.model_field as dock

    folder = _unet_folder(tmp_path)
    viewer = make_napari_viewer()
    widget = InterpretWidget(viewer)
    actions = [a.text() for a in widget.browse_button.menu().actions()]
    assert actions == ["Model folder…", "BioImage.IO package or file (.zip, .yaml)…"]
    monkeypatch.setattr(dock.QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    widget.model_field.browse_folder()
    assert widget.model_edit.text() == str(folder)
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert widget.models.cached(str(folder))
    assert widget.status.text() == f"model {folder}: segmentation, classes background, nuclei"
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    monkeypatch.setattr(dock.QFileDialog, "getExistingDirectory", lambda *a, **k: str(not_a_model))
    widget.model_field.browse_folder()
    assert (
        widget.status.text() == "empty is not a model folder (no metadata.json or bioimageio.yaml)"
    )
    assert not widget.jobs.busy()
    picked = str(tmp_path / "weights.pt")
    (tmp_path / "weights.pt").write_bytes(b"")
    monkeypatch.setattr(dock.QFileDialog, "getOpenFileName", lambda *a, **k: (picked, ""))
    widget.model_field.browse_file()
    assert "is not a model: choose a folder, a .zip or a bioimageio.yaml" in widget.status.text()


def test_classifier_prefers_instance_labels_over_scribbles(make_napari_viewer):
    """Issue 8: the classifier defaulted to the scribbles layer."""
    from napari_dlcb._sample_data import nuclei_sample

    (img, img_kw, _), (gt, _, _) = nuclei_sample()
    viewer = make_napari_viewer()
    viewer.add_image(np.asarray(img), **img_kw)
    strokes = np.zeros(np.asarray(gt).shape, np.uint8)
    strokes[10:14, 10:100], strokes[200:204, 50:150] = 1, 2
    viewer.add_labels(strokes, name="scribbles")
    widget = CellClassifierWidget(viewer)
    viewer.add_labels(np.asarray(gt).astype(np.int32), name="nuclei ground truth")
    assert widget.labels_combo.currentText() == "nuclei ground truth"
    viewer.add_labels(strokes.copy(), name="more strokes")  # a later scribbles layer: no switch
    assert widget.labels_combo.currentText() == "nuclei ground truth"
    other = CellClassifierWidget(viewer)  # a dock opened on these layers
    assert other.labels_combo.currentText() == "nuclei ground truth"
    # an explicit choice is kept when layers come and go
    widget.labels_combo.setCurrentText("scribbles")
    viewer.add_labels(np.asarray(gt).astype(np.int32), name="instances 2")
    assert widget.labels_combo.currentText() == "scribbles"


def test_docks_keep_the_active_layer_without_private_napari_api(make_napari_viewer, monkeypatch):
    """Issue 8: napari warned that LayerList._activate_on_insert is private, at every live layer."""
    from napari.components import LayerList

    from napari_dlcb._widgets._common import layer_grid

    touched = []
    real_setattr = LayerList.__setattr__

    def spy(self, name, value):
        if name == "_activate_on_insert":
            touched.append(value)
        real_setattr(self, name, value)

    viewer, _ = _nuclei_viewer(make_napari_viewer)
    monkeypatch.setattr(LayerList, "__setattr__", spy)  # from here on (napari sets it once)
    widget = _classifier_dock(viewer)
    labels = viewer.layers["nuclei labels"]
    widget.annotate_check.setChecked(True)
    assert viewer.layers.selection.active is labels
    oid = int(np.unique(labels.data)[3])
    widget.annotate(oid, "small")  # adds the annotation points
    fake = {
        "saliency": np.ones((8, 8), np.float32), "saliency_object": oid,
        "saliency_origin": (4, 6), "saliency_method": "gradients", "saliency_target": 0,
        "saliency_class": "small",
    }  # fmt: skip
    layer = widget._show_cell_map(fake, layer_grid(labels))  # a live saliency layer
    assert tuple(layer.translate) == (4, 6)
    assert touched == [] and viewer.layers.selection.active is labels


def test_cell_saliency_click_returns_at_once(make_napari_viewer, qtbot, slow_saliency):
    """Issue 8: per-cell saliency ran 2.2 s on the GUI thread."""
    import time

    from napari_dlcb.tasks.cells import CellClassificationTask

    viewer, _ = _nuclei_viewer(make_napari_viewer)
    widget = _classifier_dock(viewer)
    labels = viewer.layers["nuclei labels"]
    lab = np.asarray(labels.data)
    ids = np.unique(lab)[1:]
    widget.task = CellClassificationTask(
        np.asarray(viewer.layers["nuclei"].data), lab, {int(ids[0]): "a", int(ids[1]): "b"},
        device="cpu",
    )  # fmt: skip
    calls = slow_saliency(2.0)
    labels.selected_label = int(ids[5])
    t0 = time.perf_counter()
    assert widget.show_cell_saliency() is not None
    # the map takes 2 s more than usual: a click that waited for it would take longer than that
    # (the job's progress bar costs the GUI thread ~0.1 s, ~0.5 s at load 12 on 2 cores)
    assert time.perf_counter() - t0 < 1.5 and not calls
    assert widget.show_cell_saliency(int(ids[6])) is None  # one model job at a time
    assert "Cell saliency is running" in widget.status.text()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert len(calls) == 1 and widget._cell_saliency_layer(int(ids[5])) is not None


# ----------------------------------------------------------------------------- pretraining, MIL
def _blob_cells(n_side: int = 4, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A grid of n_side x n_side bright discs of two sizes and their instance labels."""
    rng = np.random.default_rng(0)
    img = rng.normal(20, 3, (n_side * size, n_side * size)).astype(np.float32)
    lab = np.zeros(img.shape, np.int32)
    yy, xx = np.mgrid[:size, :size] - size / 2
    for k in range(n_side * n_side):
        r, c = divmod(k, n_side)
        disc = yy**2 + xx**2 < (size / (3 if k % 2 else 5)) ** 2
        lab[r * size : (r + 1) * size, c * size : (c + 1) * size][disc] = k + 1
        img[r * size : (r + 1) * size, c * size : (c + 1) * size][disc] += 100
    return img, lab


def test_pretrain_button_stop_start_from_and_autoencoder_embedding(make_napari_viewer, qtbot):
    """Pretraining is a job with Stop; its encoder becomes 'start from' and feeds the embedding."""
    import json
    from pathlib import Path

    from napari_dlcb.training.events import EpochEnd

    viewer = make_napari_viewer()
    img, lab = _blob_cells()
    viewer.add_image(img, name="cells")
    viewer.add_labels(lab, name="cell labels")
    widget = CellClassifierWidget(viewer)
    widget.image_combo.setCurrentText("cells")
    widget.labels_combo.setCurrentText("cell labels")
    assert widget.config().base == "builtin" and widget.embedding_source.currentText() == (
        "classifier"
    )
    widget.show_embedding()  # nothing trained or pretrained yet: one line, no job
    assert "pretrain" in widget.status.text() and not widget.jobs.busy()
    widget.epochs_spin.setValue(500)  # long: Stop ends it
    epochs = []
    real = widget._on_pretrain_event

    def spy(ev):
        if isinstance(ev, EpochEnd):
            epochs.append(ev.epoch)
            widget.stop_training()  # the dock's Stop button
        real(ev)

    widget._on_pretrain_event = spy
    job = widget.start_pretraining()
    assert job is not None and not widget.pretrain_button.isEnabled()
    assert widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=120_000)
    assert 1 <= len(epochs) < 500
    path = widget.pretrained_model
    assert path is not None and Path(path).is_dir()
    meta = json.loads((Path(path) / "metadata.json").read_text())
    assert meta["extra"]["encoder_only"] and meta["extra"]["pretraining"]["n_images"] == 16
    assert meta["parent"] == "builtin:cellclf-nuclei"
    assert widget.base_field.text() == path and widget.config().base == path
    assert widget.status.text().startswith("stopped: pretrained on 16 cells")
    assert widget.pretrain_button.isEnabled() and widget.embedding_button.isEnabled()
    # the embedding of the autoencoder's features, before any cell is labelled
    assert widget.embedding_source.currentText() == "autoencoder"
    widget.annotate(1, "class 1")
    widget.show_embedding("pca")
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    layer = viewer.layers[EMBEDDING_LAYER]
    assert layer.metadata["features"] == "autoencoder" and len(layer.data) == 16
    assert layer.features.loc[layer.features["object_id"] == 1, "annotated"].item() == "class 1"
    choices = [widget.color_by.itemText(i) for i in range(widget.color_by.count())]
    assert "annotated class" in choices and "area" in choices and "predicted class" not in choices


def test_mil_classifies_the_image_and_shows_an_aligned_heatmap(make_napari_viewer, qtbot, tmp_path):
    from napari_dlcb._widgets.classifier import MIL_HEATMAP_LAYER
    from napari_dlcb.models.mil import MILClassifier
    from napari_dlcb.models.saved import ModelMeta, save_model

    net = MILClassifier(1, 2, width=4, blocks=(1, 1), attention_dim=8).eval()
    meta = ModelMeta(
        "classification", net.architecture(), ["plain", "square"], label_kind="images",
        normalization={"mode": "zscore", "low": [0.0], "high": [1.0]}, in_channels=1,
        extra={"mil": True, "input_size": 32, "heatmap": "relative attention (1 = uniform)"},
    )  # fmt: skip
    save_model(net, tmp_path / "mil", meta)
    viewer = make_napari_viewer()
    img = np.random.default_rng(0).normal(0, 1, (48, 40)).astype(np.float32)
    viewer.add_image(img, name="whole image", scale=(0.5, 0.25), translate=(10, -3))
    widget = CellClassifierWidget(viewer)
    widget.image_combo.setCurrentText("whole image")
    assert widget.classify_image_mil() is None  # no model chosen: one line
    assert "choose a MIL model" in widget.status.text()
    widget.mil_model.edit.setText(str(tmp_path / "nope"))
    assert widget.classify_image_mil() is None and "not found" in widget.status.text()
    widget.mil_model.edit.setText(str(tmp_path / "mil"))
    assert widget.classify_image_mil() is not None
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    layer = viewer.layers[MIL_HEATMAP_LAYER]
    assert layer.data.shape == img.shape and layer.data.dtype == np.float32
    np.testing.assert_allclose(layer.scale, (0.5, 0.25))
    np.testing.assert_allclose(layer.translate, (10, -3))
    assert layer.metadata["mil"]["predicted"] in ("plain", "square")
    assert "classified as" in widget.status.text()
    # the heatmap layer is never offered as the image to classify
    assert MIL_HEATMAP_LAYER not in [
        widget.image_combo.itemText(i) for i in range(widget.image_combo.count())
    ]
    # a second run updates the same layer
    widget.classify_image_mil()
    qtbot.waitUntil(lambda: not widget.jobs.busy(), timeout=60_000)
    assert [ly.name for ly in viewer.layers].count(MIL_HEATMAP_LAYER) == 1
