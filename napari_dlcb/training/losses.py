"""Losses that ignore what is not labelled (sparse scribbles, missing DNA labels).

Besides the masked losses, two for fine-tuning on strokes:
:func:`partial_label_loss` (an object stroke on an instance model means
"interior or boundary") and :func:`with_distillation`, which adds a term that
keeps the starting model's predictions where nothing is painted ("learning
without forgetting", Li & Hoiem 2016).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.labels import FOREGROUND
from napari_dlcb.errors import DlcbError

__all__ = [
    "balancing_weights",
    "weighted_bce",
    "LossFn",
    "distillation_loss",
    "masked_loss",
    "masked_mse",
    "partial_label_loss",
    "with_distillation",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def masked_loss(kind: str) -> LossFn:
    """Return a loss that ignores unlabelled targets.

    Parameters
    ----------
    kind : {"cross_entropy", "bce", "mse"}
        ``"cross_entropy"``: logits (B, C, ...) and int64 targets (B, ...) where
        ``-1`` marks unlabelled positions (sparse scribbles). ``"bce"``: logits
        and float targets of the same shape where NaN marks a missing label
        (multitask DNA). ``"mse"``: regression outputs and float targets, NaN
        = missing.

    Returns
    -------
    callable
        ``loss(logits, targets) -> scalar``; 0 (with a gradient) when nothing
        in the batch is labelled.

    Examples
    --------
    >>> ce = masked_loss("cross_entropy")
    >>> float(ce(torch.zeros(1, 2, 3), torch.tensor([[-1, -1, -1]])))
    0.0
    """
    if kind == "cross_entropy":
        return _masked_cross_entropy
    if kind == "bce":
        return _masked_bce
    if kind == "mse":
        return masked_mse
    raise DlcbError(f"unknown loss {kind!r}; use 'cross_entropy', 'bce', 'mse' or a callable")


def _masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.long()
    per = nn.functional.cross_entropy(logits, target, ignore_index=-1, reduction="none")
    n = (target >= 0).sum()
    return per.sum() / n.clamp_min(1)


def _masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.to(logits.dtype).reshape(logits.shape)
    valid = ~torch.isnan(target)
    per = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.where(valid, target, torch.zeros_like(target)), reduction="none"
    )
    return (per * valid).sum() / valid.sum().clamp_min(1)


def balancing_weights(y: np.ndarray, *, below: float = 0.2) -> np.ndarray | None:
    """Positive-class weights ``n_neg / n_pos`` per task when positives are rare.

    Parameters
    ----------
    y : ndarray
        Binary labels ``(N, T)`` (NaN = missing).
    below : float
        Weight only when some task's positive fraction is under this.

    Returns
    -------
    ndarray or None
        ``(T,)`` weights (1 for balanced tasks), or None when no task is imbalanced.

    Examples
    --------
    >>> balancing_weights(np.array([[1.0]] * 5 + [[0.0]] * 95)).tolist()
    [19.0]
    >>> balancing_weights(np.array([[1.0], [0.0]])) is None
    True
    """
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    valid = ~np.isnan(y)
    pos = np.where(valid, y > 0.5, False).sum(0)
    neg = valid.sum(0) - pos
    frac = pos / np.maximum(valid.sum(0), 1)
    rare = (pos > 0) & (frac < below)
    if not rare.any():
        return None
    return np.where(rare, neg / np.maximum(pos, 1), 1.0)


def weighted_bce(pos_weight: np.ndarray | torch.Tensor) -> LossFn:
    """Masked BCE with a per-task positive-class weight (see :func:`balancing_weights`).

    Examples
    --------
    >>> loss = weighted_bce(np.array([3.0]))
    >>> round(float(loss(torch.zeros(2, 1), torch.tensor([[1.0], [float("nan")]]))), 3)
    2.079
    """
    w = torch.as_tensor(np.asarray(pos_weight), dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype).reshape(logits.shape)
        valid = ~torch.isnan(target)
        per = nn.functional.binary_cross_entropy_with_logits(
            logits,
            torch.where(valid, target, torch.zeros_like(target)),
            pos_weight=w.to(logits.device, logits.dtype),
            reduction="none",
        )
        return (per * valid).sum() / valid.sum().clamp_min(1)

    return loss


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite targets (NaN = unlabelled)."""
    m = torch.isfinite(target)
    diff = torch.where(m, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff**2).sum() / m.sum().clamp(min=1)


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where ``FOREGROUND`` targets mean "interior or boundary".

    Ordinary targets ``0..C-1`` are scored as usual, ``-1`` is ignored, and a
    ``FOREGROUND`` pixel costs ``-log(p_interior + p_boundary)``.

    Examples
    --------
    >>> logits = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])
    >>> round(float(partial_label_loss(logits, torch.tensor([[[FOREGROUND]]]))), 4)
    0.0943
    """
    t = target.long()
    logp = torch.log_softmax(logits, 1)
    known = (t >= 0) & (t < FOREGROUND)
    fg = t == FOREGROUND
    picked = logp.gather(1, t.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
    fg_logp = torch.logsumexp(logp[:, 1:], dim=1)
    total = -(picked * known).sum() - (fg_logp * fg).sum()
    return total / (known.sum() + fg.sum()).clamp_min(1)


def _unlabelled(target: torch.Tensor) -> torch.Tensor:
    """(B, Y, X) mask of unlabelled pixels (int targets < 0, float targets NaN)."""
    if target.is_floating_point():
        return torch.isnan(target).reshape(target.shape[0], *target.shape[-2:])
    return target < 0


def distillation_loss(
    logits: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || model) per pixel, averaged over ``mask`` (one-logit models: soft BCE).

    Examples
    --------
    >>> p = torch.softmax(torch.randn(1, 3, 4, 4), 1)
    >>> float(distillation_loss(p.log(), p, torch.ones(1, 4, 4, dtype=torch.bool))) < 1e-6
    True
    """
    teacher = teacher.to(logits.dtype)
    if logits.shape[1] == 1:  # sigmoid model: KL of two Bernoullis (up to a constant)
        eps = 1e-6
        t = teacher.clamp(eps, 1 - eps)
        per = nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
        per = per + t * t.log() + (1 - t) * (1 - t).log()
        per = per[:, 0]
    else:
        logp = torch.log_softmax(logits, 1)
        per = (teacher * (teacher.clamp_min(1e-8).log() - logp)).sum(1)
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1)


def with_distillation(loss: LossFn, weight: float) -> LossFn:
    """``loss`` plus ``weight`` x the distillation term on unlabelled pixels.

    The returned loss takes targets as ``(target, teacher_probabilities)``
    pairs (training) or plain targets (validation: ``loss`` alone), so the
    validation score is the loss on held-out annotation only.

    Examples
    --------
    >>> ce = with_distillation(masked_loss("cross_entropy"), 1.0)
    >>> logits = torch.zeros(1, 2, 1, 2)
    >>> teacher = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])  # sure of class 0 at pixel 2
    >>> round(float(ce(logits, (torch.tensor([[[1, -1]]]), teacher))), 4)
    1.3863
    """

    def combined(logits: torch.Tensor, target: Any) -> torch.Tensor:
        if not isinstance(target, (tuple, list)):
            return loss(logits, target)
        hard, teacher = target
        out = loss(logits, hard)
        if weight > 0:
            out = out + weight * distillation_loss(logits, teacher, _unlabelled(hard))
        return out

    return combined
