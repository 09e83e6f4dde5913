"""DNA as arrays: one-hot encoding, sequence tables, genome windows, negatives, splits.

One-hot arrays are float32 ``(N, 4, L)`` with channels in A, C, G, T order.
Lower case (soft-masked) bases are encoded like upper case. ``N`` and the other
IUPAC ambiguity codes are encoded as fractions of the bases they stand for
(``N`` -> 0.25 each, ``R`` = A/G -> 0.5 A + 0.5 G, ``B`` = not A -> 1/3 C, G, T):
a model then sees the average of the possible bases, and every column still
sums to 1, which keeps in-silico mutagenesis well defined. Pass
``ambiguous="zeros"`` for the other common convention (all-zero columns).
Any other character raises :class:`~napari_dlcb.errors.DlcbError` naming it.

No torch here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dlcb.errors import DlcbError

__all__ = [
    "ALPHABET",
    "IUPAC",
    "decode",
    "dinucleotide_counts",
    "dinucleotide_shuffle",
    "flank_negatives",
    "gc_content",
    "gc_matched_background",
    "kfold_indices",
    "one_hot",
    "random_dna",
    "read_sequence_table",
    "sample_motif",
    "reverse_complement",
    "reverse_complement_str",
    "shuffled_negatives",
    "split_by_chromosome",
    "windows_from_bed",
]

ALPHABET = "ACGT"
IUPAC: dict[str, str] = {
    "A": "A",
    "C": "C",
    "G": "G",
    "T": "T",
    "U": "T",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
    "N": "ACGT",
}
_COMPLEMENT = str.maketrans("ACGTRYSWKMBDHVNacgtryswkmbdhvn", "TGCAYRSWMKVHDBNtgcayrswmkvhdbn")


def _table(ambiguous: str) -> tuple[np.ndarray, np.ndarray]:
    table = np.zeros((256, 4), dtype=np.float32)
    valid = np.zeros(256, dtype=bool)
    for code, bases in IUPAC.items():
        row = np.zeros(4, dtype=np.float32)
        if len(bases) == 1 or ambiguous == "fractional":
            for b in bases:
                row[ALPHABET.index(b)] = 1.0 / len(bases)
        for c in (code, code.lower()):
            table[ord(c)] = row
            valid[ord(c)] = True
    return table, valid


_TABLES = {mode: _table(mode) for mode in ("fractional", "zeros")}


def one_hot(
    seqs: str | Sequence[str],
    *,
    length: int | None = None,
    ambiguous: str = "fractional",
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """One-hot encode DNA sequences as ``(N, 4, L)`` in A, C, G, T order.

    Parameters
    ----------
    seqs : str or sequence of str
        One sequence or several of equal length; upper or lower case; IUPAC
        codes allowed (``U`` is read as ``T``).
    length : int, optional
        Required length; sequences of another length raise :class:`DlcbError`.
    ambiguous : {"fractional", "zeros"}
        How ``N`` and other ambiguity codes are encoded (see module docs).
    dtype : numpy dtype
        Output dtype (default float32).

    Returns
    -------
    numpy.ndarray
        ``(N, 4, L)``.

    Examples
    --------
    >>> one_hot("ACgN")[0].T.tolist()
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
    >>> one_hot(["AC", "GT"]).shape
    (2, 4, 2)
    """
    if ambiguous not in _TABLES:
        raise DlcbError(f"ambiguous must be 'fractional' or 'zeros', not {ambiguous!r}")
    if isinstance(seqs, str):
        seqs = [seqs]
    seqs = list(seqs)
    if not seqs:
        return np.zeros((0, 4, length or 0), dtype=dtype)
    lengths = {len(s) for s in seqs}
    if length is not None and lengths != {length}:
        bad = next(i for i, s in enumerate(seqs) if len(s) != length)
        raise DlcbError(
            f"sequence {bad} has length {len(seqs[bad])}, but this needs length {length}"
        )
    if len(lengths) > 1:
        lo, hi = min(lengths), max(lengths)
        bad = next(i for i, s in enumerate(seqs) if len(s) != len(seqs[0]))
        raise DlcbError(
            f"sequences have unequal lengths ({lo} to {hi} bp; sequence {bad} differs from sequence 0); "
            "a fixed length is needed: trim, pad or use windows"
        )
    L = lengths.pop()
    table, valid = _TABLES[ambiguous]
    try:
        codes = np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8).reshape(len(seqs), L)
    except UnicodeEncodeError as err:
        raise DlcbError(
            f"sequence contains a non-ASCII character: {err.object[err.start]!r}"
        ) from err
    ok = valid[codes]
    if not ok.all():
        n, i = (int(v[0]) for v in np.nonzero(~ok))
        raise DlcbError(
            f"sequence {n} has {chr(codes[n, i])!r} at position {i}: only A, C, G, T and IUPAC codes are allowed"
        )
    return np.ascontiguousarray(table[codes].transpose(0, 2, 1), dtype=dtype)


def decode(x: np.ndarray) -> list[str]:
    """Turn ``(N, 4, L)`` (or ``(4, L)``) one-hot back into strings.

    Columns that are not a single base (ties, fractions, zeros) become ``N``.

    Examples
    --------
    >>> decode(one_hot(["ACGTN", "ttgca"]))
    ['ACGTN', 'TTGCA']
    """
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != 4:
        raise DlcbError(f"expected one-hot of shape (N, 4, L), got {x.shape}")
    idx = x.argmax(1)
    single = (x.max(1) == 1) & (x.sum(1) == 1)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[idx]
    letters[~single] = ord("N")
    return [row.tobytes().decode() for row in letters]


def reverse_complement(x: np.ndarray) -> np.ndarray:
    """Reverse complement one-hot DNA ``(..., 4, L)``; with A,C,G,T order it is a flip of both axes.

    Examples
    --------
    >>> decode(reverse_complement(one_hot("AACG")))
    ['CGTT']
    """
    return np.ascontiguousarray(np.asarray(x)[..., ::-1, ::-1])


def reverse_complement_str(seq: str) -> str:
    """Reverse complement a DNA string (IUPAC-aware, case kept).

    Examples
    --------
    >>> reverse_complement_str("AAcgR")
    'YcgTT'
    """
    return seq.translate(_COMPLEMENT)[::-1]


def gc_content(seqs: str | Sequence[str]) -> np.ndarray:
    """Fraction of G or C among the unambiguous bases of each sequence.

    Examples
    --------
    >>> gc_content(["GGCA", "ATNN"]).tolist()
    [0.75, 0.0]
    """
    if isinstance(seqs, str):
        seqs = [seqs]
    out = np.zeros(len(seqs), dtype=np.float64)
    for i, s in enumerate(seqs):
        u = s.upper()
        gc = u.count("G") + u.count("C")
        at = u.count("A") + u.count("T")
        out[i] = gc / (gc + at) if gc + at else 0.0
    return out


# --------------------------------------------------------------------------- shuffles
def dinucleotide_counts(seq: str) -> dict[str, int]:
    """Count overlapping dinucleotides (case-insensitive).

    Examples
    --------
    >>> dinucleotide_counts("AACA")
    {'AA': 1, 'AC': 1, 'CA': 1}
    """
    s = seq.upper()
    out: dict[str, int] = {}
    for i in range(len(s) - 1):
        k = s[i : i + 2]
        out[k] = out.get(k, 0) + 1
    return out


def dinucleotide_shuffle(seq: str, *, rng: np.random.Generator | int | None = None) -> str:
    """Shuffle a sequence preserving its exact dinucleotide counts (Altschul & Erickson 1985).

    The sequence is a walk on a graph with one node per letter and one edge
    per dinucleotide. A random Eulerian walk with the same first letter is
    drawn by choosing, for every node but the last letter, a random *last*
    exit edge such that these edges form a tree into the last letter (rejection
    until they do), then shuffling the other exits. Every sequence with the
    same dinucleotide counts, first and last letter is reachable. This is the
    shuffle DeepBind uses for negatives. Case is folded to upper case.

    Parameters
    ----------
    seq : str
        Any letters (N and IUPAC codes are treated as their own letters).
    rng : numpy Generator or int, optional
        Random source or seed.

    Returns
    -------
    str

    Examples
    --------
    >>> s = "ACGTTGCAACGTAGGT"
    >>> t = dinucleotide_shuffle(s, rng=0)
    >>> dinucleotide_counts(t) == dinucleotide_counts(s), t[0] == s[0], t[-1] == s[-1]
    (True, True, True)
    """
    rng = np.random.default_rng(rng)
    s = seq.upper()
    if len(s) < 3:
        return s
    edges: dict[str, list[str]] = {}
    for a, b in zip(s[:-1], s[1:]):
        edges.setdefault(a, []).append(b)
    last = s[-1]
    nodes = [v for v in edges if v != last]
    # Draw last exits until they form an arborescence rooted at ``last``.
    while True:
        last_exit = {v: edges[v][rng.integers(len(edges[v]))] for v in nodes}
        ok = True
        for v in nodes:
            seen = set()
            u = v
            while u != last:
                if u in seen:
                    ok = False
                    break
                seen.add(u)
                u = last_exit[u]
            if not ok:
                break
        if ok:
            break
    order: dict[str, list[str]] = {}
    for v, outs in edges.items():
        outs = list(outs)
        if v in last_exit:
            outs.remove(last_exit[v])
            rng.shuffle(outs)
            outs.append(last_exit[v])
        else:
            rng.shuffle(outs)
        order[v] = outs
    pos = dict.fromkeys(order, 0)
    out = [s[0]]
    u = s[0]
    for _ in range(len(s) - 1):
        nxt = order[u][pos[u]]
        pos[u] += 1
        out.append(nxt)
        u = nxt
    return "".join(out)


def shuffled_negatives(seqs: Sequence[str], *, n_per_sequence: int = 1, seed: int = 0) -> list[str]:
    """Dinucleotide-shuffled copies of every sequence (the DeepBind negative set).

    Examples
    --------
    >>> len(shuffled_negatives(["ACGTACGTAA", "GGGCCCATAT"], n_per_sequence=2))
    4
    """
    rng = np.random.default_rng(seed)
    return [dinucleotide_shuffle(s, rng=rng) for _ in range(n_per_sequence) for s in seqs]


# --------------------------------------------------------------------------- tables
def read_sequence_table(
    path: str | os.PathLike,
    *,
    sequence_column: str = "seq",
    label_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    r"""Read a TSV/CSV sequence table (optionally gzipped).

    The separator is a comma for ``.csv``/``.csv.gz`` and a tab otherwise
    (the DeepBind ENCODE ``.seq.gz`` files: ``FoldID EventID seq Bound``).

    Parameters
    ----------
    path : path-like
        Table file.
    sequence_column : str
        Column holding the sequences.
    label_columns : sequence of str, optional
        Columns that must be present and numeric (NaN = unlabelled).

    Returns
    -------
    pandas.DataFrame
        All columns, sequences as ``str`` (case kept).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.tsv"
    >>> _ = p.write_text("seq\tBound\nACGT\t1\nTTGA\t0\n")
    >>> read_sequence_table(p, label_columns=["Bound"]).Bound.tolist()
    [1, 0]
    """
    p = Path(path)
    if not p.exists():
        raise DlcbError(f"sequence table not found: {p}")
    if p.stat().st_size == 0:
        raise DlcbError(f"sequence table is empty: {p}")
    name = p.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    try:
        df = pd.read_csv(p, sep=sep, dtype={sequence_column: str}, compression="infer")
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        EOFError,
        OSError,
    ) as err:
        raise DlcbError(
            f"{p.name}: cannot read the table ({' '.join(str(err).split())[:150]})"
        ) from err
    if sequence_column not in df:
        raise DlcbError(
            f"{p.name}: no column {sequence_column!r} (columns: {', '.join(map(str, df.columns))})"
        )
    if df.empty:
        raise DlcbError(f"{p.name}: the table has a header but no rows")
    missing = df[sequence_column].isna()
    if missing.any():
        raise DlcbError(f"{p.name}: row {int(np.flatnonzero(missing)[0]) + 1} has no sequence")
    for col in label_columns or []:
        if col not in df:
            raise DlcbError(
                f"{p.name}: no label column {col!r} (columns: {', '.join(map(str, df.columns))})"
            )
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            raise DlcbError(
                f"{p.name}: column {col!r} row {int(np.flatnonzero(bad)[0]) + 1} is not a number: {df[col][bad].iloc[0]!r}"
            )
        df[col] = num
    return df


# --------------------------------------------------------------------------- genome windows
def windows_from_bed(
    genome,
    bed: pd.DataFrame,
    *,
    window: int = 1000,
    labels: str | Sequence[str] = "membership",
    tracks: Sequence | None = None,
) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """Fixed-length windows centred on BED intervals, with labels (the paper's Fig 2A).

    Parameters
    ----------
    genome : napari_dlcb.io.genome.Genome
        Open genome.
    bed : pandas.DataFrame
        From :func:`napari_dlcb.io.genome.read_bed` (checked against ``genome``).
    window : int
        Window length in bp. Windows running past a chromosome end are padded
        with ``N`` (kept, never dropped).
    labels : "membership", "name", "none" or list of column names
        ``"membership"``: one task, every window labelled 1 (add negatives
        separately). ``"none"``: no BED task (only ``tracks``). ``"name"``: one task per distinct BED name, 1 where a
        window's interval carries that name. A list: numeric BED columns.
    tracks : list of SignalTrack, optional
        Appends one regression-style label per track: the mean signal over
        the window.

    Returns
    -------
    seqs : list of str
    y : numpy.ndarray
        ``(N, T)`` float32 labels.
    info : pandas.DataFrame
        ``chrom, start, end`` of every window plus ``task_names`` in ``attrs``.
    """
    if window < 1:
        raise DlcbError(f"window must be a positive number of bp, got {window}")
    centre = ((bed["start"].to_numpy() + bed["end"].to_numpy()) // 2).astype(np.int64)
    starts = centre - window // 2
    ends = starts + window
    chroms = bed["chrom"].astype(str).to_numpy()
    seqs = [genome.fetch(c, int(s), int(e), pad=True) for c, s, e in zip(chroms, starts, ends)]
    columns: list[np.ndarray] = []
    names: list[str] = []
    if isinstance(labels, str) and labels == "none":
        pass  # only the tracks' means
    elif isinstance(labels, str) and labels == "membership":
        columns.append(np.ones(len(bed), dtype=np.float32))
        names.append("bound")
    elif isinstance(labels, str) and labels == "name":
        for nm in sorted(bed["name"].astype(str).unique()):
            columns.append((bed["name"].astype(str) == nm).to_numpy(np.float32))
            names.append(nm)
    else:
        for col in labels:
            if col not in bed:
                raise DlcbError(
                    f"BED has no column {col!r} (columns: {', '.join(map(str, bed.columns))})"
                )
            columns.append(pd.to_numeric(bed[col], errors="coerce").to_numpy(np.float32))
            names.append(str(col))
    for tr in tracks or []:
        columns.append(
            np.array(
                [tr.mean(c, max(0, int(s)), int(e)) for c, s, e in zip(chroms, starts, ends)],
                dtype=np.float32,
            )
        )
        names.append(getattr(tr, "name", "signal"))
    y = np.stack(columns, axis=1) if columns else np.zeros((len(bed), 0), np.float32)
    info = pd.DataFrame({"chrom": chroms, "start": starts, "end": ends})
    info.attrs["task_names"] = names
    return seqs, y, info


def gc_matched_background(
    genome,
    positives: Sequence[str],
    *,
    n: int | None = None,
    exclude: pd.DataFrame | None = None,
    bins: int = 20,
    seed: int = 0,
    max_draws: int = 200,
) -> tuple[list[str], pd.DataFrame]:
    """Random genome windows whose GC content matches that of ``positives``.

    Windows are drawn uniformly from the genome (skipping those with more than
    10 % N or overlapping ``exclude``) and accepted per GC bin until each bin
    holds as many as the positives do.

    Returns
    -------
    seqs : list of str
    info : pandas.DataFrame
        ``chrom, start, end`` of the chosen windows.
    """
    rng = np.random.default_rng(seed)
    L = len(positives[0])
    n = len(positives) if n is None else n
    edges = np.linspace(0, 1, bins + 1)
    pos_bins = np.clip(np.digitize(gc_content(positives), edges) - 1, 0, bins - 1)
    want = np.bincount(pos_bins, minlength=bins).astype(float) * n / len(positives)
    want = np.floor(want + rng.random(bins) * (want % 1 > 0)).astype(int)
    have = np.zeros(bins, int)
    chroms = [c for c, ln in genome.chromosomes.items() if ln > L]
    if not chroms:
        raise DlcbError(f"no chromosome is longer than the window ({L} bp)")
    weights = np.array([genome.chromosomes[c] - L for c in chroms], float)
    weights /= weights.sum()
    ex = {}
    if exclude is not None:
        for c, g in exclude.groupby("chrom"):
            ex[c] = (g["start"].to_numpy(), g["end"].to_numpy())
    out, rows = [], []
    draws = 0
    while (have < want).any() and draws < max_draws * max(n, 1):
        draws += 1
        c = chroms[rng.choice(len(chroms), p=weights)]
        s = int(rng.integers(0, genome.chromosomes[c] - L))
        if c in ex and np.any((ex[c][0] < s + L) & (ex[c][1] > s)):
            continue
        seq = genome.fetch(c, s, s + L)
        if seq.upper().count("N") > 0.1 * L:
            continue
        b = min(int(np.digitize(gc_content(seq)[0], edges)) - 1, bins - 1)
        if have[b] < want[b]:
            have[b] += 1
            out.append(seq)
            rows.append((c, s, s + L))
    if len(out) < n:
        raise DlcbError(
            f"found only {len(out)} of {n} GC-matched background windows; the genome is too small or too unlike the positives"
        )
    return out, pd.DataFrame(rows, columns=["chrom", "start", "end"])


def flank_negatives(
    genome, bed: pd.DataFrame, *, window: int = 1000, distance: int = 3000
) -> tuple[list[str], pd.DataFrame]:
    """Windows ``distance`` bp up- and downstream of each interval centre.

    Only windows inside the chromosome that overlap no interval of ``bed``
    are kept (a negative must not be another peak).

    Returns
    -------
    seqs : list of str
    info : pandas.DataFrame
    """
    centre = ((bed["start"].to_numpy() + bed["end"].to_numpy()) // 2).astype(np.int64)
    by_chrom = {
        c: (g["start"].to_numpy(np.int64), g["end"].to_numpy(np.int64))
        for c, g in bed.sort_values("start").groupby(bed["chrom"].astype(str))
    }

    def overlaps(c: str, s: int, e: int) -> bool:
        starts, ends = by_chrom[c]
        i = np.searchsorted(starts, e)  # intervals starting before e
        return bool((ends[:i] > s).any())

    seqs, rows = [], []
    for c, m in zip(bed["chrom"].astype(str), centre):
        for shift in (-distance, distance):
            s = int(m + shift - window // 2)
            if s >= 0 and s + window <= genome.chromosomes[c] and not overlaps(c, s, s + window):
                seqs.append(genome.fetch(c, s, s + window))
                rows.append((c, s, s + window))
    return seqs, pd.DataFrame(rows, columns=["chrom", "start", "end"])


# --------------------------------------------------------------------------- splits
def split_by_chromosome(
    chroms: Iterable[str],
    *,
    val: Sequence[str] = ("chr8",),
    test: Sequence[str] = ("chr9",),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test) holding out whole chromosomes.

    Examples
    --------
    >>> [a.tolist() for a in split_by_chromosome(["chr1", "chr8", "chr9", "chr1"])]
    [[0, 3], [1], [2]]
    """
    c = np.asarray(list(chroms)).astype(str)
    if set(val) & set(test):
        raise DlcbError("a chromosome cannot be both in the validation and the test set")
    is_val = np.isin(c, list(val))
    is_test = np.isin(c, list(test))
    return np.flatnonzero(~is_val & ~is_test), np.flatnonzero(is_val), np.flatnonzero(is_test)


def kfold_indices(
    n: int, k: int = 5, *, seed: int = 0, groups: Sequence | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, test) index pairs; with ``groups`` (e.g. chromosomes) no group spans two folds.

    Examples
    --------
    >>> folds = kfold_indices(10, 5)
    >>> sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(10))
    True
    """
    if k < 2 or k > n:
        raise DlcbError(f"k-fold needs 2 <= k <= number of samples ({n}), got k={k}")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        parts = np.array_split(perm, k)
    else:
        g = np.asarray(groups)
        uniq = rng.permutation(np.unique(g))
        if len(uniq) < k:
            raise DlcbError(f"{len(uniq)} groups cannot make {k} folds")
        parts = [np.flatnonzero(np.isin(g, ug)) for ug in np.array_split(uniq, k)]
    return [
        (np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(parts[i]))
        for i in range(k)
    ]


# --------------------------------------------------------------------------- simulation
def sample_motif(counts: np.ndarray, *, rng: np.random.Generator | int | None = None) -> str:
    """Draw one binding site from a position count/probability matrix ``(4, width)``.

    Examples
    --------
    >>> sample_motif(one_hot("GATA")[0], rng=0)
    'GATA'
    """
    rng = np.random.default_rng(rng)
    p = np.asarray(counts, float) + 1e-9
    p = p / p.sum(0, keepdims=True)
    u = rng.random(p.shape[1])
    idx = (u[None] > np.cumsum(p, 0)).sum(0).clip(0, 3)
    return "".join(ALPHABET[i] for i in idx)


def random_dna(
    length: int, *, gc: float = 0.42, rng: np.random.Generator | int | None = None
) -> str:
    """A random i.i.d. DNA string with the given GC fraction.

    Examples
    --------
    >>> len(random_dna(50, rng=0))
    50
    """
    rng = np.random.default_rng(rng)
    p = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choice(list(ALPHABET), length, p=p))
