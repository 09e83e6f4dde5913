"""Genome view: one region on a shared bp axis, with live mutation maps, predictions and variants.

A thin adapter over the core (STYLE rule 2): the widget reads its inputs into
:class:`GenomeSettings`, and every long computation runs in ONE napari
``thread_worker`` generator whose yields update layers on the main thread:

* **Show region** - :func:`napari_dlcb.io.genome.region_layer_data` (sequence
  one-hot image with letters, signal tracks, intervals, variants);
* **Mutation map** - :func:`napari_dlcb.interpret.ism.iter_mutation_map`, the
  visible part of the region first, then the rest in blocks; the 4 x L
  heatmap layer fills in as blocks arrive. Results are cached per (model,
  sequence, task);
* **Predict tracks** - :func:`napari_dlcb.tasks.sequence.predict_region`;
* **Train on peaks** - :class:`napari_dlcb.tasks.sequence.SequenceTrainer`
  with a live learning curve;
* picking a variant (select a point of the *variants* layer) scores it with
  :func:`napari_dlcb.interpret.variants.score_variants` for every task.

All layers share ``scale``/``translate`` (see ``io.genome.BANDS``), so they pan
and zoom together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import viewer_camera
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb._widgets.genome_motifs import (
    ATTRIBUTION_METHODS,
    MotifTable,
    attribution_worker,
    filter_motif_worker,
    logo_layer_kwargs,
    scan_worker,
)
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["GenomeSettings", "GenomeWidget"]


@dataclass
class GenomeSettings:
    """What the widget's fields say; validated before any work starts."""

    fasta: str
    region: str
    bed: str = ""
    bigwig: str = ""
    vcf: str = ""
    model: str = "builtin"
    target: int = 0

    def validate(self) -> None:
        """Raise :class:`DlcbError` for missing files or an unreadable region."""
        if not self.fasta or not Path(self.fasta).is_file():
            raise DlcbError(f"FASTA file not found: {self.fasta!r}")
        for name in ("bed", "bigwig", "vcf"):
            v = getattr(self, name)
            if v and not Path(v).is_file():
                raise DlcbError(f"{name} file not found: {v}")
        if not self.region:
            raise DlcbError("enter a region: chr:start-end or the name of a BED interval")


class GenomeWidget(QWidget):
    """Dock widget for the genome view (see module docs)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.workers: dict[str, Any] = {}  # one running worker per kind of job
        self._last_mm_draw = 0.0
        self._genome = None
        self._model = None
        self._meta = None
        self._mm_cache: dict[tuple, np.ndarray] = {}
        self._region = None
        self._sequence = ""

        from napari_dlcb._sample_data import GENOME_SAMPLE_REGION

        self.fasta = QLineEdit()
        self.bed = QLineEdit()
        self.bigwig = QLineEdit()
        self.vcf = QLineEdit()
        self.region = QLineEdit(GENOME_SAMPLE_REGION)
        self.region.setPlaceholderText("chr:start-end (0-based, half-open) or a BED name")
        self.region.returnPressed.connect(self.show_region)
        self.peak_box = QComboBox()
        self.model_path = QLineEdit("builtin")
        self.target = QComboBox()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 200)
        self.epochs.setValue(5)
        self.sample_btn = QPushButton("Use sample genome")
        self.show_btn = QPushButton("Show region")
        self.mm_btn = QPushButton("Mutation map")
        self.pred_btn = QPushButton("Predict tracks")
        self.attr_btn = QPushButton("Attribution")
        self.attr_method = QComboBox()
        self.attr_method.addItems(list(ATTRIBUTION_METHODS))
        self.motif_btn = QPushButton("Filter motifs")
        self.scan_btn = QPushButton("Scan motifs")
        self.scan_threshold = QDoubleSpinBox()
        self.scan_threshold.setRange(0.5, 1.0)
        self.scan_threshold.setSingleStep(0.01)
        self.scan_threshold.setValue(0.9)
        self.scan_threshold.setToolTip("relative PWM score a site must reach (0-1)")
        self.motif_table = MotifTable()
        self._motif_hits_source: list = []
        self.train_btn = QPushButton("Train on peaks")
        self.stop_btn = QPushButton("Stop")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.effects = QTableWidget(0, 4)
        self.effects.setHorizontalHeaderLabels(["task", "ref", "alt", "alt - ref"])
        self.plot = LearningCurvePlot()

        form = QFormLayout()
        form.addRow("FASTA", self.fasta)
        form.addRow("peaks (BED)", self.bed)
        form.addRow("signal (bigWig/bedGraph)", self.bigwig)
        form.addRow("variants (VCF)", self.vcf)
        form.addRow("region", self.region)
        form.addRow("go to peak", self.peak_box)
        form.addRow("model", self.model_path)
        form.addRow("task", self.target)
        form.addRow("epochs", self.epochs)
        form.addRow("attribution", self.attr_method)
        form.addRow("scan threshold", self.scan_threshold)
        row1, row2, row3 = QHBoxLayout(), QHBoxLayout(), QHBoxLayout()
        for b in (self.sample_btn, self.show_btn):
            row1.addWidget(b)
        for b in (self.mm_btn, self.attr_btn, self.pred_btn, self.train_btn, self.stop_btn):
            row2.addWidget(b)
        for b in (self.motif_btn, self.scan_btn):
            row3.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row1)
        lay.addLayout(row2)
        lay.addLayout(row3)
        lay.addWidget(self.status)
        lay.addWidget(QLabel("first-layer filter motifs (Filter motifs)"))
        lay.addWidget(self.motif_table)
        lay.addWidget(QLabel("variant effect (select a variant point)"))
        lay.addWidget(self.effects)
        lay.addWidget(self.plot)

        self.sample_btn.clicked.connect(self.use_sample)
        self.show_btn.clicked.connect(self.show_region)
        self.mm_btn.clicked.connect(self.start_mutation_map)
        self.pred_btn.clicked.connect(self.start_predict)
        self.attr_btn.clicked.connect(self.start_attribution)
        self.motif_btn.clicked.connect(self.start_filter_motifs)
        self.scan_btn.clicked.connect(self.start_scan)
        self.train_btn.clicked.connect(self.start_training)
        self.stop_btn.clicked.connect(self.stop)
        self.peak_box.activated.connect(self._go_to_peak)
        viewer_camera(self.viewer).events.zoom.connect(self._update_letters)

    # ------------------------------------------------------------------ inputs
    def settings(self) -> GenomeSettings:
        """Current field values as :class:`GenomeSettings` (validated)."""
        s = GenomeSettings(
            fasta=self.fasta.text().strip(),
            region=self.region.text().strip(),
            bed=self.bed.text().strip(),
            bigwig=self.bigwig.text().strip(),
            vcf=self.vcf.text().strip(),
            model=self.model_path.text().strip() or "builtin",
            target=max(0, self.target.currentIndex()),
        )
        s.validate()
        return s

    def _error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"error: {err}")
        show_error(str(err))

    def use_sample(self) -> None:
        """Fill the file fields with the shipped sample genome and show its region."""
        from napari_dlcb._sample_data import GENOME_SAMPLE_REGION, genome_sample_dir

        d = genome_sample_dir()
        self.fasta.setText(str(d / "sample_genome.fa"))
        self.bed.setText(str(d / "peaks.bed"))
        self.bigwig.setText(str(d / "signal.bw"))
        self.vcf.setText(str(d / "variants.vcf"))
        self.region.setText(GENOME_SAMPLE_REGION)
        self.show_region()

    def open_files(self, paths: list[str]) -> None:
        """Put genome files in their fields (by file name) and show a region once a FASTA is known.

        Each file is opened once here, so a bad one is reported at once with a
        one-line error (and its field is left as it was). A FASTA whose
        chromosomes do not contain the current region moves the region to the
        first kilobase of its first chromosome.
        """
        from napari_dlcb._widgets.genome_reader import genome_file_kind
        from napari_dlcb.io.genome import SignalTrack, parse_region, read_bed, read_fasta, read_vcf

        fields = {"fasta": self.fasta, "bed": self.bed, "vcf": self.vcf, "bigwig": self.bigwig}
        for p in sorted(paths, key=lambda q: genome_file_kind(q) != "fasta"):  # FASTA first
            kind = genome_file_kind(p)
            if kind == "fasta":
                genome = read_fasta(p)
                try:
                    r = parse_region(self.region.text())
                    genome.check(r.chrom, r.start, r.end)
                except DlcbError:
                    chrom, n = next(iter(genome.chromosomes.items()))
                    self.region.setText(f"{chrom}:0-{min(n, 1000)}")
            elif kind == "bed":
                fasta = self.fasta.text().strip()
                read_bed(p, genome=read_fasta(fasta) if fasta else None)
            elif kind == "vcf":
                read_vcf(p)
            elif kind == "bigwig":
                SignalTrack(p).close()
            else:
                raise DlcbError(f"not a genome file: {p}")
            fields[kind].setText(str(p))
        if self.fasta.text().strip():
            self.show_region()
        else:
            self.status.setText("open a FASTA too, to show a region with these tracks")

    # ------------------------------------------------------------------ region
    def show_region(self) -> None:
        """Replace the genome layers with those of the region in the fields."""
        from napari_dlcb.io.genome import (
            SignalTrack,
            read_bed,
            read_fasta,
            read_vcf,
            region_layer_data,
            resolve_region,
        )

        try:
            s = self.settings()
            genome = read_fasta(s.fasta)
            bed = read_bed(s.bed, genome=genome) if s.bed else None
            tracks = [SignalTrack(s.bigwig)] if s.bigwig else []
            variants = read_vcf(s.vcf) if s.vcf else None
            region = resolve_region(s.region, genome=genome, bed=bed)
            genome.check(region.chrom, region.start, region.end)
            layers = region_layer_data(genome, region, tracks=tracks, bed=bed, variants=variants)
        except DlcbError as err:
            self._error(err)
            return
        self._genome, self._bed, self._variants = genome, bed, variants
        self._region, self._sequence = region, layers[0][1]["metadata"]["sequence"]
        for layer in [ly for ly in self.viewer.layers if ly.metadata.get("genome_view")]:
            self.viewer.layers.remove(layer)
        for data, kwargs, kind in layers:
            kwargs.setdefault("metadata", {})["genome_view"] = True
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if kwargs["metadata"].get("kind") == "variants":
                layer.events.highlight.connect(self._on_variant_pick)
            if kwargs["metadata"].get("kind") == "intervals":
                layer.events.highlight.connect(self._on_interval_pick)
        # the mutation-map band exists from the start, so filling it never creates a layer
        self.mm_layer = None
        self._add_mm_layer(np.zeros((4, len(region)), np.float32), None)
        self.mm_layer.metadata["genome_view"] = True
        if bed is not None:
            self.peak_box.clear()
            for r in bed.itertuples():
                self.peak_box.addItem(f"{r.name}  {r.chrom}:{r.start}-{r.end}")
        self.viewer.reset_view()
        self.status.setText(f"{region}: {len(region)} bp")

    def _on_interval_pick(self, event: Any = None) -> None:
        """Clicking (selecting) an interval opens a 1 kb region centred on it."""
        layer = next(
            (ly for ly in self.viewer.layers if ly.metadata.get("kind") == "intervals"), None
        )
        if layer is None or not layer.selected_data or self._bed is None:
            return
        row = int(layer.features["bed_row"].iloc[sorted(layer.selected_data)[0]])
        self.peak_box.setCurrentIndex(row)
        # after this event: going there replaces the layer that is emitting it
        QTimer.singleShot(0, lambda: self._go_to_peak(row))

    def _go_to_peak(self, index: int) -> None:
        if getattr(self, "_bed", None) is None or index < 0:
            return
        r = self._bed.iloc[index]
        mid = (int(r.start) + int(r.end)) // 2
        n = self._genome.chromosomes[r.chrom]
        self.region.setText(f"{r.chrom}:{max(0, mid - 500)}-{min(n, mid + 500)}")
        self.show_region()

    def _update_letters(self, event: Any = None) -> None:
        for layer in self.viewer.layers:
            if layer.metadata.get("kind") == "letters":
                layer.visible = viewer_camera(self.viewer).zoom > 4.0

    def visible_span(self) -> tuple[int, int]:
        """Part of the region now on screen, as positions within the region."""
        if self._region is None:
            return 0, 0
        L = len(self._region)
        camera = viewer_camera(self.viewer)
        centre = float(camera.center[-1]) - self._region.start
        width = float(self.viewer.canvas.size[1]) / max(float(camera.zoom), 1e-9)
        lo, hi = int(centre - width / 2), int(centre + width / 2) + 1
        return max(0, min(L - 1, lo)), max(1, min(L, hi))

    # ------------------------------------------------------------------ model
    def _load_model(self, path: str):
        from napari_dlcb.tasks.sequence import load_sequence_model

        if self._model is None or getattr(self, "_model_source", None) != path:
            self._model, self._meta = load_sequence_model(path)
            self._model_source = path
            self.target.clear()
            self.target.addItems(list(self._meta.classes))
        return self._model, self._meta

    # ------------------------------------------------------------------ mutation map
    def start_mutation_map(self) -> None:
        """Compute the mutation map of the region, viewport first, in a worker.

        The model is loaded in the worker too (the first time), so the click
        returns at once; the heatmap layer then fills in block by block.
        """
        if self._region is None:
            self.show_region()
            if self._region is None:
                return
        try:
            s = self.settings()
        except DlcbError as err:
            self._error(err)
            return
        loaded = self._model if getattr(self, "_model_source", None) == s.model else None
        target = max(0, self.target.currentIndex())
        key = (s.model, id(loaded) if loaded is not None else None, self._sequence, target)
        if loaded is not None and key in self._mm_cache:
            self._add_mm_layer(self._mm_cache[key], target)
            self.status.setText("mutation map from cache")
            return
        lo, hi = self.visible_span()
        regions = _viewport_first(lo, hi, len(self._region), block=64)
        self.status.setText(f"mutation map: viewport {lo}-{hi} first")
        self._run(
            "mutation_map",
            self._mm_worker(s.model, loaded, _one_hot(self._sequence), regions, target),
            self._on_mm_block,
        )

    def _add_mm_layer(self, data: np.ndarray, target: int | None) -> Any:
        """Show ``data`` in the mutation-map band, reusing the band's layer when it exists."""
        from napari_dlcb.io.genome import BANDS, ROW_SCALE

        names = list(self._meta.classes) if self._meta is not None else []
        label = "" if target is None else f" ({names[target] if target < len(names) else target})"
        m = float(np.abs(data).max()) or 1.0
        layer = getattr(self, "mm_layer", None)
        if layer is not None and layer in self.viewer.layers and layer.data.shape == data.shape:
            layer.data = data
            layer.name = "mutation map" + label
            layer.contrast_limits = (-m, m)
            return layer
        self.mm_layer = self.viewer.add_image(
            data,
            name="mutation map" + label,
            colormap="bwr",
            contrast_limits=(-m, m),
            scale=(ROW_SCALE, 1.0),
            translate=(BANDS["mutation_map"] * ROW_SCALE, float(self._region.start)),
            metadata={"genome_view": True, "kind": "mutation_map", "region": str(self._region)},
        )
        return self.mm_layer

    @staticmethod
    @thread_worker
    def _mm_worker(source, model, x, regions, target):
        from napari_dlcb.interpret.ism import iter_mutation_map
        from napari_dlcb.tasks.sequence import load_sequence_model

        if model is None:
            model, meta = load_sequence_model(source)
            yield "model", source, model, meta
        for done, (_, s, e, block) in enumerate(
            iter_mutation_map(model, x, regions=regions, target=target, batch_size=256), 1
        ):
            yield "block", (source, id(model), target), s, e, block[..., 0], done == len(regions)

    def _on_mm_block(self, item) -> None:
        if item[0] == "model":
            _, source, model, meta = item
            self._model, self._meta, self._model_source = model, meta, source
            self.target.blockSignals(True)
            self.target.clear()
            self.target.addItems(list(meta.classes))
            self.target.blockSignals(False)
            return
        _, (source, mid, target), s, e, block, complete = item
        key = (source, mid, self._sequence, target)
        layer = getattr(self, "mm_layer", None)
        if layer is None or layer not in self.viewer.layers or layer.metadata.get("key") != key:
            layer = self._add_mm_layer(np.zeros((4, len(self._region)), np.float32), target)
            layer.metadata["key"] = key
        layer.data[:, s:e] = block
        # redraw at most every 100 ms (and at the end): blocks can arrive faster than frames
        now = time.perf_counter()
        if complete or now - self._last_mm_draw > 0.1:
            m = float(np.abs(layer.data).max()) or 1.0
            layer.contrast_limits = (-m, m)
            layer.refresh()
            self._last_mm_draw = now
        if complete:  # a stopped run is never cached
            self._mm_cache[key] = layer.data.copy()
        self.status.setText(f"mutation map: {s}-{e} done" + (" (complete)" if complete else ""))

    # ------------------------------------------------------------------ attribution
    def start_attribution(self) -> None:
        """Attribution of the chosen task (method from the combo) as a letter logo band.

        The logo shows each observed base with height = its attribution (negative
        letters hang below the baseline); the completeness error (convergence
        delta) is shown in the status line and kept in the layer's metadata
        with the raw (4, L) values.
        """
        if self._region is None:
            return
        try:
            model, meta = self._load_model(self.settings().model)
        except DlcbError as err:
            self._error(err)
            return
        target = max(0, self.target.currentIndex())
        method = self.attr_method.currentText()
        self.status.setText(f"{method}...")
        self._run(
            "attribution",
            attribution_worker(model, _one_hot(self._sequence), target, method),
            self._on_attr,
        )

    def _on_attr(self, item) -> None:
        target, method, attr = item
        values = attr.values[0]
        for ly in [ly for ly in self.viewer.layers if ly.metadata.get("kind") == "attribution"]:
            self.viewer.layers.remove(ly)
        img, place = logo_layer_kwargs(
            values, _one_hot(self._sequence)[0], float(self._region.start)
        )
        delta = float(attr.delta[0])
        task = (
            self._meta.classes[target]
            if self._meta and target < len(self._meta.classes)
            else target
        )
        self.attr_layer = self.viewer.add_image(
            img,
            rgb=True,
            multiscale=len(img) > 1,
            name=f"attribution logo ({method}, {task})",
            metadata={
                "genome_view": True,
                "kind": "attribution",
                "method": method,
                "delta": delta,
                "values": values,
                "region": str(self._region),
            },
            **place,
        )
        total = float(values.sum())
        note = ""
        if abs(delta) > 0.05 * max(1.0, abs(total)):
            note = {
                "gradient x input": " (large: gradient x input is only a first-order estimate)",
                "DeepLIFT/SHAP": " (large: the model has layers DeepLIFT handles only"
                " approximately; prefer integrated gradients)",
            }.get(method, " (large: use more steps)")
        self.status.setText(
            f"{method} for {task}: completeness error (delta) {delta:+.2e}, "
            f"sum of attributions {total:+.3f}{note}"
        )

    # ------------------------------------------------------------------ motifs
    def _motif_windows(self, model_length: int) -> np.ndarray:
        """One-hot windows for filter motifs: every BED peak (centred), else the region."""
        from napari_dlcb.data.dna import one_hot

        if self._bed is not None and len(self._bed):
            half = model_length // 2
            seqs = []
            for r in self._bed.itertuples():
                mid = (int(r.start) + int(r.end)) // 2
                seqs.append(self._genome.fetch(r.chrom, mid - half, mid + half, pad=True))
            return one_hot(seqs)
        return one_hot(self._sequence)

    def start_filter_motifs(self) -> None:
        """PWMs of the model's first-layer filters, matched against bundled JASPAR 2024 CORE."""
        if self._region is None:
            return
        try:
            model, meta = self._load_model(self.settings().model)
            x = self._motif_windows(int(meta.extra.get("length", 200)))
        except DlcbError as err:
            self._error(err)
            return
        self.status.setText(f"filter motifs from {len(x)} sequences...")
        self._run("motifs", filter_motif_worker(model, x), self._on_motifs)

    def _on_motifs(self, item) -> None:
        if item[0] == "status":
            self.status.setText(item[1])
            return
        _, motifs, best, db = item
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
        """Scan the region for the motifs that the filters matched (else those named like the tasks)."""
        if self._region is None:
            return
        motifs = list(self._motif_hits_source)
        if not motifs:
            from napari_dlcb.interpret.motifs import load_motif_database

            try:
                _, meta = self._load_model(self.settings().model)
            except DlcbError as err:
                self._error(err)
                return
            tasks = {str(c).upper() for c in meta.classes}
            motifs = [
                m for m in load_motif_database("jaspar") if m.name.split()[-1].upper() in tasks
            ]
            if not motifs:
                self._error(DlcbError("no motifs to scan for: run Filter motifs first"))
                return
        self._run(
            "scan",
            scan_worker(_one_hot(self._sequence)[0], motifs, float(self.scan_threshold.value())),
            self._on_scan,
        )

    def _on_scan(self, hits) -> None:
        from napari_dlcb.io.genome import BANDS, ROW_SCALE

        for ly in [ly for ly in self.viewer.layers if ly.metadata.get("kind") == "motif_hits"]:
            self.viewer.layers.remove(ly)
        if hits.empty:
            self.status.setText("motif scan: no sites above the threshold")
            return
        hits = hits.sort_values("start").reset_index(drop=True)
        rows = np.arange(len(hits)) % 3  # stagger overlapping sites over 3 rows
        rects = [
            np.array([[r - 0.4, s - 0.5], [r + 0.4, e - 0.5]], float)
            for r, s, e in zip(rows, hits.start, hits.end)
        ]
        names = [m.split()[-1] for m in hits.motif]
        self.viewer.add_shapes(
            rects,
            shape_type="rectangle",
            name="motif sites",
            edge_width=0.05,
            face_color="#f7b32b80",
            features={"motif": names, "strand": hits.strand.tolist(), "score": hits.score},
            text={"string": "{motif}{strand}", "size": 8, "color": "white"},
            scale=(ROW_SCALE, 1.0),
            translate=(BANDS["motifs"] * ROW_SCALE, float(self._region.start)),
            metadata={"genome_view": True, "kind": "motif_hits", "hits": hits},
        )
        self.status.setText(f"motif scan: {len(hits)} sites of {hits.motif.nunique()} motifs")

    # ------------------------------------------------------------------ predictions
    def start_predict(self) -> None:
        """Predicted tracks for every task along the region."""
        if self._region is None:
            return
        try:
            model, meta = self._load_model(self.settings().model)
        except DlcbError as err:
            self._error(err)
            return
        window = int(meta.extra.get("length", 200))
        self._run(
            "predict",
            self._pred_worker(model, self._sequence, window, meta),
            self._on_pred,
        )

    @staticmethod
    @thread_worker
    def _pred_worker(model, sequence, window, meta):
        from napari_dlcb.tasks.sequence import predict_region

        centres, prob = predict_region(
            model, sequence, window=window, step=max(1, len(sequence) // 400), meta=meta
        )
        yield centres, prob, list(meta.classes), meta.extra.get("task_type", "binary")

    def _on_pred(self, item) -> None:

        centres, prob, names, task_type = item
        paths = []
        for j in range(prob.shape[1]):
            v = prob[:, j]  # probabilities, or a regression's values scaled to the band
            if task_type == "regression":
                v = (v - v.min()) / ((v.max() - v.min()) or 1.0)
            paths.append(np.stack([5 - 5 * v, centres.astype(float)], 1))
        if "predicted tracks" in self.viewer.layers:
            self.viewer.layers.remove("predicted tracks")
        self.viewer.add_shapes(
            paths,
            shape_type="path",
            name="predicted tracks",
            edge_width=1.5,
            edge_color=[_COLORS[j % len(_COLORS)] for j in range(len(paths))],
            features={"task": names},
            metadata={
                "genome_view": True,
                "kind": "prediction",
                "tasks": names,
                "prob": prob,
                "centres": centres,
            },
        )
        self.status.setText(
            "predicted: "
            + ", ".join(f"{n} max {prob[:, j].max():.2f}" for j, n in enumerate(names))
        )

    # ------------------------------------------------------------------ variants
    def _on_variant_pick(self, event: Any = None) -> None:
        layer = next(
            (ly for ly in self.viewer.layers if ly.metadata.get("kind") == "variants"), None
        )
        if layer is None or not layer.selected_data:
            return
        i = sorted(layer.selected_data)[0]
        self.score_variant(layer.features.iloc[i].to_dict())

    def score_variant(self, feat: dict) -> None:
        """Score one variant (``chrom, pos, id, ref, alt``) for every task; fill the table."""
        import pandas as pd

        try:
            model, meta = self._load_model(self.settings().model)
        except DlcbError as err:
            self._error(err)
            return
        v = pd.DataFrame([{**feat, "start": int(feat["pos"]) - 1, "kind": "snv"}])
        self._run("variant", self._variant_worker(model, meta, self._genome, v), self._on_variant)

    @staticmethod
    @thread_worker
    def _variant_worker(model, meta, genome, v):
        from napari_dlcb.interpret.variants import score_variants

        yield score_variants(model, genome, v, meta=meta, length=int(meta.extra.get("length", 200)))

    def _on_variant(self, table) -> None:
        row = table.iloc[0]
        self.variant_table = table
        if row.status != "ok":
            self.effects.setRowCount(0)
            self.status.setText(f"{row.id}: not scored: {row.status}")
            return
        tasks = [c[4:] for c in table.columns if c.startswith("ref_")]
        self.effects.setRowCount(len(tasks))
        for k, t in enumerate(tasks):
            for j, val in enumerate(
                [t, f"{row['ref_' + t]:.3f}", f"{row['alt_' + t]:.3f}", f"{row['diff_' + t]:+.3f}"]
            ):
                self.effects.setItem(k, j, QTableWidgetItem(val))
        self.status.setText(f"{row.id}: {row.ref}>{row.alt} scored for {len(tasks)} tasks")

    # ------------------------------------------------------------------ training
    def start_training(self) -> None:
        """Train a DeepBind model on windows centred on the BED peaks, with a live curve."""
        try:
            s = self.settings()
            if not s.bed:
                raise DlcbError("training needs a peaks BED file")
        except DlcbError as err:
            self._error(err)
            return
        self.plot.reset()
        self._run(
            "train",
            self._train_worker(s.fasta, s.bed, int(self.epochs.value())),
            self._on_train_event,
        )

    @staticmethod
    @thread_worker
    def _train_worker(fasta, bed, epochs):
        from napari_dlcb.tasks.sequence import SequenceTrainer, bed_training_data

        seqs, y, tasks, _ = bed_training_data(fasta, bed, window=200, labels="name")
        trainer = SequenceTrainer(
            seqs, y, task_names=tasks, model_kwargs={"filters": 32, "kernel_size": 19}, device="cpu"
        )
        yield from trainer.fit(epochs=epochs, batch_size=32)
        yield trainer

    def _on_train_event(self, ev) -> None:
        from napari_dlcb.training.events import EpochEnd, Finished

        if isinstance(ev, EpochEnd):
            self.plot.add_epoch(ev.epoch, ev.train_loss, ev.val_loss, is_best=ev.is_best)
            self.status.setText(
                f"epoch {ev.epoch + 1}: val loss {ev.val_loss:.3f}, AUROC {ev.metrics.get('auroc', float('nan')):.3f}"
            )
        elif isinstance(ev, Finished):
            self.status.setText(f"training finished ({ev.reason}), best epoch {ev.best_epoch + 1}")
        elif hasattr(ev, "model") and hasattr(ev, "meta"):
            self._model, self._meta = ev.model, ev.meta
            self._model_source = "trained in this session"
            self.model_path.setText(self._model_source)
            self.target.clear()
            self.target.addItems(list(ev.meta.classes))

    # ------------------------------------------------------------------ workers
    @property
    def worker(self) -> Any:
        """A running worker, or None when the widget is idle."""
        return next(iter(self.workers.values()), None)

    def _run(self, kind: str, worker, on_yield) -> None:
        """Start ``worker``, replacing (quitting) a running worker of the same kind."""
        old = self.workers.get(kind)
        if old is not None:
            old.quit()
        worker.yielded.connect(on_yield)
        worker.errored.connect(self._error)
        worker.finished.connect(
            lambda: self.workers.pop(kind) if self.workers.get(kind) is worker else None
        )
        self.workers[kind] = worker
        worker.start()

    def stop(self) -> None:
        """Stop every running computation at its next yield."""
        for w in list(self.workers.values()):
            w.quit()
        if self.workers:
            self.status.setText("stopped")


_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _one_hot(seq: str) -> np.ndarray:
    from napari_dlcb.data.dna import one_hot

    return one_hot(seq)


def _viewport_first(lo: int, hi: int, length: int, *, block: int = 64) -> list[tuple[int, int]]:
    """Blocks covering ``[0, length)``: the viewport ``[lo, hi)`` first, then outward.

    Examples
    --------
    >>> _viewport_first(10, 20, 40, block=10)
    [(10, 20), (0, 10), (20, 30), (30, 40)]
    """
    out = [(s, min(hi, s + block)) for s in range(lo, hi, block)]
    left = [(max(0, e - block), e) for e in range(lo, 0, -block)]
    right = [(s, min(length, s + block)) for s in range(hi, length, block)]
    for k in range(max(len(left), len(right))):
        if k < len(left):
            out.append(left[k])
        if k < len(right):
            out.append(right[k])
    return out
