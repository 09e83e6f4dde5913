"""Cell classifier dock: "start from", pretraining on every cell, and the MIL image classifier.

:class:`PretrainMixin` is the part of
:class:`~napari_dlcb._widgets.classifier.CellClassifierWidget` that

- holds the "start from" model (``builtin``, a saved classifier or a
  pretrained encoder), which the dock's :class:`~napari_dlcb.tasks.cells.CellsConfig`
  uses as its ``base``;
- runs "Pretrain on all cells of this image": a denoising autoencoder on a
  crop of every object (:meth:`~napari_dlcb.tasks.pretrain.AutoencoderPretrainer.from_objects`,
  starting from the "start from" model) as a job with progress and Stop; the
  encoder is saved under the plugin's cache and becomes "start from", and
  the embedding can then use its features;
- classifies the whole image with a multiple-instance (MIL) model
  (:func:`~napari_dlcb.tasks.mil.classify_image`) and shows its localisation
  map as a layer on the image.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton

from napari_dlcb._widgets._common import layer_grid
from napari_dlcb._widgets.classifier_results import MIL_HEATMAP_LAYER, keep_active_layer
from napari_dlcb._widgets.model_field import ModelField, check_model_source
from napari_dlcb.errors import DlcbError

__all__ = ["FEATURES_AUTOENCODER", "FEATURES_CLASSIFIER", "MIL_HEATMAP_LAYER", "PretrainMixin"]

FEATURES_CLASSIFIER = "classifier"
FEATURES_AUTOENCODER = "autoencoder"


class PretrainMixin:
    """Start-from model, autoencoder pretraining and the MIL section of the cell classifier dock."""

    viewer: Any
    jobs: Any
    status: Any

    def _build_pretrain_fields(self) -> None:
        self.base_field = ModelField("builtin")
        self.base_field.edit.setToolTip(
            "The network training starts from: 'builtin', a saved classifier, or an encoder "
            "pretrained without labels (e.g. by 'Pretrain on all cells of this image')"
        )
        self.pretrain_button = QPushButton("Pretrain on all cells of this image")
        self.pretrain_button.setToolTip(
            "Train the encoder as a denoising autoencoder on a crop of every cell (no labels "
            "needed), starting from 'start from'; the result becomes 'start from' and can "
            "feed the embedding. Stop keeps what was learnt."
        )
        self.pretrained_model: str | None = None
        self._pretrain_message = ""
        self.embedding_source = QComboBox()
        self.embedding_source.addItems([FEATURES_CLASSIFIER, FEATURES_AUTOENCODER])
        self.embedding_source.setToolTip(
            "Features of the embedding: the trained classifier's, or the pretrained "
            "autoencoder's (available after pretraining, even before any cell is labelled)"
        )
        self.mil_model = ModelField("")
        self.mil_model.edit.setPlaceholderText("a model trained with 'train classification --mil'")
        self.mil_button = QPushButton("Classify image (MIL)")
        self.mil_button.setToolTip(
            "Classify the whole image with a multiple-instance model and show where the "
            f"evidence lies as the '{MIL_HEATMAP_LAYER}' layer"
        )
        self.last_mil: Any = None

    def _pretrain_rows(self, form: QFormLayout) -> None:
        form.addRow("start from", self.base_field)
        form.addRow(self.pretrain_button)

    def _mil_rows(self, layout: Any) -> None:
        mil = QFormLayout()
        mil.addRow(QLabel("Image classifier (MIL)"))
        row = QHBoxLayout()
        row.addWidget(self.mil_model)
        row.addWidget(self.mil_button)
        mil.addRow("model", row)
        layout.addLayout(mil)

    def _connect_pretrain(self) -> None:
        self.pretrain_button.clicked.connect(self._pretrain_clicked)
        self.mil_button.clicked.connect(self._mil_clicked)

    def base_source(self) -> str:
        """The "start from" model, checked (one-line DlcbError if it cannot be one)."""
        return check_model_source(self.base_field.text())

    # ------------------------------------------------------------------ pretraining
    def _pretrain_clicked(self) -> None:
        self.start_pretraining()

    def pretrain_config(self) -> Any:
        """The :class:`~napari_dlcb.tasks.classification_config.PretrainConfig` the dock builds."""
        from napari_dlcb.tasks.classification_config import PretrainConfig

        return PretrainConfig(base=self.base_source(), epochs=int(self.epochs_spin.value()))

    def start_pretraining(self) -> Any:
        """Pretrain on a crop of every object of the labels layer, in a job (returns it)."""
        from napari_dlcb._widgets.classifier import image_2d
        from napari_dlcb._widgets.classifier_jobs import pretrain_job
        from napari_dlcb.io.project import user_cache_dir

        if self.jobs.busy("train"):
            self.jobs.report("training is running: pretrain when it has finished")
            return None
        try:
            config = self.pretrain_config().validate()
            image, channel_axis = image_2d(self.image_layer)
            labels = np.asarray(self.labels_layer.data)
            crop = self.config().crop_size
        except DlcbError as err:
            self.jobs.report(err)
            return None
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.image_layer.name)[:40] or "image"
        out = user_cache_dir() / "models" / f"pretrained-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.train_button.setEnabled(False)
        self.pretrain_button.setEnabled(False)
        self._pretrain_message = ""
        return self.jobs.run(
            "Pretraining",
            pretrain_job,
            image,
            labels,
            config,
            crop_size=crop,
            channel_axis=channel_axis,
            out=str(out),
            kind="train",
            on_yield=self._on_pretrain_event,
            on_done=self._on_pretrain_done,
            status="pretraining on every cell (denoising autoencoder)…",
        )

    def _on_pretrain_event(self, ev: Any) -> None:
        from napari_dlcb._widgets.classifier_jobs import Pretrained
        from napari_dlcb.training.events import EpochEnd

        if isinstance(ev, EpochEnd):
            self.status.setText(
                f"pretraining epoch {ev.epoch + 1}: reconstruction error {ev.train_loss:.3f}"
            )
        elif isinstance(ev, Pretrained):
            self.pretrained_model = ev.path
            self.base_field.edit.setText(ev.path)
            self.embedding_source.setCurrentText(FEATURES_AUTOENCODER)
            self._pretrain_message = (
                f"pretrained on {ev.n_cells} cells (reconstruction error {ev.error_before:.3f} "
                f"-> {ev.error_after:.3f}; {ev.kept}); 'start from' now uses it"
            )
            self.status.setText(self._pretrain_message)

    def _on_pretrain_done(self, job: Any) -> None:
        if not job.failed and job.cancelled and self._pretrain_message:
            self.status.setText(f"stopped: {self._pretrain_message}")
        self.train_button.setEnabled(True)
        self.pretrain_button.setEnabled(True)
        self.embedding_button.setEnabled(
            self.pretrained_model is not None or (self.task is not None and self.probs is not None)
        )

    # ------------------------------------------------------------------ embedding source
    def autoencoder_embedding_job(self, method: str) -> Any:
        """The embedding job on the pretrained encoder's features (None if it cannot start)."""
        from napari_dlcb._widgets.classifier import image_2d
        from napari_dlcb.tasks.pretrain import iter_object_embedding

        if self.pretrained_model is None:
            self.jobs.report("pretrain first: 'Pretrain on all cells of this image'")
            return None
        image, channel_axis = image_2d(self.image_layer)
        crop = self.config().crop_size
        return self.jobs.run(
            "Embedding",
            iter_object_embedding,
            image,
            np.asarray(self.labels_layer.data),
            self.pretrained_model,
            kind="model",
            method=method,
            crop_size=None if crop == "auto" else crop,
            channel_axis=channel_axis,
            annotations=dict(self.annotations),
            on_return=self._add_embedding,
            on_done=self._model_job_done,
            status=f"computing the {method} embedding of the autoencoder's features…",
        )

    # ------------------------------------------------------------------ MIL
    def _mil_clicked(self) -> None:
        self.classify_image_mil()

    def classify_image_mil(self) -> Any:
        """Classify the chosen image with the MIL model in a job; the heatmap becomes a layer."""
        from napari_dlcb._widgets.classifier import image_2d
        from napari_dlcb._widgets.classifier_jobs import mil_job

        try:
            if not self.mil_model.text().strip():
                raise DlcbError("choose a MIL model (trained with 'train classification --mil')")
            source = check_model_source(self.mil_model.text())
            layer = self.image_layer
            image, channel_axis = image_2d(layer)
        except DlcbError as err:
            self.jobs.report(err)
            return None
        grid = layer_grid(layer)
        job = self.jobs.run(
            "MIL classification",
            mil_job,
            source,
            image,
            channel_axis=channel_axis,
            kind="mil",
            on_yield=lambda item: self._on_mil_result(item, grid),
            status="classifying the image (MIL)…",
        )
        if job is None:
            self.jobs.report("a MIL classification is running: wait for it or press Stop")
        return job

    def _on_mil_result(self, item: Any, grid: dict[str, Any]) -> None:
        from napari_dlcb.tasks.mil import MILPrediction

        if not isinstance(item, MILPrediction):
            return
        self.last_mil = item
        hm = np.asarray(item.heatmap, np.float32)
        hi = float(hm.max()) if hm.size and float(hm.max()) > 0 else 1.0
        meta = {"mil": {"classes": item.classes, "probs": item.probs.tolist(),
                        "predicted": item.predicted, "heatmap": item.heatmap_kind}}  # fmt: skip
        if MIL_HEATMAP_LAYER in self.viewer.layers:
            layer = self.viewer.layers[MIL_HEATMAP_LAYER]
            layer.data = hm
            layer.scale, layer.translate = grid["scale"], grid["translate"]
            layer.contrast_limits = (0.0, hi)
            layer.metadata.update(meta)
        else:
            with keep_active_layer(self.viewer):
                self.viewer.add_image(
                    hm, name=MIL_HEATMAP_LAYER, colormap="inferno", blending="additive",
                    opacity=0.6, contrast_limits=(0.0, hi), metadata=meta, **grid,
                )  # fmt: skip
        p = float(np.max(item.probs))
        self.status.setText(
            f"image classified as '{item.predicted}' (p = {p:.2f}); heatmap: {item.heatmap_kind}"
        )
