"""Genome files: FASTA (indexed, lazy), BED, bigWig/bedGraph signal and VCF variants.

All coordinates are 0-based and half-open, as in BED: ``chr1:100-200`` is the
100 bases ``seq[100:200]``. VCF positions (1-based in the file) are given both
as ``pos`` (as written) and ``start`` (0-based).

Every reader turns bad input into a one-line :class:`~napari_dlcb.errors.DlcbError`
naming the file and, where it helps, the line: unknown chromosomes, intervals
beyond a chromosome end, empty or truncated files, malformed rows.

No torch here; pyfaidx and pyBigWig are imported when a file is opened.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dlcb.errors import DlcbError

__all__ = [
    "BANDS",
    "ROW_SCALE",
    "Genome",
    "Region",
    "SignalTrack",
    "open_track",
    "parse_region",
    "resolve_region",
    "read_bed",
    "read_bedgraph",
    "read_fasta",
    "read_fasta_records",
    "read_vcf",
    "region_layer_data",
]

BED_COLUMNS = ["chrom", "start", "end", "name", "score", "strand"]
_REGION_RE = re.compile(r"^\s*([^:\s]+)\s*:\s*([\d,_]+)\s*-\s*([\d,_]+)\s*$")


# --------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Region:
    """A genomic interval, 0-based half-open."""

    chrom: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"


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
    start = int(m.group(2).replace(",", "").replace("_", ""))
    end = int(m.group(3).replace(",", "").replace("_", ""))
    if end <= start:
        raise DlcbError(f"region {text!r} is empty: end must be greater than start")
    return Region(m.group(1), start, end)


def resolve_region(
    text: str, *, genome: Genome | None = None, bed: pd.DataFrame | None = None, width: int = 1000
) -> Region:
    """A region from ``chr:start-end``, or from the name of a BED interval.

    Parameters
    ----------
    text : str
        ``chr:start-end``, or a name in ``bed``'s ``name`` column (exact match
        first, then case-insensitive; the first such interval is used).
    genome : Genome, optional
        Clips a named region to its chromosome.
    bed : pandas.DataFrame, optional
        Intervals from :func:`read_bed`.
    width : int
        Width of the window centred on a named interval (the interval itself
        when it is wider).

    Returns
    -------
    Region

    Examples
    --------
    >>> bed = pd.DataFrame({"chrom": ["chr1"], "start": [5000], "end": [5200], "name": ["GATA3_peak"]})
    >>> resolve_region("gata3_peak", bed=bed)
    Region(chrom='chr1', start=4600, end=5600)
    """
    text = str(text).strip()
    if _REGION_RE.match(text) or bed is None or "name" not in getattr(bed, "columns", ()):
        return parse_region(text)
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
    if genome is not None and r.chrom in genome.chromosomes:
        end = min(end, genome.chromosomes[r.chrom])
    return Region(str(r.chrom), start, end)


# --------------------------------------------------------------------------- helpers
def _open_text(path: Path):
    """Open a plain or gzip text file."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _check_file(path: str | os.PathLike, kind: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DlcbError(f"{kind} file not found: {p}")
    if p.is_dir():
        raise DlcbError(f"{kind} path is a folder, not a file: {p}")
    if p.stat().st_size == 0:
        raise DlcbError(f"{kind} file is empty: {p}")
    return p


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


# --------------------------------------------------------------------------- FASTA
def read_fasta_records(path: str | os.PathLike) -> list[tuple[str, str]]:
    r"""Read every record of a (possibly gzipped) FASTA file into memory.

    Use this for files of many short sequences (peaks, test sets); use
    :func:`read_fasta` for genomes.

    Parameters
    ----------
    path : path-like
        FASTA file, plain or gzip.

    Returns
    -------
    list of (name, sequence)
        The name is the header up to the first white space; case is kept.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.fa"
    >>> _ = p.write_text(">s1 peak\nACGT\nac\n>s2\nGG\n")
    >>> read_fasta_records(p)
    [('s1', 'ACGTac'), ('s2', 'GG')]
    """
    p = _check_file(path, "FASTA")
    records: list[tuple[str, str]] = []
    name: str | None = None
    chunks: list[str] = []
    with _open_text(p) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                if name is not None:
                    records.append((name, "".join(chunks)))
                parts = line[1:].split()
                if not parts:
                    raise DlcbError(f"{p.name}: line {lineno} has a '>' header without a name")
                name, chunks = parts[0], []
            else:
                if name is None:
                    raise DlcbError(
                        f"{p.name}: not a FASTA file (line {lineno} comes before any '>' header)"
                    )
                chunks.append(line)
    if name is not None:
        records.append((name, "".join(chunks)))
    if not records:
        raise DlcbError(f"{p.name}: no sequences found in the FASTA file")
    empty = [n for n, s in records if not s]
    if empty:
        raise DlcbError(f"{p.name}: record {empty[0]!r} has no sequence (truncated file?)")
    return records


class Genome:
    r"""An indexed FASTA genome, read lazily through pyfaidx.

    Sequences are fetched on demand, so a 3 Gb genome costs only its index in
    memory. A gzip (not bgzip) FASTA is read into memory instead. When the
    folder holding the FASTA is not writable, the ``.fai`` index is kept in
    the user cache folder.

    Parameters
    ----------
    path : path-like
        FASTA file (``.fa``, ``.fasta``, bgzip, or gzip).

    Attributes
    ----------
    chromosomes : dict of str to int
        Chromosome name to length, in file order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.fa"
    >>> _ = p.write_text(">chrA\nACGTACGTNN\n>chrB\nGGGG\n")
    >>> g = Genome(p)
    >>> g.chromosomes
    {'chrA': 10, 'chrB': 4}
    >>> g.fetch("chrA", 2, 6)
    'GTAC'
    """

    def __init__(self, path: str | os.PathLike):
        self.path = _check_file(path, "FASTA")
        self._fa = None
        self._mem: dict[str, str] | None = None
        if _is_gzip(self.path) and not self._is_bgzip():
            self._mem = dict(read_fasta_records(self.path))
            self.chromosomes = {k: len(v) for k, v in self._mem.items()}
            return
        self._open_indexed()

    def _is_bgzip(self) -> bool:
        with open(self.path, "rb") as fh:
            head = fh.read(16)
        return len(head) >= 16 and head[12:14] == b"BC"

    def _index_path(self) -> str | None:
        folder = self.path.parent
        if (
            os.access(folder, os.W_OK)
            or (self.path.with_suffix(self.path.suffix + ".fai")).exists()
        ):
            return None
        cache = (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-dlcb" / "fai"
        )
        cache.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        return str(cache / f"{self.path.name}.{key}.fai")

    def _open_indexed(self) -> None:
        import pyfaidx

        # Check the file starts like a FASTA before pyfaidx builds an index.
        with _open_text(self.path) as fh:
            first = ""
            for line in fh:
                if line.strip():
                    first = line
                    break
        if not first.startswith(">"):
            raise DlcbError(f"{self.path.name}: not a FASTA file (it does not start with '>')")
        try:
            self._fa = pyfaidx.Fasta(
                str(self.path),
                indexname=self._index_path(),
                as_raw=True,
                sequence_always_upper=False,
                rebuild=True,
            )
        except pyfaidx.FastaIndexingError as err:
            raise DlcbError(
                f"{self.path.name}: cannot index FASTA ({_one_line(err)}); lines of unequal length or a truncated file?"
            ) from err
        except (ValueError, OSError) as err:
            raise DlcbError(f"{self.path.name}: cannot read FASTA ({_one_line(err)})") from err
        self.chromosomes = {k: len(v) for k, v in self._fa.items()}
        if not self.chromosomes:
            raise DlcbError(f"{self.path.name}: no sequences found in the FASTA file")
        empty = [k for k, n in self.chromosomes.items() if n == 0]
        if empty:
            raise DlcbError(
                f"{self.path.name}: record {empty[0]!r} has no sequence (truncated file?)"
            )

    def __contains__(self, chrom: str) -> bool:
        return chrom in self.chromosomes

    def __repr__(self) -> str:
        return f"Genome({self.path.name!r}, {len(self.chromosomes)} chromosomes, {sum(self.chromosomes.values())} bp)"

    def check(self, chrom: str, start: int, end: int) -> None:
        """Raise :class:`DlcbError` unless ``chrom:start-end`` lies inside the genome."""
        if chrom not in self.chromosomes:
            names = ", ".join(list(self.chromosomes)[:5])
            more = " ..." if len(self.chromosomes) > 5 else ""
            raise DlcbError(
                f"unknown chromosome {chrom!r} in {self.path.name} (it has: {names}{more})"
            )
        n = self.chromosomes[chrom]
        if start < 0 or end > n or start >= end:
            raise DlcbError(
                f"interval {chrom}:{start}-{end} lies outside {chrom} (length {n}) in {self.path.name}"
            )

    def fetch(self, chrom: str, start: int, end: int, *, pad: bool = False) -> str:
        """Return the sequence of ``chrom:start-end`` (case as in the file).

        Parameters
        ----------
        chrom : str
            Chromosome name.
        start, end : int
            0-based half-open coordinates.
        pad : bool
            If True, parts beyond the chromosome ends are returned as ``N``
            instead of raising, so a window centred near an end keeps its
            length.

        Returns
        -------
        str
        """
        start, end = int(start), int(end)
        if pad:
            if chrom not in self.chromosomes:
                self.check(chrom, start, end)
            n = self.chromosomes[chrom]
            left = max(0, -start)
            right = max(0, end - n)
            lo, hi = max(0, start), min(n, end)
            core = self._get(chrom, lo, hi) if hi > lo else ""
            return "N" * left + core + "N" * right
        self.check(chrom, start, end)
        return self._get(chrom, start, end)

    def _get(self, chrom: str, start: int, end: int) -> str:
        if self._mem is not None:
            return self._mem[chrom][start:end]
        return str(self._fa[chrom][start:end])

    def close(self) -> None:
        """Close the underlying file handle."""
        if self._fa is not None:
            self._fa.close()
            self._fa = None


def read_fasta(path: str | os.PathLike) -> Genome:
    r"""Open a FASTA genome lazily (see :class:`Genome`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.fa"
    >>> _ = p.write_text(">chr1\nacgtNNRY\n")
    >>> read_fasta(p).fetch("chr1", 0, 8)
    'acgtNNRY'
    """
    return Genome(path)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


# --------------------------------------------------------------------------- BED
def _data_lines(path: Path, kind: str) -> Iterator[tuple[int, str]]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.rstrip("\r\n")
            if not s.strip() or s.startswith(("#", "track", "browser")):
                continue
            yield lineno, s


def read_bed(
    path: str | os.PathLike,
    *,
    genome: Genome | dict[str, int] | None = None,
) -> pd.DataFrame:
    r"""Read a BED file (BED3 to BED12, plain or gzip) into a table.

    Parameters
    ----------
    path : path-like
        BED file. ``track``, ``browser`` and ``#`` lines are skipped.
    genome : Genome or dict, optional
        If given, every interval is checked against the chromosome names and
        lengths: an unknown chromosome or an interval beyond a chromosome end
        raises :class:`DlcbError` naming the line.

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom, start, end`` (int64) and, where present, ``name,
        score, strand`` and further columns (``col7`` ...). A BED without
        names gets ``name = chrom:start-end``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bed"
    >>> _ = p.write_text("track name=x\nchr1\t10\t20\tpeak1\nchr1\t30\t40\tpeak2\n")
    >>> read_bed(p)[["chrom", "start", "end", "name"]].values.tolist()
    [['chr1', 10, 20, 'peak1'], ['chr1', 30, 40, 'peak2']]
    """
    p = _check_file(path, "BED")
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
    if genome is not None:
        sizes = genome.chromosomes if isinstance(genome, Genome) else dict(genome)
        unknown = ~df["chrom"].isin(list(sizes))
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            shown = ", ".join(list(sizes)[:5])
            raise DlcbError(
                f"{p.name}: line {linenos[i]}: unknown chromosome {df['chrom'].iloc[i]!r} "
                f"({int(unknown.sum())} intervals; the genome has: {shown}{' ...' if len(sizes) > 5 else ''})"
            )
        lengths = df["chrom"].map(sizes).astype(np.int64)
        beyond = df["end"] > lengths
        if beyond.any():
            i = int(np.flatnonzero(beyond.to_numpy())[0])
            raise DlcbError(
                f"{p.name}: line {linenos[i]}: interval {df['chrom'].iloc[i]}:{df['start'].iloc[i]}-{df['end'].iloc[i]} "
                f"goes beyond the chromosome end ({lengths.iloc[i]}); {int(beyond.sum())} such intervals"
            )
    df.attrs["source"] = str(p)
    return df


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
    p = _check_file(path, "bedGraph")
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
                f"{p.name}: line {lineno}: cannot read numbers ({_one_line(err)})"
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
    """

    def __init__(self, path: str | os.PathLike):
        self.path = _check_file(path, "signal track")
        self.name = self.path.name.split(".")[0]
        self._bw = None
        self._bg: dict[str, pd.DataFrame] | None = None
        with open(self.path, "rb") as fh:
            magic = fh.read(4)
        if magic in (b"\x26\xfc\x8f\x88", b"\x88\x8f\xfc\x26"):
            import pyBigWig

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

    def values(self, chrom: str, start: int, end: int, *, missing: float = 0.0) -> np.ndarray:
        """Signal at every base of ``chrom:start-end`` as float32 (gaps = ``missing``)."""
        start, end = int(start), int(end)
        out = np.full(end - start, missing, dtype=np.float32)
        if chrom not in self.chromosomes:
            raise DlcbError(f"unknown chromosome {chrom!r} in track {self.path.name}")
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
    p = _check_file(path, "VCF")
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
            f"{p.name}: cannot read VCF (truncated or corrupt file: {_one_line(err)})"
        ) from err
    if not seen_header:
        raise DlcbError(f"{p.name}: no '#CHROM' header line found (not a VCF?)")
    if not rows:
        raise DlcbError(f"{p.name}: the VCF has a header but no variants")
    return pd.DataFrame(rows, columns=["chrom", "pos", "start", "id", "ref", "alt", "kind", "line"])


def _vcf_lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.rstrip("\r\n")
            if s.strip():
                yield lineno, s


# --------------------------------------------------------------------------- layers
#: Vertical placement (in rows of ``ROW_SCALE`` world units) of the genome view's bands.
BANDS = {
    "sequence": 0,
    "mutation_map": 5,
    "attribution": 10,
    "signal": 15,
    "prediction": 21,
    "peaks": 27,
    "variants": 30,
    "motifs": 33,
}
ROW_SCALE = 10.0


def region_layer_data(
    genome: Genome,
    region: Region | str,
    *,
    tracks: list[SignalTrack] | None = None,
    bed: pd.DataFrame | None = None,
    variants: pd.DataFrame | None = None,
    letters: bool = True,
) -> list[tuple]:
    """Napari layer data for one region on a shared x axis in bp (no napari import).

    Every layer uses ``scale = (ROW_SCALE, 1)`` and ``translate = (band * ROW_SCALE, region.start)``
    (its band from :data:`BANDS`) and data coordinates ``(row within the band, position
    within the region)``, so all of them pan and zoom together and column ``j`` of an
    image, or x = ``j`` of a point, is base ``region.start + j``.

    Parameters
    ----------
    genome : Genome
        Open genome.
    region : Region or str
        ``chr:start-end``.
    tracks : list of SignalTrack, optional
        Drawn as lines in the signal band.
    bed : pandas.DataFrame, optional
        Intervals overlapping the region become rectangles (names as text).
    variants : pandas.DataFrame, optional
        Variants in the region become points (id as text).
    letters : bool
        Add a points layer with the base letters (shown when zoomed in).

    Returns
    -------
    list of (data, kwargs, layer_type)
    """
    from napari_dlcb.data.dna import one_hot

    r = parse_region(region) if isinstance(region, str) else region
    seq = genome.fetch(r.chrom, r.start, r.end)
    x = one_hot(seq)[0]
    out: list[tuple] = []

    def place(band: str) -> dict:
        return {"scale": (ROW_SCALE, 1.0), "translate": (BANDS[band] * ROW_SCALE, float(r.start))}

    out.append(
        (
            x,
            {
                "name": f"sequence {r}",
                "colormap": "gray_r",
                "contrast_limits": (0.0, 1.0),
                "metadata": {"region": str(r), "sequence": seq, "kind": "sequence", "rows": "ACGT"},
                **place("sequence"),
            },
            "image",
        )
    )
    if letters:
        pos = np.arange(len(seq), dtype=float)
        rows = np.array(["ACGT".find(b) if b in "ACGT" else 1.5 for b in seq.upper()], float)
        coords = np.stack([rows, pos], 1)
        out.append(
            (
                coords,
                {
                    "name": "bases",
                    "size": 0.1,
                    "face_color": "transparent",
                    "border_width": 0,
                    "text": {"string": "{base}", "color": "red", "size": 9},
                    "features": {"base": list(seq)},
                    "visible": len(seq) <= 400,
                    "metadata": {"kind": "letters"},
                    **place("sequence"),
                },
                "points",
            )
        )
    for k, tr in enumerate(tracks or []):
        v = (
            tr.values(r.chrom, r.start, r.end)
            if r.chrom in tr.chromosomes
            else np.zeros(len(r), np.float32)
        )
        top = float(v.max()) or 1.0
        path = np.stack([5 - 5 * v / top, np.arange(len(v), dtype=float)], 1)
        out.append(
            (
                [path],
                {
                    "name": f"signal {tr.name}",
                    "shape_type": "path",
                    "edge_color": ["#1f77b4", "#2ca02c", "#9467bd"][k % 3],
                    "edge_width": 1.5,
                    "metadata": {"kind": "signal", "max": top},
                    **place("signal"),
                },
                "shapes",
            )
        )
    if bed is not None and len(bed):
        mask = (
            (bed["chrom"] == r.chrom) & (bed["end"] > r.start) & (bed["start"] < r.end)
        ).to_numpy()
        hit = bed[mask]
        if len(hit):
            rects = [
                np.array([[0, s], [0, e], [2, e], [2, s]], float) - [0, r.start]
                for s, e in zip(hit["start"].clip(r.start, r.end), hit["end"].clip(r.start, r.end))
            ]
            out.append(
                (
                    rects,
                    {
                        "name": "intervals",
                        "shape_type": "rectangle",
                        "face_color": "#ff7f0e80",
                        "edge_color": "#ff7f0e",
                        "features": {
                            "name": hit["name"].astype(str).tolist(),
                            "bed_row": [int(i) for i in np.flatnonzero(mask)],
                        },
                        "text": {"string": "{name}", "size": 8, "color": "white"},
                        "metadata": {"kind": "intervals"},
                        **place("peaks"),
                    },
                    "shapes",
                )
            )
    if variants is not None and len(variants):
        hit = variants[
            (variants["chrom"] == r.chrom)
            & (variants["start"] >= r.start)
            & (variants["start"] < r.end)
        ]
        if len(hit):
            coords = np.stack([np.ones(len(hit)), hit["start"].to_numpy(float) - r.start], 1)
            out.append(
                (
                    coords,
                    {
                        "name": "variants",
                        "size": 8,
                        "symbol": "triangle_down",
                        "face_color": "#d62728",
                        "features": {
                            "id": hit["id"].astype(str).tolist(),
                            "ref": hit["ref"].tolist(),
                            "alt": hit["alt"].tolist(),
                            "pos": hit["pos"].tolist(),
                            "chrom": hit["chrom"].tolist(),
                        },
                        "text": {
                            "string": "{id}",
                            "size": 8,
                            "color": "#d62728",
                            "translation": [-12, 0],
                        },
                        "metadata": {"kind": "variants"},
                        **place("variants"),
                    },
                    "points",
                )
            )
    return out
