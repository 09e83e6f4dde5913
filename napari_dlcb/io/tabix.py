r"""Indexed genome files: bgzipped + tabix-indexed VCF, BED and bedGraph, and BCF, read by region.

A file compressed with ``bgzip`` and indexed with ``tabix`` (``x.vcf.gz`` +
``x.vcf.gz.tbi`` or ``.csi``), or a BCF with its ``.csi``, can be read one
region at a time: opening it reads the header and the index only, and a query
decompresses the few 64-kb blocks that hold the region. That is how IGV and
every genome browser open whole-genome files. Here :mod:`pysam` (htslib) does
the work; the readers of :mod:`~napari_dlcb.io.tracks` and
:mod:`~napari_dlcb.io.vcf` use it when an index is present and read plain
files whole otherwise.

This module hands out **text fields**, one list per record, exactly as a line
of the file would give them, so that indexed and plain files go through the
same parsing and checks::

    with TabixSource("calls.vcf.gz") as src:
        for fields in src.fetch("chr1", 10_000, 20_000):
            ...  # ["chr1", "10021", "rs1", "A", "G", ...]

Chromosome names match whatever their spelling (``chr1``/``1``): see
:func:`~napari_dlcb.io.regions.match_chrom`. No torch here; pysam is imported
when an indexed file is opened. pysam has no Windows build: there an indexed
file is read whole like a gzip one (:func:`is_indexed` is False), and a BCF
is refused with a one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.regions import match_chrom
from napari_dlcb.io.textfiles import check_file, one_line

__all__ = [
    "INDEX_SUFFIXES",
    "TabixSource",
    "compress_and_index",
    "have_pysam",
    "index_path",
    "is_bcf",
    "is_bgzf",
    "is_indexed",
]

#: index files looked for next to a data file, in this order
INDEX_SUFFIXES = (".tbi", ".csi")


def is_bgzf(path: str | os.PathLike) -> bool:
    r"""Whether the file is BGZF (``bgzip``) compressed: gzip with the ``BC`` extra field.

    Examples
    --------
    >>> import gzip, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bed.gz"
    >>> _ = p.write_bytes(gzip.compress(b"chr1\t0\t1\n"))
    >>> is_bgzf(p)  # plain gzip, not bgzip
    False
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(18)
    except OSError:
        return False
    return (
        len(head) >= 18 and head[:2] == b"\x1f\x8b" and bool(head[3] & 4) and head[12:14] == b"BC"
    )


def is_bcf(path: str | os.PathLike) -> bool:
    """Whether the file is a BCF (binary VCF): BGZF whose first bytes are ``BCF``."""
    if not is_bgzf(path):
        return False
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(3) == b"BCF"
    except (OSError, EOFError):
        return False


def index_path(path: str | os.PathLike) -> Path | None:
    """The ``.tbi`` or ``.csi`` index next to ``path``, or None.

    Examples
    --------
    >>> index_path("/no/such/file.vcf.gz") is None
    True
    """
    p = Path(path)
    for suffix in INDEX_SUFFIXES:
        cand = p.with_name(p.name + suffix)
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=1)
def have_pysam() -> bool:
    """Whether pysam can be imported (it has no Windows build)."""
    try:
        import pysam  # noqa: F401
    except ImportError:
        return False
    return True


def is_indexed(path: str | os.PathLike) -> bool:
    """Whether ``path`` can be read by region: BGZF with a ``.tbi``/``.csi`` index, and pysam."""
    return index_path(path) is not None and is_bgzf(path) and have_pysam()


def compress_and_index(
    path: str | os.PathLike, *, preset: str, out: str | os.PathLike | None = None
) -> Path:
    r"""``bgzip`` a sorted text file and ``tabix``-index it (``out`` defaults to ``path + ".gz"``).

    Parameters
    ----------
    path : path-like
        Plain text VCF, BED or bedGraph, sorted by chromosome and start.
    preset : {"vcf", "bed"}
        Column layout (bedGraph uses ``"bed"``).
    out : path-like, optional
        The ``.gz`` to write; its index is ``out + ".tbi"``.

    Returns
    -------
    pathlib.Path
        The compressed file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bed"
    >>> _ = p.write_text("chr1\t10\t20\tx\nchr1\t30\t40\ty\n")
    >>> gz = compress_and_index(p, preset="bed")
    >>> is_indexed(gz), [f[3] for f in TabixSource(gz).fetch("1", 0, 25)]
    (True, ['x'])
    """
    import pysam

    if preset not in ("vcf", "bed"):
        raise DlcbError(f"preset must be 'vcf' or 'bed', not {preset!r}")
    src = check_file(path, preset.upper())
    dst = Path(out) if out is not None else src.with_name(src.name + ".gz")
    try:
        pysam.tabix_compress(str(src), str(dst), force=True)
        pysam.tabix_index(str(dst), preset=preset, force=True)
    except (OSError, ValueError) as err:
        raise DlcbError(
            f"{src.name}: cannot bgzip and index ({one_line(err)}; is it sorted?)"
        ) from err
    return dst


class TabixSource:
    """An open indexed file (VCF/BED/bedGraph ``.gz`` with an index, or BCF): text fields by region.

    Parameters
    ----------
    path : path-like
        BGZF file with a ``.tbi``/``.csi`` next to it, or a BCF (indexed or
        not: a BCF without an index can still be read whole with
        :meth:`records`).

    Attributes
    ----------
    contigs : list of str
        The chromosome names the index knows (those with records).
    bcf : bool
        Whether the file is a BCF (read through ``pysam.VariantFile``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_file(path, "indexed")
        self.bcf = is_bcf(self.path)
        if not have_pysam():
            raise DlcbError(
                f"{self.path.name}: reading {'BCF' if self.bcf else 'indexed files'} needs pysam, "
                "which has no Windows build (convert to VCF, or use WSL)"
            )
        import pysam

        self._index = index_path(self.path)
        if not self.bcf and (self._index is None or not is_bgzf(self.path)):
            raise DlcbError(
                f"{self.path.name}: not an indexed file (bgzip it and run tabix, or read it whole)"
            )
        try:
            if self.bcf:
                self._fh: Any = pysam.VariantFile(str(self.path))
                names = list(self._fh.index.keys()) if self._fh.index is not None else []
                self.contigs = names or list(self._fh.header.contigs)
            else:
                self._fh = pysam.TabixFile(str(self.path), index=str(self._index))
                self.contigs = list(self._fh.contigs)
        except (OSError, ValueError) as err:
            raise DlcbError(
                f"{self.path.name}: cannot open the indexed file ({one_line(err)})"
            ) from err

    def __enter__(self) -> TabixSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TabixSource({self.path.name!r}, {len(self.contigs)} contigs)"

    def contig(self, chrom: str) -> str | None:
        """The file's spelling of ``chrom`` (``2`` -> ``chr2``), or None if it has no records there."""
        return match_chrom(str(chrom), self.contigs)

    def fetch(self, chrom: str, start: int, end: int) -> Iterator[list[str]]:
        """Text fields of every record overlapping ``chrom:start-end`` (0-based, half-open).

        A chromosome the file has no records on yields nothing.
        """
        name = self.contig(chrom)
        if name is None or end <= start:
            return iter(())
        try:
            if self.bcf:
                return (_bcf_fields(r) for r in self._fh.fetch(name, int(start), int(end)))
            return (line.split("\t") for line in self._fh.fetch(name, int(start), int(end)))
        except (OSError, ValueError) as err:
            raise DlcbError(
                f"{self.path.name}: cannot read {chrom}:{start}-{end} ({one_line(err)})"
            ) from err

    def records(self) -> Iterator[list[str]]:
        """Text fields of every record in file order (a whole read)."""
        try:
            if self.bcf:
                yield from (_bcf_fields(r) for r in self._fh)
            else:
                yield from (line.split("\t") for line in self._fh.fetch())
        except (OSError, ValueError) as err:
            raise DlcbError(f"{self.path.name}: cannot read ({one_line(err)})") from err

    def first_record(self) -> list[str] | None:
        """The first record's fields (where a viewer opening the file alone looks first)."""
        for contig in self.contigs:
            for fields in self.fetch(contig, 0, 2**31 - 1):
                return fields
        return None

    def header(self) -> list[str]:
        """The header lines (``#`` lines of a VCF/BED; the VCF header of a BCF)."""
        if self.bcf:
            return str(self._fh.header).splitlines()
        return list(self._fh.header)

    def close(self) -> None:
        """Close the file handle."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _bcf_fields(rec: Any) -> list[str]:
    """A BCF record as the first five VCF text fields."""
    alts = ",".join(rec.alts) if rec.alts else "."
    return [rec.chrom, str(rec.pos), rec.id or ".", rec.ref or "N", alts]
