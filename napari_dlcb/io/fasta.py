r"""FASTA genomes: indexed and lazy, in chromosome coordinates even when a record is a region.

A FASTA record is either a whole chromosome (``>chr2``) or, as UCSC, janggu
and pyGenomeTracks write them, a region of one (``>chr2:74060452-74082351``,
0-based half-open, the sequence being exactly ``end - start`` bases long).
:class:`Genome` puts both on chromosome coordinates, so a BED, bedGraph,
bigWig or VCF written against the whole genome lands on the right bases:
``fetch("chr2", 74060452, 74060462)`` is the first ten bases of that record.
Chromosome names match whatever their spelling (``chr2``/``2``, ``chrM``/``MT``).

No torch here; pyfaidx is imported when a FASTA is opened.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.regions import Region, format_locus, match_chrom, parse_region
from napari_dlcb.io.textfiles import check_file, is_gzip, one_line, open_text

__all__ = ["Genome", "read_fasta", "read_fasta_records"]


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
    p = check_file(path, "FASTA")
    records: list[tuple[str, str]] = []
    name: str | None = None
    chunks: list[str] = []
    with open_text(p) as fh:
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


def record_region(name: str, length: int) -> Region | None:
    """The region a record named ``chr:start-end`` (0-based, half-open) covers, else None.

    The name must say exactly as many bases as the record holds; otherwise it
    is taken as a plain chromosome name.

    Examples
    --------
    >>> record_region("chr2:74060452-74082351", 21899)
    Region(chrom='chr2', start=74060452, end=74082351)
    >>> record_region("chr2:1-10", 5) is None, record_region("chr2", 5) is None
    (True, True)
    """
    if ":" not in name:
        return None
    try:
        r = parse_region(name)
    except DlcbError:
        return None
    return r if len(r) == length else None


class Genome:
    r"""An indexed FASTA genome in chromosome coordinates, read lazily through pyfaidx.

    Sequences are fetched on demand, so a 3 Gb genome costs only its index in
    memory. A gzip (not bgzip) FASTA is read into memory instead. When the
    folder holding the FASTA is not writable, the ``.fai`` index is kept in
    the user cache folder. Records named ``chr:start-end`` are regions of
    ``chr`` (see the module docs).

    Parameters
    ----------
    path : path-like
        FASTA file (``.fa``, ``.fasta``, bgzip, or gzip).

    Attributes
    ----------
    chromosomes : dict of str to int
        Chromosome name to length, in file order. For a FASTA of regions, the
        end of the last region of that chromosome (what is known of it).
    pieces : list of Region
        What the file covers: one region per record, in file order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.fa"
    >>> _ = p.write_text(">chrA\nACGTACGTNN\n>chrB:100-104\nGGCC\n")
    >>> g = Genome(p)
    >>> g.chromosomes
    {'chrA': 10, 'chrB': 104}
    >>> g.fetch("chrA", 2, 6), g.fetch("chrB", 101, 103), g.fetch("B", 98, 102, pad=True)
    ('GTAC', 'GC', 'NNGG')
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_file(path, "FASTA")
        self._fa = None
        self._mem: dict[str, str] | None = None
        if is_gzip(self.path) and not self._is_bgzip():
            self._mem = dict(read_fasta_records(self.path))
            lengths = {k: len(v) for k, v in self._mem.items()}
        else:
            lengths = self._open_indexed()
        self._pieces: dict[str, list[tuple[int, int, str]]] = {}
        self.pieces: list[Region] = []
        for record, n in lengths.items():
            r = record_region(record, n) or Region(record, 0, n)
            self._pieces.setdefault(r.chrom, []).append((r.start, r.end, record))
            self.pieces.append(r)
        self.chromosomes = {c: max(e for _, e, _ in p) for c, p in self._pieces.items()}

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

    def _open_indexed(self) -> dict[str, int]:
        import pyfaidx

        # Check the file starts like a FASTA before pyfaidx builds an index.
        with open_text(self.path) as fh:
            first = next((line for line in fh if line.strip()), "")
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
                f"{self.path.name}: cannot index FASTA ({one_line(err)}); lines of unequal length or a truncated file?"
            ) from err
        except (ValueError, OSError) as err:
            raise DlcbError(f"{self.path.name}: cannot read FASTA ({one_line(err)})") from err
        lengths = {k: len(v) for k, v in self._fa.items()}
        if not lengths:
            raise DlcbError(f"{self.path.name}: no sequences found in the FASTA file")
        empty = [k for k, n in lengths.items() if n == 0]
        if empty:
            raise DlcbError(
                f"{self.path.name}: record {empty[0]!r} has no sequence (truncated file?)"
            )
        return lengths

    def __contains__(self, chrom: str) -> bool:
        return self.canonical(chrom) is not None

    def __repr__(self) -> str:
        return f"Genome({self.path.name!r}, {len(self.chromosomes)} chromosomes, {sum(len(p) for p in self.pieces)} bp)"

    # ------------------------------------------------------------------ coordinates
    def canonical(self, chrom: str) -> str | None:
        """The spelling of ``chrom`` in this genome (``2`` -> ``chr2``), or None if it has none."""
        return match_chrom(str(chrom), self.chromosomes)

    def is_regions(self) -> bool:
        """Whether some record is a region of a chromosome rather than a whole one."""
        return any(rec != chrom for chrom, p in self._pieces.items() for _, _, rec in p)

    def _piece(self, chrom: str, start: int, end: int) -> tuple[int, int, str] | None:
        for piece in self._pieces.get(chrom, ()):
            if piece[0] <= start and end <= piece[1]:
                return piece
        return None

    def covers(self, chrom: str, start: int, end: int) -> bool:
        """Whether ``chrom:start-end`` (0-based, half-open) lies inside one record."""
        name = self.canonical(chrom)
        return name is not None and start < end and self._piece(name, start, end) is not None

    def covered(self, chroms, starts, ends):
        """Vectorised :meth:`covers`: a boolean array, one value per interval.

        ``chroms`` must be in this genome's spelling (see :meth:`canonical`).
        """
        import numpy as np

        chroms = np.asarray(chroms).astype(str)
        starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        out = np.zeros(len(chroms), bool)
        for chrom, pieces in self._pieces.items():
            rows = np.flatnonzero(chroms == chrom)
            for s, e, _ in pieces:
                out[rows] |= (starts[rows] >= s) & (ends[rows] <= e) & (starts[rows] < ends[rows])
        return out

    def default_region(self, width: int = 1000, *, whole_region: int = 100_000) -> Region:
        """What a viewer shows first: the first ``width`` bp of the first chromosome.

        A record that is a region of a chromosome (``>chr2:74060452-74082351``)
        is shown whole, up to ``whole_region`` bp: such files hold the region of
        interest.
        """
        r = self.pieces[0]
        if self._pieces[r.chrom][0][2] != r.chrom:
            width = max(width, whole_region)
        return Region(r.chrom, r.start, min(r.end, r.start + width))

    def check(self, chrom: str, start: int, end: int) -> None:
        """Raise :class:`DlcbError` unless ``chrom:start-end`` lies inside one record."""
        name = self.canonical(chrom)
        if name is None:
            names = ", ".join(list(self.chromosomes)[:5])
            more = " ..." if len(self.chromosomes) > 5 else ""
            raise DlcbError(
                f"unknown chromosome {chrom!r} in {self.path.name} (it has: {names}{more})"
            )
        if start < end and self._piece(name, start, end) is not None:
            return
        pieces = self._pieces[name]
        if len(pieces) == 1 and pieces[0][2] == name:  # a whole chromosome
            raise DlcbError(
                f"interval {chrom}:{start}-{end} lies outside {name} (length {pieces[0][1]}) in {self.path.name}"
            )
        spans = [Region(name, s, e) for s, e, _ in pieces]
        shown = ", ".join(format_locus(r) for r in spans[:3]) + (" ..." if len(spans) > 3 else "")
        raise DlcbError(
            f"interval {chrom}:{start}-{end} lies outside {name} as far as {self.path.name} "
            f"has it (it holds {shown}, 1-based)"
        )

    def fetch(self, chrom: str, start: int, end: int, *, pad: bool = False) -> str:
        """Return the sequence of ``chrom:start-end`` (case as in the file).

        Parameters
        ----------
        chrom : str
            Chromosome name (any spelling, see :func:`~napari_dlcb.io.regions.match_chrom`).
        start, end : int
            0-based half-open chromosome coordinates.
        pad : bool
            If True, parts the file does not hold (beyond a chromosome end, or
            outside the regions of a FASTA of regions) are returned as ``N``
            instead of raising, so a window near an edge keeps its length.

        Returns
        -------
        str
        """
        start, end = int(start), int(end)
        if not pad:
            self.check(chrom, start, end)
            name = self.canonical(chrom)
            s, _, record = self._piece(name, start, end)
            return self._get(record, start - s, end - s)
        name = self.canonical(chrom)
        if name is None:
            self.check(chrom, start, end)
        out = ["N"] * max(0, end - start)
        for s, e, record in self._pieces[name]:
            lo, hi = max(s, start), min(e, end)
            if hi > lo:
                out[lo - start : hi - start] = self._get(record, lo - s, hi - s)
        return "".join(out)

    def _get(self, record: str, start: int, end: int) -> str:
        if self._mem is not None:
            return self._mem[record][start:end]
        return str(self._fa[record][start:end])

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
