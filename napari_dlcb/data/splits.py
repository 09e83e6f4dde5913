"""Train/validation/test splits: random, k-fold, grouped, and spatial blocks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["block_mask", "group_split", "kfold", "stroke_mask", "train_val_split"]


def train_val_split(
    n: int, *, val_fraction: float = 0.2, seed: int = 0, test_fraction: float = 0.0
) -> tuple[np.ndarray, ...]:
    """Shuffle ``range(n)`` into train/val (and test) index arrays.

    Examples
    --------
    >>> tr, va = train_val_split(10, val_fraction=0.2)
    >>> len(tr), len(va), len(set(tr) & set(va))
    (8, 2, 0)
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 - val_fraction:
        raise DlcbError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
    idx = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if val_fraction else 0
    n_test = int(round(n * test_fraction)) if test_fraction else 0
    if val_fraction and n_val == 0 and n > 1:
        n_val = 1
    val, test, train = idx[:n_val], idx[n_val : n_val + n_test], idx[n_val + n_test :]
    if len(train) == 0:
        raise DlcbError(f"only {n} samples: too few for a train/validation split")
    return (np.sort(train), np.sort(val)) + ((np.sort(test),) if test_fraction else ())


def kfold(n: int, k: int = 5, *, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``k`` (train, val) index pairs; each sample is validated exactly once."""
    if k < 2 or k > n:
        raise DlcbError(f"k-fold needs 2 <= k <= n (got k={k}, n={n})")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    for i in range(k):
        val = np.sort(folds[i])
        train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        yield train, val


def group_split(
    groups: Sequence, val_groups: Sequence, test_groups: Sequence = ()
) -> tuple[np.ndarray, ...]:
    """Split by group membership, e.g. hold out whole chromosomes."""
    g = np.asarray(groups)
    missing = set(val_groups) | set(test_groups)
    missing -= set(g.tolist())
    if missing:
        raise DlcbError(f"hold-out group(s) not present in the data: {sorted(missing)}")
    val = np.flatnonzero(np.isin(g, list(val_groups)))
    test = np.flatnonzero(np.isin(g, list(test_groups)))
    train = np.flatnonzero(~np.isin(g, list(val_groups) + list(test_groups)))
    return (train, val) + ((test,) if len(test_groups) else ())


def block_mask(
    shape: tuple[int, int],
    *,
    val_fraction: float = 0.2,
    block: int = 64,
    seed: int = 0,
    labelled: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of spatial validation blocks for a single annotated image.

    With one image, random pixels would leak (neighbours are nearly identical),
    so whole ``block`` x ``block`` squares are held out. When ``labelled`` is
    given, blocks are drawn among those that contain annotation, so the
    validation set is never empty while annotation exists.
    """
    rows, cols = -(-shape[0] // block), -(-shape[1] // block)
    rng = np.random.default_rng(seed)
    has = np.ones((rows, cols), bool)
    if labelled is not None:
        pad = np.zeros((rows * block, cols * block), bool)
        pad[: shape[0], : shape[1]] = labelled
        has = pad.reshape(rows, block, cols, block).any(axis=(1, 3))
    cand = np.flatnonzero(has.ravel())
    n_val = int(round(len(cand) * val_fraction))
    if len(cand) >= 2:
        n_val = min(max(n_val, 1), len(cand) - 1)
    else:
        n_val = 0
    grid = np.zeros(rows * cols, bool)
    grid[rng.choice(cand, n_val, replace=False)] = True
    full = np.repeat(np.repeat(grid.reshape(rows, cols), block, 0), block, 1)
    return full[: shape[0], : shape[1]]


def stroke_mask(
    target: np.ndarray, *, val_fraction: float = 0.2, seed: int = 0
) -> np.ndarray | None:
    """Boolean mask of whole held-out strokes of a sparse annotation, or None.

    Painted strokes are the natural unit of sparse annotation: pixels of one
    stroke are nearly identical, so validating on pieces of strokes that also
    train says little. Each class's strokes (8-connected runs of one target
    value) are shuffled and ``val_fraction`` of them, at least one, are held
    out from every class that has two strokes or more, so training keeps
    examples of every class.

    Parameters
    ----------
    target : ndarray of int, shape (Y, X)
        Training target, negative = unlabelled.
    val_fraction : float
        Share of each class's strokes to hold out.
    seed : int
        Makes the choice reproducible.

    Returns
    -------
    ndarray of bool or None
        True on held-out pixels; None when no class has two strokes (hold out
        spatial blocks instead, see :func:`block_mask`).

    Examples
    --------
    >>> t = np.full((8, 12), -1)
    >>> t[1, 1:5] = 0; t[6, 1:5] = 0; t[1, 8:11] = 1; t[6, 8:11] = 1
    >>> m = stroke_mask(t, val_fraction=0.5, seed=0)
    >>> int(m.sum()), sorted(np.unique(t[m]).tolist())
    (7, [0, 1])
    """
    from scipy import ndimage as ndi

    if val_fraction <= 0:
        return None
    rng = np.random.default_rng(seed)
    out = np.zeros(target.shape, bool)
    for value in np.unique(target[target >= 0]):
        runs, n = ndi.label(target == value, structure=np.ones((3, 3), bool))
        if n < 2:
            continue
        k = min(max(int(round(n * val_fraction)), 1), n - 1)
        out |= np.isin(runs, rng.permutation(np.arange(1, n + 1))[:k])
    return out if out.any() else None
