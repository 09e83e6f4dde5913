"""Train, Stop and Resume in the Segmentation dock, and the training events as updates.

The Train click only checks the chosen layers (cheap), snapshots the
annotation and starts ONE job; the task is built (model read, targets,
feature cache) in the worker. Events come back on the main thread and become
a status line, the learning curve and the live layers, throttled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer

from napari_dlcb._widgets._common import ViewportTracker, notify_warning, plane_shape
from napari_dlcb._widgets._jobs import set_progress
from napari_dlcb._widgets.segmentation.jobs import Status, TrainerReady, training_job
from napari_dlcb._widgets.segmentation.settings import config_from_panel
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    from napari.layers import Image

__all__ = ["TrainingMixin"]

REASONS = {
    "completed": "Training finished",
    "early_stopping": "Training stopped early (no better validation score)",
    "cancelled": "Training stopped",
    "diverged": "Training stopped: the loss diverged",
    "time_limit": "Training stopped at the time limit",
}


class TrainingMixin:
    """Train/Stop/Resume and the handling of training events (part of the dock)."""

    # ------------------------------------------------------------------ config and data
    def config(self) -> Any:
        """The dock's fields as the task's :class:`SegmentationConfig` (validated)."""
        return config_from_panel(self, self.fit_overrides)

    def _training_arrays(self, config: Any) -> tuple[list, list, Any]:
        """Check the chosen layers; return (image planes, label planes, preview plane).

        For a stack whose labels layer has the same leading axes, every plane
        with annotation trains (the current one first); a 2-D labels layer over
        a stack annotates the current plane. The annotation is copied (the user
        keeps painting); image planes are not read here (a lazy image is read
        in the worker). Cheap checks only: the task repeats the full validation
        in the worker.
        """
        image, labels = self.image_layer, self.labels_layer
        if image is None:
            raise DlcbError("Choose an image layer to train on.")
        if labels is None:
            raise DlcbError("Choose a labels layer with your annotation (or add a new one).")
        if image.multiscale:
            raise DlcbError(
                f"'{image.name}' is a multiscale image; train on a crop of it "
                "(Predict works on the whole image)."
            )
        lab_shape = tuple(labels.data.shape)
        img_shape = tuple(image.data.shape[:-1] if image.rgb else image.data.shape)
        if lab_shape[-2:] != plane_shape(image) or len(lab_shape) not in (2, len(img_shape)):
            raise DlcbError(
                f"labels layer '{labels.name}' has shape {lab_shape} but image "
                f"'{image.name}' has shape {img_shape}; they must match."
            )
        img_index = self.plane_index(image)
        preview = image.data[img_index] if img_index else image.data
        if len(lab_shape) > 2:  # a stack annotated plane by plane
            lead = np.asarray(labels.data).reshape(-1, *lab_shape[-2:])
            painted = [int(i) for i in np.flatnonzero(lead.reshape(len(lead), -1).any(1))]
            current = int(np.ravel_multi_index(img_index, lab_shape[:-2])) if img_index else 0
            if config.label_kind == "classes" or not painted:
                painted = [current]
            painted.sort(key=lambda i: i != current)  # the plane on screen first
            imgs = [  # only the painted planes are read, in the worker (the image may be lazy)
                image.data[tuple(int(v) for v in np.unravel_index(i, lab_shape[:-2]))]
                for i in painted
            ]
            labs = [np.array(lead[i], copy=True) for i in painted]
        else:
            imgs, labs = [preview], [np.array(labels.data, copy=True)]
        self._check_annotation(config, labels.name, labs)
        return imgs, labs, preview

    def _checked_input(self) -> tuple[Any, list, list, Any] | None:
        """(config, images, labels, preview plane), or None after telling the user why not."""
        try:
            config = self.config()
            return (config, *self._training_arrays(config))
        except DlcbError as err:
            self._user_error(err)
            return None

    @staticmethod
    def _check_annotation(config: Any, name: str, labs: list[np.ndarray]) -> None:
        if config.label_kind != "classes" and not any(np.any(lab) for lab in labs):
            hint = (
                "strokes (1 = background, 2 = objects)."
                if config.label_kind == "scribbles"
                else "labels first."
            )
            raise DlcbError(f"'{name}' has no annotation; paint some {hint}")
        from napari_dlcb.data.labels import class_values_for

        class_values_for(labs, config.label_kind)  # DlcbError: one class only

    # ------------------------------------------------------------------ actions
    @property
    def is_training(self) -> bool:
        """Whether a training job is running."""
        return self.jobs.busy("train")

    @property
    def worker(self) -> Any:
        """The training job's worker, or None."""
        return self.jobs.worker("train")

    def start_training(self) -> bool:
        """Check the input, then train a new model from "Start from" (False on bad input)."""
        if self.is_training or self.jobs.busy("predict"):
            return False
        checked = self._checked_input()
        if checked is None:
            return False
        config, imgs, labs, plane = checked
        self.model_in_use.trainer, self.model_in_use.kept = None, ""
        self.model_in_use.base = self.base_choice
        self._trained_labels = labs
        self._epoch_offset = 0
        self._last_epoch = -1
        self.plot.reset()
        self._overfit_notified = False
        self._launch(config, plane, images=imgs, labels=labs)
        return True

    def resume_training(self) -> bool:
        """Continue training the current model.

        If the annotation or the settings that shape the data changed since the
        model was built (look at the overlay, paint corrections, resume), a new
        task starts from the current weights; otherwise ``fit`` runs again.
        """
        if self.is_training:
            return False
        trainer = self.trainer
        if trainer is None:
            self._user_error("Nothing to resume: press Train first.")
            return False
        checked = self._checked_input()
        if checked is None:
            return False
        config, imgs, labs, plane = checked
        old = self._trained_labels
        same = (
            old is not None
            and len(old) == len(labs)
            and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(old, labs))
            and self._signature(config) == self._trainer_signature
        )
        self.plot.mark_resume()
        self._epoch_offset = self._last_epoch + 1
        if same:
            self._launch(config, plane, trainer=trainer)
        else:
            self._trained_labels = labs
            base = (trainer.model, trainer.meta)
            self._launch(config, plane, images=imgs, labels=labs, base_model=base)
        return True

    def _signature(self, config: Any) -> tuple:
        image = self.image_layer
        return (image.name if image else None, config.label_kind, config.base, config.mode)

    def _launch(self, config: Any, plane: Any, **job: Any) -> None:
        """Start the training job (live layers, plot, progress) and return at once."""
        self._trainer_signature = self._signature(config)
        self._trained_from = self.base_choice
        self._fit_start_epoch = 0
        self._total_epochs = config.epochs
        self._epoch_summary = ""
        self.last_finished = None
        fit_kwargs = config.fit_options()
        image = self.image_layer
        if self.preview_check.isChecked() and image is not None:
            self._start_tracking(image)
            fit_kwargs["preview_image"] = plane
            fit_kwargs["preview_region"] = self._region
        self._show_plot()
        self.progress.setFormat("epoch %v / %m")
        self.progress.setRange(0, config.epochs)
        self.progress.setValue(0)
        self.jobs.run(
            "Training",
            training_job,
            job.get("images"),
            job.get("labels"),
            config,
            job.get("base_model"),
            job.get("trainer"),
            fit_kwargs,
            kind="train",
            on_yield=self._on_event,
            on_done=self._on_training_done,
            status="Starting…",
        )
        if "preview_image" in fit_kwargs:
            # creating a layer costs napari 0.1-0.8 s (vispy visuals): after the click
            # returns, while the worker reads the model. (Scheduled after the job's
            # progress bar, whose creation makes napari process pending events.)
            QTimer.singleShot(0, lambda: self._prepare_live(image, config.live_saliency))
        self._set_state()

    def _prepare_live(self, image: Image, saliency: str | None) -> None:
        if image not in self.viewer.layers:
            return
        self.live.ensure_preview(image)
        if saliency:
            self.live.ensure_saliency(image)

    def stop_training(self) -> None:
        """Stop: training ends after the current step and keeps what it learnt.

        During a block-by-block prediction, Stop cancels it instead (nothing is kept).
        """
        if not self.is_training:
            if self.jobs.cancel("predict"):
                self._set_status("Cancelling the prediction…")
            return
        self.jobs.cancel("train")
        self.stop_btn.setEnabled(False)
        self._set_status("Stopping after this step; keeping what was learnt…")

    def _start_tracking(self, image: Image) -> None:
        if self._tracker is not None and self._tracker.layer is image:
            self._tracker.update()
            return
        self._stop_tracking()
        self._tracker = ViewportTracker(self.viewer, image, self._region)

    def _stop_tracking(self) -> None:
        if self._tracker is not None:
            self._tracker.disconnect()
            self._tracker = None

    # ------------------------------------------------------------------ events
    def _on_event(self, ev: Any) -> None:
        from napari_dlcb.training import events as E

        if isinstance(ev, E.Progress):
            self._progress_throttle.submit(ev)
        elif isinstance(ev, E.Preview):
            if isinstance(ev.data, dict):
                if "saliency" in ev.data:  # only some previews carry a map: keep the newest
                    self.live.pending_saliency = ev.data
                elif "saliency_error" in ev.data:
                    notify_warning(ev.data["saliency_error"])
            self._preview_throttle.submit(ev)
        elif isinstance(ev, E.EpochEnd):
            self._on_epoch_end(ev)
        elif isinstance(ev, E.Started):
            self._on_started(ev)
        elif isinstance(ev, E.Warning):
            self._on_warning(ev)
        elif isinstance(ev, E.Finished):
            self._on_finished(ev)
        elif isinstance(ev, TrainerReady):
            self.model_in_use.trainer = ev.trainer
            self.model_in_use.trained_from = self._trained_from
        elif isinstance(ev, Status):
            self._set_status(ev.text)

    def _epoch_number(self, epoch: int) -> int:
        return self._epoch_offset + epoch - self._fit_start_epoch + 1

    def _on_started(self, ev: Any) -> None:
        self._fit_start_epoch = int(ev.start_epoch)
        amp = ", mixed precision" if ev.amp else ""
        self.device_label.setText(
            f"Device: {ev.device}{amp} · {self.mode_combo.currentData()} mode\n"
            f"{ev.n_trainable / 1e6:.2f} M of {ev.n_params / 1e6:.2f} M parameters train"
        )
        self._set_status(f"Training on {ev.n_train} patches ({ev.n_val} for validation)…")

    def _apply_progress(self, ev: Any) -> None:
        if not self.is_training:
            return
        self.status.setText(
            f"Epoch {self._epoch_number(ev.epoch)} · step {ev.step + 1} · loss {ev.loss:.4f}"
            + (f"\n{self._epoch_summary}" if self._epoch_summary else "")
        )

    def _apply_preview(self, ev: Any) -> None:
        image = self.image_layer
        if image is None or not isinstance(ev.data, dict) or "labels" not in ev.data:
            return
        meta = getattr(self.trainer, "meta", None)
        kind = getattr(meta, "label_kind", None) or self.kind_combo.currentText()
        self.live.apply_preview(image, ev.data, kind)
        if self.live.pending_saliency is not None:
            classes = list(getattr(meta, "classes", None) or [])
            self.live.apply_saliency(image, self.live.pending_saliency, classes)
            self.live.pending_saliency = None

    def _on_epoch_end(self, ev: Any) -> None:
        epoch = self._epoch_number(ev.epoch)
        self._last_epoch = epoch - 1
        self.plot.add_epoch(epoch, ev.train_loss, ev.val_loss, is_best=ev.is_best)
        val = "n/a" if not np.isfinite(ev.val_loss) else f"{ev.val_loss:.4f}"
        self._epoch_summary = (
            f"Epoch {epoch}: train {ev.train_loss:.4f} · val {val} · "
            f"{ev.samples_per_s:.1f} samples/s · {ev.seconds:.1f} s/epoch"
        )
        set_progress(self.progress, min(epoch - self._epoch_offset, self._total_epochs))
        self._progress_throttle.cancel()
        self.status.setText(self._epoch_summary)
        if self.plot.onset is not None and not self._overfit_notified:
            self._overfit_notified = True
            notify_warning(self.plot.warning_label.text().lstrip("\u26a0 "))

    def _on_warning(self, ev: Any) -> None:
        if ev.kind == "overfitting":
            epoch = self._epoch_number(ev.epoch) if ev.epoch >= 0 else None
            self.plot.show_warning(ev.message, epoch=epoch)
            if not self._overfit_notified:
                self._overfit_notified = True
                notify_warning(ev.message)
        elif ev.kind == "lr_decay":
            self._set_status(ev.message)
        else:
            notify_warning(ev.message)

    def _on_finished(self, ev: Any) -> None:
        self.last_finished = ev
        self.model_in_use.kept = ev.kept
        self._set_status(self._finished_text(ev))

    def _finished_text(self, ev: Any) -> str:
        kept = ev.kept or "the last weights"
        summary = f"\n{self._epoch_summary}" if self._epoch_summary else ""
        return f"{REASONS.get(ev.reason, ev.reason)}; the model now holds {kept}.{summary}"

    def _on_training_done(self, job: Any) -> None:
        self._preview_throttle.flush()
        self._progress_throttle.cancel()
        self._stop_tracking()
        if not job.failed and self.last_finished is not None:
            self._set_status(self._finished_text(self.last_finished))
        self._set_state()
