"""The Segmentation dock: annotate, fine-tune a U-Net live, predict, save.

A thin adapter over :class:`napari_dlcb.tasks.segmentation.SegmentationTask`:

1. the form (:mod:`.panel`) becomes a :class:`SegmentationConfig`
   (:mod:`.settings`), the same one the CLI builds;
2. every action is ONE job of :class:`~napari_dlcb._widgets._jobs.JobRunner`
   (train, predict, block-wise predict, save; model reading happens inside
   them), so each shows progress in napari's activity dock, Stop works, and
   every error is one line in a notification and in the status line;
3. training events become the status line, the learning curve and the live
   layers (:mod:`.training`, :mod:`.live`), throttled to about one layer
   refresh per second.

The model that Predict and Save use is shown by name and provenance
(:class:`~.settings.ModelInUse`); changing "Start from" after training
discards the trained model (the dock says so) and Predict uses the new choice.

Keeping the event loop free (measured with a 10 ms ``QTimer`` probe, see
``tests/widgets`` and ``benchmarks/bench_gui_training.py``): torch and the
training modules are imported in a background thread when the dock opens;
the live prediction layer is made, hidden and empty, when an image is chosen
(building a napari layer takes 0.1-1 s of the event loop), then written in
place and re-sliced; the Train click only checks the layers and starts the
job; the status line never triggers a relayout of the main window; the
learning curve is rendered off the GUI thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_dlcb._widgets._common import (
    RegionHolder,
    ThrottledCall,
    notify_error,
    notify_info,
)
from napari_dlcb._widgets._jobs import JobRunner
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb._widgets.segmentation.jobs import start_warmup
from napari_dlcb._widgets.segmentation.live import LiveLayers
from napari_dlcb._widgets.segmentation.panel import LABEL_KINDS, SegmentationPanel
from napari_dlcb._widgets.segmentation.predict import PredictMixin
from napari_dlcb._widgets.segmentation.settings import ModelInUse, base_name
from napari_dlcb._widgets.segmentation.training import TrainingMixin
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentationWidget"]


def _alive(widget: QWidget) -> bool:
    """Whether the C++ side of a Qt widget still exists."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


class SegmentationWidget(TrainingMixin, PredictMixin, SegmentationPanel):
    """Annotate, train a segmentation U-Net with a live overlay, predict and save.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer this dock widget belongs to.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        self.fit_overrides: dict[str, Any] = {}  # config fields set by scripts and tests
        super().__init__(napari_viewer, parent)
        self.setObjectName("dlcb_segmentation")
        self.jobs = JobRunner(self._set_status, on_busy=lambda busy: self._set_state(), parent=self)
        self.model_in_use = ModelInUse(base=self.base_choice)
        self.live = LiveLayers(self.viewer)
        self._region = RegionHolder()
        self._tracker: Any = None
        self._autosave: Any = None
        self._last_labels: Any = None
        self._trainer_signature: tuple | None = None
        self._trained_labels: list | None = None
        self._trained_from = ""
        self._epoch_offset = 0
        self._last_epoch = -1
        self._total_epochs = 0
        self._fit_start_epoch = 0
        self._epoch_summary = ""
        self._overfit_notified = False
        self.last_finished: Any = None
        self.saved_path: Any = None
        self.exported: Any = None  # what the last Export to BioImage.IO wrote
        self.plot = LearningCurvePlot()
        self._plot_dock: Any = None
        self._preview_throttle = ThrottledCall(self._apply_preview, 1000, self)
        self._progress_throttle = ThrottledCall(self._apply_progress, 250, self)
        self._connect()
        self._refresh_layer_choices()
        self._set_state()
        self._warmup = start_warmup()
        # dock the learning curve beside this widget once napari has docked us
        QTimer.singleShot(0, self._show_plot)

    def _connect(self) -> None:
        self.base_combo.currentIndexChanged.connect(self._on_base_changed)
        self.base_path.editingFinished.connect(self._on_base_changed)
        self.train_btn.clicked.connect(self.start_training)
        self.stop_btn.clicked.connect(self.stop_training)
        self.resume_btn.clicked.connect(self.resume_training)
        self.predict_btn.clicked.connect(self.predict)
        self.save_btn.clicked.connect(self._save_clicked)
        self.export_btn.clicked.connect(self._export_clicked)
        self.image_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.autosave_check.toggled.connect(self._on_selection_changed)
        self.kind_combo.currentIndexChanged.connect(self._on_kind_changed)
        self.preview_check.toggled.connect(lambda *_: self._set_state())
        self.preview_check.toggled.connect(self._on_selection_changed)
        self.saliency_combo.currentIndexChanged.connect(self._on_selection_changed)

    @property
    def warmed_up(self) -> bool:
        """Whether the background import of torch and the training modules finished."""
        return not self._warmup.is_alive()

    # ------------------------------------------------------------------ the model in use
    @property
    def trainer(self) -> Any:
        """The task trained in this dock (what Predict, Save and Resume use), or None."""
        return self.model_in_use.trainer

    @property
    def preview_layer(self) -> Any:
        """The live prediction layer, once training started."""
        return self.live.preview_layer

    @property
    def saliency_layer(self) -> Any:
        """The live saliency layer, once training with live saliency started."""
        return self.live.saliency_layer

    @property
    def n_preview_updates(self) -> int:
        """Live prediction updates drawn so far."""
        return self.live.n_preview_updates

    @property
    def n_saliency_updates(self) -> int:
        """Live saliency maps drawn so far."""
        return self.live.n_saliency_updates

    @property
    def region_shown(self) -> Any:
        """(row, col) slices of the image that the live prediction shows."""
        return self.live.region_shown

    def _on_base_changed(self, *args: Any) -> None:
        """A new "Start from": a model trained from another base is discarded."""
        self._set_state()
        base, mine = self.base_choice, self.model_in_use
        mine.base = base
        if mine.trained and base != mine.trained_from and not self.is_training:
            mine.trainer, mine.kept = None, ""
            self._trained_labels = None
            notify_info(
                f"Start from is now {base_name(base)}: Predict uses it, and the model "
                f"trained from {base_name(mine.trained_from)} was discarded."
            )
        self._show_model()

    def _show_model(self) -> None:
        self.model_label.setText(self.model_in_use.describe())

    # ------------------------------------------------------------------ autosave
    def _on_selection_changed(self, *args: Any) -> None:
        if hasattr(self, "jobs"):
            QTimer.singleShot(0, self._prepare_live_layer)
        labels = self.labels_layer
        if labels is not None and labels is not self._last_labels:
            self._last_labels = labels
            kind = labels.metadata.get("label_kind")
            if kind in LABEL_KINDS and not self.is_training:
                self.kind_combo.setCurrentText(kind)  # what the layer says it holds
        self._update_autosave()

    def _prepare_live_layer(self) -> None:
        """Make the chosen image's live prediction layer now, hidden, not when Train is pressed.

        Building a napari layer takes 0.1-1 s of the event loop (vispy visuals);
        doing it while the user is still choosing keeps that out of training.
        """
        image = self.image_layer
        if (
            image is None
            or image.multiscale
            or self.is_training
            or not self.preview_check.isChecked()
            or not _alive(self)
        ):
            return
        self.live.ensure_preview(image, visible=False)
        if self.saliency_combo.currentText() != "off":
            self.live.ensure_saliency(image)

    def _on_kind_changed(self, *args: Any) -> None:
        if self._autosave is not None:
            self._autosave.label_kind = self.kind_combo.currentText()

    def _update_autosave(self) -> None:
        if not hasattr(self, "jobs"):
            return  # still building the form
        image, labels = self.image_layer, self.labels_layer
        current = self._autosave
        want = self.autosave_check.isChecked() and image is not None and labels is not None
        if current is not None and (
            not want or current.labels_layer is not labels or current.image_layer is not image
        ):
            current.disconnect()
            self._autosave = None
        if want and self._autosave is None:
            try:
                from napari_dlcb._widgets._autosave import enable_autosave

                self._autosave = enable_autosave(
                    image, labels, label_kind=self.kind_combo.currentText()
                )
            except DlcbError as err:
                notify_error(err)
            except ImportError:  # the io layer is not installed: no autosave
                self._autosave = None

    # ------------------------------------------------------------------ state
    def _user_error(self, err: BaseException | str) -> None:
        """A user error found on the GUI thread: one notification, the same status line."""
        self._set_status(notify_error(err))

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def _set_state(self, *args: Any) -> None:
        """Enable what can be done now."""
        if not hasattr(self, "jobs"):
            return  # still building the form
        training = self.is_training
        predicting = self.jobs.busy("predict")
        trained = self.trainer is not None
        self.train_btn.setEnabled(not training and not predicting)
        self.stop_btn.setEnabled(training or predicting)
        self.resume_btn.setEnabled(not training and not predicting and trained)
        self.predict_btn.setEnabled(not training and not predicting)
        self.save_btn.setEnabled(not training and trained and not self.jobs.busy("save"))
        self.export_btn.setEnabled(not training and trained and not self.jobs.busy("export"))
        for w in (
            self.image_combo,
            self.labels_combo,
            self.kind_combo,
            self.base_combo,
            self.mode_combo,
            self.device_combo,
            self.new_labels_btn,
        ):
            w.setEnabled(not training)
        self.saliency_combo.setEnabled(self.preview_check.isChecked() and not training)
        custom = self.base_combo.currentData() != "builtin"
        self.base_path.setEnabled(not training and custom)
        self.base_browse.setEnabled(not training and custom)
        self._show_model()

    # ------------------------------------------------------------------ plot dock
    def _show_plot(self) -> None:
        """Dock the learning curve (again, if the user closed it)."""
        window = getattr(self.viewer, "window", None)
        if window is None or not _alive(self):
            return
        dock = self._plot_dock
        if dock is not None:
            try:
                if dock.isHidden():
                    dock.show()
                return
            except RuntimeError:  # the dock (and the plot in it) was deleted
                self._plot_dock = None
        if not _alive(self.plot):
            old = self.plot  # its Python-side history survives the C++ object
            self.plot = LearningCurvePlot()
            for epoch, tr, va in zip(old.epochs, old.train_loss, old.val_loss):
                self.plot.add_epoch(epoch, tr, va, is_best=epoch == old.best_epoch)
        self._plot_dock = window.add_dock_widget(self.plot, name="Learning curve", area="right")

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop training and flush autosave when the dock closes."""
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop our jobs, flush autosave and disconnect from the viewer (no blocking).

        Training ends after the current step (keeping what it learnt);
        prediction and saving finish on their own.
        """
        self.jobs.cancel("train")
        self.jobs.cancel("predict")
        self._preview_throttle.cancel()
        self._progress_throttle.cancel()
        self._stop_tracking()
        self.live.remove_unused()
        if self._autosave is not None:
            self._autosave.disconnect()
            self._autosave = None
