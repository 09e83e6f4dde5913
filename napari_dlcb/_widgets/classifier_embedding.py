"""Cell classifier dock, embedding view: a 2-D map of the cells, linked to the labels.

:class:`EmbeddingMixin` is the part of :class:`~napari_dlcb._widgets.classifier.CellClassifierWidget`
that computes the embedding of the per-cell network features in a job
(:meth:`~napari_dlcb.tasks.cells.CellClassificationTask.iter_embedding`, with
progress; or, with the feature source "autoencoder", the pretrained encoder's
features by :func:`~napari_dlcb.tasks.pretrain.iter_object_embedding`, before
any cell is labelled), shows it as a Points layer beside the labels, colours it by a
class, a probability or any measurement, and links its selection to the
labels layer both ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_dlcb._widgets._common import layer_grid, refill_combo
from napari_dlcb._widgets.classifier_results import CLASS_COLORS

__all__ = [
    "BY_ANNOTATED",
    "BY_PREDICTED",
    "EMBEDDING_LAYER",
    "EMBEDDING_TOOLTIP",
    "EmbeddingMixin",
    "UNANNOTATED_COLOR",
    "continuous_colors",
]

EMBEDDING_LAYER = "cell embedding"
UNANNOTATED_COLOR = "#d9d9d9"  # embedding points of cells nobody labelled
MISSING_COLOR = "#808080"  # embedding points without a value for the chosen measurement
CONTINUOUS_COLORMAP = "viridis"
BY_PREDICTED = "predicted class"
BY_ANNOTATED = "annotated class"
EMBEDDING_TOOLTIP = (
    "2-D map of the network's per-cell features, computed in the background.\n"
    "pca: instant, linear.\n"
    "umap: non-linear neighbourhoods; its first use in a session compiles code\n"
    "(10 s on a quiet CPU, a minute or more on a busy one), about a second after that.\n"
    "tsne: non-linear neighbourhoods, a few seconds."
)


def continuous_colors(
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


class EmbeddingMixin:
    """The embedding view of the cell classifier dock."""

    jobs: Any
    viewer: Any
    task: Any

    @property
    def embedding_worker(self) -> Any:
        """The worker of a running embedding job, or None."""
        job = self.jobs.job("model")
        return job.worker if job is not None and job.name == "Embedding" else None

    def _embedding_clicked(self) -> None:
        self.show_embedding()

    def show_embedding(self, method: str | None = None) -> Any:
        """Compute the 2-D embedding of the per-object features in a job.

        The result becomes a Points layer beside the labels, linked to them and
        coloured as "colour by" says. Returns the job (None if nothing started).
        """
        from napari_dlcb._widgets.classifier_pretrain import FEATURES_AUTOENCODER

        if self.jobs.busy("train"):
            self.jobs.report("training is running: compute the embedding when it has finished")
            return None
        if method is not None:
            self.embedding_method.setCurrentText(method)
        method = self.embedding_method.currentText() or "pca"
        if self.embedding_source.currentText() == FEATURES_AUTOENCODER:
            job = self.autoencoder_embedding_job(method)
        elif self.task is None or self.probs is None:
            self.jobs.report(
                "train the classifier first (or pretrain and embed the autoencoder's features)"
            )
            return None
        else:
            job = self._classifier_embedding_job(method)
        if job is None:
            if self.jobs.busy("model"):
                self.jobs.report(
                    f"{self.jobs.job('model').name} is running: wait for it or press Stop"
                )
            return None
        self.embedding_button.setEnabled(False)
        return job

    def _classifier_embedding_job(self, method: str) -> Any:
        return self.jobs.run(
            "Embedding",
            self.task.iter_embedding,
            kind="model",
            method=method,
            probs=self.probs,
            on_return=self._add_embedding,
            on_done=self._model_job_done,
            status=f"computing the {method} embedding…",
        )

    def _add_embedding(self, result: Any) -> Any:
        if result is None:  # stopped
            return None
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
        source = self.embedding_source.currentText()
        layer = self.viewer.add_points(  # made active: its points select cells
            coords, name=EMBEDDING_LAYER, features=features, size=6, border_width=0,
            metadata={"method": result.method, "features": source},
        )  # fmt: skip
        layer.selected_data.events.items_changed.connect(self._on_point_selected)
        self.embedding_layer = layer
        self._embedding_table = features
        self.n_embeddings += 1
        self._fill_color_choices(features)
        self.color_embedding()
        self.status.setText(f"{result.method} embedding of {len(coords)} cells ({source} features)")
        return layer

    def _fill_color_choices(self, table: Any) -> None:
        """Fill "colour by": both class columns, each probability, every numeric measurement."""
        import pandas as pd

        choices: dict[str, tuple[str, str]] = {}
        if "class" in table.columns:
            choices[BY_PREDICTED] = ("class", "class")
        choices[BY_ANNOTATED] = ("class", "annotated")
        for name in self._embedding_classes():
            if f"prob_{name}" in table.columns:
                choices[f"probability of {name}"] = ("value", f"prob_{name}")
        for col in table.columns:
            if col in ("object_id", "class", "annotated") or col.startswith("prob_"):
                continue
            dtype = table[col].dtype
            if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                choices[col] = ("value", col)
        self._color_choices = choices
        refill_combo(self.color_by, list(choices), default=next(iter(choices)))
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
            self.jobs.report("compute the embedding first")
            return
        if choice is not None:
            if choice not in self._color_choices:
                self.jobs.report(f"cannot colour by {choice!r}: choose one of the list")
                return
            self.color_by.blockSignals(True)
            self.color_by.setCurrentText(choice)
            self.color_by.blockSignals(False)
        choice = self.color_by.currentText() or BY_PREDICTED
        kind, column = self._color_choices.get(choice, next(iter(self._color_choices.values())))
        values = self._embedding_table[column].to_numpy()
        if kind == "class":
            index = {c: k for k, c in enumerate(self._embedding_classes())}
            layer.face_color = [
                CLASS_COLORS[index[v] % len(CLASS_COLORS)] if v in index else UNANNOTATED_COLOR
                for v in values
            ]
            layer.metadata["colour_by"] = {"name": choice, "column": column}
            self.status.setText(f"embedding coloured by {choice}")
            return
        colors, (lo, hi) = continuous_colors(values)
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

    def _embedding_classes(self) -> list[str]:
        """The classes colouring the embedding: the trained task's, else the dock's list."""
        return list(self.task.classes) if self.task is not None else list(self.classes)

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
