"""Cell classifier dock, results: class colours, the confusion matrix, per-cell saliency layers.

:class:`ResultsMixin` is the part of :class:`~napari_dlcb._widgets.classifier.CellClassifierWidget`
that turns what the jobs return into layers on the main thread: the
"predicted classes" Labels layer and per-object features, the CSV export, the
confusion-matrix table, and one saliency layer per explained cell (created
once, then refreshed in place, without taking the layer selection).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QFileDialog, QTableWidgetItem

from napari_dlcb._widgets._common import (
    attribution_colormap,
    layer_grid,
    notify_info,
    notify_warning,
)
from napari_dlcb.errors import DlcbError

__all__ = [
    "CELL_SALIENCY_KEY",
    "CLASS_COLORS",
    "MIL_HEATMAP_LAYER",
    "PREDICTION_LAYER",
    "ResultsMixin",
    "class_colormap",
    "keep_active_layer",
]

CLASS_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
PREDICTION_LAYER = "predicted classes"
#: the localisation map of the MIL image classifier
MIL_HEATMAP_LAYER = "MIL heatmap"
#: ``layer.metadata`` key of a per-cell saliency layer: the object id it explains
CELL_SALIENCY_KEY = "cell_saliency"


def class_colormap(n_classes: int) -> Any:
    """Label colormap: 0 transparent, ``k + 1`` the colour of class ``k``."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[Any, str] = {None: "transparent", 0: "transparent"}
    for k in range(n_classes):
        colors[k + 1] = CLASS_COLORS[k % len(CLASS_COLORS)]
    return DirectLabelColormap(color_dict=colors)


@contextmanager
def keep_active_layer(viewer: Any) -> Iterator[None]:
    """Add layers without changing the active layer (public API only), so clicks keep working."""
    layers = viewer.layers
    active = layers.selection.active
    try:
        yield
    finally:
        if active is not None and active in layers and layers.selection.active is not active:
            layers.selection.active = active


class ResultsMixin:
    """Predictions, export, confusion matrix and saliency layers of the cell classifier dock."""

    jobs: Any
    viewer: Any
    task: Any

    # ------------------------------------------------------------------ predictions
    def apply_predictions(self, results: Any = None) -> None:
        """Colour the labels by predicted class and store per-object features."""
        from napari_dlcb._widgets.classifier_jobs import Results

        if results is None:
            ids, probs = self.task.predict()
            results = Results(ids, probs, self.task.class_image(probs), {})
        self.ids, self.probs = results.ids, results.probs
        cmap = class_colormap(len(self.task.classes))
        if PREDICTION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREDICTION_LAYER]
            layer.data = results.class_image
            layer.colormap = cmap
        else:
            with keep_active_layer(self.viewer):  # clicking cells keeps working
                layer = self.viewer.add_labels(
                    results.class_image,
                    name=PREDICTION_LAYER,
                    opacity=0.6,
                    **layer_grid(self.labels_layer),
                )
            layer.colormap = cmap
        layer.metadata["classes"] = list(self.task.classes)
        self._set_label_features()
        for b in (self.export_button, self.saliency_button, self.embedding_button):
            b.setEnabled(True)
        counts = np.bincount(self.probs.argmax(1), minlength=len(self.task.classes))
        notify_info(
            "predicted: " + ", ".join(f"{c} {n}" for c, n in zip(self.task.classes, counts))
        )

    def _set_label_features(self) -> None:
        import pandas as pd

        labels = self.labels_layer
        n = int(np.asarray(labels.data).max()) + 1
        df = pd.DataFrame({"index": np.arange(n)})
        df["predicted_class"] = ""
        df.loc[self.ids, "predicted_class"] = [self.task.classes[k] for k in self.probs.argmax(1)]
        for k, name in enumerate(self.task.classes):
            col = np.full(n, np.nan)
            col[self.ids] = self.probs[:, k]
            df[f"prob_{name}"] = col
        try:
            labels.features = df
        except (ValueError, TypeError) as err:  # older napari without Labels features
            notify_warning(f"could not attach per-object features: {err}")

    def export_csv(self, path: str) -> Any:
        """Write object id, class, probabilities and regionprops morphology as CSV.

        The file is written whole or not at all; a path that cannot be written
        raises a one-line :class:`DlcbError`.
        """
        from napari_dlcb.io.atomic import atomic_write

        if self.task is None or self.probs is None:
            raise DlcbError("train the classifier first")
        table = self.task.table(self.probs)
        try:
            atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
        except OSError as err:
            raise DlcbError(f"could not write {path}: {err.strerror or err}") from None
        return table

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export cell table", "cells.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
                notify_info(f"wrote {path}")
                self.status.setText(f"wrote {path}")
            except DlcbError as err:
                self.jobs.report(err)

    def show_confusion(self, confusion: np.ndarray, classes: list[str]) -> None:
        """Fill the confusion-matrix table (rows: true class, columns: predicted)."""
        cm = np.asarray(confusion)
        self.last_confusion = cm
        self.n_confusion_updates += 1
        k = len(classes)
        self.confusion.setRowCount(k)
        self.confusion.setColumnCount(k)
        self.confusion.setHorizontalHeaderLabels(classes)
        self.confusion.setVerticalHeaderLabels(classes)
        peak = max(int(cm.max()), 1) if cm.size else 1
        for i in range(k):
            for j in range(k):
                item = QTableWidgetItem(str(int(cm[i, j])))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                shade = int(60 + 140 * cm[i, j] / peak)
                item.setBackground(QColor(30, shade, 60) if i == j else QColor(shade, 40, 40))
                self.confusion.setItem(i, j, item)

    # ------------------------------------------------------------------ per-cell saliency
    def _cell_saliency_layer(self, object_id: int) -> Any:
        """The saliency layer of one cell, or None."""
        from napari.layers import Image

        for ly in self.viewer.layers:
            if isinstance(ly, Image) and ly.metadata.get(CELL_SALIENCY_KEY) == int(object_id):
                return ly
        return None

    def _apply_live_saliency(self, data: dict[str, Any]) -> None:
        """Show a live (or the final) map of the training's cell; see the preview."""
        grid = self._live_grid or layer_grid(self.labels_layer)
        self._show_cell_map(data, grid)
        self.n_live_saliency_updates += 1

    def _show_cell_map(self, data: dict[str, Any], grid: dict[str, Any]) -> Any:
        """Create or update the cell's saliency layer over the cell, diverging around 0.

        ``data`` holds the items of ``CellClassificationTask.saliency_preview``.
        """
        oid = int(data["saliency_object"])
        smap = np.asarray(data["saliency"], np.float32)
        scale = np.asarray(grid["scale"], float)
        origin = np.asarray(data["saliency_origin"], float)
        translate = np.asarray(grid["translate"], float) + origin * scale
        lim = float(np.abs(smap).max()) or 1.0
        method, cls = data["saliency_method"], data["saliency_class"]
        name = f"saliency cell {oid} ({method}, {cls})"
        info = {
            "object_id": oid,
            **data.get("saliency_extra", {}),
            "target": int(data["saliency_target"]),
            "class": cls,
            "method": method,
        }
        layer = self._cell_saliency_layer(oid)
        if layer is None:
            with keep_active_layer(self.viewer):  # clicking cells keeps working
                layer = self.viewer.add_image(
                    smap, name=name, colormap=attribution_colormap(), contrast_limits=(-lim, lim),
                    blending="translucent", opacity=0.8, scale=tuple(scale),
                    translate=tuple(translate), metadata={CELL_SALIENCY_KEY: oid, "saliency": info},
                )  # fmt: skip
            return layer
        if not np.allclose(layer.scale, scale):
            layer.scale = tuple(scale)
        if not np.allclose(layer.translate, translate):
            layer.translate = tuple(translate)
        layer.data = smap
        layer.contrast_limits_range = (-lim, lim)
        layer.contrast_limits = (-lim, lim)
        layer.metadata["saliency"] = info
        if layer.name != name:
            layer.name = name
        return layer
