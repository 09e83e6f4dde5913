"""Tests for the shared training engine."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from napari_dlcb.errors import DlcbError
from napari_dlcb.training import events as ev
from napari_dlcb.training.engine import accuracy_metric, fit, fit_to_end, masked_loss


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_fit_learns_and_yields_events_in_order():
    net = _net()
    events = list(
        fit(
            net,
            _data(),
            _data(32, 1),
            epochs=15,
            lr=1e-2,
            device="cpu",
            metrics=accuracy_metric,
            monitor="accuracy",
            early_stopping=None,
        )
    )
    assert isinstance(events[0], ev.Started)
    assert isinstance(events[-1], ev.Finished)
    epochs = [e for e in events if isinstance(e, ev.EpochEnd)]
    assert len(epochs) == 15
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert events[-1].best_score >= 0.85
    assert events[-1].reason == "completed"


def test_fit_is_reproducible_with_seed():
    a, b = _net(), _net()
    fit_to_end(fit(a, _data(), epochs=3, device="cpu", seed=7))
    fit_to_end(fit(b, _data(), epochs=3, device="cpu", seed=7))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_masked_cross_entropy_ignores_unlabelled():
    ce = masked_loss("cross_entropy")
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    t = torch.full((2, 5, 5), -1)
    assert float(ce(logits, t)) == 0.0
    t[0, 0, 0] = 2
    ref = torch.nn.functional.cross_entropy(logits[0:1, :, 0, 0], torch.tensor([2]))
    assert torch.allclose(ce(logits, t), ref)
    # changing logits at unlabelled pixels does not change the loss
    l2 = logits.detach().clone()
    l2[1] += 10
    assert torch.allclose(ce(l2, t), ref.detach())


def test_masked_bce_ignores_nan():
    bce = masked_loss("bce")
    logits = torch.zeros(2, 2)
    t = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    assert math.isclose(float(bce(logits, t)), math.log(2), rel_tol=1e-6)


def test_early_stopping_restores_best_weights():
    # validation labels are the opposite of training labels: val loss rises as we learn
    tr = _data()
    x, y = tr.tensors
    val = TensorDataset(x, 1 - y)
    net = _net()
    events = list(fit(net, tr, val, epochs=50, lr=5e-2, early_stopping=3, device="cpu"))
    fin = events[-1]
    assert fin.reason == "early_stopping"
    assert fin.epochs_run < 50
    with torch.no_grad():
        vl = masked_loss("cross_entropy")(net(x), 1 - y)
    assert float(vl) == pytest.approx(fin.best_score, rel=1e-4)
    assert any(isinstance(e, ev.Warning) and e.kind == "overfitting" for e in events)


def test_stop_event_and_close_cancel_cleanly():
    net = _net()
    stop = threading.Event()
    gen = fit(net, _data(256), epochs=100, batch_size=4, device="cpu", stop=stop)
    for e in gen:
        if isinstance(e, ev.Progress) and e.step == 3:
            stop.set()
    assert e.reason == "cancelled"
    net.eval()
    gen = fit(net, _data(), epochs=100, device="cpu")
    next(gen), next(gen)
    gen.close()
    assert not net.training  # original mode restored


def test_no_preview_after_stop():
    """Stop hands the model back at once: no preview is computed after it (issue 8)."""
    net = _net()
    stop = threading.Event()
    seen: list[str] = []
    for e in fit(
        net,
        _data(256),
        _data(32, seed=1),
        epochs=100,
        batch_size=4,
        device="cpu",
        stop=stop,
        preview_interval=0.0,
        preview=lambda m: np.zeros(2),
    ):
        seen.append(type(e).__name__)
        if isinstance(e, ev.Progress) and e.step == 3:
            stop.set()
    assert "Preview" in seen[: seen.index("Progress") + 3]  # previews ran before Stop
    after = seen[len(seen) - seen[::-1].index("Progress") :]
    assert "Preview" not in after, after
    assert seen[-1] == "Finished"


def test_divergence_stops_and_restores():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def bad_loss(out, y):
        return out.sum() * float("nan")

    events = list(fit(net, _data(), _data(16, 3), loss=bad_loss, epochs=5, device="cpu"))
    assert events[-1].reason == "diverged"
    assert any(isinstance(e, ev.Warning) and e.kind == "diverged" for e in events)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_checkpoints_and_resume(tmp_path):
    net = _net()
    evs = list(fit(net, _data(), _data(16, 2), epochs=3, device="cpu", checkpoint_dir=tmp_path))
    kinds = {e.kind for e in evs if isinstance(e, ev.Checkpoint)}
    assert kinds == {"best", "last"}
    assert (tmp_path / "last.safetensors").exists()
    evs2 = list(
        fit(
            net, _data(), _data(16, 2), epochs=2, device="cpu", checkpoint_dir=tmp_path, resume=True
        )
    )
    assert evs2[0].start_epoch == 3
    assert [e.epoch for e in evs2 if isinstance(e, ev.EpochEnd)] == [3, 4]
    assert len(evs2[-1].history) == 5


def test_preview_throttled_and_lr_decay():
    net = _net()
    calls = []
    evs = list(
        fit(
            net,
            _data(),
            _data(16, 5),
            epochs=6,
            device="cpu",
            preview_interval=0.0,
            preview=lambda m: calls.append(m.training) or np.zeros(2),
            lr_patience=0,
            lr=1.0,
            optimizer="sgd",
            momentum=0.0,
            early_stopping=None,
        )
    )
    assert calls and not any(calls)  # preview runs in eval mode
    assert any(isinstance(e, ev.Preview) for e in evs)
    lrs = [e.lr for e in evs if isinstance(e, ev.EpochEnd)]
    assert min(lrs) < 1.0 or any(isinstance(e, ev.Warning) and e.kind == "lr_decay" for e in evs)


def test_infinite_preview_interval_never_previews():
    """``preview_interval=inf`` (the CLI, tuning trials) means no preview, not one at the start."""
    calls: list[bool] = []
    evs = list(
        fit(
            _net(),
            _data(),
            _data(16, 5),
            epochs=2,
            device="cpu",
            preview_interval=math.inf,
            preview=lambda m: calls.append(m.training) or np.zeros(2),
        )
    )
    assert calls == []
    assert not any(isinstance(e, ev.Preview) for e in evs)


def test_bad_requests_raise_clear_errors():
    with pytest.raises(DlcbError):
        list(fit(_net(), TensorDataset(torch.zeros(0, 4), torch.zeros(0).long()), device="cpu"))
    with pytest.raises(DlcbError):
        list(fit(_net(), _data(), optimizer="lbfgs", device="cpu"))
