"""Motif and attribution parts of the Genome view: the filter-motif table and the jobs behind it.

Thin adapters (STYLE rule 2) over :mod:`napari_dlcb.interpret.motifs`,
:mod:`napari_dlcb.interpret.dna_attribution` and
:func:`napari_dlcb.interpret.logo.logo_image`. The job functions run in the
Genome view's :class:`~napari_dlcb._widgets._jobs.JobRunner`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QTableWidget, QTableWidgetItem

__all__ = [
    "ATTRIBUTION_METHODS",
    "MotifTable",
    "attribution_job",
    "filter_motif_job",
    "logo_pixmap",
]

#: GUI label -> function name in :mod:`napari_dlcb.interpret.dna_attribution`
ATTRIBUTION_METHODS = {
    "integrated gradients": "dna_integrated_gradients",
    "gradient x input": "gradient_x_input",
    "DeepLIFT/SHAP": "deeplift_shap",
}


def logo_pixmap(heights: np.ndarray, *, height: int = 36, px_per_base: int = 9) -> QPixmap:
    """A (4, w) height matrix drawn as a logo, for a table cell."""
    from napari_dlcb.interpret.logo import logo_image

    img = np.ascontiguousarray(logo_image(heights, px_per_base=px_per_base, height=height))
    q = QImage(img.data, img.shape[1], img.shape[0], 4 * img.shape[1], QImage.Format_RGBA8888)
    return QPixmap.fromImage(q.copy())


def attribution_job(model: Any, x: np.ndarray, *, target: int, method: str, device: str) -> Any:
    """The :class:`~napari_dlcb.interpret.attribution.Attribution` of one-hot ``x`` (1, 4, L)."""
    from napari_dlcb.interpret import dna_attribution

    fn = getattr(dna_attribution, ATTRIBUTION_METHODS[method])
    kwargs = {"n_steps": 32} if method == "integrated gradients" else {}
    return fn(model, x, target=target, device=device, **kwargs)


def filter_motif_job(model: Any, x: np.ndarray, database: str = "jaspar") -> Iterator[Any]:
    """First-layer filter motifs on ``x``; returns ``(motifs, best match per filter, database)``."""
    from napari_dlcb.interpret.motifs import filter_motifs, load_motif_database, match_motifs
    from napari_dlcb.training.events import JobProgress

    motifs = filter_motifs(model, x, trim=True)
    yield JobProgress(1, 2, f"{len(motifs)} filter motifs; matching against {database}...")
    db = load_motif_database(database)
    matches = match_motifs(motifs, db)
    best = matches.sort_values("p_value").drop_duplicates("filter").reset_index(drop=True)
    yield JobProgress(2, 2, "matched")
    return motifs, best, db


class MotifTable(QTableWidget):
    """Filter motifs: logo, best database match, p-value, q-value, sites."""

    HEADERS = ("filter", "logo", "best match", "p", "q", "sites")

    def __init__(self) -> None:
        super().__init__(0, len(self.HEADERS))
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(160)

    def show_motifs(self, motifs: list, best: Any) -> None:
        """Fill one row per matched filter, best p-value first (filters with no sites are left out)."""
        by_name = {m.name: m for m in motifs}
        rows = [r for r in best.itertuples() if r.filter in by_name]
        self.setRowCount(len(rows))
        for i, r in enumerate(rows):
            m = by_name[r.filter]
            heights = m.probabilities() * m.information()[None]
            label = QLabel()
            label.setPixmap(logo_pixmap(heights))
            label.setAlignment(Qt.AlignCenter)
            label.setToolTip(m.consensus())
            self.setItem(i, 0, QTableWidgetItem(r.filter))
            self.setCellWidget(i, 1, label)
            for j, text in enumerate(
                (str(r.target), f"{r.p_value:.1e}", f"{r.q_value:.1e}", str(int(r.n_sites))), 2
            ):
                self.setItem(i, j, QTableWidgetItem(text))
            self.setRowHeight(i, 40)
        self.resizeColumnsToContents()
