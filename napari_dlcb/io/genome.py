"""Genome files in one import: FASTA, BED, bedGraph/bigWig, VCF and regions.

The readers live in :mod:`~napari_dlcb.io.fasta` (indexed FASTA genomes in
chromosome coordinates, also for FASTA files of regions),
:mod:`~napari_dlcb.io.tracks` (BED, signal tracks), :mod:`~napari_dlcb.io.vcf`
(VCF and BCF), :mod:`~napari_dlcb.io.tabix` (bgzipped files with a tabix or
CSI index, read by region) and :mod:`~napari_dlcb.io.regions` (0-based
regions, 1-based UCSC/IGV loci, chromosome aliases); this module gathers them::

    from napari_dlcb.io.genome import read_fasta, read_bed, parse_locus

All coordinates are 0-based and half-open, as in BED: ``chr1:100-200`` is the
100 bases ``seq[100:200]``; the 1-based spelling ``chr1:101-200`` is read by
:func:`parse_locus` and written by :attr:`Region.locus`.
"""

from __future__ import annotations

from napari_dlcb.io.fasta import Genome, read_fasta, read_fasta_records, record_region
from napari_dlcb.io.intervals import IndexedIntervals, intervals_in, open_intervals
from napari_dlcb.io.regions import (
    Region,
    chrom_aliases,
    format_locus,
    match_chrom,
    parse_locus,
    parse_region,
    resolve_region,
)
from napari_dlcb.io.tabix import TabixSource, compress_and_index, is_indexed
from napari_dlcb.io.tracks import (
    SignalTrack,
    open_track,
    read_bed,
    read_bedgraph,
    track_name,
)
from napari_dlcb.io.vcf import IndexedVariants, open_variants, read_vcf, variants_in

__all__ = [
    "Genome",
    "IndexedIntervals",
    "IndexedVariants",
    "Region",
    "SignalTrack",
    "TabixSource",
    "chrom_aliases",
    "compress_and_index",
    "format_locus",
    "intervals_in",
    "is_indexed",
    "match_chrom",
    "open_intervals",
    "open_track",
    "open_variants",
    "parse_locus",
    "parse_region",
    "read_bed",
    "read_bedgraph",
    "read_fasta",
    "read_fasta_records",
    "read_vcf",
    "record_region",
    "resolve_region",
    "track_name",
    "variants_in",
]
