"""Validation metrics for :func:`~napari_dlcb.training.engine.fit` (``metrics=``).

Each takes the lists of validation outputs and targets (CPU tensors, batch by
batch) and returns a ``{name: value}`` dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_dlcb.data.labels import FOREGROUND

__all__ = [
    "accuracy_metric",
    "auprc",
    "auroc",
    "auroc_metric",
    "binary_metrics",
    "classification_metrics",
    "confusion_matrix",
    "pearson_metric",
    "segmentation_metrics",
]


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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j``.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def classification_metrics(
    outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall over the classes present).

    Examples
    --------
    >>> m = classification_metrics([torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])],
    ...                            [torch.tensor([0, 0, 0])])
    >>> round(m["accuracy"], 3), m["balanced_accuracy"]
    (0.667, 0.6666666666666666)
    """
    pred = torch.cat([o.argmax(1) for o in outs]).numpy()
    true = torch.cat(list(tgts)).numpy()
    cm = confusion_matrix(true, pred, int(outs[0].shape[1]))
    per_class = np.diag(cm) / np.maximum(cm.sum(1), 1)
    present = cm.sum(1) > 0
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "balanced_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
    }


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class is absent.

    Examples
    --------
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, float)
    lab = np.asarray(labels)
    ok = ~np.isnan(lab.astype(float))
    s, lab = s[ok], lab[ok] > 0.5
    n_pos, n_neg = int(lab.sum()), int((~lab).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[lab].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision); NaN without positives.

    The step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score
    thresholds, as scikit-learn's ``average_precision_score`` (tied scores form
    one threshold). Unlike AUROC it depends on the class balance: a random
    ranking scores the fraction of positives, so it shows what rare positives
    cost. NaN labels are ignored.

    Examples
    --------
    >>> auprc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.8333333333333333
    """
    s = np.asarray(scores, float)
    lab = np.asarray(labels, float)
    ok = ~np.isnan(lab)
    s, lab = s[ok], lab[ok] > 0.5
    n_pos = int(lab.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, lab = s[order], lab[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tied run
    tp = np.cumsum(lab)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc_metric(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean AUROC over binary tasks (NaN labels ignored): the DNA tasks' validation metric."""
    o = torch.cat(list(outs)).float().numpy()
    t = torch.cat(list(tgts)).float().numpy()
    if o.ndim == 1:
        o, t = o[:, None], t[:, None]
    vals = [auroc(o[:, j], t[:, j]) for j in range(o.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return {"auroc": float(np.mean(vals)) if vals else float("nan")}


def binary_metrics(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean AUROC and mean AUPRC over binary tasks (NaN labels ignored): the DNA tasks' metrics.

    Examples
    --------
    >>> m = binary_metrics([torch.tensor([[0.1], [0.4], [0.35], [0.8]])],
    ...                    [torch.tensor([[0.0], [0.0], [1.0], [1.0]])])
    >>> m["auroc"], round(m["auprc"], 3)
    (0.75, 0.833)
    """
    o = torch.cat(list(outs)).float().numpy()
    t = torch.cat(list(tgts)).float().numpy()
    if o.ndim == 1:
        o, t = o[:, None], t[:, None]
    out = {}
    for name, fn in (("auroc", auroc), ("auprc", auprc)):
        vals = [fn(o[:, j], t[:, j]) for j in range(o.shape[1])]
        vals = [v for v in vals if not np.isnan(v)]
        out[name] = float(np.mean(vals)) if vals else float("nan")
    return out


def pearson_metric(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Mean Pearson correlation over regression tasks (NaN targets ignored)."""
    o = torch.cat([t.float() for t in outputs]).cpu().numpy()
    t = torch.cat([t.float() for t in targets]).cpu().numpy()
    if o.ndim == 1:
        o, t = o[:, None], t[:, None]
    vals = []
    for j in range(o.shape[1]):
        m = np.isfinite(t[:, j])
        if m.sum() > 2 and np.std(t[m, j]) > 0 and np.std(o[m, j]) > 0:
            vals.append(float(np.corrcoef(o[m, j], t[m, j])[0, 1]))
    return {"pearson": float(np.mean(vals)) if vals else float("nan")}


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
