"""The segmentation task: annotation -> fine-tuned model -> labels (headless)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.segmentation import SegmentationTrainer
from napari_dlcb.training import events as ev


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
    # the threshold was re-chosen on the held-out blocks and travels with the model
    chosen = tr.meta.extra["training"]["fg_threshold"]
    assert chosen["base"] == 0.85 and meta.extra["postprocess"]["fg_threshold"] == chosen["chosen"]
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
    from napari_dlcb.tasks.segmentation import FOREGROUND, partial_label_loss

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


# --------------------------------------------------------------------------- live saliency
def _model_snapshot(model: torch.nn.Module) -> dict:
    from napari_dlcb.models.state import hook_counts

    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
        "hooks": hook_counts(model),
    }


def _same_snapshot(a: dict, b: dict) -> bool:
    def eq(x, y):
        return (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))

    return (
        a["training"] == b["training"]
        and a["requires_grad"] == b["requires_grad"]
        and a["hooks"] == b["hooks"]
        and all(eq(a["grads"][n], b["grads"][n]) for n in a["grads"])
        and all(torch.equal(a["weights"][n], b["weights"][n]) for n in a["weights"])
    )


def test_live_saliency_explains_current_weights_and_hands_model_back(nuclei, monkeypatch):
    from napari_dlcb.inference.tiled import freeze_normalizer
    from napari_dlcb.interpret.saliency import saliency
    from napari_dlcb.tasks.segmentation import live as segmod

    img, lab = nuclei
    tr = SegmentationTrainer(
        [img], [_scribbles(lab)], base="builtin", mode="quick", patch_size=64, device="cpu"
    )
    # a crop smaller than the 80 px viewport, and a map on every preview
    monkeypatch.setitem(segmod.LIVE_SALIENCY, "gradients", (32, {}))
    monkeypatch.setattr(segmod, "LIVE_SALIENCY_SHARE", 1.0)
    region = (slice(10, 90), slice(20, 100))
    norm = freeze_normalizer(tr.normalizer, img)
    before, maps = None, []
    for e in tr.fit(
        epochs=4,  # quick mode: one step per epoch on these strokes, so 4 step previews
        batch_size=4,
        samples_per_epoch=8,
        preview_image=img,
        preview_region=lambda: region,
        preview_interval=0.0,
        preview_share=1.0,  # an overlay after every step (the live overlay's own budget)
        preview_saliency="gradients",
    ):
        if isinstance(e, ev.Progress):
            before = _model_snapshot(tr.model)  # right after an optimiser step
        elif isinstance(e, ev.Preview) and e.step >= 0:
            d = e.data
            assert d["offset"] == (10, 20) and d["labels"].shape == (80, 80)
            # the centre 32 x 32 of the viewport, on the image grid
            assert d["saliency_offset"] == (34, 44) and d["saliency"].shape == (32, 32)
            assert d["saliency_method"] == "gradients" and d["saliency_target"] == 1
            # the model is handed back as the optimiser left it: mode, grads, weights, hooks
            assert _same_snapshot(before, _model_snapshot(tr.model))
            # ... and the map is the saliency of exactly these weights
            ref = saliency(
                tr.model,
                norm(img[34:66, 44:76]),
                method="gradients",
                channel_axis=0,
                classes=tr.meta.classes,
            )
            np.testing.assert_allclose(d["saliency"], ref.map, rtol=1e-4, atol=1e-6)
            assert np.ptp(d["saliency"]) > 0
            maps.append(d["saliency"])
    assert len(maps) >= 3
    assert not np.allclose(maps[0], maps[-1])  # the map follows the training


def test_live_saliency_budget_and_errors(nuclei, monkeypatch, slow_saliency):
    import napari_dlcb.interpret.saliency as sal
    from napari_dlcb.tasks.segmentation import live as segmod

    img, lab = nuclei
    tr = SegmentationTrainer(
        [img], [_scribbles(lab)], base="builtin", mode="quick", patch_size=64, device="cpu"
    )
    with pytest.raises(DlcbError, match="unknown live saliency method 'deeplift'"):
        next(tr.fit(epochs=1, preview_image=img, preview_saliency="deeplift"))

    cost = 0.3
    calls = slow_saliency(cost)  # saliency() now takes `cost` seconds; calls = their times
    stop = threading.Event()
    fit = {
        "epochs": 100,
        "batch_size": 4,
        "samples_per_epoch": 8,
        "preview_image": img,
        "preview_interval": 0.0,
        "preview_share": 1.0,  # an overlay after every step (the live overlay's own budget)
    }
    with_map = without = 0
    for e in tr.fit(preview_saliency="gradients", stop=stop, **fit):
        if isinstance(e, ev.Preview):
            with_map += "saliency" in e.data
            without += "saliency" not in e.data
            if len(calls) >= 3:
                stop.set()
    share = segmod.LIVE_SALIENCY_SHARE
    assert with_map == len(calls) == 3
    assert without >= 1  # previews between maps carry the prediction only
    # after a map of `cost` s, the next one waits at least cost * (1 / share - 1)
    assert min(np.diff(calls)) >= cost / share * 0.99

    def broken(*args, **kwargs):
        raise DlcbError("this model has no 2-D convolution layer for Grad-CAM")

    monkeypatch.setattr(sal, "saliency", broken)
    fit["epochs"] = 2
    data = [e.data for e in tr.fit(preview_saliency="gradcam", **fit) if isinstance(e, ev.Preview)]
    assert len(data) >= 3 and all("probabilities" in d for d in data)  # the overlay goes on
    errors = [d["saliency_error"] for d in data if "saliency_error" in d]
    assert errors == [
        "live gradcam saliency is unavailable: this model has no 2-D convolution layer for Grad-CAM"
    ]
    assert not any("saliency" in d for d in data)

    def shape_error(*args, **kwargs):  # what a model with fixed input sizes raises
        raise RuntimeError("Sizes of tensors must match except in dimension 1\nmore detail")

    monkeypatch.setattr(sal, "saliency", shape_error)
    data = [
        e.data for e in tr.fit(preview_saliency="occlusion", **fit) if isinstance(e, ev.Preview)
    ]
    errors = [d["saliency_error"] for d in data if "saliency_error" in d]
    assert errors == [
        "live occlusion saliency is unavailable: Sizes of tensors must match except in dimension 1"
    ]


def test_live_saliency_crop_is_centred_and_fits_the_model():
    from napari_dlcb.tasks.segmentation.live import centre_span

    assert centre_span(10, 90, 32) == (34, 66)  # centred in the viewport
    assert centre_span(0, 100, 256) == (0, 100)  # a small viewport is kept whole
    assert centre_span(0, 100, 256, 16) == (2, 98)  # 96 = 6 x 16 for the model
    assert centre_span(0, 10, 256, 16) == (0, 10)  # too small to round: kept
