"""Open genome files (FASTA, BED, VCF/BCF, bigWig/bedGraph) from File > Open or by drag and drop.

The npe2 reader contribution. A reader only reads: it returns napari layer
data and has no side effects (it docks nothing and keeps no state). Genome
files are not images: a FASTA can be gigabytes, and BED, VCF and signal tracks
only make sense against a region of a genome. So the files dropped together
are opened as one genome (:func:`napari_dlcb.tasks.genome_files.open_genome_files`)
and the layers are those of its first region
(:func:`napari_dlcb.tasks.genome_layers.region_layer_data`: a FASTA of
regions shows its first region whole, a chromosome its first kilobase), every
track on the same bp axis. Each layer's ``metadata["genome_files"]`` names the
files and the region, so the **Genome view** dock, when the user opens it,
takes them over (it reads them again in a job and updates these layers in
place). Tracks opened without a FASTA (napari hands a drop of several files
to the reader one at a time) are drawn alone on their first 10 kb; the Genome
view puts them on the genome when it takes the files over.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.regions import Region

__all__ = [
    "GENOME_SUFFIXES",
    "genome_file_kind",
    "get_genome_reader",
    "read_genome_files",
    "read_genome_layers",
]

#: field of the Genome view -> file name endings it takes (lower case)
GENOME_SUFFIXES = {
    "fasta": (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz"),
    "bed": (".bed", ".bed.gz", ".narrowpeak", ".broadpeak", ".narrowpeak.gz"),
    "vcf": (".vcf", ".vcf.gz", ".bcf"),
    "bigwig": (".bw", ".bigwig", ".bedgraph", ".bdg", ".bedgraph.gz", ".bdg.gz"),
}
PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def genome_file_kind(path: str | os.PathLike) -> str | None:
    """``"fasta"``, ``"bed"``, ``"vcf"`` or ``"bigwig"`` from the file name, else None.

    Examples
    --------
    >>> genome_file_kind("hg38.fa.gz"), genome_file_kind("peaks.narrowPeak"), genome_file_kind("x.tif")
    ('fasta', 'bed', None)
    """
    name = Path(path).name.lower()
    for kind, suffixes in GENOME_SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    return None


def get_genome_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list] | None:
    """npe2 reader contribution: a reader when every path is a genome file, else None.

    Declines (None) a path that is missing or not a regular file (a pipe or a
    device would block the reader). The reader never raises into napari: see
    :func:`read_genome_layers`.
    """
    import stat

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(genome_file_kind(p) is None for p in paths):
        return None
    for p in paths:
        try:
            if not stat.S_ISREG(os.stat(p).st_mode):
                return None
        except OSError:
            return None
    return read_genome_layers


def read_genome_layers(path: PathOrPaths) -> list[tuple[Any, ...]]:
    """:func:`read_genome_files` for napari: a file that cannot be read is reported, not raised.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The layers, or napari's "nothing to add" value ``[(None,)]`` after an
        :class:`~napari_dlcb.io._npe2.UnreadableFileWarning` (one line) when the
        files cannot be read (corrupt, truncated, not what their name says).
    """
    import warnings

    from napari_dlcb.io._npe2 import UnreadableFileWarning

    try:
        return read_genome_files(path)
    except (DlcbError, OSError, MemoryError, ValueError, EOFError) as exc:
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        warnings.warn(f"napari-dlcb: {text}", UnreadableFileWarning, stacklevel=2)
    except Exception as exc:  # noqa: BLE001 - a reader hook must never raise into napari
        text = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]} (please report it)"
        warnings.warn(f"napari-dlcb: {text}", UnreadableFileWarning, stacklevel=2)
    return [(None,)]


def genome_fields(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The files by kind: ``{"fasta", "bed", "vcf": str ("" if none), "bigwig": [str]}``.

    One FASTA, one BED and one VCF at most (a one-line error otherwise).

    Examples
    --------
    >>> genome_fields(["g.fa", "a.bw", "p.bed", "b.bw"])
    {'fasta': 'g.fa', 'bed': 'p.bed', 'vcf': '', 'bigwig': ['a.bw', 'b.bw']}
    """
    fields: dict[str, Any] = {"fasta": "", "bed": "", "vcf": "", "bigwig": []}
    for p in map(str, paths):
        kind = genome_file_kind(p)
        if kind is None:
            raise DlcbError(f"not a genome file (FASTA, BED, bedGraph/bigWig, VCF/BCF): {p}")
        if kind == "bigwig":
            fields["bigwig"].append(p)
        elif fields[kind]:
            raise DlcbError(
                f"open one {kind.upper()} at a time with a genome: {Path(fields[kind]).name} "
                f"and {Path(p).name}"
            )
        else:
            fields[kind] = p
    return fields


def read_genome_files(path: PathOrPaths) -> list[tuple[Any, ...]]:
    r"""Layer data of the first region of the genome in ``path`` (a FASTA and its tracks, or tracks).

    Returns
    -------
    list of (data, kwargs, layer_type)
        As :func:`napari_dlcb.tasks.genome_layers.region_layer_data`; each
        layer's ``metadata["genome_files"]`` holds the files by kind and the
        region's locus.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "g.fa").write_text(">chr2:100-160\n" + "ACGT" * 15 + "\n")
    >>> _ = (d / "a.bed").write_text("chr2\t110\t120\tpeak\n")
    >>> layers = read_genome_files([d / "g.fa", d / "a.bed"])
    >>> [kw["metadata"]["kind"] for _, kw, _ in layers][:1], layers[0][1]["metadata"]["origin"]
    (['sequence'], 100)
    """
    from napari_dlcb.io.intervals import open_intervals
    from napari_dlcb.io.tracks import SignalTrack
    from napari_dlcb.io.vcf import open_variants
    from napari_dlcb.tasks.genome_files import open_genome_files
    from napari_dlcb.tasks.genome_layers import region_layer_data

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    fields = genome_fields(paths)
    if fields["fasta"]:
        files = open_genome_files(
            fields["fasta"],
            bed=fields["bed"] or None,
            signals=fields["bigwig"],
            vcf=fields["vcf"] or None,
        )
        genome, bed, tracks, variants = files.genome, files.bed, files.tracks, files.variants
        region = genome.default_region()
    else:  # tracks alone (a drop of several files reaches the reader one file at a time)
        genome = None
        bed = open_intervals(fields["bed"]) if fields["bed"] else None
        variants = open_variants(fields["vcf"]) if fields["vcf"] else None
        tracks = [SignalTrack(p) for p in fields["bigwig"]]
        region = _first_region(bed, variants, tracks)
    layers = region_layer_data(genome, region, tracks=tracks, bed=bed, variants=variants)
    opened = {**fields, "region": region.locus}
    for _, kwargs, _ in layers:
        meta = kwargs.setdefault("metadata", {})
        meta["genome_files"] = opened
        meta["genome_view"] = True  # the Genome view's browser updates these layers in place
    return layers


def _first_region(bed: Any, variants: Any, tracks: list, width: int = 10_000) -> Region:
    """``width`` bp where the first interval, variant or signal chromosome starts."""
    for source in (bed, variants):
        if source is None:
            continue
        if hasattr(source, "first_region"):  # an indexed file
            return source.first_region(width)
        if len(source):
            first = source.iloc[0]
            start = (int(first["start"]) // width) * width
            return Region(str(first["chrom"]), start, start + width)
    for track in tracks:
        if track.chromosomes:
            chrom, size = next(iter(track.chromosomes.items()))
            return Region(chrom, 0, min(int(size), width))
    raise DlcbError("the tracks hold no interval, variant or chromosome to show")
