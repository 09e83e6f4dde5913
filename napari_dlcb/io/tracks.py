"""Genome tracks: BED intervals and bedGraph/bigWig signal, in chromosome coordinates.

All coordinates are 0-based and half-open, as in BED. Chromosome names are
matched to a genome's whatever their spelling (``chr1``/``1``, ``chrM``/``MT``;
see :func:`~napari_dlcb.io.regions.match_chrom`).

A BED or bedGraph compressed with ``bgzip`` and indexed with ``tabix`` is read
by region (``region=``, :class:`IndexedIntervals`, :class:`SignalTrack`) through
:mod:`~napari_dlcb.io.tabix`; plain and gzip files are read whole. VCF and BCF
live in :mod:`~napari_dlcb.io.vcf` (:func:`read_vcf` is re-exported here).

Every reader turns bad input into a one-line :class:`~napari_dlcb.errors.DlcbError`
naming the file and, where it helps, the line: unknown chromosomes, intervals
beyond a chromosome end, empty or truncated files, malformed rows.

No torch here; pyBigWig is imported when a bigWig is opened, pysam when an
indexed file is.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.bigwig import check_bigwig
from napari_dlcb.io.regions import Region, match_chrom, parse_region
from napari_dlcb.io.tabix import TabixSource, is_indexed
from napari_dlcb.io.textfiles import check_file, one_line, open_text
from napari_dlcb.io.vcf import read_vcf

__all__ = [
    "OUTSIDE",
    "SignalTrack",
    "bed_table",
    "open_track",
    "read_bed",
    "read_bedgraph",
    "read_vcf",
    "track_name",
]

BED_COLUMNS = ["chrom", "start", "end", "name", "score", "strand"]
_EMPTY_BED = {"chrom": object, "start": np.int64, "end": np.int64, "name": object}
#: What :func:`read_bed` does with intervals a genome does not hold.
OUTSIDE = ("error", "keep", "drop")


def track_name(path: str | os.PathLike) -> str | None:
    r"""The ``name=`` of a UCSC ``track`` line at the top of a BED/bedGraph file, if any.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bedgraph"
    >>> _ = p.write_text("track type=bedGraph name='4C (smoothed)' visibility=full\nchr1\t0\t5\t1\n")
    >>> track_name(p)
    '4C (smoothed)'
    """
    with open_text(path) as fh:
        for _, line in zip(range(50), fh):
            if line.startswith("track"):
                try:
                    fields = shlex.split(line)
                except ValueError:
                    fields = line.split()
                for f in fields:
                    if f.startswith("name="):
                        return f[5:].strip() or None
            elif line.strip() and not line.startswith(("#", "browser")):
                return None
    return None


# --------------------------------------------------------------------------- BED
def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.rstrip("\r\n")
            if not s.strip() or s.startswith(("#", "track", "browser")):
                continue
            yield lineno, s


def read_bed(
    path: str | os.PathLike,
    *,
    genome: Any = None,
    outside: str = "error",
    region: Region | str | None = None,
) -> pd.DataFrame:
    r"""Read a BED file (BED3 to BED12, plain, gzip or bgzip + tabix) into a table.

    Parameters
    ----------
    path : path-like
        BED file. ``track``, ``browser`` and ``#`` lines are skipped.
    genome : Genome or dict, optional
        If given, chromosome names are spelt as the genome spells them
        (``2`` becomes ``chr2``) and every interval is checked against what
        the genome holds (chromosome lengths, or the regions of a FASTA of
        regions).
    outside : {"error", "keep", "drop"}
        What to do with an interval the genome does not hold (unknown
        chromosome, beyond a chromosome end, outside the FASTA's regions):
        ``"error"`` raises :class:`DlcbError` naming the line; ``"keep"``
        keeps it (a genome view simply does not draw it); ``"drop"`` leaves
        it out. Either way ``attrs["outside"]`` counts them.
    region : Region or str, optional
        Only the intervals overlapping this region (0-based, half-open;
        ``"chr1:1000-2000"``). A bgzipped BED with a ``.tbi``/``.csi`` index
        is read only there; a plain one is read whole and filtered. A region
        without intervals gives an empty table.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end`` (int64) and, where present, ``name,
        score, strand`` and further columns (``col7`` ...). A BED without
        names gets ``name = chrom:start-end``. ``attrs`` holds ``source``,
        ``track_name`` (from a ``track name=...`` line) and ``outside``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bed"
    >>> _ = p.write_text("track name=x\nchr1\t10\t20\tpeak1\nchr1\t30\t40\tpeak2\n")
    >>> read_bed(p)[["chrom", "start", "end", "name"]].values.tolist()
    [['chr1', 10, 20, 'peak1'], ['chr1', 30, 40, 'peak2']]
    >>> read_bed(p, genome={"1": 35}, outside="keep").attrs["outside"]
    1
    >>> read_bed(p, region="chr1:25-35").name.tolist()
    ['peak2']
    """
    if outside not in OUTSIDE:
        raise DlcbError(f"outside must be one of {', '.join(OUTSIDE)}, not {outside!r}")
    p = check_file(path, "BED")
    if region is not None:
        df, linenos = _bed_region(p, parse_region(region) if isinstance(region, str) else region)
    else:
        df, linenos = bed_table(_data_lines(p), p.name)
    df.attrs["outside"] = 0
    if genome is not None:
        held = _check_against_genome(df, linenos, genome, p.name, strict=outside == "error")
        if outside == "drop":
            n_out = df.attrs["outside"]
            df = df[held].reset_index(drop=True)
            df.attrs["outside"] = n_out
    df.attrs["source"] = str(p)
    df.attrs["track_name"] = track_name(p)
    return df


def _at(lineno: int) -> str:
    """Where a row is, for messages: its line, or "a row" when read through an index."""
    return f"line {lineno}" if lineno > 0 else "a row read by region"


def _bed_region(p: Path, r: Region) -> tuple[pd.DataFrame, list[int]]:
    """The BED rows overlapping ``r``: through the index, else the whole file filtered."""
    if is_indexed(p):
        with TabixSource(p) as src:
            lines = [(-1, "\t".join(f)) for f in src.fetch(r.chrom, r.start, r.end)]
        return bed_table(lines, p.name, empty_ok=True)
    df, linenos = bed_table(_data_lines(p), p.name)
    chrom = match_chrom(r.chrom, set(df["chrom"]))
    keep = ((df["chrom"] == chrom) & (df["end"] > r.start) & (df["start"] < r.end)).to_numpy()
    out = df[keep].reset_index(drop=True)
    out.attrs = df.attrs
    return out, [n for n, k in zip(linenos, keep) if k]


def bed_table(
    lines: Iterable[tuple[int, str]], fname: str, *, empty_ok: bool = False
) -> tuple[pd.DataFrame, list[int]]:
    """The BED rows as a typed table, and the file line of each row (-1: read by region)."""
    rows: list[list[str]] = []
    linenos: list[int] = []
    for lineno, line in lines:
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise DlcbError(
                f"{fname}: {_at(lineno)} has {len(fields)} columns; BED needs at least chrom, start, end"
            )
        rows.append(fields)
        linenos.append(lineno)
    if not rows and not empty_ok:
        raise DlcbError(f"{fname}: no intervals found in the BED file")
    if not rows:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY_BED.items()})
        return empty, []
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    names = BED_COLUMNS[:width] + [f"col{i + 1}" for i in range(len(BED_COLUMNS), width)]
    df = pd.DataFrame(rows, columns=names)
    for col in ("start", "end"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num < 0) | (num != num.round())
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DlcbError(
                f"{fname}: {_at(linenos[i])}: {col} {df[col].iloc[i]!r} is not a non-negative integer"
            )
        df[col] = num.astype(np.int64)
    bad = df["end"] <= df["start"]
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DlcbError(
            f"{fname}: {_at(linenos[i])}: end {df['end'].iloc[i]} is not after start {df['start'].iloc[i]}"
        )
    if "score" in df:
        num = pd.to_numeric(df["score"].replace({".": np.nan, "": np.nan}), errors="coerce")
        if num.notna().any():
            df["score"] = num
    if "name" not in df:
        df["name"] = df["chrom"] + ":" + df["start"].astype(str) + "-" + df["end"].astype(str)
    return df, linenos


def _check_against_genome(
    df: pd.DataFrame, linenos: list[int], genome: Any, fname: str, *, strict: bool
) -> np.ndarray:
    """Spell ``df.chrom`` as ``genome`` does; raise (``strict``) or count what it does not hold."""
    sizes = genome.chromosomes if hasattr(genome, "chromosomes") else dict(genome)
    spelling = {c: match_chrom(c, sizes) for c in df["chrom"].unique()}
    df["chrom"] = df["chrom"].map(lambda c: spelling[c] or c)
    unknown = ~df["chrom"].isin(list(sizes))
    if strict and unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        shown = ", ".join(list(sizes)[:5])
        raise DlcbError(
            f"{fname}: {_at(linenos[i])}: unknown chromosome {df['chrom'].iloc[i]!r} "
            f"({int(unknown.sum())} intervals; the genome has: {shown}{' ...' if len(sizes) > 5 else ''})"
        )
    if hasattr(genome, "covered"):
        held = genome.covered(df["chrom"], df["start"], df["end"])
    else:
        held = (~unknown & (df["end"] <= df["chrom"].map(sizes).fillna(-1))).to_numpy()
    beyond = ~held & ~unknown.to_numpy()
    if strict and beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        c, s, e = df["chrom"].iloc[i], df["start"].iloc[i], df["end"].iloc[i]
        where = (
            f"goes beyond the chromosome end ({sizes[c]})"
            if not getattr(genome, "is_regions", lambda: False)()
            else "lies outside the regions the FASTA holds"
        )
        raise DlcbError(
            f"{fname}: {_at(linenos[i])}: interval {c}:{s}-{e} {where}; {int(beyond.sum())} such intervals"
        )
    df.attrs["outside"] = int((~held).sum())
    return np.asarray(held, bool)


# --------------------------------------------------------------------------- signal
_BEDGRAPH_COLUMNS = ["chrom", "start", "end", "value"]


def read_bedgraph(path: str | os.PathLike, *, region: Region | str | None = None) -> pd.DataFrame:
    r"""Read a bedGraph signal file into a table ``chrom, start, end, value``.

    Parameters
    ----------
    path : path-like
        bedGraph, plain, gzip or bgzip (+ ``.tbi``/``.csi``).
    region : Region or str, optional
        Only the rows overlapping this region (0-based, half-open); an
        indexed file is read only there, a plain one whole and filtered.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bedgraph"
    >>> _ = p.write_text("track type=bedGraph\nchr1\t0\t10\t1.5\nchr1\t20\t30\t2\n")
    >>> read_bedgraph(p).value.tolist(), read_bedgraph(p, region="1:25-40").value.tolist()
    ([1.5, 2.0], [2.0])
    """
    p = check_file(path, "bedGraph")
    r = parse_region(region) if isinstance(region, str) else region
    if r is not None and is_indexed(p):
        with TabixSource(p) as src:
            lines = [(-1, "\t".join(f)) for f in src.fetch(r.chrom, r.start, r.end)]
        return _bedgraph_table(lines, p.name, empty_ok=True)
    df = _bedgraph_table(_data_lines(p), p.name)
    if r is None:
        return df
    chrom = match_chrom(r.chrom, set(df["chrom"]))
    keep = (df["chrom"] == chrom) & (df["end"] > r.start) & (df["start"] < r.end)
    return df[keep.to_numpy()].reset_index(drop=True)


def _bedgraph_table(
    lines: Iterable[tuple[int, str]], fname: str, *, empty_ok: bool = False
) -> pd.DataFrame:
    rows = []
    for lineno, line in lines:
        f = line.split()
        if len(f) < 4:
            raise DlcbError(
                f"{fname}: {_at(lineno)} needs 4 columns (chrom start end value), has {len(f)}"
            )
        try:
            rows.append((f[0], int(f[1]), int(f[2]), float(f[3])))
        except ValueError as err:
            raise DlcbError(
                f"{fname}: {_at(lineno)}: cannot read numbers ({one_line(err)})"
            ) from err
    if not rows and not empty_ok:
        raise DlcbError(f"{fname}: no values found in the bedGraph file")
    df = pd.DataFrame(rows, columns=_BEDGRAPH_COLUMNS).astype({"start": np.int64, "end": np.int64})
    if (df["end"] <= df["start"]).any():
        raise DlcbError(f"{fname}: an interval ends before it starts")
    return df.sort_values(["chrom", "start"], kind="stable").reset_index(drop=True)


class SignalTrack:
    r"""A signal track (bigWig or bedGraph) with base-resolution access.

    Parameters
    ----------
    path : path-like
        ``.bw``/``.bigWig`` (read with pyBigWig, lazily), a bgzipped bedGraph
        with a tabix index (read by region with pysam, lazily) or a bedGraph
        (plain or gzip, read into memory).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bedgraph"
    >>> _ = p.write_text("chr1\t2\t4\t3.0\n")
    >>> SignalTrack(p).values("chr1", 0, 6).tolist()
    [0.0, 0.0, 3.0, 3.0, 0.0, 0.0]
    >>> SignalTrack(p).values("1", 2, 4).tolist()  # any spelling of the chromosome
    [3.0, 3.0]

    Attributes
    ----------
    name : str
        The file name up to its first dot (a task name when training on it).
    title : str
        The ``track name=`` of a bedGraph, else ``name`` (what a browser shows).
    chromosomes : dict of str to int
        Chromosomes with values and how far they reach (for an indexed
        bedGraph, the chromosomes of its index, length unknown: 2**31 - 1).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_file(path, "signal track")
        self.name = self.path.name.split(".")[0]
        self.title = self.name
        self._bw = None
        self._tabix: TabixSource | None = None
        self._bg: dict[str, pd.DataFrame] | None = None
        with open(self.path, "rb") as fh:
            magic = fh.read(4)
        if magic in (b"\x26\xfc\x8f\x88", b"\x88\x8f\xfc\x26"):
            import pyBigWig

            check_bigwig(self.path)  # a corrupt index would crash the process inside pyBigWig

            try:
                self._bw = pyBigWig.open(str(self.path))
            except RuntimeError as err:
                raise DlcbError(f"{self.path.name}: cannot read bigWig (truncated file?)") from err
            if self._bw is None or not self._bw.isBigWig():
                raise DlcbError(f"{self.path.name}: not a bigWig file")
            self.chromosomes = dict(self._bw.chroms())
        elif is_indexed(self.path):
            self._tabix = TabixSource(self.path)
            self.chromosomes = dict.fromkeys(self._tabix.contigs, 2**31 - 1)
            self.title = track_name(self.path) or self.name
        else:
            df = read_bedgraph(self.path)
            self._bg = {c: g.reset_index(drop=True) for c, g in df.groupby("chrom", sort=False)}
            self.chromosomes = {c: int(g["end"].max()) for c, g in self._bg.items()}
            self.title = track_name(self.path) or self.name

    def has(self, chrom: str) -> bool:
        """Whether the track has values on ``chrom`` (any spelling)."""
        return match_chrom(str(chrom), self.chromosomes) is not None

    def values(self, chrom: str, start: int, end: int, *, missing: float = 0.0) -> np.ndarray:
        """Signal at every base of ``chrom:start-end`` as float32 (gaps = ``missing``)."""
        start, end = int(start), int(end)
        out = np.full(end - start, missing, dtype=np.float32)
        name = match_chrom(str(chrom), self.chromosomes)
        if name is None:
            raise DlcbError(f"unknown chromosome {chrom!r} in track {self.path.name}")
        chrom = name
        if self._bw is not None:
            n = self.chromosomes[chrom]
            lo, hi = max(0, start), min(n, end)
            if hi > lo:
                v = np.asarray(self._bw.values(chrom, lo, hi, numpy=True), dtype=np.float32)
                v[np.isnan(v)] = missing
                out[lo - start : hi - start] = v
            return out
        if self._tabix is not None:
            lines = [(-1, "\t".join(f)) for f in self._tabix.fetch(chrom, max(0, start), end)]
            g = _bedgraph_table(lines, self.path.name, empty_ok=True)
        else:
            g = self._bg[chrom]
        s, e, v = g["start"].to_numpy(), g["end"].to_numpy(), g["value"].to_numpy()
        i0 = np.searchsorted(e, start, side="right")
        i1 = np.searchsorted(s, end, side="left")
        for a, b, val in zip(s[i0:i1], e[i0:i1], v[i0:i1]):
            out[max(a, start) - start : min(b, end) - start] = val
        return out

    def mean(self, chrom: str, start: int, end: int) -> float:
        """Mean signal over ``chrom:start-end`` (gaps count as 0)."""
        return float(self.values(chrom, start, end).mean())

    def close(self) -> None:
        """Close the bigWig or indexed file, if any."""
        if self._bw is not None:
            self._bw.close()
            self._bw = None
        if self._tabix is not None:
            self._tabix.close()
            self._tabix = None


def open_track(path: str | os.PathLike) -> SignalTrack:
    """Open a bigWig or bedGraph signal track (see :class:`SignalTrack`)."""
    return SignalTrack(path)
