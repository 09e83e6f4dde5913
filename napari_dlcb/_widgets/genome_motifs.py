"""Motif parts of the genome view: filter-motif table with logos, motif scan, attribution logos.

Thin adapters (STYLE rule 1) over :mod:`napari_dlcb.interpret.motifs`,
:mod:`napari_dlcb.interpret.dna_attribution` and
:func:`napari_dlcb.interpret.logo.logo_image`; the workers are napari
``thread_worker`` generators run by :class:`~napari_dlcb._widgets.genome.GenomeWidget`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QTableWidget, QTableWidgetItem

__all__ = [
    "ATTRIBUTION_METHODS",
    "MotifTable",
    "attribution_worker",
    "filter_motif_worker",
    "logo_layer_kwargs",
    "logo_pixmap",
    "scan_worker",
]

#: GUI label -> function name in :mod:`napari_dlcb.interpret.dna_attribution`
ATTRIBUTION_METHODS = {
    "integrated gradients": "integrated_gradients",
    "gradient x input": "gradient_x_input",
    "DeepLIFT/SHAP": "deep_lift_shap",
}
LOGO_ROWS = 64  # pixel rows of an attribution logo
LOGO_PX_PER_BASE = 16  # full-resolution letter width
SMALLEST_LEVEL = 4096  # columns of the coarsest level (below any GL texture limit)


def logo_pixmap(heights: np.ndarray, *, height: int = 36, px_per_base: int = 9) -> QPixmap:
    """A (4, w) height matrix drawn as a logo, for a table cell."""
    from napari_dlcb.interpret.logo import logo_image

    img = np.ascontiguousarray(logo_image(heights, px_per_base=px_per_base, height=height))
    q = QImage(img.data, img.shape[1], img.shape[0], 4 * img.shape[1], QImage.Format_RGBA8888)
    return QPixmap.fromImage(q.copy())


def logo_layer_kwargs(
    values: np.ndarray, one_hot: np.ndarray, start: float
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Multiscale RGBA logo of a (4, L) attribution map and the attribution band's scale/translate.

    A 1 kb logo at 16 px per base is 16,000 columns, wider than an OpenGL
    texture on many GPUs; napari would show it decimated (letters torn into
    slivers). As a multiscale layer, napari loads only the visible part of the
    level that suits the zoom, so letters stay sharp when zoomed in.

    Each position's total contribution (the sum over the 4 channels, which
    DeepLIFT and integrated gradients spread over all of them) is drawn as the
    observed base, as in tangermeme's and DeepLIFT's logos.
    """
    from napari_dlcb.interpret.logo import logo_image, logo_placement
    from napari_dlcb.io.genome import BANDS, ROW_SCALE

    values = values.sum(0, keepdims=True) * one_hot
    length = values.shape[1]
    img = logo_image(values, px_per_base=LOGO_PX_PER_BASE, height=LOGO_ROWS, gap=2)
    top = BANDS["attribution"] * ROW_SCALE - ROW_SCALE / 2  # band's top edge, as the 4-row maps
    place = logo_placement(length, img.shape, start=start, band_top=top, band_height=2 * ROW_SCALE)
    levels = [img]
    while levels[-1].shape[1] > SMALLEST_LEVEL:
        levels.append(np.ascontiguousarray(levels[-1][:, ::2]))
    return levels, place


@thread_worker
def attribution_worker(model: Any, x: np.ndarray, target: int, method: str):
    """Yield ``(target, method, Attribution)`` for one-hot ``x`` (1, 4, L)."""
    from napari_dlcb.interpret import dna_attribution

    fn = getattr(dna_attribution, ATTRIBUTION_METHODS[method])
    kwargs = {"n_steps": 32} if method == "integrated gradients" else {}
    yield target, method, fn(model, x, target=target, **kwargs)


@thread_worker
def filter_motif_worker(model: Any, x: np.ndarray, database: str = "jaspar"):
    """Yield ``(motifs, best)``: first-layer filter motifs on ``x`` and each one's best match."""
    from napari_dlcb.interpret.motifs import filter_motifs, load_motif_database, match_motifs

    motifs = filter_motifs(model, x, trim=True)
    yield "status", f"{len(motifs)} filter motifs; matching against {database}..."
    db = load_motif_database(database)
    matches = match_motifs(motifs, db)
    best = matches.sort_values("p_value").drop_duplicates("filter").reset_index(drop=True)
    yield "done", motifs, best, db


@thread_worker
def scan_worker(x: np.ndarray, motifs: list, threshold: float):
    """Yield the sites of ``motifs`` in one-hot ``x`` (4, L) (a DataFrame)."""
    from napari_dlcb.interpret.motifs import scan_motifs

    yield scan_motifs(x, motifs, min_relative_score=threshold)


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
