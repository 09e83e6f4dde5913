"""Choose an instance model's foreground threshold on held-out annotation.

Fine-tuning changes how confident a U-Net is, so the foreground threshold its
base was published with (``meta.extra["postprocess"]["fg_threshold"]``, chosen
on the base's own validation images) no longer fits: on the Data Science Bowl
nuclei, the built-in U-Net fine-tuned on 5 images scored foreground IoU 0.825
with a threshold of 0.7 and 0.800 with the base's 0.85 (``benchmarks/RESULTS.md``).
:func:`choose_fg_threshold` re-chooses it on the annotated images of the run
that fine-tuned the model (training and validation: one number is calibrated,
and a single validation image is too noisy for it), keeping the base's unless
another threshold is clearly better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FG_GRID", "choose_fg_threshold", "threshold_on_annotation"]

#: candidate thresholds on ``1 - P(background)``
FG_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3 ... 0.95


def choose_fg_threshold(
    foreground: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    grid: Sequence[float] = FG_GRID,
    min_pixels: int = 500,
    prefer: float | None = None,
    min_gain: float = 0.01,
) -> float | None:
    """The threshold on foreground probability with the best pixel IoU.

    Parameters
    ----------
    foreground : sequence of ndarray
        Per-image foreground probability (``1 - P(background)``), (Y, X).
    targets : sequence of ndarray
        Per-image class targets of the same shape: 0 background, > 0 an
        object class, < 0 not annotated (ignored).
    grid : sequence of float
        Thresholds to try.
    min_pixels : int
        Fewest annotated pixels, objects and background each, to choose on;
        below that (or without any object) None is returned: keep the base's.
    prefer : float, optional
        The threshold in use (the base's): kept unless another scores at
        least ``min_gain`` more IoU, since a near-flat IoU curve says little.
    min_gain : float
        IoU a threshold must add over ``prefer`` to replace it.

    Returns
    -------
    float or None
        The threshold whose ``foreground > t`` agrees best (IoU of the object
        pixels, summed over the images) with the targets; ties go to the
        threshold nearest 0.5.

    Examples
    --------
    >>> fg = np.array([[0.9, 0.8, 0.4, 0.1]])
    >>> choose_fg_threshold([fg], [np.array([[1, 1, 0, 0]])], min_pixels=1)
    0.5
    >>> choose_fg_threshold([fg], [np.array([[1, 1, 1, 0]])], min_pixels=1)
    0.35
    >>> choose_fg_threshold([fg], [np.array([[-1, -1, 0, 0]])], min_pixels=1) is None
    True
    """
    probs, truth = [], []
    for f, t in zip(foreground, targets):
        t = np.asarray(t)
        if np.shape(f) != t.shape:
            raise ValueError(f"foreground {np.shape(f)} and target {t.shape} differ in shape")
        keep = t >= 0
        probs.append(np.asarray(f, np.float32)[keep])
        truth.append(t[keep] > 0)
    if not probs:
        return None
    p, y = np.concatenate(probs), np.concatenate(truth)
    if int(y.sum()) < min_pixels or int((~y).sum()) < min_pixels:
        return None

    def iou(t: float) -> float:
        pred = p > t
        union = int((pred | y).sum())
        return int((pred & y).sum()) / union if union else 0.0

    best, best_iou = None, -1.0
    for t in sorted(grid, key=lambda v: abs(v - 0.5)):
        score = iou(t)
        if score > best_iou + 1e-9:
            best, best_iou = float(t), score
    if prefer is not None and best_iou < iou(prefer) + min_gain:
        return float(prefer)
    return best


def threshold_on_annotation(
    model: Any,
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    prefer: float | None = None,
    device: str = "auto",
) -> float | None:
    """Predict normalised annotated images and choose the foreground threshold on them.

    Parameters
    ----------
    model : torch.nn.Module
        A (background, interior, boundary) U-Net; handed back unchanged.
    images : sequence of ndarray
        Normalised (C, Y, X) images.
    targets : sequence of ndarray
        Their class targets (see :func:`choose_fg_threshold`).
    prefer : float, optional
        The threshold in use (see :func:`choose_fg_threshold`).
    device : str
        ``"auto"``: CUDA, else MPS, else CPU.

    Returns
    -------
    float or None
        As :func:`choose_fg_threshold`.
    """
    from napari_dlcb.inference.tiled import predict_tiled

    fg = [1.0 - predict_tiled(model, im, channel_axis=0, device=device)[0] for im in images]
    return choose_fg_threshold(fg, targets, prefer=prefer)
