"""Genome tracks: BED intervals, bedGraph/bigWig signal and VCF variants, in chromosome coordinates.

All coordinates are 0-based and half-open, as in BED. VCF positions (1-based
in the file) are given both as ``pos`` (as written) and ``start`` (0-based).
Chromosome names are matched to a genome's whatever their spelling
(``chr1``/``1``, ``chrM``/``MT``; see :func:`~napari_dlcb.io.regions.match_chrom`).

Every reader turns bad input into a one-line :class:`~napari_dlcb.errors.DlcbError`
naming the file and, where it helps, the line: unknown chromosomes, intervals
beyond a chromosome end, empty or truncated files, malformed rows.

No torch here; pyBigWig is imported when a bigWig is opened.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.bigwig import check_bigwig
from napari_dlcb.io.regions import match_chrom
from napari_dlcb.io.textfiles import check_file, one_line, open_text

__all__ = [
    "OUTSIDE",
    "SignalTrack",
    "open_track",
    "read_bed",
    "read_bedgraph",
    "read_vcf",
    "track_name",
]

BED_COLUMNS = ["chrom", "start", "end", "name", "score", "strand"]
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
def _data_lines(path: Path, kind: str) -> Iterator[tuple[int, str]]:
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
) -> pd.DataFrame:
    r"""Read a BED file (BED3 to BED12, plain or gzip) into a table.

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
    """
    if outside not in OUTSIDE:
        raise DlcbError(f"outside must be one of {', '.join(OUTSIDE)}, not {outside!r}")
    p = check_file(path, "BED")
    df, linenos = _bed_table(p)
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


def _bed_table(p: Path) -> tuple[pd.DataFrame, list[int]]:
    """The BED rows as a typed table, and the file line of each row."""
    rows: list[list[str]] = []
    linenos: list[int] = []
    for lineno, line in _data_lines(p, "BED"):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise DlcbError(
                f"{p.name}: line {lineno} has {len(fields)} columns; BED needs at least chrom, start, end"
            )
        rows.append(fields)
        linenos.append(lineno)
    if not rows:
        raise DlcbError(f"{p.name}: no intervals found in the BED file")
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
                f"{p.name}: line {linenos[i]}: {col} {df[col].iloc[i]!r} is not a non-negative integer"
            )
        df[col] = num.astype(np.int64)
    bad = df["end"] <= df["start"]
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DlcbError(
            f"{p.name}: line {linenos[i]}: end {df['end'].iloc[i]} is not after start {df['start'].iloc[i]}"
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
            f"{fname}: line {linenos[i]}: unknown chromosome {df['chrom'].iloc[i]!r} "
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
            f"{fname}: line {linenos[i]}: interval {c}:{s}-{e} {where}; {int(beyond.sum())} such intervals"
        )
    df.attrs["outside"] = int((~held).sum())
    return np.asarray(held, bool)


# --------------------------------------------------------------------------- signal
def read_bedgraph(path: str | os.PathLike) -> pd.DataFrame:
    r"""Read a bedGraph signal file into a table ``chrom, start, end, value``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bedgraph"
    >>> _ = p.write_text("track type=bedGraph\nchr1\t0\t10\t1.5\n")
    >>> read_bedgraph(p).value.tolist()
    [1.5]
    """
    p = check_file(path, "bedGraph")
    rows = []
    for lineno, line in _data_lines(p, "bedGraph"):
        f = line.split()
        if len(f) < 4:
            raise DlcbError(
                f"{p.name}: line {lineno} needs 4 columns (chrom start end value), has {len(f)}"
            )
        try:
            rows.append((f[0], int(f[1]), int(f[2]), float(f[3])))
        except ValueError as err:
            raise DlcbError(
                f"{p.name}: line {lineno}: cannot read numbers ({one_line(err)})"
            ) from err
    if not rows:
        raise DlcbError(f"{p.name}: no values found in the bedGraph file")
    df = pd.DataFrame(rows, columns=["chrom", "start", "end", "value"])
    if (df["end"] <= df["start"]).any():
        raise DlcbError(f"{p.name}: an interval ends before it starts")
    return df.sort_values(["chrom", "start"], kind="stable").reset_index(drop=True)


class SignalTrack:
    r"""A signal track (bigWig or bedGraph) with base-resolution access.

    Parameters
    ----------
    path : path-like
        ``.bw``/``.bigWig`` (read with pyBigWig, lazily) or a bedGraph
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
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_file(path, "signal track")
        self.name = self.path.name.split(".")[0]
        self.title = self.name
        self._bw = None
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
        """Close the bigWig handle, if any."""
        if self._bw is not None:
            self._bw.close()
            self._bw = None


def open_track(path: str | os.PathLike) -> SignalTrack:
    """Open a bigWig or bedGraph signal track (see :class:`SignalTrack`)."""
    return SignalTrack(path)


# --------------------------------------------------------------------------- VCF
_VCF_COLS = ["chrom", "pos", "id", "ref", "alt"]
_BASES = re.compile(r"^[ACGTNacgtn]+$")


def read_vcf(path: str | os.PathLike) -> pd.DataFrame:
    r"""Read the variant columns of a VCF (plain or gzip) into a table.

    Multi-allelic records become one row per ALT allele. Symbolic alleles
    (``<DEL>``) and breakends are kept but flagged ``kind = "symbolic"`` so
    callers can report, rather than silently drop, them.

    Parameters
    ----------
    path : path-like
        VCF file; the ``#CHROM`` header line is required.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, pos`` (1-based, as in the file), ``start`` (0-based),
        ``id, ref, alt, kind`` (``"snv"``, ``"indel"``, ``"mnv"`` or
        ``"symbolic"``) and ``line`` (line number in the file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.vcf"
    >>> _ = p.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
    ...                  "chr1\t5\trs1\tA\tG,T\n")
    >>> read_vcf(p)[["chrom", "start", "ref", "alt"]].values.tolist()
    [['chr1', 4, 'A', 'G'], ['chr1', 4, 'A', 'T']]
    """
    p = check_file(path, "VCF")
    rows = []
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
            f = line.split("\t")
            if len(f) < 5:
                raise DlcbError(
                    f"{p.name}: line {lineno} has {len(f)} columns; VCF needs at least 5 (truncated file?)"
                )
            try:
                pos = int(f[1])
            except ValueError as err:
                raise DlcbError(f"{p.name}: line {lineno}: POS {f[1]!r} is not an integer") from err
            if pos < 1:
                raise DlcbError(f"{p.name}: line {lineno}: POS must be >= 1, got {pos}")
            ref = f[3].upper()
            if not _BASES.match(ref):
                raise DlcbError(f"{p.name}: line {lineno}: REF {f[3]!r} is not a DNA sequence")
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
    except (EOFError, gzip.BadGzipFile, OSError) as err:
        raise DlcbError(
            f"{p.name}: cannot read VCF (truncated or corrupt file: {one_line(err)})"
        ) from err
    if not seen_header:
        raise DlcbError(f"{p.name}: no '#CHROM' header line found (not a VCF?)")
    if not rows:
        raise DlcbError(f"{p.name}: the VCF has a header but no variants")
    return pd.DataFrame(rows, columns=["chrom", "pos", "start", "id", "ref", "alt", "kind", "line"])


def _vcf_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.rstrip("\r\n")
            if s.strip():
                yield lineno, s
