"""DNA as arrays: one-hot encoding, reverse complements, GC content, shuffles, simulation.

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

from collections.abc import Sequence

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = [
    "ALPHABET",
    "IUPAC",
    "decode",
    "dinucleotide_counts",
    "dinucleotide_shuffle",
    "gc_content",
    "one_hot",
    "random_dna",
    "reverse_complement",
    "reverse_complement_str",
    "sample_motif",
    "shuffled_negatives",
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
