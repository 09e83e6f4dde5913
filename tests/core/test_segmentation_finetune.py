"""Fine-tuning on strokes keeps what the model knew, Stop keeps what was learnt (issue 8)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.tasks.segmentation import SegmentationTask
from napari_dlcb.training import events as ev


def _strokes(labels: np.ndarray) -> np.ndarray:
    from napari_dlcb.data.strokes import simulate_strokes

    return simulate_strokes(labels, n_objects=8, n_background=8, seed=0)


@pytest.fixture(scope="module")
def nuclei():
    return synthetic_nuclei((192, 192), seed=7)


@pytest.fixture(scope="module")
def stardist(shared_data):
    from napari_dlcb.data.strokes import simulate_strokes
    from napari_dlcb.io.images import read_image

    folder = shared_data / "stardist_sample_nuclei_2d"
    img = read_image(folder / "img2d.tif")
    truth = read_image(folder / "mask2d.tif").astype(np.int32)
    return img, truth, simulate_strokes(truth, seed=0)


def test_scribbles_on_the_builtin_model_save_reload_predict_the_same(nuclei, tmp_path):
    """The README's path: built-in U-Net + scribbles -> Save (was: 'class_values' error)."""
    from napari_dlcb.inference.segment import segment
    from napari_dlcb.models.saved import load_model

    img, lab = nuclei
    task = SegmentationTask([img], [_strokes(lab)], device="cpu")
    list(task.fit(epochs=1, samples_per_epoch=4))
    assert task.meta.label_kind == "instances"
    assert len(task.meta.classes) == len(task.meta.class_values) == 3
    folder = task.save(tmp_path / "model")
    model, meta = load_model(folder)
    assert meta.classes == ["background", "interior", "boundary"]
    prob, labels = task.predict(img)
    prob2, labels2 = segment((model, meta), img, device="cpu")
    np.testing.assert_allclose(prob, prob2, atol=1e-5)
    np.testing.assert_array_equal(labels, labels2)


def test_pretrained_base_is_scored_first_and_quick_epochs_are_time_sized(nuclei):
    img, lab = nuclei
    task = SegmentationTask([img], [_strokes(lab)], device="cpu", epoch_seconds=0.5)
    events = list(task.fit(epochs=2, samples_per_epoch=10_000))
    started = events[0]
    assert isinstance(started, ev.Started) and started.baseline is not None  # validate_start
    assert np.isfinite(started.baseline["val_loss"])
    ends = [e for e in events if isinstance(e, ev.EpochEnd)]
    # an epoch ends by time (0.5 s), long before its 2,500 steps
    steps = [e for e in events if isinstance(e, ev.Progress) and e.epoch == 0]
    assert len(ends) == 2 and len(steps) < 2_500
    assert SegmentationTask([img], [_strokes(lab)], device="cpu").config.epoch_limit == 3.0


def test_stop_mid_epoch_keeps_what_was_learnt(nuclei):
    """Stop before the first epoch ends: the weights are scored and kept if better."""
    img, lab = nuclei
    # a new 2-class head (scribble_instances off): anything learnt beats the start
    task = SegmentationTask(
        [img], [_strokes(lab)], device="cpu", scribble_instances=False, epoch_seconds=600
    )
    start = {k: v.clone() for k, v in task.model.state_dict().items()}
    stop = threading.Event()
    events = []
    for e in task.fit(epochs=5, samples_per_epoch=10_000, lr=1e-2, stop=stop):
        events.append(e)
        if isinstance(e, ev.Progress) and e.step >= 5:
            stop.set()
    fin = events[-1]
    assert isinstance(fin, ev.Finished) and fin.reason == "cancelled"
    assert [e.partial for e in events if isinstance(e, ev.EpochEnd)] == [True]
    assert fin.best_epoch == 0 and "Stop" in fin.kept
    changed = [k for k, v in task.model.state_dict().items() if not torch.equal(v, start[k])]
    assert changed, "Stop threw away what was learnt"
    assert task.meta.extra["training"]["kept"] == fin.kept


def test_quick_mode_keeps_pretrained_statistics_and_trains_them_slowly(nuclei):
    img, lab = nuclei
    task = SegmentationTask([img], [_strokes(lab)], device="cpu")
    stats = {k: v.clone() for k, v in task.model.state_dict().items() if "running" in k}
    list(task.fit(epochs=2, samples_per_epoch=8, early_stopping=None, validate_start=False))
    after = task.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in stats.items())  # BN statistics fixed
    _, _, _, groups = task._datasets()
    assert [g["name"] for g in groups] == ["pretrained"]
    assert groups[0]["lr"] == pytest.approx(1e-4)  # lr 1e-3 x pretrained_lr_factor 0.1
    assert task.distilled


def test_quick_view_is_the_full_forward_pass(nuclei):
    """The live overlay's decoder-only path equals the whole network on the whole image."""
    img, lab = nuclei
    task = SegmentationTask([img], [_strokes(lab)], device="cpu")
    task._quick_data()
    view = task._quick_view(img)
    view.start = None  # decode, not the cached starting prediction
    x = torch.from_numpy(task.normalizer(img))[None]
    with torch.inference_mode():
        ref = torch.softmax(task.model.eval()(x), 1)[0].numpy()
    for r0, r1, c0, c1 in [(0, 192, 0, 192), (40, 120, 30, 170)]:
        got = view(r0, r1, c0, c1)
        np.testing.assert_allclose(got, ref[:, r0:r1, c0:c1], atol=1e-5)


def test_finetuning_on_strokes_does_not_make_the_model_worse(stardist):
    """Real nuclei, 18 correct strokes: fine-tuning keeps what the built-in U-Net knew."""
    from napari_dlcb.inference.metrics import foreground_iou
    from napari_dlcb.inference.segment import segment

    img, truth, strokes = stardist
    _, before = segment("builtin", img, device="cpu")
    untouched = foreground_iou(before > 0, truth > 0)
    assert untouched > 0.8  # the built-in already segments these nuclei
    task = SegmentationTask([img], [strokes], device="cpu", seed=0)
    t0 = time.perf_counter()
    fin = list(task.fit(epochs=4, samples_per_epoch=16, epoch_seconds=600))[-1]
    _, labels = task.predict(img)
    iou = foreground_iou(labels > 0, truth > 0)
    print(
        f"\nIoU {untouched:.4f} -> {iou:.4f} after {fin.epochs_run} epochs ({time.perf_counter() - t0:.0f} s)"
    )
    assert iou >= untouched - 0.01


def test_first_overlay_comes_before_training_starts(nuclei):
    """prepare() + preview(): the starting model's overlay as soon as the features are cached."""
    img, lab = nuclei
    task = SegmentationTask([img], [_strokes(lab)], device="cpu")
    task.prepare()
    region = (slice(20, 150), slice(10, 170))
    first = task.preview(img, lambda: region)
    x = torch.from_numpy(task.normalizer(img))[None]
    with torch.inference_mode():
        ref = torch.softmax(task.model.eval()(x), 1)[0, :, 20:150, 10:170].numpy()
    np.testing.assert_allclose(first["probabilities"], ref, atol=1e-5)
    assert first["offset"] == (20, 10) and first["labels"].shape == (130, 160)
    events = list(
        task.fit(epochs=1, samples_per_epoch=4, preview_image=img, preview_region=lambda: region)
    )
    assert isinstance(events[0], ev.Started)
    assert not isinstance(events[1], ev.Preview)  # not shown twice
