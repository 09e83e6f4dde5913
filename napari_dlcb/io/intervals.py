"""Indexed BED files kept open, and the intervals of one region from a table or an index."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.regions import Region, match_chrom, parse_region
from napari_dlcb.io.tabix import TabixSource, is_indexed
from napari_dlcb.io.textfiles import check_file
from napari_dlcb.io.tracks import bed_table, read_bed, track_name

__all__ = ["IndexedIntervals", "intervals_in", "open_intervals"]


class IndexedIntervals:
    r"""An indexed BED kept open: the intervals of one region at a time (see :func:`read_bed`).

    Parameters
    ----------
    path : path-like
        bgzipped BED with a ``.tbi``/``.csi`` index.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_dlcb.io.tabix import compress_and_index
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bed"
    >>> _ = p.write_text("chr1\t10\t20\tx\nchr1\t300\t400\ty\n")
    >>> b = IndexedIntervals(compress_and_index(p, preset="bed"))
    >>> b.fetch("chr1:0-100").name.tolist(), b.first_region(1000)
    (['x'], Region(chrom='chr1', start=0, end=1000))
    """

    def __init__(self, path: str | os.PathLike):
        self.source = TabixSource(path)
        self.path = self.source.path
        self.contigs = self.source.contigs
        self.attrs = {"source": str(self.path), "track_name": track_name(self.path), "outside": 0}

    def __repr__(self) -> str:
        return f"IndexedIntervals({self.path.name!r}, {len(self.contigs)} contigs)"

    def fetch(self, region: Region | str) -> pd.DataFrame:
        """The intervals overlapping ``region`` (a :func:`read_bed` table, maybe empty)."""
        r = parse_region(region) if isinstance(region, str) else region
        lines = [(-1, "\t".join(f)) for f in self.source.fetch(r.chrom, r.start, r.end)]
        df, _ = bed_table(lines, self.path.name, empty_ok=True)
        df.attrs.update(self.attrs)
        return df

    def first_region(self, width: int = 10_000) -> Region:
        """``width`` bp of the first interval's chromosome, from that interval's window."""
        first = self.source.first_record()
        if first is None:
            raise DlcbError(f"{self.path.name}: no intervals found in the BED file")
        start = (int(first[1]) // width) * width
        return Region(first[0], start, start + width)

    def close(self) -> None:
        """Close the file."""
        self.source.close()


def open_intervals(
    path: str | os.PathLike, *, genome: Any = None, outside: str = "keep"
) -> pd.DataFrame | IndexedIntervals:
    """An :class:`IndexedIntervals` when ``path`` has an index, else :func:`read_bed`'s table."""
    p = check_file(path, "BED")
    if is_indexed(p):
        return IndexedIntervals(p)
    return read_bed(p, genome=genome, outside=outside)


def intervals_in(bed: pd.DataFrame | IndexedIntervals, region: Region | str) -> pd.DataFrame:
    """The intervals of a table or an indexed BED that overlap ``region``, with their row numbers.

    Rows of a table keep their index (the row in the whole file); rows of an
    indexed BED are numbered within the region.

    Examples
    --------
    >>> t = pd.DataFrame({"chrom": ["chr1", "chr1"], "start": [5, 50], "end": [9, 60], "name": ["a", "b"]})
    >>> intervals_in(t, "1:0-10").name.tolist()
    ['a']
    """
    r = parse_region(region) if isinstance(region, str) else region
    if isinstance(bed, IndexedIntervals):
        return bed.fetch(r)
    chrom = match_chrom(r.chrom, set(bed["chrom"].astype(str))) or r.chrom
    mask = (bed["chrom"] == chrom) & (bed["end"] > r.start) & (bed["start"] < r.end)
    return bed[mask.to_numpy()]
