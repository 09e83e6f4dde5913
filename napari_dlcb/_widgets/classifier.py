"""Cell-classifier dock widget: click cells, train, colour labels by class, look inside.

A thin adapter over :class:`napari_dlcb.tasks.cells.CellClassificationTask`
(STYLE.md rule 2): the widget collects the layers, the clicked annotations and
the options into :class:`CellClassifierSettings`, starts one worker over the
task's ``fit`` generator, and turns events into a live confusion matrix and
layers on the main thread.

- **Annotate**: with "click cells to label" on, a click on an object of the
  labels layer gives it the current class (Alt-click removes it). Annotations
  show as a Points layer with the class name.
- **Train**: "linear" (frozen pretrained features + linear head, instant on a
  CPU) or "full" fine-tuning, in a ``thread_worker``; the confusion matrix on
  the labelled cells updates live. If a cell is selected (or has a saliency
  layer) when training starts, its saliency map is recomputed in the training
  thread with the current weights (the method chosen beside "Saliency of
  selected cell", within a third of the training time) and its layer refreshes
  at most once a second; pressing the button while training runs switches the
  live map to the selected cell.
- **Results**: a "predicted classes" Labels layer coloured by class, the
  predictions as per-object features of the labels layer, CSV export with
  regionprops morphology, per-cell saliency, and a 2-D embedding Points layer
  (PCA, UMAP or t-SNE, computed in a worker) linked to the labels (selecting a
  point selects its cell, and back), coloured by predicted or annotated class,
  a class probability or any measurement of the exported table.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import (
    ThrottledCall,
    attribution_colormap,
    keep_selection,
    layer_grid,
    notify_error,
    notify_info,
    notify_warning,
    refill_combo,
)
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["CellClassifierSettings", "CellClassifierWidget", "CLASS_COLORS"]

CLASS_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
ANNOTATION_LAYER = "cell annotations"
PREDICTION_LAYER = "predicted classes"
EMBEDDING_LAYER = "cell embedding"
UNANNOTATED_COLOR = "#d9d9d9"  # embedding points of cells nobody labelled
MISSING_COLOR = "#808080"  # embedding points without a value for the chosen measurement
CONTINUOUS_COLORMAP = "viridis"
BY_PREDICTED = "predicted class"
BY_ANNOTATED = "annotated class"


@dataclass
class CellClassifierSettings:
    """Everything the widget passes to the core task (cellfinder-style)."""

    classes: list[str]
    annotations: dict[int, str]
    mode: str = "linear"
    base: str = "builtin"
    crop_size: int = 32
    epochs: int = 30
    balance: str | None = "loss"
    augment: bool = True
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_core_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``CellClassificationTask``."""
        return {
            "annotations": dict(self.annotations),
            "classes": list(self.classes),
            "crop_size": self.crop_size,
            "base": self.base,
            "mode": self.mode,
            "balance": self.balance,
            "augment": self.augment,
            "device": self.device,
        }

    def as_fit_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``CellClassificationTask.fit``."""
        return {"epochs": self.epochs, **self.extra}


@dataclass
class _TaskReady:
    """The core task, built in the worker."""

    task: Any


@dataclass
class _Embedding:
    """What the embedding worker returns: 2-D coordinates and the export table."""

    method: str
    xy: np.ndarray
    table: Any  # pandas.DataFrame, rows in the order of ``xy``


def _embedding_job(task: Any, probs: np.ndarray, method: str) -> _Embedding:
    """Worker body: network features -> 2-D embedding, and the export table to colour by."""
    from napari_dlcb.interpret.embedding import embed

    xy = embed(task.features(), method=method)
    return _Embedding(method, xy, task.table(probs))


def _continuous_colors(
    values: np.ndarray, colormap: str = CONTINUOUS_COLORMAP
) -> tuple[np.ndarray, tuple[float, float]]:
    """RGBA colours of ``values`` on a napari colormap, scaled from min to max.

    NaN values get :data:`MISSING_COLOR`. Returns the colours (N, 4) and the
    (low, high) values that map to the colormap's ends.
    """
    from napari.utils.colormaps import ensure_colormap
    from napari.utils.colormaps.standardize_color import transform_color

    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    lo = float(v[finite].min()) if finite.any() else 0.0
    hi = float(v[finite].max()) if finite.any() else 1.0
    t = np.zeros_like(v) if hi <= lo else (v - lo) / (hi - lo)
    out = np.empty((len(v), 4), np.float32)
    out[:] = transform_color(MISSING_COLOR)[0]
    if finite.any():
        out[finite] = ensure_colormap(colormap).map(np.clip(t[finite], 0.0, 1.0))
    return out, (lo, hi)


@dataclass
class _Results:
    """Predictions made in the worker at the end of training."""

    ids: np.ndarray
    probs: np.ndarray
    class_image: np.ndarray
    confusion: dict[str, Any]
    #: the live cell's map with the final weights (``CellClassificationTask.saliency_preview``)
    saliency: dict[str, Any] | None = None


#: ``layer.metadata`` key of a per-cell saliency layer: the object id it explains
CELL_SALIENCY_KEY = "cell_saliency"


def _class_colormap(n_classes: int) -> Any:
    """Label colormap: 0 transparent, ``k + 1`` the colour of class ``k``."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[Any, str] = {None: "transparent", 0: "transparent"}
    for k in range(n_classes):
        colors[k + 1] = CLASS_COLORS[k % len(CLASS_COLORS)]
    return DirectLabelColormap(color_dict=colors)


def _image_2d(layer: Any) -> tuple[np.ndarray, int | None]:
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        return data, -1
    if data.ndim != 2:
        raise DlcbError(f"layer '{layer.name}' is not a 2-D image (shape {data.shape})")
    return data, None


class CellClassifierWidget(QWidget):
    """Dock widget for cell classification on an instance-labels layer."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.annotations: dict[int, str] = {}
        self.task: Any = None
        self.probs: np.ndarray | None = None
        self.ids: np.ndarray | None = None
        self.worker: Any = None
        self._stop = threading.Event()
        self._hooked_labels: Any = None
        self._syncing = False
        self.last_confusion: np.ndarray | None = None
        self.n_confusion_updates = 0
        # live per-cell saliency: the request the training thread reads at each preview
        # (a one-item list, so the button can switch cells while training runs)
        self._live_request: list[Any] = [None]
        self._live_grid: dict[str, Any] | None = None
        self._cell_chosen = False  # the user picked a label on the labels layer
        self._live_saliency_throttle = ThrottledCall(self._apply_live_saliency, 1000, self)
        self.n_live_saliency_updates = 0

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.classes_edit = QLineEdit("class 1, class 2")
        self.classes_edit.setToolTip("Class names, comma separated")
        self.class_combo = QComboBox()
        self.annotate_check = QCheckBox("click cells to label (Alt-click removes)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["linear", "full"])
        self.mode_combo.setToolTip(
            "linear: frozen pretrained features + linear head (instant); full: fine-tune all layers"
        )
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(30)
        self.crop_spin = QSpinBox()
        self.crop_spin.setRange(8, 256)
        self.crop_spin.setValue(32)
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = QLabel("Label cells of at least two classes, then train.")
        self.status.setWordWrap(True)
        self.confusion = QTableWidget(0, 0)
        self.confusion.setMinimumHeight(120)
        self.curve = LearningCurvePlot()
        # the plot renders off-thread but still takes the GIL: redraw at most every 2 s
        self._curve_rows: list[tuple[int, float, float, bool]] = []
        self._curve_sync = ThrottledCall(self._sync_curve, interval_ms=2000, parent=self)
        self._live_curve = False
        self._curve_fresh = False
        self.export_button = QPushButton("Export CSV...")
        self.saliency_method = QComboBox()
        self.saliency_method.addItems(
            ["integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion"]
        )
        self.saliency_button = QPushButton("Saliency of selected cell")
        self.saliency_button.setToolTip(
            "Saliency map of the selected cell's crop. A cell selected when training starts "
            "gets a map that refreshes as the classifier trains."
        )
        from napari_dlcb.interpret.embedding import available_methods  # no torch import

        self.embedding_method = QComboBox()
        self.embedding_method.addItems(available_methods())
        self.embedding_method.setToolTip(
            "pca: instant, linear; umap / tsne: non-linear neighbourhoods (a few seconds)"
        )
        self.embedding_button = QPushButton("Embedding")
        self.embedding_button.setToolTip("2-D map of the network's per-cell features")
        self.color_by = QComboBox()
        self.color_by.setToolTip("Colour the embedding points by a class or any measurement")
        self.color_by.setEnabled(False)
        self.embedding_worker: Any = None
        self.embedding_layer: Any = None
        self.n_embeddings = 0
        self._embedding_table: Any = None
        self._color_choices: dict[str, tuple[str, str]] = {}
        for b in (self.export_button, self.saliency_button, self.embedding_button):
            b.setEnabled(False)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("classes", self.classes_edit)
        form.addRow("current class", self.class_combo)
        form.addRow(self.annotate_check)
        form.addRow("mode", self.mode_combo)
        form.addRow("epochs", self.epochs_spin)
        form.addRow("crop size", self.crop_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        sal = QHBoxLayout()
        sal.addWidget(self.saliency_method)
        sal.addWidget(self.saliency_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("confusion matrix (rows: true, columns: predicted)"))
        layout.addWidget(self.confusion)
        layout.addWidget(self.curve)
        layout.addWidget(self.export_button)
        layout.addLayout(sal)
        emb = QFormLayout()
        emb_row = QHBoxLayout()
        emb_row.addWidget(self.embedding_method)
        emb_row.addWidget(self.embedding_button)
        emb.addRow("embedding", emb_row)
        emb.addRow("colour by", self.color_by)
        layout.addLayout(emb)
        layout.addStretch(1)

        self.classes_edit.editingFinished.connect(self._refresh_classes)
        self.annotate_check.toggled.connect(self._toggle_annotation)
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)
        self.train_button.clicked.connect(self.start_training)
        self.stop_button.clicked.connect(self.stop_training)
        self.export_button.clicked.connect(self._export_dialog)
        # not the public methods: ``clicked(checked)`` would pass a bool as the object id
        # or method (bound methods, not lambdas, so Qt holds no reference cycle to self)
        self.saliency_button.clicked.connect(self._saliency_clicked)
        self.embedding_button.clicked.connect(self._embedding_clicked)
        self.color_by.currentTextChanged.connect(self._on_color_by_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._refresh_classes()

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            names = [
                ly.name
                for ly in self.viewer.layers
                if isinstance(ly, kind)
                and ly.name != PREDICTION_LAYER
                and not ly.name.startswith("saliency")
            ]
            refill_combo(combo, names)
        self._on_labels_changed()

    @property
    def image_layer(self) -> Any:
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise DlcbError("choose an image layer")
        return self.viewer.layers[name]

    @property
    def labels_layer(self) -> Any:
        name = self.labels_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise DlcbError("choose an instance-labels layer (e.g. a segmentation result)")
        return self.viewer.layers[name]

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
        names = [c.strip() for c in self.classes_edit.text().split(",") if c.strip()]
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
        if "Alt" in {str(getattr(m, "name", m)) for m in event.modifiers}:
            self.annotate(int(value), None)
        else:
            self.annotate(int(value), self.class_combo.currentText() or None)

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
        if ANNOTATION_LAYER in self.viewer.layers:
            pts = self.viewer.layers[ANNOTATION_LAYER]
            pts.data = centres
            pts.features = features
            pts.face_color = colors if colors else "white"
            pts.text = {"string": "{class}", "color": "white", "size": 9, "anchor": "upper_left"}
        else:
            pts = self.viewer.add_points(
                centres, name=ANNOTATION_LAYER, features=features, size=6,
                face_color=colors if colors else "white", border_color="white",
                text={"string": "{class}", "color": "white", "size": 9, "anchor": "upper_left"},
                **layer_grid(self.labels_layer),
            )  # fmt: skip
            self.viewer.layers.selection.active = self.labels_layer
        self.status.setText(
            f"{len(ids)} labelled cell(s): "
            + ", ".join(f"{c} {names.count(c)}" for c in self.classes if c in names)
        )

    # ------------------------------------------------------------------ training
    def settings(self) -> CellClassifierSettings:
        """The current options as a settings object."""
        return CellClassifierSettings(
            classes=self.classes,
            annotations=dict(self.annotations),
            mode=self.mode_combo.currentText(),
            crop_size=int(self.crop_spin.value()),
            epochs=int(self.epochs_spin.value()),
        )

    def start_training(self) -> None:
        """Build the task from the current annotations and train it in a worker."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        try:
            settings = self.settings()
            names = sorted(set(settings.annotations.values()))
            if not names:
                raise DlcbError("label some cells first: click cells to assign them a class")
            if len(names) < 2:
                raise DlcbError(
                    f"only one class ({names[0]!r}) has labelled cells; "
                    "label cells of at least 2 classes"
                )
            image, channel_axis = _image_2d(self.image_layer)
            labels = np.asarray(self.labels_layer.data)
        except DlcbError as err:
            notify_error(err)
            return
        self._stop = threading.Event()
        stop, fit_kwargs = self._stop, settings.as_fit_arguments()
        core_kwargs = settings.as_core_arguments()
        # a new list each run: a worker still winding down keeps reading its own
        live = self._live_request = [self._live_cell_request()]
        self._live_grid = layer_grid(self.labels_layer)
        self._live_saliency_throttle.cancel()

        def run():
            # crops, pretrained weights and features are prepared off the GUI thread
            from napari_dlcb.tasks.cells import CellClassificationTask

            task = CellClassificationTask(image, labels, channel_axis=channel_axis, **core_kwargs)
            if live[0] is not None and not np.any(task.crops.ids == live[0].object_id):
                live[0] = None  # the selected label is no object: no live map
            yield _TaskReady(task)
            # the callable is asked in the training thread at every preview
            yield from task.fit(stop=stop, preview_saliency=lambda: live[0], **fit_kwargs)
            # predictions (and napari's JIT-compiled label colouring) off the GUI thread
            ids, probs = task.predict()
            class_img = task.class_image(probs)
            _class_colormap(len(task.classes)).map(class_img.ravel()[:16])
            final = None
            if live[0] is not None:  # the live cell's map with the final (best) weights
                try:
                    final = task.saliency_preview(live[0])
                except (DlcbError, RuntimeError):
                    final = None  # already reported by the live preview
            yield _Results(ids, probs, class_img, task.training_confusion(), final)

        self.worker = create_worker(run)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(notify_error)
        self.worker.finished.connect(self._on_finished)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._curve_rows = []
        self._curve_fresh = True  # reset the plot on its first redraw (a reset draws too)
        self._live_curve = settings.mode == "full"
        self.status.setText(f"training ({settings.mode})...")
        self.worker.start()

    def stop_training(self) -> None:
        """Ask the worker to stop at the next step (best weights are kept)."""
        self._stop.set()

    def _on_event(self, ev: Any) -> None:
        from napari_dlcb.training.events import EpochEnd, Finished, Preview

        if isinstance(ev, _TaskReady):
            self.task = ev.task
            self.saliency_button.setEnabled(True)  # while training: picks the live cell
            for note in ev.task.notes:
                notify_warning(note)
        elif isinstance(ev, _Results):
            self.show_confusion(**ev.confusion)
            self.apply_predictions(ev)
            if ev.saliency is not None:
                # the final weights' map replaces any live one still waiting
                self._live_saliency_throttle.cancel()
                self._apply_live_saliency(ev.saliency)
        elif isinstance(ev, Preview) and isinstance(ev.data, dict):
            if "confusion" in ev.data:
                self.show_confusion(ev.data["confusion"], ev.data["classes"])
            if "saliency" in ev.data:
                self._live_saliency_throttle.submit(ev.data)  # at most one refresh a second
            elif "saliency_error" in ev.data:
                notify_warning(ev.data["saliency_error"])
        elif isinstance(ev, EpochEnd):
            self.status.setText(f"epoch {ev.epoch + 1}: loss {ev.train_loss:.3f}")
            self._curve_rows.append((ev.epoch + 1, ev.train_loss, ev.val_loss, ev.is_best))
            if self._live_curve:  # linear mode finishes in seconds: draw once at the end
                self._curve_sync.submit()
        elif isinstance(ev, Finished):
            self.status.setText(f"finished ({ev.reason}) after {ev.epochs_run} epochs")
            if self._live_curve:
                self._curve_sync.flush()

    def _sync_curve(self) -> None:
        """Add the epochs not yet on the learning curve (one redraw request)."""
        if self._curve_fresh:
            self.curve.reset()
            self._curve_fresh = False
        new = self._curve_rows[len(self.curve.epochs) :]
        for epoch, train, val, best in new[:-1]:
            self.curve.epochs.append(epoch)
            self.curve.train_loss.append(train)
            self.curve.val_loss.append(val)
            if best:
                self.curve.best_epoch = epoch
        if new:
            epoch, train, val, best = new[-1]
            self.curve.add_epoch(epoch, train, val, is_best=best)

    def _on_finished(self) -> None:
        self._sync_curve()
        self.worker = None
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)

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

    # ------------------------------------------------------------------ results
    def apply_predictions(self, results: _Results | None = None) -> None:
        """Colour the labels by predicted class and store per-object features."""
        if results is None:
            ids, probs = self.task.predict()
            results = _Results(ids, probs, self.task.class_image(probs), {})
        self.ids, self.probs = results.ids, results.probs
        class_img = results.class_image
        cmap = _class_colormap(len(self.task.classes))
        if PREDICTION_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREDICTION_LAYER]
            layer.data = class_img
            layer.colormap = cmap
        else:
            layer = self.viewer.add_labels(
                class_img, name=PREDICTION_LAYER, opacity=0.6, **layer_grid(self.labels_layer)
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
        """Write object id, class, probabilities and regionprops morphology as CSV."""
        if self.task is None or self.probs is None:
            raise DlcbError("train the classifier first")
        table = self.task.table(self.probs)
        table.to_csv(path, index=False)
        return table

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export cell table", "cells.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
                notify_info(f"wrote {path}")
            except DlcbError as err:
                notify_error(err)

    def show_cell_saliency(self, object_id: int | None = None) -> Any:
        """Show the saliency layer of one cell (default: the labels layer's selected label).

        Each cell has one layer, shared with the live refresh during training.
        While training runs, the live map switches to this cell instead (it is
        computed in the training thread) and the cell's existing layer, if any,
        is returned.
        """
        from napari_dlcb.tasks.cells import LiveCellSaliency

        if self.task is None:
            notify_error("train the classifier first")
            return None
        oid = int(self.labels_layer.selected_label if object_id is None else object_id)
        request = LiveCellSaliency(oid, method=self.saliency_method.currentText())
        if self.worker is not None:  # the model is training: never touch it from here
            if not np.any(self.task.crops.ids == oid):
                notify_error(f"object {oid} is not in the labels layer")
                return None
            self._live_request[0] = request
            self.status.setText(f"saliency of cell {oid} refreshes as the classifier trains")
            return self._cell_saliency_layer(oid)
        try:
            data = self.task.saliency_preview(request)
        except DlcbError as err:
            notify_error(err)
            return None
        return self._show_cell_map(data, layer_grid(self.labels_layer))

    def _cell_saliency_layer(self, object_id: int) -> Any:
        """The saliency layer of one cell, or None."""
        from napari.layers import Image

        for ly in self.viewer.layers:
            if isinstance(ly, Image) and ly.metadata.get(CELL_SALIENCY_KEY) == int(object_id):
                return ly
        return None

    def _live_cell_request(self) -> Any:
        """The cell to explain while training: the selected one, else the newest map's."""
        from napari.layers import Image

        from napari_dlcb.tasks.cells import LiveCellSaliency

        method = self.saliency_method.currentText() or "integrated-gradients"
        labels = self.labels_layer
        selected = int(labels.selected_label)
        if selected > 0 and (self._cell_chosen or labels.show_selected_label):
            return LiveCellSaliency(selected, method=method)
        for ly in reversed(self.viewer.layers):  # the top-most, usually the newest
            if isinstance(ly, Image) and ly.metadata.get(CELL_SALIENCY_KEY) is not None:
                return LiveCellSaliency(int(ly.metadata[CELL_SALIENCY_KEY]), method=method)
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
            with keep_selection(self.viewer):  # clicking cells keeps working
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

    def _saliency_clicked(self) -> None:
        self.show_cell_saliency()

    def _embedding_clicked(self) -> None:
        self.show_embedding()

    def show_embedding(self, method: str | None = None) -> Any:
        """Compute the 2-D embedding of the per-object features in a worker.

        The result becomes a Points layer beside the labels, linked to them and
        coloured as "colour by" says. Returns the worker (None if nothing started).
        """
        from napari.qt.threading import create_worker

        if self.task is None or self.probs is None:
            notify_error("train the classifier first")
            return None
        if self.worker is not None:
            notify_error("training is running: compute the embedding when it has finished")
            return None
        if self.embedding_worker is not None:
            return None
        if method is not None:
            self.embedding_method.setCurrentText(method)
        method = self.embedding_method.currentText() or "pca"
        worker = create_worker(_embedding_job, self.task, self.probs, method)
        worker.returned.connect(self._add_embedding)
        worker.errored.connect(notify_error)
        worker.finished.connect(self._on_embedding_finished)
        self.embedding_worker = worker
        self.embedding_button.setEnabled(False)
        self.status.setText(f"computing the {method} embedding...")
        worker.start()
        return worker

    def _on_embedding_finished(self) -> None:
        self.embedding_worker = None
        self.embedding_button.setEnabled(self.task is not None and self.probs is not None)

    def _add_embedding(self, result: _Embedding) -> Any:
        xy, table = result.xy, result.table
        labels = self.labels_layer
        h, w = np.asarray(labels.data).shape
        span = np.ptp(xy, axis=0)
        span[span == 0] = 1
        box = 0.9 * min(h, w)
        pts = (xy - xy.min(0)) / span.max() * box  # keep the aspect ratio
        coords = np.column_stack([pts[:, 1] + 0.05 * h, pts[:, 0] + w * 1.1])
        grid = layer_grid(labels)
        coords = coords * np.asarray(grid["scale"]) + np.asarray(grid["translate"])
        features = table.reset_index(drop=True).copy()
        if EMBEDDING_LAYER in self.viewer.layers:
            self.viewer.layers.remove(EMBEDDING_LAYER)
        layer = self.viewer.add_points(
            coords, name=EMBEDDING_LAYER, features=features, size=6, border_width=0,
            metadata={"method": result.method},
        )  # fmt: skip
        layer.selected_data.events.items_changed.connect(self._on_point_selected)
        self.embedding_layer = layer
        self._embedding_table = features
        self.n_embeddings += 1
        self._fill_color_choices(features)
        self.color_embedding()
        self.status.setText(f"{result.method} embedding of {len(coords)} cells")
        return layer

    def _fill_color_choices(self, table: Any) -> None:
        """Fill "colour by": both class columns, each probability, every numeric measurement."""
        import pandas as pd

        choices: dict[str, tuple[str, str]] = {
            BY_PREDICTED: ("class", "class"),
            BY_ANNOTATED: ("class", "annotated"),
        }
        for name in self.task.classes:
            choices[f"probability of {name}"] = ("value", f"prob_{name}")
        for col in table.columns:
            if col in ("object_id", "class", "annotated") or col.startswith("prob_"):
                continue
            dtype = table[col].dtype
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                choices[col] = ("value", col)
        self._color_choices = choices
        refill_combo(self.color_by, list(choices), default=BY_PREDICTED)
        self.color_by.setEnabled(True)

    def _on_color_by_changed(self, *args: Any) -> None:
        if self.embedding_layer is not None and self.embedding_layer in self.viewer.layers:
            self.color_embedding()

    def color_embedding(self, choice: str | None = None) -> None:
        """Recolour the embedding points (no recomputation).

        Classes use the class colours of the labels; probabilities and
        measurements use the ``viridis`` colormap from their minimum to maximum.
        """
        layer = self.embedding_layer
        if layer is None or layer not in self.viewer.layers:
            notify_error("compute the embedding first")
            return
        if choice is not None:
            if choice not in self._color_choices:
                notify_error(f"cannot colour by {choice!r}: choose one of the list")
                return
            self.color_by.blockSignals(True)
            self.color_by.setCurrentText(choice)
            self.color_by.blockSignals(False)
        choice = self.color_by.currentText() or BY_PREDICTED
        kind, column = self._color_choices.get(choice, ("class", "class"))
        values = self._embedding_table[column].to_numpy()
        if kind == "class":
            index = {c: k for k, c in enumerate(self.task.classes)}
            colors = [
                CLASS_COLORS[index[v] % len(CLASS_COLORS)] if v in index else UNANNOTATED_COLOR
                for v in values
            ]
            layer.face_color = colors
            layer.metadata["colour_by"] = {"name": choice, "column": column}
            self.status.setText(f"embedding coloured by {choice}")
            return
        colors, (lo, hi) = _continuous_colors(values)
        layer.face_color = colors
        layer.metadata["colour_by"] = {
            "name": choice,
            "column": column,
            "colormap": CONTINUOUS_COLORMAP,
            "contrast_limits": (lo, hi),
        }
        self.status.setText(
            f"embedding coloured by {choice}: {lo:.3g} (dark blue) to {hi:.3g} (yellow)"
        )

    def _on_point_selected(self, *args: Any) -> None:
        if self._syncing or EMBEDDING_LAYER not in self.viewer.layers:
            return
        layer = self.viewer.layers[EMBEDDING_LAYER]
        sel = sorted(layer.selected_data)
        if len(sel) != 1:
            return
        oid = int(layer.features["object_id"].iloc[sel[0]])
        self._syncing = True
        try:
            self.labels_layer.selected_label = oid
            self.labels_layer.show_selected_label = True
        finally:
            self._syncing = False

    def _on_label_selected(self, event: Any = None) -> None:
        if self._hooked_labels is not None:
            self._cell_chosen = int(self._hooked_labels.selected_label) > 0
        if self._syncing or EMBEDDING_LAYER not in self.viewer.layers:
            return
        layer = self.viewer.layers[EMBEDDING_LAYER]
        oid = int(self.labels_layer.selected_label)
        hits = np.flatnonzero(layer.features["object_id"].to_numpy() == oid)
        self._syncing = True
        try:
            layer.selected_data = set(hits.tolist())
        finally:
            self._syncing = False

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self._stop.set()
        self._live_saliency_throttle.cancel()
        self.curve.shutdown()
        super().closeEvent(event)
