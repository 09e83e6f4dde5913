"""Re-choosing the foreground threshold of a fine-tuned instance model (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb.inference.calibrate import FG_GRID, choose_fg_threshold


def _blobs(shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probabilities whose best cut is known: objects at 0.5 + shift."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 64), np.int64)
    truth[8:30, 8:30] = 1
    truth[40:60, 36:60] = 2  # boundary class counts as object too
    fg = np.where(truth > 0, 0.5 + shift, 0.5 + shift - 0.3) + rng.normal(0, 0.02, truth.shape)
    return np.clip(fg, 0, 1), truth


@pytest.mark.parametrize("shift", [-0.1, 0.0, 0.3])
def test_the_chosen_threshold_follows_the_models_confidence(shift):
    fg, truth = _blobs(shift)
    t = choose_fg_threshold([fg], [truth])
    assert t in FG_GRID
    assert 0.5 + shift - 0.25 < t < 0.5 + shift  # between the two populations
    iou = ((fg > t) & (truth > 0)).sum() / ((fg > t) | (truth > 0)).sum()
    assert iou > 0.99


def test_unannotated_pixels_are_ignored():
    fg, truth = _blobs(0.2)
    wrong = truth.copy()
    wrong[:, :4] = 1  # labelled as object where fg is low ...
    ignored = np.where(np.arange(64)[None, :] < 4, -1, wrong)  # ... unless not annotated
    assert choose_fg_threshold([fg], [ignored]) == choose_fg_threshold([fg], [truth])


def test_too_little_annotation_keeps_the_base_threshold():
    fg, truth = _blobs(0.0)
    assert choose_fg_threshold([fg], [np.zeros_like(truth)]) is None  # no object
    assert choose_fg_threshold([fg[:10, :10]], [truth[:10, :10]]) is None  # 100 pixels
    with pytest.raises(ValueError, match="differ in shape"):
        choose_fg_threshold([fg], [truth[:10]])


def test_scribbles_keep_the_base_threshold():
    """Strokes are too sparse to judge a threshold on: the base's is kept."""
    from napari_dlcb.data.strokes import simulate_strokes
    from napari_dlcb.data.synthetic import synthetic_nuclei
    from napari_dlcb.tasks.segmentation import SegmentationTask

    img, lab = synthetic_nuclei((128, 128), seed=3)
    task = SegmentationTask(
        [img], [simulate_strokes(lab, seed=0)], base="builtin", mode="quick", device="cpu"
    )
    list(task.fit(epochs=1))
    assert "fg_threshold" not in task.meta.extra["training"]
    assert task.meta.extra["postprocess"]["fg_threshold"] == 0.85


def test_the_base_threshold_is_kept_unless_another_is_clearly_better():
    fg, truth = _blobs(0.0)  # best cut between 0.2 and 0.5
    assert choose_fg_threshold([fg], [truth], prefer=0.4) == 0.4  # as good as the best
    assert choose_fg_threshold([fg], [truth], prefer=0.9) != 0.9  # 0.9 misses every object
    assert choose_fg_threshold([fg], [truth], prefer=0.9, min_gain=2.0) == 0.9
