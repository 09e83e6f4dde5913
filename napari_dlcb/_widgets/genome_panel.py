"""The Genome view's dock: a locus bar on top, then tabs (Files, Model, Predict, Variants, Motifs, Train).

Only Qt widgets here (no logic): :class:`~napari_dlcb._widgets.genome.GenomeWidget`
wires them to jobs. Tabs keep the dock shorter than a 1000-px screen.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import StatusText
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb._widgets.genome_motifs import ATTRIBUTION_METHODS, MotifTable
from napari_dlcb.device import DEVICE_CHOICES

__all__ = ["GenomePanel"]

#: file-dialog filters of the file fields
FILTERS = {
    "fasta": "FASTA (*.fa *.fasta *.fna *.fa.gz *.fasta.gz *.fna.gz)",
    "bed": "BED (*.bed *.bed.gz *.narrowPeak *.broadPeak)",
    "bigwig": "signal (*.bw *.bigWig *.bedGraph *.bedgraph *.bdg *.bedgraph.gz)",
    "vcf": "VCF (*.vcf *.vcf.gz)",
}


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


class GenomePanel(QWidget):
    """The dock's widgets (see module docs)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.region = QLineEdit()
        self.region.setPlaceholderText("chr2:74,060,453-74,061,452 or a BED name")
        self.region.setToolTip(
            "A locus as UCSC and IGV write it (1-based, both ends included; commas allowed), "
            "or the name of a BED interval"
        )
        self.go_btn = QPushButton("Go")
        self.peak_box = QComboBox()
        self.peak_box.setToolTip("BED intervals the FASTA holds: pick one to show 1 kb around it")
        self.tabs = QTabWidget()
        self.tabs.addTab(self._files_tab(), "Files")
        self.tabs.addTab(self._model_tab(), "Model")
        self.tabs.addTab(self._predict_tab(), "Predict")
        self.tabs.addTab(self._variants_tab(), "Variants")
        self.tabs.addTab(self._motifs_tab(), "Motifs")
        self.tabs.addTab(self._train_tab(), "Train")
        self.status = StatusText(lines=3)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addLayout(_row(self.region, self.go_btn))
        lay.addWidget(self.peak_box)
        lay.addWidget(self.tabs)
        lay.addWidget(self.status)
        lay.addWidget(self.stop_btn)

    # ------------------------------------------------------------------ tabs
    def _files_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        self.fasta, self.bed, self.bigwig, self.vcf = (QLineEdit() for _ in range(4))
        self.bigwig.setToolTip("one or more bigWig/bedGraph files, separated by ';'")
        for label, field, kind in (
            ("FASTA", self.fasta, "fasta"),
            ("intervals (BED)", self.bed, "bed"),
            ("signal (bigWig/bedGraph)", self.bigwig, "bigwig"),
            ("variants (VCF)", self.vcf, "vcf"),
        ):
            browse = QPushButton("…")
            browse.setMaximumWidth(28)
            browse.setToolTip(f"choose a {label} file")
            browse.clicked.connect(lambda _=False, f=field, k=kind: self._browse(f, k))
            form.addRow(label, _row(field, browse))
        self.open_btn = QPushButton("Open files…")
        self.sample_btn = QPushButton("Use sample genome")
        lay = QVBoxLayout(tab)
        lay.addLayout(form)
        lay.addLayout(_row(self.open_btn, self.sample_btn))
        lay.addStretch(1)
        return tab

    def _model_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        self.model_path = QLineEdit("builtin")
        self.model_path.setToolTip(
            "'builtin' (the synthetic-genome demo model, for the sample), "
            "'builtin:dna-encode' (trained on real ChIP-seq peaks: ARID3A, FOXM1, GATA3, "
            "Oct4, MafK), 'builtin:<name>' or a saved napari-dlcb model folder"
        )
        self.model_browse = QPushButton("Browse…")
        self.device = QComboBox()
        self.device.addItems(list(DEVICE_CHOICES))
        self.device.setToolTip("auto: CUDA, then Apple MPS, then CPU")
        self.target = QComboBox()
        self.target.setToolTip("the model output (task) that maps and logos explain")
        self.model_info = StatusText(lines=5)
        form.addRow("model", _row(self.model_path, self.model_browse))
        form.addRow("device", self.device)
        form.addRow("task", self.target)
        lay = QVBoxLayout(tab)
        lay.addLayout(form)
        lay.addWidget(self.model_info)
        lay.addStretch(1)
        return tab

    def _predict_tab(self) -> QWidget:
        tab = QWidget()
        self.pred_btn = QPushButton("Predict tracks")
        self.mm_btn = QPushButton("Mutation map")
        self.attr_btn = QPushButton("Attribution")
        self.attr_method = QComboBox()
        self.attr_method.addItems(list(ATTRIBUTION_METHODS))
        lay = QVBoxLayout(tab)
        lay.addLayout(_row(self.pred_btn, self.mm_btn))
        lay.addLayout(_row(self.attr_btn, self.attr_method))
        lay.addStretch(1)
        return tab

    def _variants_tab(self) -> QWidget:
        tab = QWidget()
        self.effects = QTableWidget(0, 4)
        self.effects.setHorizontalHeaderLabels(["task", "ref", "alt", "alt - ref"])
        self.effects.setToolTip("select a variant (triangle) in the viewer to score it")
        lay = QVBoxLayout(tab)
        lay.addWidget(self.effects)
        return tab

    def _motifs_tab(self) -> QWidget:
        tab = QWidget()
        self.motif_btn = QPushButton("Filter motifs")
        self.scan_btn = QPushButton("Scan motifs")
        self.scan_threshold = QDoubleSpinBox()
        self.scan_threshold.setRange(0.5, 1.0)
        self.scan_threshold.setSingleStep(0.01)
        self.scan_threshold.setValue(0.9)
        self.scan_threshold.setToolTip("relative PWM score a site must reach (0-1)")
        self.motif_table = MotifTable()
        lay = QVBoxLayout(tab)
        lay.addLayout(_row(self.motif_btn, self.scan_btn, self.scan_threshold))
        lay.addWidget(self.motif_table)
        return tab

    def _train_tab(self) -> QWidget:
        tab, form = QWidget(), QFormLayout()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 200)
        self.epochs.setValue(5)
        self.train_btn = QPushButton("Train on intervals")
        self.train_btn.setToolTip(
            "train a DeepBind model on 200 bp windows centred on the BED intervals, one task "
            "per interval name, with dinucleotide-shuffled negatives"
        )
        self.plot = LearningCurvePlot()
        form.addRow("epochs", self.epochs)
        lay = QVBoxLayout(tab)
        lay.addLayout(form)
        lay.addWidget(self.train_btn)
        lay.addWidget(self.plot)
        return tab

    # ------------------------------------------------------------------ dialogs
    def _browse(self, field: QLineEdit, kind: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Open {kind}", "", FILTERS[kind])
        if path:
            self.open_files([path])

    def open_files(self, paths: list[str]) -> None:  # pragma: no cover - the widget's
        """Open genome files (implemented by the widget)."""
        raise NotImplementedError
