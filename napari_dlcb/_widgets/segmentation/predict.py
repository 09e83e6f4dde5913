"""Predict and Save in the Segmentation dock, each one job.

Predict segments the chosen image (the current plane of a stack) with the
model the dock shows as "in use": the model trained here, or the "Start from"
choice, read from disk in the worker. Big lazy images are segmented block by
block into an OME-Zarr store in the user cache and shown lazily (Stop cancels
and leaves nothing behind). The live prediction is hidden afterwards, so the
final segmentation is what shows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFileDialog

from napari_dlcb._widgets._common import notify_info, plane_shape
from napari_dlcb._widgets._jobs import set_progress
from napari_dlcb._widgets.segmentation import outputs
from napari_dlcb._widgets.segmentation.jobs import (
    blockwise_job,
    export_job,
    predict_job,
    save_job,
)
from napari_dlcb.errors import DlcbError

__all__ = ["BLOCKWISE_PIXELS", "PredictMixin"]

#: Predict on a lazy (dask / zarr / multiscale) image larger than this runs block by
#: block into an OME-Zarr store in the user cache and shows the result lazily, so
#: images larger than memory can be segmented from the GUI (as the CLI does).
BLOCKWISE_PIXELS = 4096 * 4096


class PredictMixin:
    """Predict (in memory or block by block) and Save (part of the dock)."""

    @property
    def predict_worker(self) -> Any:
        """The prediction job's worker, or None."""
        job = self.jobs.job("predict")
        return None if job is None else job.worker

    def predict(self) -> bool:
        """Segment the whole chosen image in a job; add probability and label layers."""
        self._on_base_changed()  # a path typed without Enter counts too
        image = self.image_layer
        problem = None
        if image is None:
            problem = "Choose an image layer to segment."
        elif self.is_training:
            problem = "Stop training first; the live layer shows the visible region meanwhile."
        elif not self.model_in_use.trained and not self.base_choice:
            problem = "Train a model or choose a model to start from."
        if problem is not None:
            self._user_error(problem)
            return False
        if self.jobs.busy("predict"):
            return False
        try:
            config = self.config()
        except DlcbError as err:
            self._user_error(err)
            return False
        data = image.data[0] if image.multiscale else image.data
        index = self.plane_index(image)
        plane = data[index] if index else data
        rows, cols = plane_shape(image)
        if not isinstance(plane, np.ndarray) and rows * cols > BLOCKWISE_PIXELS:
            source = self.model_in_use.source()
            return self._predict_blockwise(image.name, plane, source, config)
        name = image.name
        self.jobs.run(
            "Predicting",
            predict_job,
            self.trainer,
            self.model_in_use.base,
            plane,
            config.channel_axis,
            config.device,
            kind="predict",
            on_return=lambda res: self._on_predicted(res, name),
            on_done=lambda job: self._set_state(),
            status=f"Predicting '{name}' with {self._model_words()}…",
        )
        self._set_state()
        return True

    def _model_words(self) -> str:
        from napari_dlcb._widgets.segmentation.settings import base_name

        if self.model_in_use.trained:
            return "the model trained here"
        return base_name(self.base_choice)

    def _predict_blockwise(self, name: str, plane: Any, source: Any, config: Any) -> bool:
        """Predict a big lazy image block by block (Stop cancels)."""
        from napari_dlcb.io.project import user_cache_dir

        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "image"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = user_cache_dir() / "predictions" / f"{safe}-{stamp}.ome.zarr"
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.progress.setFormat("block %v / %m")
        self.jobs.run(
            "Predicting block by block",
            blockwise_job,
            source,
            plane,
            str(dest),
            config.channel_axis,
            config.device,
            kind="predict",
            on_yield=lambda ev: self._on_block(ev, name),
            on_done=self._on_blockwise_done,
            status=f"Predicting '{name}' block by block into {dest}…",
        )
        self._set_state()
        return True

    def _on_block(self, ev: Any, name: str) -> None:
        if isinstance(ev, dict) and "path" in ev:
            if name in self.viewer.layers:
                outputs.show_blockwise(self.viewer, name, ev["path"])
                self.live.hide_preview()
                self._set_status(f"Segmented '{name}' block by block; stored in {ev['path']}.")
            return
        total = int(ev.total or 0)
        self.progress.setRange(0, max(total, 1))
        set_progress(self.progress, int(ev.done))
        self._set_status(f"Predicting '{name}': {ev.message} {ev.done}/{total}")

    def _on_blockwise_done(self, job: Any) -> None:
        if job.cancelled and not job.failed:
            self._set_status("Prediction cancelled; nothing was kept.")
        self._set_state()

    def _on_predicted(self, result: tuple, name: str) -> None:
        prob, labels, meta = result
        if name not in self.viewer.layers:
            return
        found = outputs.show_prediction(self.viewer, name, prob, labels, meta)
        self.live.hide_preview()
        self._set_status(f"Segmented '{name}' with {self._model_words()}: {found}.")

    # ------------------------------------------------------------------ save
    def _save_clicked(self) -> None:
        if self.trainer is None:
            self._user_error("Nothing to save yet: train a model first.")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model as a folder", str(Path.home() / "dlcb-model"), "Model folder (*)"
        )
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> bool:
        """Save the model trained here to the folder ``path`` in a job."""
        if self.trainer is None:
            self._user_error("Nothing to save yet: train a model first.")
            return False
        if self.is_training:
            self._user_error("Stop training before saving the model.")
            return False
        self.jobs.run(
            "Saving model",
            save_job,
            self.trainer,
            str(path),
            kind="save",
            on_return=self._on_saved,
            on_done=lambda job: self._set_state(),
        )
        self._set_state()
        return True

    def _export_clicked(self) -> None:
        if self.trainer is None:
            self._user_error("Nothing to export yet: train a model first.")
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export to BioImage.IO",
            str(Path.home() / "dlcb-model.zip"),
            "BioImage.IO package (*.zip)",
        )
        if path:
            self.export_model(path)

    def export_model(self, path: str | Path) -> bool:
        """Export the model trained here as a BioImage.IO package ``path`` (.zip), in a job."""
        if self.trainer is None:
            self._user_error("Nothing to export yet: train a model first.")
            return False
        if self.is_training:
            self._user_error("Stop training before exporting the model.")
            return False
        path = Path(path)
        if path.suffix.lower() != ".zip":
            path = path.with_name(path.name + ".zip")
        self.jobs.run(
            "Exporting to BioImage.IO",
            export_job,
            self.trainer,
            str(path),
            kind="export",
            on_return=self._on_exported,
            on_done=lambda job: self._set_state(),
            status=f"Exporting to {path.name} and running the zoo's test…",
        )
        self._set_state()
        return True

    def _on_exported(self, result: Any) -> None:
        self.exported = result
        formats = " + ".join(result.weights)
        verdict = result.test_summary or ("test passed" if result.test_passed else "")
        line = f"Exported {result.path.name} ({formats}); bioimageio test: {verdict}"
        if result.test_passed is False:
            self._user_error(line)
            return
        notify_info(f"Exported to {result.path}")
        self._set_status(line)

    def _on_saved(self, path: Any) -> None:
        self.saved_path = Path(path)
        notify_info(f"Model saved to {path}")
        self._set_status(f"Model saved to {path}")
