"""Losses that ignore what is not labelled (sparse scribbles, missing DNA labels)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from napari_dlcb.errors import DlcbError

__all__ = ["LossFn", "masked_loss", "masked_mse"]

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


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite targets (NaN = unlabelled)."""
    m = torch.isfinite(target)
    diff = torch.where(m, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff**2).sum() / m.sum().clamp(min=1)
