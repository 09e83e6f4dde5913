r"""VCF and BCF variants: read whole, or by region through a tabix/CSI index.

=====================================  =========================================
file                                   read
=====================================  =========================================
``x.vcf``, ``x.vcf.gz`` (gzip)         whole, in Python (a region = whole + filter)
``x.vcf.gz`` (bgzip) + ``.tbi/.csi``   by region with pysam (whole if asked)
``x.bcf`` (+ ``.csi``)                 with pysam (by region when indexed)
=====================================  =========================================

Every path gives the same table (see :func:`read_vcf`), through the same
checks: a REF that is not DNA, a bad POS, a truncated file are one-line
:class:`~napari_dlcb.errors.DlcbError`\ s naming the file. :class:`IndexedVariants`
keeps an indexed file open for a viewer that asks for one region after
another; :func:`open_variants` picks it when an index is present.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.regions import Region, match_chrom, parse_region
from napari_dlcb.io.tabix import TabixSource, is_bcf, is_indexed
from napari_dlcb.io.textfiles import check_file, one_line, open_text

__all__ = ["VCF_COLUMNS", "IndexedVariants", "open_variants", "read_vcf", "variants_in"]

#: columns of every variant table
VCF_COLUMNS = ["chrom", "pos", "start", "id", "ref", "alt", "kind", "line"]
_BASES = re.compile(r"^[ACGTNacgtn]+$")


def _as_region(region: Region | str) -> Region:
    return parse_region(region) if isinstance(region, str) else region


def _record_rows(f: list[str], lineno: int, fname: str) -> list[tuple]:
    """One VCF record's text fields as table rows (one per ALT allele), checked."""
    where = f"line {lineno}" if lineno > 0 else f"record at {f[0]}:{f[1] if len(f) > 1 else '?'}"
    if len(f) < 5:
        raise DlcbError(
            f"{fname}: {where} has {len(f)} columns; VCF needs at least 5 (truncated file?)"
        )
    try:
        pos = int(f[1])
    except ValueError as err:
        raise DlcbError(f"{fname}: {where}: POS {f[1]!r} is not an integer") from err
    if pos < 1:
        raise DlcbError(f"{fname}: {where}: POS must be >= 1, got {pos}")
    ref = f[3].upper()
    if not _BASES.match(ref):
        raise DlcbError(f"{fname}: {where}: REF {f[3]!r} is not a DNA sequence")
    rows = []
    for alt in f[4].split(","):
        alt_u = alt.upper()
        if alt_u in (".", "*") or not _BASES.match(alt_u):
            kind = "symbolic"
        elif len(alt_u) == 1 and len(ref) == 1:
            kind = "snv"
        elif len(alt_u) == len(ref):
            kind = "mnv"
        else:
            kind = "indel"
        rows.append((f[0], pos, pos - 1, f[2], ref, alt_u, kind, lineno))
    return rows


def _table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=VCF_COLUMNS)


def read_vcf(path: str | os.PathLike, *, region: Region | str | None = None) -> pd.DataFrame:
    r"""Read the variant columns of a VCF or BCF into a table, whole or for one region.

    Multi-allelic records become one row per ALT allele. Symbolic alleles
    (``<DEL>``) and breakends are kept but flagged ``kind = "symbolic"`` so
    callers can report, rather than silently drop, them.

    Parameters
    ----------
    path : path-like
        VCF (plain, gzip or bgzip) or BCF; the ``#CHROM`` header line is
        required in a VCF.
    region : Region or str, optional
        Only the variants whose first base lies in this region (0-based,
        half-open; ``"chr1:1000-2000"``; any spelling of the chromosome).
        With a ``.tbi``/``.csi`` index next to a bgzipped VCF or a BCF, only
        that part of the file is read; a plain file is read whole and
        filtered.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, pos`` (1-based, as in the file), ``start`` (0-based),
        ``id, ref, alt, kind`` (``"snv"``, ``"indel"``, ``"mnv"`` or
        ``"symbolic"``) and ``line`` (line number in the file; -1 where the
        file was read through its index or is a BCF). A region without
        variants gives an empty table; a whole file without any is an error.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.vcf"
    >>> _ = p.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
    ...                  "chr1\t5\trs1\tA\tG,T\nchr1\t50\trs2\tC\tA\n")
    >>> read_vcf(p)[["chrom", "start", "ref", "alt"]].values.tolist()
    [['chr1', 4, 'A', 'G'], ['chr1', 4, 'A', 'T'], ['chr1', 49, 'C', 'A']]
    >>> read_vcf(p, region="1:40-60").id.tolist()
    ['rs2']
    """
    p = check_file(path, "VCF")
    if is_bcf(p) or (region is not None and is_indexed(p)):
        with TabixSource(p) as src:
            if region is None:
                return _checked_whole(_rows(src.records(), p.name), p.name)
            r = _as_region(region)
            return _in_region(_table(_rows(src.fetch(r.chrom, r.start, r.end), p.name)), r)
    table = _read_text(p)
    return table if region is None else _in_region(table, _as_region(region))


def _rows(records: Iterable[list[str]], fname: str) -> list[tuple]:
    rows: list[tuple] = []
    for f in records:
        rows += _record_rows(f, -1, fname)
    return rows


def _checked_whole(rows: list[tuple], fname: str) -> pd.DataFrame:
    if not rows:
        raise DlcbError(f"{fname}: the VCF has a header but no variants")
    return _table(rows)


def _in_region(table: pd.DataFrame, r: Region) -> pd.DataFrame:
    """The rows whose first base lies in ``r`` (any spelling of its chromosome)."""
    chrom = match_chrom(r.chrom, set(table["chrom"].astype(str))) if len(table) else None
    if chrom is None:
        return table.iloc[:0].reset_index(drop=True)
    keep = (table["chrom"] == chrom) & (table["start"] >= r.start) & (table["start"] < r.end)
    return table[keep.to_numpy()].reset_index(drop=True)


def _read_text(p: Path) -> pd.DataFrame:
    """A plain or gzip VCF read line by line."""
    rows: list[tuple] = []
    seen_header = False
    try:
        for lineno, line in _vcf_lines(p):
            if line.startswith("##"):
                continue
            if line.startswith("#"):
                seen_header = True
                continue
            if not seen_header:
                raise DlcbError(
                    f"{p.name}: line {lineno} comes before the '#CHROM' header line (not a VCF?)"
                )
            rows += _record_rows(line.split("\t"), lineno, p.name)
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        raise DlcbError(
            f"{p.name}: cannot read VCF (truncated or corrupt file: {one_line(err)})"
        ) from err
    if not seen_header:
        raise DlcbError(f"{p.name}: no '#CHROM' header line found (not a VCF?)")
    return _checked_whole(rows, p.name)


def _vcf_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.rstrip("\r\n")
            if s.strip():
                yield lineno, s


class IndexedVariants:
    r"""An indexed VCF/BCF kept open: the variants of one region at a time.

    Opening reads the header and the index only (well under a second for a
    genome-wide file of millions of records); :meth:`fetch` decompresses only
    the blocks that hold the region.

    Parameters
    ----------
    path : path-like
        bgzipped VCF with a ``.tbi``/``.csi`` index, or an indexed BCF.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_dlcb.io.tabix import compress_and_index
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.vcf"
    >>> _ = p.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
    ...                  "chr1\t5\trs1\tA\tG\nchr1\t50\trs2\tC\tA\n")
    >>> v = IndexedVariants(compress_and_index(p, preset="vcf"))
    >>> v.fetch("chr1:0-10").id.tolist(), v.first_region(100)
    (['rs1'], Region(chrom='chr1', start=0, end=100))
    """

    def __init__(self, path: str | os.PathLike):
        self.source = TabixSource(path)
        if not self.source.bcf and not any(
            h.startswith("#CHROM") for h in self.source.header()[-3:]
        ):
            name = self.source.path.name
            self.source.close()
            raise DlcbError(f"{name}: no '#CHROM' header line found (not a VCF?)")
        self.path = self.source.path
        self.contigs = self.source.contigs

    def __repr__(self) -> str:
        return f"IndexedVariants({self.path.name!r}, {len(self.contigs)} contigs)"

    def fetch(self, region: Region | str) -> pd.DataFrame:
        """The variants whose first base lies in ``region`` (a :func:`read_vcf` table)."""
        r = _as_region(region)
        rows = _rows(self.source.fetch(r.chrom, r.start, r.end), self.path.name)
        return _in_region(_table(rows), r)

    def first_region(self, width: int = 10_000) -> Region:
        """``width`` bp from the first variant's chromosome, starting at that variant's window."""
        first = self.source.first_record()
        if first is None:
            raise DlcbError(f"{self.path.name}: the VCF has no variants")
        start = (max(0, int(first[1]) - 1) // width) * width
        return Region(first[0], start, start + width)

    def close(self) -> None:
        """Close the file."""
        self.source.close()


def open_variants(path: str | os.PathLike) -> pd.DataFrame | IndexedVariants:
    """An :class:`IndexedVariants` when ``path`` has an index (or is a BCF), else the whole table."""
    p = check_file(path, "VCF")
    if is_indexed(p):
        return IndexedVariants(p)
    return read_vcf(p)


def variants_in(variants: pd.DataFrame | IndexedVariants, region: Region | str) -> pd.DataFrame:
    """The variants of a table or of an indexed file that lie in ``region``.

    Examples
    --------
    >>> t = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [5, 50], "id": ["a", "b"]})
    >>> variants_in(t, "1:0-10").id.tolist()
    ['a']
    """
    if isinstance(variants, IndexedVariants):
        return variants.fetch(region)
    return _in_region(variants, _as_region(region))
