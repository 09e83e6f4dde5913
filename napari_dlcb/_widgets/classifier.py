"""Cell-classifier dock widget: click cells, train, colour labels by class, look inside.

A thin adapter over :class:`napari_dlcb.tasks.cells.CellClassificationTask`
(STYLE.md rule 2): the dock builds a :class:`~napari_dlcb.tasks.cells.CellsConfig`
from its fields (the same dataclass Python callers use), starts every job
through one :class:`~napari_dlcb._widgets._jobs.JobRunner` (progress in
napari's activity dock, Stop, one error path: a one-line notification and the
same line in the status), and turns events into a live confusion matrix and
layers on the main thread. The parts live beside this panel:

- :mod:`~napari_dlcb._widgets.classifier_annotate`: layer choice (instance
  labels preferred over scribbles), classes, click-to-annotate;
- :mod:`~napari_dlcb._widgets.classifier_jobs`: what runs in the worker
  (task, training, predictions, per-cell saliency);
- :mod:`~napari_dlcb._widgets.classifier_results`: predicted classes, export,
  confusion matrix, per-cell saliency layers;
- :mod:`~napari_dlcb._widgets.classifier_embedding`: the embedding view.

Training runs in "quick" mode (frozen pretrained features + linear head,
seconds on a CPU) or "full" fine-tuning. If a cell is selected (or has a
saliency layer) when training starts, its saliency map is recomputed in the
training thread with the current weights (within a third of the training
time) and its layer refreshes at most once a second; pressing "Saliency of
selected cell" while training runs switches the live map to the selected cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QWidget,
)

from napari_dlcb._widgets._common import (
    ThrottledCall,
    layer_grid,
    notify_warning,
    scrolling_layout,
)
from napari_dlcb._widgets._jobs import JobRunner
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb._widgets.classifier_annotate import ANNOTATION_LAYER, AnnotationMixin
from napari_dlcb._widgets.classifier_embedding import (
    EMBEDDING_LAYER,
    EMBEDDING_TOOLTIP,
    UNANNOTATED_COLOR,
    EmbeddingMixin,
)
from napari_dlcb._widgets.classifier_pretrain import MIL_HEATMAP_LAYER, PretrainMixin
from napari_dlcb._widgets.classifier_results import (
    CELL_SALIENCY_KEY,
    CLASS_COLORS,
    PREDICTION_LAYER,
    ResultsMixin,
)
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = [
    "ANNOTATION_LAYER",
    "CELL_SALIENCY_KEY",
    "CLASS_COLORS",
    "EMBEDDING_LAYER",
    "MIL_HEATMAP_LAYER",
    "PREDICTION_LAYER",
    "UNANNOTATED_COLOR",
    "CellClassifierWidget",
    "image_2d",
]

SALIENCY_METHODS = ["integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion"]
#: the crop-size spin box shows "auto" at this value (below the smallest real crop)
AUTO_CROP = 7


def image_2d(layer: Any) -> tuple[np.ndarray, int | None]:
    """The layer's 2-D image and its channel axis (-1 for RGB); one-line error otherwise."""
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        return data, -1
    if data.ndim != 2:
        raise DlcbError(f"layer '{layer.name}' is not a 2-D image (shape {data.shape})")
    return data, None


class CellClassifierWidget(AnnotationMixin, ResultsMixin, EmbeddingMixin, PretrainMixin, QWidget):
    """Dock widget for cell classification on an instance-labels layer."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.annotations: dict[int, str] = {}
        self.task: Any = None
        self.probs: np.ndarray | None = None
        self.ids: np.ndarray | None = None
        self._hooked_labels: Any = None
        self._labels_chosen = False  # the user picked a labels layer: keep it
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
        self._kept = ""
        self.embedding_layer: Any = None
        self.n_embeddings = 0
        self._embedding_table: Any = None
        self._color_choices: dict[str, tuple[str, str]] = {}
        # the plot renders off-thread but still takes the GIL: redraw at most every 2 s
        self._curve_rows: list[tuple[int, float, float, bool]] = []
        self._live_curve = False
        self._curve_fresh = False
        self._build_fields()
        self._build_layout()
        self._curve_sync = ThrottledCall(self._sync_curve, interval_ms=2000, parent=self)
        self.jobs = JobRunner(self.status.setText, on_busy=self._on_busy, parent=self)
        self._connect()
        self._refresh_layers()
        self._refresh_classes()

    # ------------------------------------------------------------------ building
    def _build_fields(self) -> None:
        from napari_dlcb.interpret.embedding import available_methods  # no torch import

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(
            "Instance labels (one id per cell), e.g. a segmentation result; "
            "a layer with many ids is preferred over a scribbles layer"
        )
        self.classes_edit = QLineEdit("class 1, class 2")
        self.classes_edit.setToolTip("Class names, comma separated")
        self.class_combo = QComboBox()
        self.annotate_check = QCheckBox("click cells to label (Alt-click removes)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["quick", "full"])
        self.mode_combo.setToolTip(
            "quick: frozen pretrained features + linear head (seconds); full: fine-tune all layers"
        )
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 500)
        self.epochs_spin.setValue(30)
        self.crop_spin = QSpinBox()
        self.crop_spin.setRange(AUTO_CROP, 256)
        self.crop_spin.setSpecialValueText("auto")
        self.crop_spin.setValue(AUTO_CROP)
        self.crop_spin.setToolTip(
            "Side of the crop around each cell; auto: 1.5 x the 90th-percentile object size "
            "(a multiple of 8, 32 to 128 px)"
        )
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = QLabel("Label cells of at least two classes, then train.")
        self.status.setWordWrap(True)
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        self.confusion = QTableWidget(0, 0)
        self.confusion.setMinimumHeight(120)
        self.curve = LearningCurvePlot()
        self.export_button = QPushButton("Export CSV...")
        self.saliency_method = QComboBox()
        self.saliency_method.addItems(SALIENCY_METHODS)
        self.saliency_button = QPushButton("Saliency of selected cell")
        self.saliency_button.setToolTip(
            "Saliency map of the selected cell's crop (computed in the background). A cell "
            "selected when training starts gets a map that refreshes as the classifier trains."
        )
        self.embedding_method = QComboBox()
        self.embedding_method.addItems(available_methods())
        self.embedding_method.setToolTip(EMBEDDING_TOOLTIP)
        self.embedding_button = QPushButton("Embedding")
        self.embedding_button.setToolTip(EMBEDDING_TOOLTIP)
        self.color_by = QComboBox()
        self.color_by.setToolTip("Colour the embedding points by a class or any measurement")
        self.color_by.setEnabled(False)
        for b in (self.export_button, self.saliency_button, self.embedding_button):
            b.setEnabled(False)
        self._build_pretrain_fields()

    def _build_layout(self) -> None:
        form = QFormLayout()
        for label, field in (
            ("image", self.image_combo),
            ("labels", self.labels_combo),
            ("classes", self.classes_edit),
            ("current class", self.class_combo),
        ):
            form.addRow(label, field)
        form.addRow(self.annotate_check)
        form.addRow("mode", self.mode_combo)
        form.addRow("epochs", self.epochs_spin)
        form.addRow("crop size", self.crop_spin)
        self._pretrain_rows(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        sal = QHBoxLayout()
        sal.addWidget(self.saliency_method)
        sal.addWidget(self.saliency_button)
        emb_row = QHBoxLayout()
        emb_row.addWidget(self.embedding_source)
        emb_row.addWidget(self.embedding_method)
        emb_row.addWidget(self.embedding_button)
        emb = QFormLayout()
        emb.addRow("embedding", emb_row)
        emb.addRow("colour by", self.color_by)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.notes)
        layout.addWidget(QLabel("confusion matrix (rows: true, columns: predicted)"))
        layout.addWidget(self.confusion)
        layout.addWidget(self.curve)
        layout.addWidget(self.export_button)
        layout.addLayout(sal)
        layout.addLayout(emb)
        self._mil_rows(layout)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.classes_edit.editingFinished.connect(self._refresh_classes)
        self.annotate_check.toggled.connect(self._toggle_annotation)
        self.labels_combo.currentTextChanged.connect(self._labels_picked)
        self.train_button.clicked.connect(self.start_training)
        self.stop_button.clicked.connect(self.stop_training)
        self.export_button.clicked.connect(self._export_dialog)
        # not the public methods: ``clicked(checked)`` would pass a bool as the object id
        # or method (bound methods, not lambdas, so Qt holds no reference cycle to self)
        self.saliency_button.clicked.connect(self._saliency_clicked)
        self.embedding_button.clicked.connect(self._embedding_clicked)
        self.color_by.currentTextChanged.connect(self._on_color_by_changed)
        self._connect_pretrain()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)

    # ------------------------------------------------------------------ state
    @property
    def worker(self) -> Any:
        """The worker of the running training job, or None."""
        return self.jobs.worker("train")

    def _on_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)

    def config(self) -> Any:
        """The current options as a validated :class:`~napari_dlcb.tasks.cells.CellsConfig`."""
        from napari_dlcb.tasks.classification_config import CellsConfig

        crop = int(self.crop_spin.value())
        return CellsConfig(
            base=self.base_source(),
            crop_size="auto" if crop == AUTO_CROP else crop,
            mode=self.mode_combo.currentText(),
            epochs=int(self.epochs_spin.value()),
        ).validate()

    # ------------------------------------------------------------------ training
    def start_training(self) -> Any:
        """Build the task from the current annotations and train it in a job (returns the job)."""
        if self.jobs.busy("train"):
            return None
        try:
            config = self.config()
            names = sorted(set(self.annotations.values()))
            if not names:
                raise DlcbError("label some cells first: click cells to assign them a class")
            if len(names) < 2:
                raise DlcbError(
                    f"only one class ({names[0]!r}) has labelled cells; "
                    "label cells of at least 2 classes"
                )
            image, channel_axis = image_2d(self.image_layer)
            labels = np.asarray(self.labels_layer.data)
        except DlcbError as err:
            self.jobs.report(err)
            return None
        from napari_dlcb._widgets.classifier_jobs import training_job

        # a new list each run: a job still winding down keeps reading its own
        live = self._live_request = [self._live_cell_request()]
        self._live_grid = layer_grid(self.labels_layer)
        self._live_saliency_throttle.cancel()
        self._curve_rows, self._curve_fresh = [], True  # reset the plot on its first redraw
        self._live_curve = config.mode == "full"  # quick mode: draw once at the end
        self._kept = ""
        self.train_button.setEnabled(False)
        self.export_button.setEnabled(False)  # until this run's predictions arrive
        self.notes.setText("")
        return self.jobs.run(
            "Training",
            training_job,
            image,
            labels,
            dict(self.annotations),
            config,
            classes=self.classes,
            channel_axis=channel_axis,
            live=live,
            kind="train",
            on_yield=self._on_event,
            on_done=self._on_training_done,
            status=f"training ({config.mode})…",
        )

    def stop_training(self) -> None:
        """Stop the running job at its next step (training keeps what it learnt)."""
        self.jobs.cancel()

    def _on_event(self, ev: Any) -> None:
        from napari_dlcb._widgets.classifier_jobs import Results, TaskReady
        from napari_dlcb.training.events import EpochEnd, Finished, Preview

        if isinstance(ev, TaskReady):
            self.task = ev.task
            self.saliency_button.setEnabled(True)  # while training: picks the live cell
            # notes in the dock, not as toasts (a toast costs the event loop ~0.3 s)
            self.notes.setText("\n".join(f"note: {n}" for n in ev.task.notes))
        elif isinstance(ev, Results):
            self.show_confusion(**ev.confusion)
            self.apply_predictions(ev)
            if ev.saliency is not None:
                # the final weights' map replaces any live one still waiting
                self._live_saliency_throttle.cancel()
                self._apply_live_saliency(ev.saliency)
        elif isinstance(ev, Preview) and isinstance(ev.data, dict):
            self._on_preview(ev.data)
        elif isinstance(ev, EpochEnd):
            self.status.setText(f"epoch {ev.epoch + 1}: loss {ev.train_loss:.3f}")
            self._curve_rows.append((ev.epoch + 1, ev.train_loss, ev.val_loss, ev.is_best))
            if self._live_curve:
                self._curve_sync.submit()
        elif isinstance(ev, Finished):
            self._kept = ev.kept
            self.status.setText(
                f"finished ({ev.reason}) after {ev.epochs_run} epochs; the model holds {ev.kept}"
            )
            if self._live_curve:
                self._curve_sync.flush()

    def _on_preview(self, data: dict[str, Any]) -> None:
        if "confusion" in data:
            self.show_confusion(data["confusion"], data["classes"])
        if "saliency" in data:
            self._live_saliency_throttle.submit(data)  # at most one refresh a second
        elif "saliency_error" in data:  # training goes on: a warning, also in the status
            notify_warning(data["saliency_error"])
            self.status.setText(data["saliency_error"])

    def _on_training_done(self, job: Any) -> None:
        self._sync_curve()
        self.train_button.setEnabled(True)
        self.export_button.setEnabled(self.probs is not None and not job.failed)
        if not job.failed and job.cancelled and self._kept:
            self.status.setText(f"stopped; the model holds {self._kept}")

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

    # ------------------------------------------------------------------ per-cell saliency
    def _saliency_clicked(self) -> None:
        self.show_cell_saliency()

    def show_cell_saliency(self, object_id: int | None = None) -> Any:
        """Explain one cell (default: the labels layer's selected label) in a job.

        Each cell has one saliency layer, shared with the live refresh during
        training. While training runs, the live map switches to this cell
        instead (it is computed in the training thread). Returns the job
        (None if nothing started).
        """
        from napari_dlcb._widgets.classifier_jobs import cell_saliency_job
        from napari_dlcb.tasks.cells import LiveCellSaliency

        if self.task is None:
            self.jobs.report("train the classifier first")
            return None
        oid = int(self.labels_layer.selected_label if object_id is None else object_id)
        if not np.any(self.task.crops.ids == oid):
            self.jobs.report(f"object {oid} is not in the labels layer: select a cell first")
            return None
        request = LiveCellSaliency(oid, method=self.saliency_method.currentText())
        if self.jobs.busy("train"):  # the model is training: never touch it from here
            self._live_request[0] = request
            self.status.setText(f"saliency of cell {oid} refreshes as the classifier trains")
            return None
        grid = layer_grid(self.labels_layer)
        job = self.jobs.run(
            "Cell saliency",
            cell_saliency_job,
            self.task,
            request,
            kind="model",
            on_yield=lambda item: self._on_cell_map(item, grid),
            on_done=self._model_job_done,
            status=f"saliency of cell {oid} ({request.method})…",
        )
        if job is None:
            self.jobs.report(f"{self.jobs.job('model').name} is running: wait for it or press Stop")
        return job

    def _on_cell_map(self, item: Any, grid: dict[str, Any]) -> None:
        from napari_dlcb._widgets.classifier_jobs import CellMap

        if isinstance(item, CellMap):
            self._show_cell_map(item.data, grid)
            d = item.data
            self.status.setText(
                f"saliency of cell {d['saliency_object']} ({d['saliency_method']}) "
                f"for class '{d['saliency_class']}'"
            )

    def _model_job_done(self, job: Any) -> None:
        trained = self.task is not None and self.probs is not None
        self.embedding_button.setEnabled(trained or self.pretrained_model is not None)

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

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.jobs.cancel_all_and_wait()
        self._live_saliency_throttle.cancel()
        self.curve.shutdown()
        super().closeEvent(event)
