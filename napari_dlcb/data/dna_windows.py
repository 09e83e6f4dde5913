"""DNA training data: sequence tables, windows centred on genome peaks, negatives, splits.

Windows come from a :class:`~napari_dlcb.io.fasta.Genome` in chromosome
coordinates (also a FASTA of regions: windows are drawn only where the file
holds sequence). No torch here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dlcb.data.onehot import gc_content
from napari_dlcb.errors import DlcbError

__all__ = [
    "flank_negatives",
    "gc_matched_background",
    "kfold_indices",
    "read_sequence_table",
    "split_by_chromosome",
    "windows_from_bed",
]


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
    if not p.is_dir() and not stat.S_ISREG(p.stat().st_mode):  # a pipe would block forever
        raise DlcbError(f"sequence table is not a regular file (a pipe or a device?): {p}")
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
    # sample from what the file holds: whole chromosomes, or the regions of a FASTA of regions
    pieces = [(r.chrom, r.start, r.end) for r in _pieces(genome) if r.end - r.start > L]
    if not pieces:
        raise DlcbError(f"no chromosome is longer than the window ({L} bp)")
    weights = np.array([e - s - L for _, s, e in pieces], float)
    weights /= weights.sum()
    ex = {}
    if exclude is not None:
        for c, g in exclude.groupby("chrom"):
            ex[c] = (g["start"].to_numpy(), g["end"].to_numpy())
    out, rows = [], []
    draws = 0
    while (have < want).any() and draws < max_draws * max(n, 1):
        draws += 1
        c, lo, hi = pieces[rng.choice(len(pieces), p=weights)]
        s = lo + int(rng.integers(0, hi - lo - L))
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
            if s >= 0 and _holds(genome, c, s, s + window) and not overlaps(c, s, s + window):
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


def _pieces(genome) -> list:
    """What ``genome`` holds, as regions (whole chromosomes for a plain dict-like genome)."""
    from napari_dlcb.io.regions import Region

    pieces = getattr(genome, "pieces", None)
    if pieces is not None:
        return list(pieces)
    return [Region(c, 0, n) for c, n in genome.chromosomes.items()]


def _holds(genome, chrom: str, start: int, end: int) -> bool:
    covers = getattr(genome, "covers", None)
    if covers is not None:
        return bool(covers(chrom, start, end))
    return start >= 0 and end <= genome.chromosomes[chrom]
