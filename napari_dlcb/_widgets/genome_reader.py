"""Open genome files (FASTA, BED, VCF, bigWig/bedGraph) from File > Open or by drag and drop.

Genome files are not images: a FASTA can be gigabytes, and BED, VCF and signal
tracks only make sense against a region of a genome. So the npe2 reader does
what a user expects of napari-dlcb instead of dumping whole files into layers:
it opens the **Genome view** dock (or reuses it), which reads the files in a
job and, once a FASTA is known, shows a region (the current one if it lies in
this genome; else a FASTA of regions whole, or the first kilobase of the first
chromosome) with every track at its chromosome coordinates. A new FASTA
replaces the previous genome. It returns napari's "no layers" sentinel
``[(None,)]`` because the dock adds the layers; a bad file is reported in the
dock's status line and a notification.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = ["GENOME_SUFFIXES", "genome_file_kind", "get_genome_reader", "read_genome_files"]

#: field of the Genome view -> file name endings it takes (lower case)
GENOME_SUFFIXES = {
    "fasta": (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz"),
    "bed": (".bed", ".bed.gz", ".narrowpeak", ".broadpeak", ".narrowpeak.gz"),
    "vcf": (".vcf", ".vcf.gz"),
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
    """npe2 reader contribution: a reader when every path is a genome file, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(genome_file_kind(p) is None for p in paths):
        return None
    return read_genome_files


def read_genome_files(path: PathOrPaths) -> list[tuple[Any, ...]]:
    """Open the files in the Genome view of the current napari window (in a job).

    Returns
    -------
    list
        ``[(None,)]``: napari's sentinel for "read, no layers to add" (the
        Genome view adds them).
    """
    import napari

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    viewer = napari.current_viewer()
    if viewer is None:
        raise DlcbError("genome files open in the Genome view of a napari window; none is open")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dlcb", "Genome view")
    widget.open_files([str(p) for p in paths])
    return [(None,)]
