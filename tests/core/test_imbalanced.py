"""Imbalanced binary DNA labels: positive-class weighting is chosen automatically, AUPRC reported."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from napari_dlcb.tasks.sequence import SequenceTask
from napari_dlcb.tasks.sequence_config import SequenceConfig
from napari_dlcb.training.events import EpochEnd, Warning
from napari_dlcb.training.losses import balancing_weights, weighted_bce
from napari_dlcb.training.metrics import auprc, binary_metrics


def _imbalanced(n: int = 400, frac: float = 0.05, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs, y = [], np.zeros((n, 1), np.float32)
    for i in range(n):
        s = list(rng.choice(list("ACGT"), 60))
        if i < int(n * frac):
            p = int(rng.integers(0, 54))
            s[p : p + 6] = "TGATAA"
            y[i] = 1
        seqs.append("".join(s))
    return seqs, y


def test_auprc_of_a_known_ranking_equals_sklearn():
    rng = np.random.default_rng(1)
    labels = (rng.random(300) < 0.07).astype(float)
    scores = np.round(rng.random(300) + labels * 0.5, 2)  # ties included
    assert abs(auprc(scores, labels) - average_precision_score(labels, scores)) < 1e-12
    m = binary_metrics([torch.tensor(scores[:, None])], [torch.tensor(labels[:, None])])
    assert abs(m["auprc"] - average_precision_score(labels, scores)) < 1e-12


def test_balancing_weights_and_weighted_loss():
    y = np.array([[1.0, 1.0]] * 5 + [[0.0, 1.0]] * 45 + [[0.0, np.nan]] * 50)
    w = balancing_weights(y)
    assert w is not None and w.tolist() == [19.0, 1.0]  # task 2: all positives, left alone
    assert balancing_weights(np.array([[1.0], [0.0]] * 10)) is None
    logits, target = torch.zeros(4, 1), torch.tensor([[1.0], [0.0], [0.0], [float("nan")]])
    plain = weighted_bce(np.array([1.0]))(logits, target)
    heavy = weighted_bce(np.array([4.0]))(logits, target)
    assert abs(float(heavy) - 2.0 * float(plain)) < 1e-6  # (4 + 1 + 1) / 3 vs (1 + 1 + 1) / 3


def test_rare_positives_are_weighted_and_auprc_reported():
    seqs, y = _imbalanced()
    cfg = SequenceConfig(epochs=2, batch_size=32, device="cpu", seed=0, folds=1)
    task = SequenceTask(seqs, y, config=cfg)
    events = list(task.fit())
    warn = [e for e in events if isinstance(e, Warning) and e.kind == "class-weighting"]
    assert len(warn) == 1 and "positive-class weight" in warn[0].message
    n_pos = float(task.train.y.sum())
    expected = (len(task.train) - n_pos) / n_pos
    assert abs(task.meta.extra["pos_weight"][0] - expected) < 1e-2
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert ends and all("auprc" in e.metrics and "auroc" in e.metrics for e in ends)
    # balanced labels: no weighting
    balanced = SequenceTask(seqs[:40], np.array([[1.0], [0.0]] * 20, np.float32), config=cfg)
    assert not [e for e in balanced.fit() if isinstance(e, Warning) and e.kind == "class-weighting"]
    assert "pos_weight" not in balanced.meta.extra
