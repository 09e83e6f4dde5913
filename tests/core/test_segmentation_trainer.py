"""The segmentation task: annotation -> fine-tuned model -> labels (headless)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.errors import DlcbError
from napari_dlcb.training import events as ev
from napari_dlcb.training.segmentation import SegmentationTrainer


def _scribbles(labels: np.ndarray) -> np.ndarray:
    """Sparse strokes: a line through some nuclei (2) and background lines (1)."""
    s = np.zeros_like(labels)
    for r in range(8, labels.shape[0], 24):
        row = labels[r]
        s[r, :] = np.where(row > 0, 2, 1)
        s[r, (row == 0) & (np.arange(row.size) % 2 == 1)] = 0
    return s


@pytest.fixture(scope="module")
def nuclei():
    return synthetic_nuclei((160, 160), seed=5)


def test_quick_mode_trains_decoder_only_and_previews(nuclei):
    img, lab = nuclei
    tr = SegmentationTrainer(
        [img],
        [_scribbles(lab)],
        label_kind="scribbles",
        base="builtin",
        mode="quick",
        patch_size=64,
        device="cpu",
    )
    enc_before = [p.clone() for p in tr.model.encoder_parameters()]
    dec_before = [p.clone() for p in tr.model.decoder_parameters()]
    region = (slice(10, 90), slice(20, 100))
    events = list(
        tr.fit(
            epochs=3,
            batch_size=4,
            samples_per_epoch=8,
            preview_image=img,
            preview_region=lambda: region,
            preview_interval=0.0,
        )
    )
    assert isinstance(events[0], ev.Started) and isinstance(events[-1], ev.Finished)
    previews = [e for e in events if isinstance(e, ev.Preview)]
    assert previews
    p = previews[-1].data
    # scribbles on the instance model keep its 3-class head and give instances
    assert p["probabilities"].shape == (3, 80, 80) and p["labels"].shape == (80, 80)
    assert tr.meta.label_kind == "instances" and p["labels"].max() >= 2
    assert p["offset"] == (10, 20)
    assert all(torch.equal(a, b) for a, b in zip(enc_before, tr.model.encoder_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, tr.model.decoder_parameters()))


def test_full_mode_instances_learn_and_save_round_trip(nuclei, tmp_path):
    from napari_dlcb.inference.segment import segment
    from napari_dlcb.models.saved import load_model

    img, lab = nuclei
    tr = SegmentationTrainer(
        [img],
        [lab],
        label_kind="instances",
        base="builtin",
        mode="full",
        patch_size=96,
        device="cpu",
    )
    fin = list(tr.fit(epochs=2, batch_size=2, samples_per_epoch=4))[-1]
    assert fin.reason in ("completed", "early_stopping")
    prob, labels = tr.predict(img)
    assert prob.shape == (3, 160, 160)
    assert labels.max() > 5  # many nuclei found
    out = tr.save(tmp_path / "m")
    model, meta = load_model(out)
    assert meta.label_kind == "instances" and meta.task == "segmentation"
    prob2, labels2 = segment((model, meta), img)
    np.testing.assert_allclose(prob, prob2, atol=1e-4)
    ts = torch.jit.load(str(out / "model.pt"))
    x = torch.from_numpy(tr.normalizer(img))[None]
    with torch.no_grad():
        np.testing.assert_allclose(ts(x).numpy(), model.eval()(x).numpy(), atol=1e-4)


def test_classes_convention_is_kept(nuclei):
    img, lab = nuclei
    dense = np.where(lab > 0, 255, 0).astype(np.uint8)
    tr = SegmentationTrainer(
        [img],
        [dense],
        label_kind="classes",
        base="builtin",
        mode="quick",
        patch_size=64,
        device="cpu",
    )
    list(tr.fit(epochs=1, samples_per_epoch=4))
    _, labels = tr.predict(img)
    assert set(np.unique(labels)) <= {0, 255}
    assert tr.meta.class_values == [0, 255]


def test_stop_event_cancels(nuclei):
    img, lab = nuclei
    tr = SegmentationTrainer([img], [_scribbles(lab)], base="builtin", patch_size=64, device="cpu")
    stop = threading.Event()
    for e in tr.fit(epochs=50, samples_per_epoch=8, stop=stop):
        if isinstance(e, ev.Progress):
            stop.set()
    assert e.reason == "cancelled"


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda i, l: ([i], [l[:50]]), "shape"),
        (lambda i, l: ([i], [np.zeros_like(l)]), "no annotation"),
        (lambda i, l: ([i], [np.where(l > 0, 2, 0)]), "one class"),
        (lambda i, l: ([np.full(i.shape, np.nan)], [_scribbles(l)]), "NaN"),
        (lambda i, l: ([np.ones_like(i)], [_scribbles(l)]), "constant"),
    ],
)
def test_bad_input_is_one_clear_line(nuclei, make, msg):
    img, lab = nuclei
    images, labels = make(img, lab)
    with pytest.raises(DlcbError, match=msg) as err:
        SegmentationTrainer(images, labels, base="scratch", device="cpu")
    assert "\n" not in str(err.value)


def test_partial_label_loss_scores_object_strokes_as_interior_or_boundary():
    from napari_dlcb.training.segmentation import FOREGROUND, partial_label_loss

    logits = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])  # (1, 3, 1, 1)
    p = torch.softmax(logits, 1)[0, :, 0, 0]
    fg = partial_label_loss(logits, torch.tensor([[[FOREGROUND]]]))
    assert float(fg) == pytest.approx(-float(torch.log(p[1] + p[2])), rel=1e-5)
    bg = partial_label_loss(logits, torch.tensor([[[0]]]))
    assert float(bg) == pytest.approx(-float(torch.log(p[0])), rel=1e-5)
    assert float(partial_label_loss(logits, torch.tensor([[[-1]]]))) == 0.0


def test_scribble_instances_can_be_turned_off(nuclei):
    img, lab = nuclei
    tr = SegmentationTrainer(
        [img],
        [_scribbles(lab)],
        base="builtin",
        patch_size=64,
        device="cpu",
        scribble_instances=False,
    )
    assert tr.meta.label_kind == "scribbles" and tr.meta.classes[0] == "background"
    assert tr.model.n_classes == 2
