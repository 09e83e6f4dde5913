"""Filter motifs: PWMs from first-layer filters, TOMTOM-like matching to known motifs, motif scans.

* :func:`filter_motifs` - for each first-layer filter, the subsequences whose
  activation reaches ``threshold`` x the filter's maximum over the data are
  stacked into a position count matrix (the protocol of DeepBind / Basset).
* :func:`match_motifs` - compares PWMs with a motif database the way TOMTOM
  does (Gupta et al. 2007): column similarity is the Pearson correlation of the
  two probability columns; the score of an alignment is the sum over its
  overlapping columns; its p-value comes from the exact null distribution of
  that sum, built by convolving each query column's score distribution against
  all database columns; the best offset/strand per target is corrected for the
  number of alignments tried; q-values by Benjamini-Hochberg.
* :func:`load_motif_database` - JASPAR 2024 CORE (vertebrates) shipped with
  the ``pyjaspar`` package (offline), or a HOCOMOCO PCM / MEME file (from
  :mod:`napari_dlcb.io.motifs`, with :class:`Motif` and the file readers).
* :func:`scan_motifs` - log-odds PWM scan of one-hot DNA on both strands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.motifs import Motif, load_motif_database, read_motif_file, write_meme

__all__ = [
    "Motif",
    "filter_motifs",
    "load_motif_database",
    "match_motifs",
    "read_motif_file",
    "save_logos",
    "scan_motifs",
    "write_meme",
]


# --------------------------------------------------------------------------- from filters
def _first_conv(model):
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            if m.in_channels != 4:
                raise DlcbError("the model's first Conv1d does not take 4-channel one-hot DNA")
            return m
    raise DlcbError("the model has no Conv1d layer to read filter motifs from")


def filter_motifs(
    model,
    x,
    *,
    threshold: float = 0.5,
    batch_size: int = 256,
    device: Any = "auto",
    trim: bool = False,
) -> list[Motif]:
    """PWMs of the first-layer filters from their maximally activating subsequences.

    Parameters
    ----------
    model : torch.nn.Module
        DNA model whose first ``Conv1d`` reads the one-hot input.
    x : array-like
        One-hot ``(N, 4, L)`` sequences (e.g. the positives).
    threshold : float
        Keep positions where a filter's activation is at least ``threshold``
        times its maximum activation over ``x``.
    batch_size : int
        Sequences per forward pass.
    device : str or torch.device or None
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``...; None keeps the
        model's device. The model is handed back on its own device.
    trim : bool
        Trim low-information flanks.

    Returns
    -------
    list of Motif
        One per filter, named ``filter<i>``; ``n_sites`` counts the subsequences.
    """
    import torch

    from napari_dlcb.models.state import preserve_model_state

    conv = _first_conv(model)
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[1] != 4:
        raise DlcbError(f"x must be one-hot DNA (N, 4, L), got {x.shape}")
    k, d, pad = conv.kernel_size[0], conv.dilation[0], conv.padding
    s = conv.stride[0]
    if isinstance(pad, str):
        pad = 0 if pad == "valid" else d * (k - 1) // 2
    else:
        pad = pad[0]
    F_ = conv.out_channels
    acts = []
    from napari_dlcb.device import resolve_device

    dev = resolve_device(device) if device is not None else conv.weight.device
    with preserve_model_state(model), torch.no_grad():
        model.eval()
        conv.to(dev)
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], device=dev)
            acts.append(conv(xb).cpu().numpy())
    a = np.concatenate(acts)  # (N, F, Lo)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    offs = np.arange(k) * d
    motifs = []
    for f in range(F_):
        af = a[:, f]
        mx = af.max()
        counts = np.zeros((4, k))
        n = 0
        if mx > 0:
            seq_i, pos = np.nonzero(af >= threshold * mx)
            if len(seq_i):
                idx = pos[:, None] * s + offs[None]  # padded coordinates
                sub = xp[seq_i[:, None], :, idx]  # (n, k, 4)
                counts = sub.sum(0).T
                n = len(seq_i)
        m = Motif(f"filter{f}", counts, n, {"max_activation": float(mx)})
        motifs.append(m.trimmed() if trim else m)
    return motifs


def save_logos(motifs: list[Motif], folder: str | os.PathLike) -> list[Path]:
    """Save an information-content logo (PNG) per motif with logomaker, or plain bars without it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in motifs:
        if not m.n_sites and not m.counts.sum():
            continue
        heights = m.probabilities() * m.information()[None]
        fig, ax = plt.subplots(figsize=(max(2, 0.35 * m.width), 1.6))
        df = pd.DataFrame(heights.T, columns=list("ACGT"))
        try:
            import logomaker

            logomaker.Logo(df, ax=ax)
        except ImportError:
            df.plot.bar(
                stacked=True,
                ax=ax,
                width=0.9,
                legend=False,
                color=["#109648", "#255C99", "#F7B32B", "#D62839"],
            )
        ax.set_ylim(0, 2)
        ax.set_title(f"{m.name} ({m.n_sites} sites)", fontsize=8)
        fig.tight_layout()
        out = folder / f"{m.name.replace(' ', '_').replace('/', '_')}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        paths.append(out)
    return paths


# --------------------------------------------------------------------------- TOMTOM-like
def _pcc_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every column of a (4, m) and b (4, n) -> (m, n)."""
    a = a - a.mean(0, keepdims=True)
    b = b - b.mean(0, keepdims=True)
    na = np.sqrt((a * a).sum(0))
    nb = np.sqrt((b * b).sum(0))
    den = np.outer(na, nb)
    out = a.T @ b
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-12, out / np.maximum(den, 1e-12), 0.0)
    return out


def match_motifs(
    queries: list[Motif],
    database: list[Motif],
    *,
    min_overlap: int = 5,
    bins: int = 100,
    min_sites: int = 10,
) -> pd.DataFrame:
    """Match query motifs against a database with a TOMTOM-like score and p-value.

    Parameters
    ----------
    queries : list of Motif
        E.g. from :func:`filter_motifs` (motifs with fewer than ``min_sites``
        sites are skipped).
    database : list of Motif
        Known motifs.
    min_overlap : int
        Minimum number of overlapping columns of an alignment (or the
        shorter motif's width, if smaller).
    bins : int
        Resolution of the column-score null distribution over [-1, 1].
    min_sites : int
        Skip queries built from fewer subsequences.

    Returns
    -------
    pandas.DataFrame
        One row per (query, target): ``filter, target, score, offset,
        strand, overlap, p_value, e_value, q_value, n_sites``, sorted by
        query then p-value. ``offset`` is the position of the target's first
        column relative to the query's first column.
    """
    cols_out = [
        "filter",
        "target",
        "score",
        "offset",
        "strand",
        "overlap",
        "p_value",
        "e_value",
        "q_value",
        "n_sites",
    ]
    if not database:
        raise DlcbError("the motif database is empty")
    kmax = max((q.width for q in queries), default=1)
    db = _DatabaseColumns(database, kmax)
    rows = []
    for q in queries:
        if q.n_sites < min_sites or q.counts.sum() == 0:
            continue
        rows += _match_one(q, database, db, min_overlap=min_overlap, bins=bins)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=cols_out)
    df["e_value"] = df["p_value"] * len(database)
    df["q_value"] = df.groupby("filter")["p_value"].transform(_bh)
    return df.sort_values(["filter", "p_value"], kind="stable").reset_index(drop=True)


class _DatabaseColumns:
    """All database columns, both strands, one block per (motif, strand), separated by NaN gaps."""

    def __init__(self, database: list[Motif], kmax: int) -> None:
        blocks, owner, self.strand_of, first_col = [], [], [], []
        gap = np.full((4, kmax), np.nan)
        pos = 0
        for t_i, m in enumerate(database):
            p = m.probabilities()
            for strand, mat in (("+", p), ("-", p[::-1, ::-1])):
                blocks += [mat, gap]
                owner.append(t_i)
                self.strand_of.append(strand)
                first_col.append(pos)
                pos += mat.shape[1] + kmax
        self.columns = np.concatenate(blocks, axis=1)  # (4, n) with NaN gaps
        self.n = self.columns.shape[1]
        self.valid = ~np.isnan(self.columns[0])
        self.widths = np.array([database[o].width for o in owner])
        self.first_col = np.array(first_col)


def _alignments(S: np.ndarray, sb: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Score, binned score and overlapping query columns of every alignment anchor."""
    k = S.shape[0]
    # Alignment anchored at database column j (query column i meets column j + i).
    anchors = np.arange(-k + 1, n)
    score = np.zeros(len(anchors))
    sbin = np.zeros(len(anchors), int)
    i_first = np.full(len(anchors), k)
    i_last = np.full(len(anchors), -1)
    for i in range(k):
        c = anchors + i
        ok = (c >= 0) & (c < n)
        v = np.full(len(anchors), np.nan)
        vb = np.full(len(anchors), np.nan)
        v[ok], vb[ok] = S[i, c[ok]], sb[i, c[ok]]
        has = ~np.isnan(v)
        score[has] += v[has]
        sbin[has] += vb[has].astype(int)
        i_first = np.where(has & (i_first == k), i, i_first)
        i_last = np.where(has, i, i_last)
    return anchors, score, sbin, i_first, i_last


def _tail_pvalues(good, i_first, i_last, sbin, hist) -> np.ndarray:
    """P(sum >= s) of each good alignment, from the exact null of its query columns."""
    pvals = np.ones(len(good))
    tails: dict[tuple[int, int], np.ndarray] = {}
    for a_i in np.flatnonzero(good):
        key = (int(i_first[a_i]), int(i_last[a_i]) + 1)
        tl = tails.get(key)
        if tl is None:
            dist = np.array([1.0])
            for ii in range(*key):
                dist = np.convolve(dist, hist[ii])
            tl = tails[key] = np.cumsum(dist[::-1])[::-1]
        pvals[a_i] = tl[sbin[a_i]] if sbin[a_i] < len(tl) else 0.0
    return pvals


def _match_one(
    q: Motif, database: list[Motif], db: _DatabaseColumns, *, min_overlap: int, bins: int
) -> list[dict]:
    """The best alignment of query ``q`` with each database motif (see :func:`match_motifs`)."""
    qp = q.probabilities()
    k = qp.shape[1]
    S = _pcc_columns(qp, np.where(db.valid, db.columns, 0.25))  # (k, n)
    S[:, ~db.valid] = np.nan
    sb = np.clip(((S + 1) / 2 * bins).round(), 0, bins)
    # Null: per query column, its score distribution against every database column.
    hist = np.stack(
        [np.bincount(sb[i, db.valid].astype(int), minlength=bins + 1) for i in range(k)]
    ).astype(float)
    hist /= hist.sum(1, keepdims=True)
    anchors, score, sbin, i_first, i_last = _alignments(S, sb, db.n)
    overlap = np.where(i_last >= 0, i_last - i_first + 1, 0)
    # which (motif, strand) block each anchor touches: the block holding its first valid column
    col0 = anchors + np.clip(i_first, 0, k - 1)
    blk = np.searchsorted(db.first_col, col0, side="right") - 1
    need = np.minimum(min_overlap, np.minimum(k, db.widths[np.clip(blk, 0, None)]))
    good = (overlap > 0) & (overlap >= need) & (blk >= 0)
    pvals = _tail_pvalues(good, i_first, i_last, sbin, hist)
    rows = []
    for t_i in range(len(database)):
        idx = np.flatnonzero(good & ((blk == 2 * t_i) | (blk == 2 * t_i + 1)))
        if len(idx) == 0:
            continue
        best = idx[np.lexsort((-score[idx], pvals[idx]))[0]]
        p_min = min(float(pvals[best]), 1 - 1e-16)
        p_corr = float(-np.expm1(len(idx) * np.log1p(-p_min)))  # corrected for the alignments tried
        b = int(blk[best])
        rows.append(
            {
                "filter": q.name,
                "target": database[t_i].name,
                "score": float(score[best]),
                "offset": int(db.first_col[b] - anchors[best]),
                "strand": db.strand_of[b],
                "overlap": int(overlap[best]),
                "p_value": max(p_corr, 1e-300),
                "n_sites": q.n_sites,
                "query_consensus": q.consensus(),
                "target_consensus": database[t_i].consensus(),
            }
        )
    return rows


def _bh(p: pd.Series) -> np.ndarray:
    v = p.to_numpy(float)
    n = len(v)
    order = np.argsort(v)
    q = v[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


# --------------------------------------------------------------------------- scanning
def scan_motifs(
    x,
    motifs: list[Motif],
    *,
    min_relative_score: float = 0.85,
    background: np.ndarray | None = None,
) -> pd.DataFrame:
    """Scan one-hot DNA for motif sites with log-odds PWMs, on both strands.

    Parameters
    ----------
    x : array-like
        One-hot ``(N, 4, L)`` (or ``(4, L)``).
    motifs : list of Motif
        Motifs to scan for.
    min_relative_score : float
        Report sites whose score is at least this fraction of the way from
        the PWM's minimum to its maximum score (as Biopython's relative
        threshold).
    background : array of 4, optional
        Base frequencies (default uniform).

    Returns
    -------
    pandas.DataFrame
        ``sequence, motif, start, end, strand, score, relative_score``; ``start``
        is the 0-based position of the site on the input grid.
    """
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        x = x[None]
    bg = np.full(4, 0.25) if background is None else np.asarray(background, float)
    rows = []
    for m in motifs:
        pwm = np.log2(m.probabilities() / bg[:, None])  # (4, w)
        w = pwm.shape[1]
        if w > x.shape[2]:
            continue
        lo, hi = pwm.min(0).sum(), pwm.max(0).sum()
        for strand, mat in (("+", pwm), ("-", pwm[::-1, ::-1])):
            win = np.lib.stride_tricks.sliding_window_view(x, w, axis=2)  # (N, 4, L-w+1, w)
            sc = np.einsum("nclw,cw->nl", win, mat)
            rel = (sc - lo) / (hi - lo) if hi > lo else np.zeros_like(sc)
            for n, i in zip(*np.nonzero(rel >= min_relative_score)):
                rows.append(
                    (int(n), m.name, int(i), int(i + w), strand, float(sc[n, i]), float(rel[n, i]))
                )
    return pd.DataFrame(
        rows, columns=["sequence", "motif", "start", "end", "strand", "score", "relative_score"]
    )
