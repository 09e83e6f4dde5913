"""Filter motifs: PWMs from first-layer filters, TOMTOM matching to known motifs, FIMO scans.

* :func:`filter_motifs` - for each first-layer filter, the subsequences whose
  activation reaches ``threshold`` x the filter's maximum over the data are
  stacked into a position count matrix (the protocol of DeepBind / Basset).
* :func:`match_motifs` - TOMTOM (Gupta et al. 2007) as memelite implements it
  (Schreiber's tomtom-lite): the best alignment of each query with each
  database motif on both strands, its p-value from the query's column-score
  null built against the whole database, E = p x database size and
  Benjamini-Hochberg q-values per query, as MEME's ``tomtom`` reports them.
* :func:`scan_motifs` - FIMO (Grant et al. 2011) as memelite implements it:
  log-odds PWM scores on both strands with exact p-values, and q-values
  (Benjamini-Hochberg over every position and strand scanned).
* :func:`load_motif_database` - the bundled JASPAR 2024 CORE vertebrates, or a
  HOCOMOCO PCM / MEME file (from :mod:`napari_dlcb.io.motifs`, with
  :class:`Motif` and the file readers); :func:`save_logos` - letter logos.

memelite compiles its kernels with numba on first use (cached on disk after
that, so only the first call in a new environment is slow).
"""

from __future__ import annotations

import os
import warnings
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

#: columns of :func:`match_motifs`'s table
MATCH_COLUMNS = [
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
    "query_consensus",
    "target_consensus",
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


def _first_convs(model) -> list[tuple[str, Any]]:
    """``(name prefix, first Conv1d)`` of the model, or of every member of an ensemble."""
    from napari_dlcb.models.ensemble import Ensemble

    if isinstance(model, Ensemble):
        return [(f"member{i}_", _first_conv(m)) for i, m in enumerate(model.members)]
    return [("", _first_conv(model))]


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
        DNA model whose first ``Conv1d`` reads the one-hot input; for an
        :class:`~napari_dlcb.models.ensemble.Ensemble` (k-fold training) the
        filters of every member.
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
        One per filter, named ``filter<i>`` (an ensemble's ``member<j>_filter<i>``);
        ``n_sites`` counts the subsequences.
    """
    if not (isinstance(threshold, (int, float)) and threshold >= 0 and threshold < float("inf")):
        raise DlcbError(f"threshold must be a finite number >= 0, got {threshold!r}")
    import torch

    from napari_dlcb.device import resolve_device
    from napari_dlcb.models.state import preserve_model_state

    convs = _first_convs(model)
    x = np.asarray(x, np.float32)
    if x.ndim != 3 or x.shape[1] != 4:
        raise DlcbError(f"x must be one-hot DNA (N, 4, L), got {x.shape}")
    motifs = []
    with preserve_model_state(model), torch.no_grad():
        model.eval()
        for prefix, conv in convs:
            dev = resolve_device(device) if device is not None else conv.weight.device
            conv.to(dev)
            acts = [
                conv(torch.as_tensor(x[i : i + batch_size], device=dev)).cpu().numpy()
                for i in range(0, len(x), batch_size)
            ]
            motifs += _conv_motifs(conv, np.concatenate(acts), x, threshold, prefix, trim)
    return motifs


def _conv_motifs(
    conv: Any, a: np.ndarray, x: np.ndarray, threshold: float, prefix: str, trim: bool
) -> list[Motif]:
    """One motif per filter of ``conv`` from its activations ``a`` ``(N, F, Lo)`` on ``x``."""
    k, d, pad = conv.kernel_size[0], conv.dilation[0], conv.padding
    s = conv.stride[0]
    if isinstance(pad, str):
        pad = 0 if pad == "valid" else d * (k - 1) // 2
    else:
        pad = pad[0]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    offs = np.arange(k) * d
    motifs = []
    for f in range(conv.out_channels):
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
        m = Motif(f"{prefix}filter{f}", counts, n, {"max_activation": float(mx)})
        motifs.append(m.trimmed() if trim else m)
    return motifs


def save_logos(motifs: list[Motif], folder: str | os.PathLike) -> list[Path]:
    """Save an information-content letter logo (PNG) per motif, drawn by :func:`~napari_dlcb.interpret.logo.logo_image`.

    Letters A, C, G, T are stacked at each position with heights
    ``probability x information`` (bits, 0-2), the largest on top, under a
    title with the motif's name and number of sites.

    Parameters
    ----------
    motifs : list of Motif
        Motifs without any site are skipped.
    folder : path-like
        Created if needed; files are named after the motifs.

    Returns
    -------
    list of pathlib.Path
        The PNG files written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from napari_dlcb.interpret.logo import logo_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in motifs:
        if not m.n_sites and not m.counts.sum():
            continue
        heights = m.probabilities() * m.information()[None]
        img = logo_image(heights, px_per_base=24, height=96, max_height=2.0, gap=2)
        fig, ax = plt.subplots(figsize=(max(2.0, 0.35 * m.width), 1.6))
        ax.imshow(
            img, extent=(0.5, m.width + 0.5, 0, 2), aspect="auto", interpolation="antialiased"
        )
        ax.set_xlim(0.5, m.width + 0.5)
        ax.set_ylim(0, 2)
        ax.set_ylabel("bits", fontsize=7)
        ax.set_xticks(range(1, m.width + 1))
        ax.tick_params(labelsize=6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(f"{m.name} ({m.n_sites} sites)", fontsize=8)
        fig.tight_layout()
        out = folder / f"{m.name.replace(' ', '_').replace('/', '_')}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        paths.append(out)
    return paths


# --------------------------------------------------------------------------- TOMTOM
def match_motifs(
    queries: list[Motif],
    database: list[Motif],
    *,
    min_overlap: int = 1,
    bins: int = 100,
    min_sites: int = 10,
) -> pd.DataFrame:
    """Match query motifs against a database with TOMTOM (memelite's implementation).

    Parameters
    ----------
    queries : list of Motif
        E.g. from :func:`filter_motifs` (motifs with fewer than ``min_sites``
        sites are skipped).
    database : list of Motif
        Known motifs. TOMTOM's null distribution is built from the database's
        columns, so p-values are only reliable against a whole database
        (memelite warns below 25 motifs, MEME's tomtom below 50).
    min_overlap : int
        Leave out matches whose best alignment overlaps fewer columns (or the
        shorter motif's width, if smaller); q-values are computed before.
        MEME's tomtom defaults to 1.
    bins : int
        Resolution of the column-score distribution (TOMTOM's ``t``).
    min_sites : int
        Skip queries built from fewer subsequences.

    Returns
    -------
    pandas.DataFrame
        One row per (query, target): ``filter, target, score, offset,
        strand, overlap, p_value, e_value, q_value, n_sites,
        query_consensus, target_consensus``, sorted by query then p-value.
        ``offset`` is the position of the target's first column relative to
        the query's first column (on the target's strand ``strand``);
        ``score`` is TOMTOM's alignment score in memelite's binned units;
        ``e_value = p_value x len(database)``; ``q_value`` is
        Benjamini-Hochberg over the database, per query.

    Examples
    --------
    >>> from napari_dlcb.data.onehot import one_hot
    >>> query = Motif("q", one_hot("AGATAAGA")[0] * 40, n_sites=40)
    >>> best = match_motifs([query], load_motif_database("jaspar")).iloc[0]
    >>> best.target, bool(best.q_value < 0.05)
    ('MA1104.3 GATA6', True)
    """
    from memelite import tomtom

    if not database:
        raise DlcbError("the motif database is empty")
    used = [q for q in queries if q.n_sites >= min_sites and q.counts.sum() > 0]
    if not used:
        return pd.DataFrame(columns=MATCH_COLUMNS)
    qs = [np.ascontiguousarray(q.probabilities(), np.float64) for q in used]
    ts = [np.ascontiguousarray(t.probabilities(), np.float64) for t in database]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # few targets: see the docstring
        p, score, offset, overlap, strand = tomtom(qs, ts, n_score_bins=int(bins), n_jobs=1)
    n_t = len(database)
    df = _match_table(used, database, p, score, offset, overlap, strand)
    widths = np.minimum(
        np.repeat([q.width for q in used], n_t), np.tile([t.width for t in database], len(used))
    )
    df = df[df["overlap"] >= np.minimum(min_overlap, widths)]
    df = df.sort_values(["filter", "p_value"], kind="stable").reset_index(drop=True)
    return df[MATCH_COLUMNS]


def _match_table(
    used: list[Motif],
    database: list[Motif],
    p: np.ndarray,
    score: np.ndarray,
    offset: np.ndarray,
    overlap: np.ndarray,
    strand: np.ndarray,
) -> pd.DataFrame:
    """TOMTOM's (query, target) matrices as one row per pair, with e- and q-values.

    Parameters
    ----------
    used, database : list of Motif
        The queries matched and the targets.
    p, score, offset, overlap, strand : numpy.ndarray
        memelite's ``tomtom`` results, each ``(len(used), len(database))``.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`match_motifs`, unfiltered and unsorted.
    """
    n_t = len(database)
    df = pd.DataFrame(
        {
            "filter": np.repeat([q.name for q in used], n_t),
            "target": np.tile([t.name for t in database], len(used)),
            "score": score.ravel(),
            "offset": -offset.ravel().astype(int),
            "strand": np.where(strand.ravel() > 0, "-", "+"),
            "overlap": overlap.ravel().astype(int),
            "p_value": np.clip(p.ravel(), 1e-300, 1.0),
            "n_sites": np.repeat([q.n_sites for q in used], n_t),
            "query_consensus": np.repeat([q.consensus() for q in used], n_t),
            "target_consensus": np.tile([t.consensus() for t in database], len(used)),
        }
    )
    df["e_value"] = df["p_value"] * n_t
    df["q_value"] = df.groupby("filter", sort=False)["p_value"].transform(_bh)
    return df


def _bh(p: Any) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p`` (over ``n_tests`` tests if more than ``len(p)``)."""
    return _bh_of(np.asarray(p, float), len(p))


def _bh_of(v: np.ndarray, n_tests: int) -> np.ndarray:
    n = len(v)
    if n == 0:
        return v.copy()
    order = np.argsort(v, kind="stable")
    q = v[order] * n_tests / np.arange(1, n + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


# --------------------------------------------------------------------------- FIMO
def scan_motifs(
    x,
    motifs: list[Motif],
    *,
    threshold: float = 1e-4,
    min_relative_score: float | None = None,
) -> pd.DataFrame:
    """Scan one-hot DNA for motif sites with FIMO (memelite's implementation), on both strands.

    Parameters
    ----------
    x : array-like
        One-hot ``(N, 4, L)`` (or ``(4, L)``). Positions that are not one
        base (``N``, IUPAC codes) match nothing.
    motifs : list of Motif
        Motifs to scan for (uniform background, as FIMO's default).
    threshold : float
        Report sites with a p-value below this (FIMO's ``--thresh``, 1e-4).
    min_relative_score : float, optional
        Also require this fraction of the way from the PWM's lowest to its
        highest score (Biopython's relative threshold).

    Returns
    -------
    pandas.DataFrame
        ``sequence, motif, start, end, strand, score, p_value, q_value,
        relative_score``; ``start`` is the 0-based position of the site on
        the input grid, ``score`` the log2-odds score, ``p_value`` FIMO's
        exact p-value, ``q_value`` Benjamini-Hochberg over every position and
        strand scanned for every motif (MEME's FIMO q-values with pi0 = 1:
        never smaller than MEME's).

    Examples
    --------
    >>> from napari_dlcb.data.onehot import one_hot
    >>> gata = Motif("GATA", one_hot("GATAAG")[0] * 20 + 0.5)
    >>> hits = scan_motifs(one_hot("CCCGATAAGCCC"), [gata], threshold=1e-3)
    >>> hits[["start", "strand"]].values.tolist(), round(float(hits.p_value[0]), 6)
    ([[3, '+']], 0.000244)
    """
    from memelite import fimo

    columns = ["sequence", "motif", "start", "end", "strand", "score", "p_value", "q_value"]
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != 4:
        raise DlcbError(f"x must be one-hot DNA (N, 4, L), got shape {x.shape}")
    if not 0 < threshold <= 1:
        raise DlcbError(f"threshold is a p-value in (0, 1], got {threshold}")
    usable = [m for m in motifs if 0 < m.width <= x.shape[2] and m.counts.sum() > 0]
    if not usable:
        return pd.DataFrame(columns=[*columns, "relative_score"])
    xs = np.ascontiguousarray((x >= 1.0).astype(np.float32))  # N and IUPAC columns -> no base
    pwms = {
        str(i): np.ascontiguousarray(m.probabilities(), np.float64) for i, m in enumerate(usable)
    }
    hits = fimo(pwms, xs, threshold=float(threshold))
    tables = [h for h in hits if len(h)]
    n_tests = sum(2 * x.shape[0] * (x.shape[2] - m.width + 1) for m in usable)
    if not tables:
        return pd.DataFrame(columns=[*columns, "relative_score"])
    out = _site_table(pd.concat(tables, ignore_index=True), usable, n_tests)
    if min_relative_score is not None:
        out = out[out["relative_score"] >= min_relative_score]
    return out.sort_values(["sequence", "start", "motif"], kind="stable").reset_index(drop=True)


def _site_table(df: pd.DataFrame, usable: list[Motif], n_tests: int) -> pd.DataFrame:
    """FIMO hits (memelite's) as :func:`scan_motifs` reports them, with q- and relative scores.

    Parameters
    ----------
    df : pandas.DataFrame
        The hits of every motif, as ``fimo`` returns them (``motif_name`` is
        the motif's index in ``usable``).
    usable : list of Motif
        The motifs scanned for.
    n_tests : int
        Positions and strands scanned, over all motifs (for the q-values).

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`scan_motifs`, unfiltered and unsorted.
    """
    k = df["motif_name"].astype(int).to_numpy()
    out = pd.DataFrame(
        {
            "sequence": df["sequence_name"].astype(int).to_numpy(),
            "motif": [usable[i].name for i in k],
            "start": df["start"].astype(int).to_numpy(),
            "end": df["end"].astype(int).to_numpy(),
            "strand": df["strand"].astype(str).to_numpy(),
            "score": df["score"].astype(float).to_numpy(),
            "p_value": df["p-value"].astype(float).to_numpy(),
        }
    )
    out["q_value"] = _bh_of(out["p_value"].to_numpy(), n_tests)
    lo_hi = np.array([_score_range(usable[i]) for i in range(len(usable))])
    lo, hi = lo_hi[k, 0], lo_hi[k, 1]
    out["relative_score"] = (out["score"] - lo) / np.where(hi > lo, hi - lo, 1.0)
    return out


def _score_range(m: Motif, eps: float = 1e-4) -> tuple[float, float]:
    """Lowest and highest log2-odds score of ``m`` as FIMO scores it (pseudocount ``eps``)."""
    pwm = np.log2(m.probabilities() + eps) - np.log2(0.25)
    return float(pwm.min(0).sum()), float(pwm.max(0).sum())
