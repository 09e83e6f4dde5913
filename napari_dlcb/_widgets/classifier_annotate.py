"""Cell classifier dock, annotation: choose the layers, name the classes, click cells.

:class:`AnnotationMixin` is the part of :class:`~napari_dlcb._widgets.classifier.CellClassifierWidget`
that knows which image and instance-labels layers to use (preferring a Labels
layer that looks like instances over a scribbles layer, see
:func:`instance_score`), keeps the class list, and turns clicks on objects
into annotations shown as a Points layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_dlcb._widgets._common import layer_grid, refill_combo
from napari_dlcb._widgets.classifier_results import (
    CLASS_COLORS,
    MIL_HEATMAP_LAYER,
    PREDICTION_LAYER,
)
from napari_dlcb.errors import DlcbError

__all__ = ["ANNOTATION_LAYER", "AnnotationMixin", "instance_score"]

ANNOTATION_LAYER = "cell annotations"
_INSTANCE_HINTS = ("instance", "label", "mask", "segment", "nuclei", "cells", "objects")
_SCRIBBLE_HINTS = ("scribble", "stroke", "paint", "annotation", "training", "brush")
#: pixels looked at to count a Labels layer's ids (a strided sample of large layers)
_SAMPLE_PIXELS = 1_000_000


def instance_score(layer: Any) -> float:
    """How much a Labels layer looks like instance labels (higher: more likely).

    Instance labels have many ids (one per object); scribbles have 2-3 class
    values. Names add a hint ("labels", "instances", "masks" vs "scribbles").
    Large layers are counted on a strided sample; lazy arrays only by name.

    Examples
    --------
    >>> from types import SimpleNamespace as L
    >>> inst = L(name="nuclei labels", data=np.arange(100).reshape(10, 10))
    >>> scrib = L(name="scribbles", data=np.array([[0, 1], [2, 1]]))
    >>> instance_score(inst) > instance_score(scrib)
    True
    """
    name = str(getattr(layer, "name", "")).lower()
    score = 0.0
    if any(h in name for h in _INSTANCE_HINTS):
        score += 1.0
    if any(h in name for h in _SCRIBBLE_HINTS):
        score -= 2.0
    data = getattr(layer, "data", None)
    if isinstance(data, np.ndarray) and data.ndim >= 2 and data.size:
        step = max(1, int(np.ceil(np.sqrt(data.size / _SAMPLE_PIXELS))))
        sample = data[..., ::step, ::step]
        n_ids = len(np.unique(sample)) - int((sample == 0).any())
        score += 3.0 if n_ids > 3 else -1.0
    return score


class AnnotationMixin:
    """Layer choice, classes and click-to-annotate of the cell classifier dock."""

    jobs: Any
    viewer: Any
    annotations: dict[int, str]

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        def candidates(kind: type) -> list[Any]:
            return [
                ly
                for ly in self.viewer.layers
                if isinstance(ly, kind)
                and ly.name not in (PREDICTION_LAYER, MIL_HEATMAP_LAYER)
                and not ly.name.startswith("saliency")
            ]

        refill_combo(self.image_combo, [ly.name for ly in candidates(Image)])
        labels = candidates(Labels)
        names = [ly.name for ly in labels]
        # scoring reads the data: only when the choice is open (nobody chose, or it is gone)
        open_choice = not self._labels_chosen or self.labels_combo.currentText() not in names
        best = max(labels, key=instance_score).name if labels and open_choice else None
        if not self._labels_chosen:  # nobody chose yet: the most instance-like layer
            self.labels_combo.blockSignals(True)
            self.labels_combo.setCurrentIndex(-1)
        refill_combo(self.labels_combo, names, default=best)
        self._on_labels_changed()

    @property
    def image_layer(self) -> Any:
        """The chosen image layer (DlcbError if none)."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise DlcbError("choose an image layer")
        return self.viewer.layers[name]

    @property
    def labels_layer(self) -> Any:
        """The chosen instance-labels layer (DlcbError if none)."""
        name = self.labels_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise DlcbError("choose an instance-labels layer (e.g. a segmentation result)")
        return self.viewer.layers[name]

    def _labels_picked(self, *args: Any) -> None:
        """The labels combo changed outside a refill: an explicit choice, kept from now on."""
        self._labels_chosen = True
        self._on_labels_changed()

    def _on_labels_changed(self, *args: Any) -> None:
        old = self._hooked_labels
        try:
            new = self.labels_layer
        except DlcbError:
            new = None
        if old is new:
            return
        if old is not None:
            if self._on_click in old.mouse_drag_callbacks:
                old.mouse_drag_callbacks.remove(self._on_click)
            old.events.selected_label.disconnect(self._on_label_selected)
        self._hooked_labels = new
        self._cell_chosen = False
        if new is not None:
            new.events.selected_label.connect(self._on_label_selected)
            self._toggle_annotation(self.annotate_check.isChecked())

    # ------------------------------------------------------------------ classes & clicks
    def _refresh_classes(self) -> None:
        names = self.classes
        current = self.class_combo.currentText()
        self.class_combo.clear()
        self.class_combo.addItems(names)
        if current in names:
            self.class_combo.setCurrentText(current)

    @property
    def classes(self) -> list[str]:
        """Class names from the "classes" field, in order."""
        seen: list[str] = []
        for c in self.classes_edit.text().split(","):
            if c.strip() and c.strip() not in seen:
                seen.append(c.strip())
        return seen

    def _toggle_annotation(self, on: bool) -> None:
        layer = self._hooked_labels
        if layer is None:
            return
        if on and self._on_click not in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.append(self._on_click)
            layer.mode = "pan_zoom"
            self.viewer.layers.selection.active = layer
        elif not on and self._on_click in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_click)

    def _on_click(self, layer: Any, event: Any) -> None:
        if event.type != "mouse_press" or layer.mode != "pan_zoom":
            return
        value = layer.get_value(
            event.position, view_direction=event.view_direction,
            dims_displayed=event.dims_displayed, world=True,
        )  # fmt: skip
        if value is None or int(value) == 0:
            return
        try:
            if "Alt" in {str(getattr(m, "name", m)) for m in event.modifiers}:
                self.annotate(int(value), None)
            else:
                self.annotate(int(value), self.class_combo.currentText() or None)
        except DlcbError as err:  # a click must never raise into napari's mouse handler
            self.jobs.report(err)

    def annotate(self, object_id: int, class_name: str | None) -> None:
        """Give object ``object_id`` a class (None removes its annotation)."""
        if class_name is None:
            self.annotations.pop(int(object_id), None)
        else:
            if class_name not in self.classes:
                raise DlcbError(f"class {class_name!r} is not in the class list")
            self.annotations[int(object_id)] = class_name
        self._update_annotation_layer()

    def _update_annotation_layer(self) -> None:
        from scipy import ndimage as ndi

        from napari_dlcb._widgets.classifier_results import keep_active_layer

        labels = np.asarray(self.labels_layer.data)
        ids = sorted(self.annotations)
        centres = (
            np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, ids), float).reshape(-1, 2)
            if ids
            else np.zeros((0, 2))
        )
        names = [self.annotations[i] for i in ids]
        colors = [CLASS_COLORS[self.classes.index(n) % len(CLASS_COLORS)] for n in names]
        features = {"object_id": np.asarray(ids, int), "class": np.asarray(names, object)}
        text = {"string": "{class}", "color": "white", "size": 9, "anchor": "upper_left"}
        if ANNOTATION_LAYER in self.viewer.layers:
            pts = self.viewer.layers[ANNOTATION_LAYER]
            pts.data = centres
            pts.features = features
            pts.face_color = colors if colors else "white"
            pts.text = text
        else:
            with keep_active_layer(self.viewer):  # the next click goes to the labels
                self.viewer.add_points(
                    centres, name=ANNOTATION_LAYER, features=features, size=6,
                    face_color=colors if colors else "white", border_color="white", text=text,
                    **layer_grid(self.labels_layer),
                )  # fmt: skip
        self.status.setText(
            f"{len(ids)} labelled cell(s): "
            + ", ".join(f"{c} {names.count(c)}" for c in self.classes if c in names)
        )
