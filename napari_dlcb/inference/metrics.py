"""Segmentation metrics on label images, exact (no sampling), linear in the pixels.

:func:`pixel_error` and :func:`foreground_iou` compare label images pixel by
pixel; :func:`iou_matrix` and :func:`average_precision` (the StarDist / DSB
2018 object-matching score) compare objects, from the sparse overlaps of
:func:`overlaps`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["average_precision", "foreground_iou", "iou_matrix", "overlaps", "pixel_error"]


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise DlcbError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    return pred, truth


def pixel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose label differs from the ground truth.

    This is the ISBI 2012 challenge's original pixel error (the squared
    Euclidean distance between binary label images, divided by the number of
    pixels); for class maps it is ``1 - accuracy``.

    Parameters
    ----------
    pred, truth : ndarray
        Label images of the same shape (e.g. 0 / 255 membrane maps).

    Returns
    -------
    float
        In [0, 1]; 0 is a perfect match.

    Examples
    --------
    >>> pixel_error(np.array([0, 255, 255, 0]), np.array([0, 255, 0, 0]))
    0.25
    """
    pred, truth = _check_pair(pred, truth)
    if pred.size == 0:
        return 0.0
    return float(np.count_nonzero(pred != truth) / pred.size)


def foreground_iou(pred: np.ndarray, truth: np.ndarray, *, background: int = 0) -> float:
    """Intersection over union of the foreground (every label != ``background``).

    Parameters
    ----------
    pred, truth : ndarray
        Label or class images of the same shape.
    background : int
        The background value in both images.

    Returns
    -------
    float
        |P ∩ T| / |P ∪ T|; 1.0 when both images are all background.

    Examples
    --------
    >>> foreground_iou(np.array([0, 1, 1, 0]), np.array([0, 2, 0, 3]))
    0.3333333333333333
    """
    pred, truth = _check_pair(pred, truth)
    p, t = pred != background, truth != background
    union = np.count_nonzero(p | t)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t) / union)


def overlaps(
    true_instances: np.ndarray, pred_instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Sparse IoU of every overlapping (true, predicted) object pair.

    Returns the row index (into the sorted non-zero true ids), the column index
    (predicted ids), the IoU of each overlapping pair, and the object counts.
    The cost is linear in the number of pixels, whatever the number of objects.
    """
    from scipy import sparse

    truth, pred = _check_pair(true_instances, pred_instances)
    t_ids, t_idx = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_idx = np.unique(pred.ravel(), return_inverse=True)
    table = sparse.coo_matrix(
        (np.ones(t_idx.size, np.int64), (t_idx.ravel(), p_idx.ravel())),
        shape=(t_ids.size, p_ids.size),
    ).tocsr()
    table.sum_duplicates()
    area_t = np.asarray(table.sum(axis=1)).ravel()
    area_p = np.asarray(table.sum(axis=0)).ravel()
    t_bg = int(np.searchsorted(t_ids, 0)) if (t_ids == 0).any() else -1
    p_bg = int(np.searchsorted(p_ids, 0)) if (p_ids == 0).any() else -1
    coo = table.tocoo()
    keep = (coo.row != t_bg) & (coo.col != p_bg)
    rows, cols, inter = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float64)
    iou = inter / (area_t[rows] + area_p[cols] - inter)
    # re-index rows/columns so that they count non-zero ids only
    rows = rows - (rows > t_bg) if t_bg >= 0 else rows
    cols = cols - (cols > p_bg) if p_bg >= 0 else cols
    n_true = t_ids.size - (t_bg >= 0)
    n_pred = p_ids.size - (p_bg >= 0)
    return rows, cols, iou, int(n_true), int(n_pred)


def iou_matrix(true_instances: np.ndarray, pred_instances: np.ndarray) -> np.ndarray:
    """IoU of every true object with every predicted object, as a dense matrix.

    Ids need not be consecutive; 0 is background. For images with many
    thousands of objects prefer :func:`average_precision`, which works on the
    sparse overlaps only.

    Parameters
    ----------
    true_instances, pred_instances : ndarray of int
        Instance label images of the same shape.

    Returns
    -------
    ndarray of float64, shape (n_true, n_pred)
        Rows follow the sorted non-zero true ids, columns the predicted ones.

    Examples
    --------
    >>> iou_matrix(np.array([1, 1, 0, 2]), np.array([5, 0, 0, 5]))
    array([[0.33333333],
           [0.5       ]])
    """
    rows, cols, iou, n_true, n_pred = overlaps(true_instances, pred_instances)
    out = np.zeros((n_true, n_pred))
    out[rows, cols] = iou
    return out


def _n_matches(rows: np.ndarray, cols: np.ndarray, iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one true/predicted pairs with IoU >= threshold.

    Above 0.5 a pair is unique on both sides, so every candidate counts. At or
    below 0.5 the matching that maximises the total IoU is solved exactly, one
    connected group of mutually overlapping objects at a time.
    """
    ok = iou >= threshold
    rows, cols, iou = rows[ok], cols[ok], iou[ok]
    if threshold > 0.5 or rows.size == 0:
        return int(rows.size)
    from scipy import sparse
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse.csgraph import connected_components

    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    n_r, n_c = r_ids.size, c_ids.size
    graph = sparse.coo_matrix((np.ones(r.size), (r, c + n_r)), shape=(n_r + n_c, n_r + n_c))
    _, component = connected_components(graph, directed=False)
    pair_comp = component[r]
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
    matches = 0
    for group in np.split(order, bounds):
        if group.size == 1:
            matches += 1
            continue
        gr, rr = np.unique(r[group], return_inverse=True)
        gc, cc = np.unique(c[group], return_inverse=True)
        cost = np.zeros((gr.size, gc.size))
        cost[rr, cc] = -iou[group]  # maximise the total IoU of valid pairs
        ri, ci = linear_sum_assignment(cost)
        matches += int(np.count_nonzero(cost[ri, ci] < 0))
    return matches


def average_precision(
    pred_instances: np.ndarray,
    true_instances: np.ndarray,
    threshold: float | Sequence[float] = 0.5,
) -> float | np.ndarray:
    """Object-level average precision, TP / (TP + FP + FN), as in StarDist and DSB 2018.

    A predicted object is a true positive when it is matched one-to-one to a
    true object with IoU >= ``threshold`` (the matching maximises total IoU;
    above 0.5 it is unique). Unmatched predictions are false positives and
    unmatched true objects false negatives.

    Parameters
    ----------
    pred_instances, true_instances : ndarray of int
        Instance label images (0 = background) of the same shape.
    threshold : float or sequence of float
        IoU threshold(s).

    Returns
    -------
    float or ndarray
        One score per threshold; 1.0 when both images have no objects.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 4]])
    >>> float(average_precision(pred, truth, 0.5))  # object 2 matches with IoU 0.5
    1.0
    >>> float(average_precision(pred, truth, 0.6))
    0.3333333333333333
    """
    rows, cols, iou, n_true, n_pred = overlaps(true_instances, pred_instances)
    thresholds = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
    scores = np.empty(thresholds.size)
    for i, t in enumerate(thresholds):
        tp = _n_matches(rows, cols, iou, float(t))
        denom = n_true + n_pred - tp  # TP + FP + FN
        scores[i] = 1.0 if denom == 0 else tp / denom
    if np.ndim(threshold) == 0:
        return float(scores[0])
    return scores
