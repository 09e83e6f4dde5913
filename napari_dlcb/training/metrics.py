"""Validation metrics for :func:`~napari_dlcb.training.engine.fit` (``metrics=``).

Each takes the lists of validation outputs and targets (CPU tensors, batch by
batch) and returns a ``{name: value}`` dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["accuracy_metric"]


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
