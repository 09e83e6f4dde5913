"""Genomic regions: 0-based half-open inside, 1-based loci for people, chromosome aliases.

Two spellings of the same interval, as in every genome browser:

========================  ===============================  ==============================
where                     text                             meaning
========================  ===============================  ==============================
BED, bedGraph, FASTA      ``chr2:74060452-74061452``       0-based, half-open (``seq[a:b]``)
headers, ``--region``
UCSC / IGV search box,    ``chr2:74,060,453-74,061,452``   1-based, both ends included
the Genome view
========================  ===============================  ==============================

:func:`parse_region` reads the first, :func:`parse_locus` the second, and both
give the same :class:`Region` (stored 0-based, half-open). :meth:`Region.locus`
writes the 1-based spelling. Chromosome names match across files whatever
their spelling (``chr1``/``1``, ``chrM``/``MT``): see :func:`match_chrom`.

No torch, no pandas here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = [
    "Region",
    "chrom_aliases",
    "format_locus",
    "match_chrom",
    "parse_locus",
    "parse_region",
    "resolve_region",
]

_NUMBER = r"[\d,_]+"
_REGION_RE = re.compile(rf"^\s*([^:\s]+)\s*:\s*({_NUMBER})\s*-\s*({_NUMBER})\s*$")
_POSITION_RE = re.compile(rf"^\s*([^:\s]+)\s*:\s*({_NUMBER})\s*$")
_MITO = ("M", "MT")


@dataclass(frozen=True)
class Region:
    """A genomic interval, 0-based half-open (as in BED).

    Examples
    --------
    >>> r = Region("chr2", 74060452, 74061452)
    >>> len(r), str(r), r.locus
    (1000, 'chr2:74060452-74061452', 'chr2:74,060,453-74,061,452')
    """

    chrom: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"

    @property
    def locus(self) -> str:
        """The 1-based, inclusive spelling of UCSC and IGV (with thousands separators)."""
        return format_locus(self)


def _number(text: str) -> int:
    return int(text.replace(",", "").replace("_", ""))


def parse_region(text: str) -> Region:
    """Parse ``chr:start-end`` (0-based, half-open; commas allowed) into a :class:`Region`.

    Parameters
    ----------
    text : str
        For example ``"chr2:74,060,452-74,061,452"``.

    Returns
    -------
    Region

    Examples
    --------
    >>> parse_region("chr1:1,000-2,000")
    Region(chrom='chr1', start=1000, end=2000)
    """
    m = _REGION_RE.match(str(text))
    if not m:
        raise DlcbError(f"cannot read region {text!r}: expected chr:start-end, e.g. chr1:1000-2000")
    start, end = _number(m.group(2)), _number(m.group(3))
    if end <= start:
        raise DlcbError(f"region {text!r} is empty: end must be greater than start")
    return Region(m.group(1), start, end)


def parse_locus(text: str) -> Region:
    """Parse a locus as typed in UCSC or IGV (1-based, both ends included; commas allowed).

    ``chr2:74,060,453-74,061,452`` is the 1,000 bp that BED writes as
    ``chr2 74060452 74061452``; a single position ``chr2:74,060,453`` is one base.

    Parameters
    ----------
    text : str
        ``chrom:start-end`` or ``chrom:position``.

    Returns
    -------
    Region
        0-based, half-open.

    Examples
    --------
    >>> parse_locus("chr2:74,060,453-74,061,452")
    Region(chrom='chr2', start=74060452, end=74061452)
    >>> parse_locus("chrM:1")
    Region(chrom='chrM', start=0, end=1)
    """
    text = str(text)
    m = _REGION_RE.match(text)
    if m:
        start, end = _number(m.group(2)), _number(m.group(3))
    else:
        m = _POSITION_RE.match(text)
        if not m:
            raise DlcbError(
                f"cannot read locus {text!r}: expected chr:start-end, e.g. chr2:74,060,453-74,061,452"
            )
        start = end = _number(m.group(2))
    if start < 1:
        raise DlcbError(f"locus {text!r}: positions are 1-based, so the first base is 1")
    if end < start:
        raise DlcbError(f"locus {text!r} is empty: end must not be before start")
    return Region(m.group(1), start - 1, end)


def format_locus(region: Region) -> str:
    """``chrom:start-end`` 1-based and inclusive, with thousands separators (UCSC/IGV style).

    Examples
    --------
    >>> format_locus(Region("chr1", 0, 1000))
    'chr1:1-1,000'
    """
    return f"{region.chrom}:{region.start + 1:,}-{region.end:,}"


def chrom_aliases(name: str) -> list[str]:
    """Spellings of a chromosome name used by different genome builds, ``name`` first.

    UCSC writes ``chr1`` and ``chrM``, Ensembl and NCBI ``1`` and ``MT``.

    Examples
    --------
    >>> chrom_aliases("chrM")
    ['chrM', 'M', 'MT', 'chrMT']
    >>> chrom_aliases("7")
    ['7', 'chr7']
    """
    base = name[3:] if name[:3].lower() == "chr" and len(name) > 3 else name
    bases = [base]
    if base.upper() in _MITO:
        bases += [m for m in _MITO if m != base.upper()]
    out = [name]
    for b in bases:
        for cand in (b, "chr" + b):
            if cand not in out:
                out.append(cand)
    return out


def match_chrom(name: str, names: Collection[str]) -> str | None:
    """The spelling of chromosome ``name`` found in ``names`` (exact first), else None.

    Examples
    --------
    >>> match_chrom("2", {"chr2", "chrX"}), match_chrom("chrMT", ["M"]), match_chrom("chr3", ["chr2"])
    ('chr2', 'M', None)
    """
    for cand in chrom_aliases(str(name)):
        if cand in names:
            return cand
    return None


def resolve_region(
    text: str,
    *,
    genome: Any = None,
    bed: Any = None,
    width: int = 1000,
    one_based: bool = False,
) -> Region:
    """A region from ``chr:start-end``, or from the name of a BED interval.

    Parameters
    ----------
    text : str
        ``chr:start-end``, or a name in ``bed``'s ``name`` column (exact match
        first, then case-insensitive; the first such interval is used).
    genome : Genome, optional
        Clips a named region to its chromosome, and spells the chromosome as
        the genome does (``2`` becomes ``chr2`` for a UCSC genome).
    bed : pandas.DataFrame, optional
        Intervals from :func:`~napari_dlcb.io.tracks.read_bed`.
    width : int
        Width of the window centred on a named interval (the interval itself
        when it is wider).
    one_based : bool
        Read coordinates as a 1-based UCSC/IGV locus (:func:`parse_locus`)
        instead of 0-based half-open (:func:`parse_region`).

    Returns
    -------
    Region

    Examples
    --------
    >>> import pandas as pd
    >>> bed = pd.DataFrame({"chrom": ["chr1"], "start": [5000], "end": [5200], "name": ["GATA3_peak"]})
    >>> resolve_region("gata3_peak", bed=bed)
    Region(chrom='chr1', start=4600, end=5600)
    >>> resolve_region("chr1:4,601-5,600", one_based=True)
    Region(chrom='chr1', start=4600, end=5600)
    """
    text = str(text).strip()
    parse = parse_locus if one_based else parse_region
    looks_like_coordinates = _REGION_RE.match(text) or (one_based and _POSITION_RE.match(text))
    if looks_like_coordinates or bed is None or "name" not in getattr(bed, "columns", ()):
        region = parse(text)
        return _in_genome_spelling(region, genome)
    names = bed["name"].astype(str)
    hit = bed[names == text]
    if hit.empty:
        hit = bed[names.str.lower() == text.lower()]
    if hit.empty:
        raise DlcbError(
            f"cannot read region {text!r}: expected chr:start-end or the name of a BED interval"
        )
    r = hit.iloc[0]
    start, end = int(r.start), int(r.end)
    if end - start < width:
        mid = (start + end) // 2
        start, end = mid - width // 2, mid - width // 2 + width
    start = max(0, start)
    region = _in_genome_spelling(Region(str(r.chrom), start, end), genome)
    if genome is not None and region.chrom in genome.chromosomes:
        region = Region(region.chrom, start, min(end, genome.chromosomes[region.chrom]))
    return region


def _in_genome_spelling(region: Region, genome: Any) -> Region:
    if genome is None:
        return region
    name = match_chrom(region.chrom, genome.chromosomes)
    return region if name is None else Region(name, region.start, region.end)
