"""Open the files of a genome view at once: FASTA, BED, signal tracks, VCF, on one genome's coordinates.

What the Genome view runs (in a worker) when files are opened::

    files = open_genome_files("mm10_region.fa", bed="regions.bed", signals=["4C.bedgraph"])
    files.genome.default_region(), files.summary()

Chromosome names of the tracks are spelt as the FASTA spells them (``2`` ->
``chr2``). BED intervals outside what the FASTA holds are kept, counted and
simply not drawn, rather than failing the whole file. A bgzipped BED, VCF or
bedGraph with a tabix/CSI index (and a BCF) is not read whole: it is kept open
and read one region at a time (:mod:`napari_dlcb.io.tabix`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from napari_dlcb.io.fasta import Genome, read_fasta
from napari_dlcb.io.intervals import IndexedIntervals, open_intervals
from napari_dlcb.io.regions import Region, format_locus, resolve_region
from napari_dlcb.io.tracks import SignalTrack
from napari_dlcb.io.vcf import IndexedVariants, open_variants

#: most intervals of an indexed BED offered by "go to peak" and name search
MAX_LISTED = 5000

__all__ = ["GenomeFiles", "open_genome_files"]


@dataclass
class GenomeFiles:
    """An open genome and the tracks shown on it."""

    genome: Genome
    bed: pd.DataFrame | IndexedIntervals | None = None
    tracks: list[SignalTrack] = field(default_factory=list)
    variants: pd.DataFrame | IndexedVariants | None = None
    paths: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line on what was opened and where it lies."""
        g = self.genome
        held = ", ".join(format_locus(r) for r in g.pieces[:2]) + (
            " ..." if len(g.pieces) > 2 else ""
        )
        parts = [
            f"{g.path.name}: {held}"
            if g.is_regions()
            else f"{g.path.name}: {len(g.pieces)} sequences"
        ]
        if isinstance(self.bed, IndexedIntervals):
            parts.append("BED indexed, read by region")
        elif self.bed is not None:
            n, out = len(self.bed), int(self.bed.attrs.get("outside", 0))
            parts.append(f"{n - out} of {n} BED intervals in it" if out else f"{n} BED intervals")
        if self.tracks:
            parts.append(f"{len(self.tracks)} signal track(s)")
        if isinstance(self.variants, IndexedVariants):
            parts.append("VCF indexed, read by region")
        elif self.variants is not None:
            parts.append(f"{len(self.variants)} variants")
        return "; ".join(parts)

    def held_intervals(self) -> pd.DataFrame:
        """The BED rows the FASTA holds (what "go to peak" offers), with their row numbers.

        Of an indexed BED, the first :data:`MAX_LISTED` in the FASTA's
        records, read by region (numbered in that order).
        """
        if self.bed is None:
            return pd.DataFrame(columns=["chrom", "start", "end", "name"])
        if isinstance(self.bed, IndexedIntervals):
            return _first_intervals(self.bed, self.genome)
        held = self.genome.covered(self.bed["chrom"], self.bed["start"], self.bed["end"])
        return self.bed[held]

    def resolve(self, text: str, *, width: int = 1000) -> Region:
        """The region a locus (1-based, UCSC/IGV) or a BED name means, checked against the FASTA."""
        from napari_dlcb.errors import DlcbError

        bed = self.held_intervals() if isinstance(self.bed, IndexedIntervals) else self.bed
        r = resolve_region(text, genome=self.genome, bed=bed, width=width, one_based=True)
        g = self.genome
        if g.is_regions() and g.canonical(r.chrom) is not None and not g.covers(*_tuple(r)):
            held = [format_locus(p) for p in g.pieces if p.chrom == r.chrom]
            shown = ", ".join(held[:3]) + (" ..." if len(held) > 3 else "")
            raise DlcbError(f"{format_locus(r)} lies outside the FASTA, which holds {shown}")
        g.check(*_tuple(r))
        return r


def _tuple(r: Region) -> tuple[str, int, int]:
    return r.chrom, r.start, r.end


def _first_intervals(
    bed: IndexedIntervals, genome: Genome, *, step: int = 1_000_000
) -> pd.DataFrame:
    """Up to :data:`MAX_LISTED` intervals of an indexed BED inside the FASTA's records, in order."""
    found: list[pd.DataFrame] = []
    n = 0
    for piece in genome.pieces:
        for s in range(piece.start, piece.end, step):
            e = min(piece.end, s + step)
            df = bed.fetch(Region(piece.chrom, s, e))
            # each interval once (in the chunk where it starts), and whole inside the record
            df = df[(df["start"] >= s) & (df["start"] < e) & (df["end"] <= piece.end)]
            if len(df):
                found.append(df)
                n += len(df)
            if n >= MAX_LISTED:
                break
        if n >= MAX_LISTED:
            break
    if not found:
        return pd.DataFrame(columns=["chrom", "start", "end", "name"])
    out = pd.concat(found, ignore_index=True).head(MAX_LISTED)
    out["chrom"] = [genome.canonical(c) or c for c in out["chrom"]]
    return out


def open_genome_files(
    fasta: str | os.PathLike,
    *,
    bed: str | os.PathLike | None = None,
    signals: Sequence[str | os.PathLike] = (),
    vcf: str | os.PathLike | None = None,
) -> GenomeFiles:
    r"""Open a FASTA and its tracks (any may fail with a one-line :class:`DlcbError`).

    Parameters
    ----------
    fasta : path-like
        The genome (whole chromosomes, or regions named ``chr:start-end``).
    bed, vcf : path-like, optional
        Intervals and variants.
    signals : sequence of path-like
        bigWig / bedGraph files.

    Returns
    -------
    GenomeFiles

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "g.fa").write_text(">chr2:100-120\n" + "ACGT" * 5 + "\n")
    >>> _ = (d / "a.bed").write_text("2\t105\t110\tin\nchr2\t500\t600\tout\n")
    >>> f = open_genome_files(d / "g.fa", bed=d / "a.bed")
    >>> f.summary()
    'g.fa: chr2:101-120; 1 of 2 BED intervals in it'
    >>> f.held_intervals()["name"].tolist(), f.bed["chrom"].tolist()
    (['in'], ['chr2', 'chr2'])
    """
    genome = read_fasta(fasta)
    files = GenomeFiles(genome, paths={"fasta": str(fasta)})
    if bed:
        files.bed = open_intervals(bed, genome=genome, outside="keep")
        files.paths["bed"] = str(bed)
    for s in signals:
        files.tracks.append(SignalTrack(s))
    files.paths["signals"] = [str(s) for s in signals]
    if vcf:
        files.variants = open_variants(vcf)
        files.paths["vcf"] = str(vcf)
        if isinstance(files.variants, pd.DataFrame):
            v = files.variants
            names = {c: genome.canonical(c) for c in v["chrom"].unique()}
            v["chrom"] = v["chrom"].map(lambda c: names[c] or c)
    return files
