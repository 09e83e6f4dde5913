"""Validation metrics for :func:`~napari_dlcb.training.engine.fit` (``metrics=``).

Each takes the lists of validation outputs and targets (CPU tensors, batch by
batch) and returns a ``{name: value}`` dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_dlcb.data.labels import FOREGROUND

__all__ = ["accuracy_metric", "segmentation_metrics"]


def accuracy_metric(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Accuracy over labelled positions (targets ``>= 0``).

    Examples
    --------
    >>> accuracy_metric([torch.tensor([[0.1, 0.9], [0.8, 0.2]])], [torch.tensor([1, 1])])
    {'accuracy': 0.5}
    """
    correct, n = 0, 0
    for o, t in zip(outs, tgts):
        pred = o.argmax(1)
        m = t >= 0
        correct += int((pred[m] == t[m]).sum())
        n += int(m.sum())
    return {"accuracy": correct / max(n, 1)}


def segmentation_metrics(
    outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Pixel accuracy and mean IoU over labelled pixels.

    Targets are class indices (``-1`` unlabelled; ``FOREGROUND`` = "any object
    class", then objects are compared with background), or float maps with
    NaN = unlabelled for one-logit (sigmoid) models.

    Examples
    --------
    >>> out = torch.tensor([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    >>> segmentation_metrics([out], [torch.tensor([[[0, 0]]])])
    {'accuracy': 0.5, 'mean_iou': 0.25}
    """
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    correct = n = 0
    for o, t in zip(outs, tgts):
        if o.shape[1] == 1:  # one-logit (sigmoid) model with float targets, NaN = ignore
            valid = ~torch.isnan(t)
            pred = (o > 0).long()[valid]
            tt = t[valid].long()
        else:
            valid = t >= 0
            pred = o.argmax(1)[valid]
            tt = t[valid]
            if (tt == FOREGROUND).any():  # partial labels: compare object vs background
                pred = torch.where(pred > 0, FOREGROUND, 0)
                tt = torch.where(tt > 0, FOREGROUND, 0)
        correct += int((pred == tt).sum())
        n += int(valid.sum())
        for c in torch.unique(torch.cat([pred, tt])).tolist():
            p, q = pred == c, tt == c
            inter[c] = inter.get(c, 0) + int((p & q).sum())
            union[c] = union.get(c, 0) + int((p | q).sum())
    ious = [inter[c] / union[c] for c in union if union[c]]
    return {"accuracy": correct / max(n, 1), "mean_iou": float(np.mean(ious)) if ious else 0.0}
