"""Genome view: a genome browser for DNA models, with predicted tracks, mutation maps and variants.

A thin adapter (STYLE rule 2). Every action is ONE job of the dock's
:class:`~napari_dlcb._widgets._jobs.JobRunner` (worker thread, progress in
napari's activity dock, Stop, one error path); the canvas is kept laid out
like a genome browser by :class:`~napari_dlcb._widgets.genome_browser.GenomeBrowser`:

* **Open files / Go** - :func:`napari_dlcb.tasks.genome_files.open_genome_files`
  and :func:`napari_dlcb.tasks.genome_layers.region_layer_data`;
* **model loading** - :func:`napari_dlcb.inference.sequence.load_sequence_model`,
  the first time an action needs the model (the click returns at once);
* **Predict tracks** - :func:`napari_dlcb.inference.sequence.predict_track`;
* **Mutation map** - :func:`napari_dlcb.interpret.ism.iter_mutation_map`, the
  visible part first, then the rest in blocks (cached per model, region, task);
* **Attribution** - :mod:`napari_dlcb.interpret.dna_attribution` as a letter logo;
* **Filter motifs / Scan motifs** - :mod:`napari_dlcb.interpret.motifs`;
* selecting a variant - :func:`napari_dlcb.interpret.variants.score_variants`;
* **Train** - :func:`napari_dlcb.tasks.sequence.train_on_peaks` with a
  :class:`~napari_dlcb.tasks.sequence.SequenceConfig`, as ``train sequence`` builds.

Loci are typed and shown 1-based as in UCSC and IGV and stored 0-based,
half-open. Every model action refuses, with a one-line message, when the
region shown is not the one the fields ask for (e.g. after a failed Go).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QMenu, QWidget

from napari_dlcb._widgets._jobs import JobRunner
from napari_dlcb._widgets.genome_actions import ModelActions, core
from napari_dlcb._widgets.genome_browser import MAX_REGION, GenomeBrowser
from napari_dlcb._widgets.genome_panel import GenomePanel
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari

__all__ = ["GenomeWidget"]


class GenomeWidget(ModelActions, GenomePanel):
    """Dock widget of the Genome view (see module docs)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.browser = GenomeBrowser(napari_viewer, parent=self)
        self.jobs = JobRunner(self._set_status, on_busy=self._set_busy, parent=self)
        self.destroyed.connect(lambda *_: self.jobs.cancel())
        self.files = None  # GenomeFiles of the shown genome
        self._opening: dict | None = None  # the files a running job opens
        self._picked: int | None = None  # the BED row last picked in the viewer
        self._connected: set[int] = set()  # layers whose pick events reach the dock
        self._init_model_state()
        from napari_dlcb._sample_data import GENOME_SAMPLE_REGION
        from napari_dlcb.io.regions import parse_region

        self.region.setText(parse_region(GENOME_SAMPLE_REGION).locus)
        self.region.returnPressed.connect(self.show_region)
        self.go_btn.clicked.connect(self.show_region)
        self.peak_box.activated.connect(self._go_to_peak)
        self.sample_btn.clicked.connect(self.use_sample)
        self.open_btn.clicked.connect(self._open_dialog)
        menu = QMenu(self.model_browse)
        menu.addAction("napari-dlcb model folder…", self._browse_model)
        menu.addAction("TorchScript or ONNX file (with its sidecar)…", self._browse_model_file)
        self.model_browse.setMenu(menu)
        self.model_path.editingFinished.connect(self.load_model)
        self.stop_btn.clicked.connect(self.stop)
        self._connect_actions()
        # genome files read by File > Open (the npe2 reader, tasks.genome_reader) are taken over
        self._adopted: list[dict] = []
        self.viewer.layers.events.inserted.connect(self._adopt_opened)
        self.destroyed.connect(
            lambda *_: self.viewer.layers.events.inserted.disconnect(self._adopt_opened)
        )
        QTimer.singleShot(0, self._adopt_opened)

    # ------------------------------------------------------------------ state
    @property
    def _region(self):
        """The region shown (0-based, half-open), or None."""
        return self.browser.region

    @property
    def _sequence(self) -> str:
        return self.browser.sequence

    @property
    def _bed(self):
        return None if self.files is None else self.files.bed

    @property
    def _genome(self):
        return None if self.files is None else self.files.genome

    def visible_span(self) -> tuple[int, int]:
        """Positions within the shown region now on screen, ``[lo, hi)``."""
        return self.browser.visible_positions()

    def shown(self) -> tuple[Any, str]:
        """The region shown and its sequence; a one-line error if the fields ask for another.

        After a failed Go (a typo, a region outside the FASTA) the region field
        no longer describes what is on screen: an action would silently run on
        the previous sequence, so it refuses instead.
        """
        if self._region is None or self.files is None:
            raise DlcbError("no region is shown: open a FASTA and press Go first")
        if self.fasta.text().strip() != self.files.paths.get("fasta", ""):
            raise DlcbError("the FASTA field changed: press Go to show its region first")
        text = self.region.text().strip()
        try:
            wanted = self.files.resolve(text)
        except DlcbError as err:
            raise DlcbError(
                f"the region field is not the region shown ({err}); fix it and press Go"
            ) from None
        if (wanted.chrom, wanted.start, wanted.end) != (
            self._region.chrom,
            self._region.start,
            self._region.end,
        ):
            raise DlcbError(
                f"the region field ({wanted.locus}) is not the region shown "
                f"({self._region.locus}): press Go to show it first"
            )
        return self._region, self._sequence

    # ------------------------------------------------------------------ files
    def use_sample(self) -> None:
        """Open the shipped sample genome (FASTA, BED, bigWig, VCF) on its sample region."""
        from napari_dlcb._sample_data import GENOME_SAMPLE_REGION, genome_sample_dir
        from napari_dlcb.io.regions import parse_region

        d = genome_sample_dir()
        self.region.setText(parse_region(GENOME_SAMPLE_REGION).locus)
        self.open_files(
            [str(d / n) for n in ("sample_genome.fa", "peaks.bed", "signal.bw", "variants.vcf")]
        )

    def _adopt_opened(self, event: Any = None) -> None:
        """Take over genome files that File > Open read as layers (``metadata["genome_files"]``).

        The reader returns the layers of the files' first region; here they
        join the dock's fields (a FASTA replaces the genome, tracks are added)
        and are read again in a job, which updates those layers in place.
        """
        layers = [event.value] if event is not None else list(self.viewer.layers)
        found = [ly.metadata["genome_files"] for ly in layers if "genome_files" in ly.metadata]
        new = [f for f in found if not any(f is seen for seen in self._adopted)]
        if not new:
            return
        self._adopted.extend(new)
        paths: list[str] = []
        for opened in new:
            paths += [opened[k] for k in ("fasta", "bed", "vcf") if opened[k]] + opened["bigwig"]
            if opened["fasta"]:
                self.region.setText(opened["region"])
        self.open_files(list(dict.fromkeys(paths)))

    def _open_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open genome files", "", "genome files (*)")
        if paths:
            self.open_files(paths)

    def _browse_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Saved napari-dlcb DNA model folder")
        if path:
            self.model_path.setText(path)
            self.load_model()

    def _browse_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "DNA model from another tool (a JSON/YAML sidecar beside it describes it)",
            "",
            "TorchScript or ONNX (*.pt *.pts *.onnx)",
        )
        if path:
            self.model_path.setText(path)
            self.load_model()

    def open_files(self, paths: list[str]) -> None:
        """Open genome files by kind (from their names); a FASTA replaces the whole genome.

        Opening a FASTA replaces the previous genome's fields and layers;
        BED, VCF and signal files are added to the current genome (a signal
        track is added to those shown). Files are read in a job; a bad one is
        a one-line error and the fields keep what they had.
        """
        from napari_dlcb.tasks.genome_reader import genome_file_kind

        fields = dict(self._opening) if self._opening is not None else self._fields()
        fields["bigwig"] = list(fields["bigwig"])
        kinds = {str(p): genome_file_kind(p) for p in paths}
        bad = [p for p, k in kinds.items() if k is None]
        if bad:
            self._error(
                DlcbError(f"not a genome file (FASTA, BED, bedGraph/bigWig, VCF): {bad[0]}")
            )
            return
        new_fasta = next((p for p, k in kinds.items() if k == "fasta"), None)
        if new_fasta and fields["fasta"] and new_fasta != fields["fasta"]:
            # another genome: its files replace the previous genome's (tracks opened
            # before any FASTA wait for it and stay)
            fields = {"fasta": "", "bed": "", "vcf": "", "bigwig": []}
        for p, kind in kinds.items():
            if kind == "bigwig":
                fields["bigwig"] += [p] if p not in fields["bigwig"] else []
            else:
                fields[kind] = p
        if not fields["fasta"]:
            self._set_fields(fields)
            self.status.setText("open a FASTA too, to show a region with these tracks")
            return
        self._load_files(fields)

    def _set_fields(self, fields: dict) -> None:
        self.fasta.setText(fields["fasta"])
        self.bed.setText(fields["bed"])
        self.vcf.setText(fields["vcf"])
        self.bigwig.setText("; ".join(fields["bigwig"]))

    def _fields(self) -> dict:
        return {
            "fasta": self.fasta.text().strip(),
            "bed": self.bed.text().strip(),
            "vcf": self.vcf.text().strip(),
            "bigwig": [s.strip() for s in self.bigwig.text().split(";") if s.strip()],
        }

    def _files_fields(self) -> dict:
        p = self.files.paths
        return {
            "fasta": p.get("fasta", ""),
            "bed": p.get("bed", ""),
            "vcf": p.get("vcf", ""),
            "bigwig": list(p.get("signals", [])),
        }

    def _load_files(self, fields: dict) -> None:
        # files opened while a job opens others (a drop of several files) join that set
        self._opening = fields

        def opened(files) -> None:
            self._set_fields(fields)
            self.files = files
            self._fill_peaks()
            if not self._region_text_fits(files):  # a new genome: its first region
                self.region.setText(files.genome.default_region().locus)
            self.show_region(note=files.summary())

        self.jobs.run(
            "Opening genome files",
            core("napari_dlcb.tasks.genome_files:open_genome_files"),
            fields["fasta"],
            bed=fields["bed"] or None,
            signals=fields["bigwig"],
            vcf=fields["vcf"] or None,
            kind="region",
            replace=True,
            on_return=opened,
            on_done=lambda job: self._opened(fields),
        )

    def _opened(self, fields: dict) -> None:
        if self._opening is fields:  # the last set asked for: done, or failed (fields kept)
            self._opening = None

    def _region_text_fits(self, files) -> bool:
        try:
            files.resolve(self.region.text())
        except DlcbError:
            return False
        return True

    def _fill_peaks(self) -> None:
        self.peak_box.clear()
        held = self.files.held_intervals() if self.files is not None else None
        if held is None or not len(held):
            return
        from napari_dlcb.io.regions import Region

        for i, r in held.head(5000).iterrows():
            self.peak_box.addItem(
                f"{r['name']}  {Region(r['chrom'], r['start'], r['end']).locus}", int(i)
            )

    # ------------------------------------------------------------------ region
    def show_region(self, note: str = "") -> None:
        """Show the region in the locus field (or a BED name) with every track, in a job."""
        fields = self._fields()
        if not fields["fasta"]:
            self._error(DlcbError("open a FASTA first (Files tab, or drop it on the viewer)"))
            return
        if self.files is None or fields != self._files_fields():
            self._load_files(fields)  # the file fields were edited: read them, then show
            return
        text = self.region.text().strip()
        try:
            if not text:
                raise DlcbError(
                    "enter a region: chr:start-end (1-based) or the name of a BED interval"
                )
            region = self.files.resolve(text)
            if len(region) > MAX_REGION:
                raise DlcbError(
                    f"{region.locus} is {len(region):,} bp: show at most {MAX_REGION:,} bp at a time"
                )
        except DlcbError as err:
            self._error(err)
            return
        f = self.files
        self.jobs.run(
            "Showing region",
            core("napari_dlcb.tasks.genome_layers:region_layer_data"),
            f.genome,
            region,
            tracks=f.tracks,
            bed=f.bed,
            variants=f.variants,
            kind="region",
            replace=True,
            on_return=lambda layers: self._on_region(region, layers, text, note),
        )

    def _on_region(self, region, layers: list, text: str, note: str) -> None:
        self.browser.show(region, layers, layers[0][1]["metadata"]["tracks"])
        self.attr_layer = None
        self._picked = None
        self._prepare_mm(region)
        for layer in self.browser.layers():
            kind = layer.metadata.get("kind")
            if id(layer) in self._connected:  # a layer reused for the new region
                continue
            if kind == "variants":  # a selection, not every redraw of the highlight
                layer.selected_data.events.items_changed.connect(self._on_variant_pick)
                self._connected.add(id(layer))
            elif kind == "intervals":
                layer.events.highlight.connect(self._on_interval_pick)
                self._connected.add(id(layer))
        if ":" in text:  # a locus is shown as UCSC writes it; a BED name stays
            self.region.setText(region.locus)
        self.status.setText(f"{region.locus}: {len(region):,} bp" + (f" ({note})" if note else ""))

    def _on_interval_pick(self, event: Any = None) -> None:
        """Selecting an interval shows 1 kb centred on it."""
        layer = self.browser.layer("intervals")
        if layer is None or not layer.selected_data or self._bed is None:
            return
        row = int(layer.features["bed_row"].iloc[sorted(layer.selected_data)[0]])
        if row == self._picked:  # the highlight is redrawn often; act on a new pick only
            return
        self._picked = row
        # after this event: going there replaces the layer that is emitting it
        QTimer.singleShot(0, lambda: self._go_to_row(row))

    def _go_to_peak(self, index: int) -> None:
        if index >= 0 and self.peak_box.itemData(index) is not None:
            self._go_to_row(int(self.peak_box.itemData(index)))

    def _go_to_row(self, row: int) -> None:
        from napari_dlcb.io.regions import Region

        r = self._bed.loc[row]
        mid = (int(r.start) + int(r.end)) // 2
        piece = next(
            p for p in self._genome.pieces if p.chrom == r.chrom and p.start <= mid < p.end
        )
        start = max(piece.start, mid - 500)
        self.region.setText(Region(r.chrom, start, min(piece.end, start + 1000)).locus)
        self.show_region()

    # ------------------------------------------------------------------ jobs
    def _set_status(self, text: str) -> None:
        try:
            self.status.setText(text)
        except RuntimeError:  # the dock was closed while a job was finishing
            pass

    def _set_busy(self, busy: bool) -> None:
        try:
            self.stop_btn.setEnabled(busy)
        except RuntimeError:  # the dock was closed while a job was finishing
            pass

    def _error(self, err: Exception) -> None:
        from napari_dlcb._widgets._common import notify_error

        self.status.setText(notify_error(err))

    @property
    def worker(self) -> Any:
        """A running job, or None when the dock is idle."""
        return next(iter(self.jobs.jobs.values()), None)

    def stop(self) -> None:
        """Stop every running job (training keeps what it learnt)."""
        if self.jobs.cancel():
            self.status.setText("stopping…")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.jobs.cancel_all_and_wait()
        super().closeEvent(event)
