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

from napari_dlcb.errors import DlcbError

__all__ = [
    "ATTRIBUTION_METHODS",
    "MotifActions",
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


def attribution_job(
    model: Any, x: np.ndarray, *, region: Any, task: str, target: int, method: str, device: str
) -> tuple[Any, list, Any]:
    """The attribution of one-hot ``x`` (1, 4, L) and its logo track (both made in the worker)."""
    from napari_dlcb.interpret import dna_attribution
    from napari_dlcb.tasks.genome_layers import attribution_layers

    fn = getattr(dna_attribution, ATTRIBUTION_METHODS[method])
    kwargs = {"n_steps": 32} if method == "integrated gradients" else {}
    attr = fn(model, x, target=target, device=device, **kwargs)
    layers, track = attribution_layers(
        region, attr.map[0], x[0], method=method, task=task, delta=float(attr.completeness[0])
    )
    return attr, layers, track


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


def _one_hot(seq: Any) -> np.ndarray:
    from napari_dlcb.data.onehot import one_hot

    return one_hot(seq)


class MotifActions:
    """Filter motifs and motif scans of the Genome view (a mixin, see ``genome_actions``)."""

    def _motif_windows(self, length: int, seq: str) -> np.ndarray:
        """One-hot windows for filter motifs: every BED interval the FASTA holds, else the region."""
        held = self.files.held_intervals() if self.files is not None else None
        if held is None or not len(held):
            return _one_hot(seq)
        half = length // 2
        mids = (held["start"].to_numpy() + held["end"].to_numpy()) // 2
        g = self.files.genome
        return _one_hot(
            [g.fetch(c, m - half, m + half, pad=True) for c, m in zip(held["chrom"], mids)]
        )

    def start_filter_motifs(self) -> None:
        """PWMs of the model's first-layer filters, matched against bundled JASPAR 2024 CORE."""
        self._with_model(self._filter_motifs)

    def _filter_motifs(self, model: Any, meta: Any, region: Any, seq: str) -> None:
        x = self._motif_windows(int(meta.extra.get("length", 200)), seq)
        self.jobs.run(
            "Filter motifs",
            filter_motif_job,
            model,
            x,
            kind="motifs",
            replace=True,
            on_return=lambda res: self._on_motifs(*res),
        )

    def _on_motifs(self, motifs: list, best: Any, db: list) -> None:
        self.filter_motifs, self.motif_matches = motifs, best
        self.motif_table.show_motifs(motifs, best)
        good = best[best.q_value < 0.05]
        names = {m.name: m for m in db}
        # the motifs a scan looks for: the significant best matches of the filters
        self._motif_hits_source = [names[t] for t in dict.fromkeys(good.target) if t in names]
        self.status.setText(
            f"{len(best)} filters matched; {len(good)} with q < 0.05 "
            f"({len(self._motif_hits_source)} distinct motifs for Scan motifs)"
        )

    def start_scan(self) -> None:
        """Scan the region for the filters' motifs (else the JASPAR motifs named like the tasks)."""
        self._with_model(self._scan)

    def _scan(self, model: Any, meta: Any, region: Any, seq: str) -> None:
        self.jobs.run(
            "Scan motifs",
            _scan_job,
            _one_hot(seq)[0],
            list(self._motif_hits_source),
            [str(c) for c in meta.classes],
            float(self.scan_threshold.value()),
            kind="scan",
            replace=True,
            on_return=lambda hits: self._on_scan(region, hits),
        )

    def _on_scan(self, region: Any, hits: Any) -> None:
        from napari_dlcb.tasks.genome_layers import motif_layers

        if not self._still_shown(region):
            return
        if hits.empty:
            self.browser.remove_track("motif_hits")
            self.status.setText("motif scan: no sites above the threshold")
            return
        layers, track = motif_layers(region, hits)
        self.browser.set_track(track, layers)
        self.status.setText(f"motif scan: {len(hits)} sites of {hits.motif.nunique()} motifs")


def _scan_job(x: np.ndarray, motifs: list, tasks: list[str], threshold: float) -> Any:
    """Sites of ``motifs`` in one-hot ``x`` (4, L); without motifs, the JASPAR ones named like ``tasks``."""
    from napari_dlcb.interpret.motifs import load_motif_database, scan_motifs

    if not motifs:
        wanted = {t.upper() for t in tasks}
        motifs = [m for m in load_motif_database("jaspar") if m.name.split()[-1].upper() in wanted]
        if not motifs:
            raise DlcbError("no motifs to scan for: run Filter motifs first")
    return scan_motifs(x, motifs, min_relative_score=threshold)
