"""Probabilities -> labels, and metrics against hand-computed and brute-force values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.metrics import average_precision, foreground_iou, iou_matrix, pixel_error
from napari_dlcb.inference.postprocess import (
    classes_from_probabilities,
    instances_from_probabilities,
    labels_from_probabilities,
)


def two_touching_discs(shape=(80, 120), radius=20, distance=36):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = shape[0] // 2, shape[1] // 2
    a = (yy - cy) ** 2 + (xx - (cx - distance / 2)) ** 2 < radius**2
    b = (yy - cy) ** 2 + (xx - (cx + distance / 2)) ** 2 < radius**2
    labels = np.zeros(shape, np.int32)
    labels[a] = 1
    labels[b & ~a] = 2  # they overlap: a single connected foreground blob
    return labels


def three_class(labels: np.ndarray) -> np.ndarray:
    """Background / interior / boundary probabilities, as the instance U-Net predicts."""
    from skimage.segmentation import find_boundaries

    boundary = find_boundaries(labels, mode="inner") & (labels > 0)
    interior = (labels > 0) & ~boundary
    return np.stack([labels == 0, interior, boundary]).astype(np.float32)


# ---------------------------------------------------------------------------- instances


def test_foreground_mode_splits_touching_discs():
    truth = two_touching_discs()
    fg = (truth > 0).astype(np.float32)
    assert ndi.label(fg)[1] == 1  # one connected blob
    labels = instances_from_probabilities(fg[None])
    assert labels.dtype == np.int32 and labels.max() == 2
    assert set(np.unique(labels)) == {0, 1, 2}
    assert average_precision(labels, truth, 0.8) == 1.0


def test_two_channel_softmax_uses_the_foreground_channel():
    fg = (two_touching_discs() > 0).astype(np.float32)
    labels = instances_from_probabilities(np.stack([1 - fg, fg]))
    assert labels.max() == 2


def test_three_class_mode_splits_touching_discs():
    truth = two_touching_discs()
    labels = instances_from_probabilities(three_class(truth))
    assert labels.max() == 2
    assert average_precision(labels, truth, 0.9) == 1.0


def test_three_class_min_size_and_unseeded_components():
    truth = two_touching_discs()
    prob = three_class(truth)
    prob[:, 2:6, 2:6] = [[[0]], [[0]], [[1]]]  # a 16-px blob that is all boundary: no seed
    kept = instances_from_probabilities(prob, min_size=10)
    assert kept.max() == 3
    dropped = instances_from_probabilities(prob, min_size=10, keep_unseeded=False)
    assert dropped.max() == 2
    assert instances_from_probabilities(prob, min_size=17).max() == 2  # too small: removed


def test_small_seeds_do_not_split_an_object():
    yy, xx = np.mgrid[:80, :120]
    prob = three_class(((yy - 40) ** 2 + (xx - 60) ** 2 < 20**2).astype(np.int32))
    prob[:, 39:42, 49:53] = [[[0]], [[0]], [[1]]]  # a ring of boundary inside the nucleus...
    prob[:, 40, 50:52] = [[0], [1], [0]]  # ...around a 2-px speck of interior
    assert ndi.label(prob[1] > 0.5)[1] == 2
    assert instances_from_probabilities(prob, min_size=1, min_seed_size=1).max() == 2
    assert instances_from_probabilities(prob, min_size=1, min_seed_size=3).max() == 1


def test_instances_are_consecutive_and_empty_is_empty():
    prob = np.zeros((1, 40, 40), np.float32)
    assert instances_from_probabilities(prob).max() == 0
    prob[0, 5:12, 5:12] = 1
    prob[0, 25:35, 25:35] = 1
    prob[0, 20, 0] = 1  # one pixel: below min_size
    labels = instances_from_probabilities(prob, min_size=5)
    assert sorted(np.unique(labels)) == [0, 1, 2]


def test_uint8_probabilities_are_accepted():
    fg = (two_touching_discs() > 0).astype(np.uint8) * 255
    assert instances_from_probabilities(fg[None]).max() == 2


def test_instance_errors():
    with pytest.raises(DlcbError, match="channels"):
        instances_from_probabilities(np.zeros((4, 10, 10), np.float32))
    with pytest.raises(DlcbError, match="3 channels"):
        instances_from_probabilities(np.zeros((2, 10, 10), np.float32), mode="bg_interior_boundary")
    with pytest.raises(DlcbError, match="mode"):
        instances_from_probabilities(np.zeros((1, 10, 10), np.float32), mode="magic")


# ---------------------------------------------------------------------------- classes


def test_classes_map_to_original_label_values():
    prob = np.array([[[0.9, 0.2, 0.3]], [[0.1, 0.8, 0.7]]], np.float32)
    assert classes_from_probabilities(prob, [0, 255]).tolist() == [[0, 255, 255]]
    assert classes_from_probabilities(prob).tolist() == [[0, 1, 1]]
    single = prob[1:]  # a sigmoid foreground channel
    assert classes_from_probabilities(single, [0, 255], threshold=0.75).tolist() == [[0, 255, 0]]
    with pytest.raises(DlcbError, match="class_values"):
        classes_from_probabilities(prob, [0, 1, 2])


def test_labels_from_probabilities_dispatches_on_label_kind():
    from napari_dlcb.models.saved import ModelMeta

    truth = two_touching_discs()
    prob = three_class(truth)
    inst = ModelMeta("segmentation", {"name": "unet2d"}, ["bg", "in", "bd"], label_kind="instances")
    assert labels_from_probabilities(prob, inst).max() == 2
    as_dict = {"label_kind": "instances", "extra": {"postprocess": {"min_size": 10_000}}}
    assert labels_from_probabilities(prob, as_dict).max() == 0  # model's own options used
    assert labels_from_probabilities(prob, as_dict, min_size=1).max() == 2  # overridden

    shipped = {  # the keys the built-in model's metadata carries
        "label_kind": "instances",
        "extra": {"postprocess": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_size": 12}},
    }
    assert labels_from_probabilities(prob, shipped).max() == 2
    future = {"label_kind": "instances", "extra": {"postprocess": {"new_knob": 1}}}
    with pytest.warns(UserWarning, match="new_knob"):
        assert labels_from_probabilities(prob, future).max() == 2
    with pytest.raises(DlcbError, match="unknown post-processing"):
        labels_from_probabilities(prob, inst, min_sise=3)

    membranes = {"label_kind": "classes", "class_values": [0, 128, 255]}
    out = labels_from_probabilities(prob, membranes)
    np.testing.assert_array_equal(out, np.array([0, 128, 255])[prob.argmax(0)])
    scribbles = {"label_kind": "scribbles", "classes": ["bg", "a", "b"]}
    np.testing.assert_array_equal(labels_from_probabilities(prob, scribbles), prob.argmax(0) + 1)
    with pytest.raises(DlcbError, match="label_kind"):
        labels_from_probabilities(prob, {"label_kind": "boxes"})


# ---------------------------------------------------------------------------- metrics


def test_pixel_error_and_foreground_iou_by_hand():
    pred = np.array([[0, 255, 255], [0, 0, 255]])
    truth = np.array([[0, 255, 0], [0, 255, 255]])
    assert pixel_error(pred, truth) == pytest.approx(2 / 6)
    assert pixel_error(truth, truth) == 0.0
    # foreground: pred {1, 2, 5}, truth {1, 4, 5}: 2 shared of 4
    assert foreground_iou(pred, truth) == pytest.approx(2 / 4)
    assert foreground_iou(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(DlcbError, match="shape"):
        pixel_error(pred, truth[:1])


def test_iou_matrix_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 7, 7, 0])
    pred = np.array([2, 2, 0, 0, 0, 3, 3, 3])
    # truth 1 vs pred 2: 2 / 4; truth 7 vs pred 3: 2 / 3
    np.testing.assert_allclose(iou_matrix(truth, pred), [[0.5, 0.0], [0.0, 2 / 3]])


def test_average_precision_by_hand():
    truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3]])
    pred = np.array([[5, 5, 5, 0, 0, 6, 6, 6, 0, 0]])
    # 1~5: IoU 3/4; 2~6: 2/3; true 3 unmatched
    assert average_precision(pred, truth, 0.5) == pytest.approx(2 / (2 + 0 + 1))
    assert average_precision(pred, truth, 0.7) == pytest.approx(1 / (1 + 1 + 2))
    np.testing.assert_allclose(average_precision(pred, truth, [0.5, 0.7, 0.8]), [2 / 3, 1 / 4, 0.0])
    assert average_precision(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert average_precision(pred, np.zeros_like(truth)) == 0.0


def brute_force_matches(iou: np.ndarray, threshold: float) -> int:
    """Matches of the valid-pair assignment with the largest total IoU, by enumeration."""
    n_true, n_pred = iou.shape
    best, best_count = -1.0, 0
    for k in range(min(n_true, n_pred) + 1):
        for rows in itertools.combinations(range(n_true), k):
            for cols in itertools.permutations(range(n_pred), k):
                vals = [iou[r, c] for r, c in zip(rows, cols)]
                if all(v >= threshold for v in vals) and sum(vals) > best + 1e-12:
                    best, best_count = sum(vals), k
    return best_count


def test_average_precision_equals_brute_force_on_random_overlaps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        truth = np.zeros((12, 12), np.int32)
        pred = np.zeros((12, 12), np.int32)
        for img, n in ((truth, 3), (pred, 4)):
            for i in range(1, n + 1):
                r, c = rng.integers(0, 9, 2)
                h, w = rng.integers(2, 6, 2)
                img[r : r + h, c : c + w] = i
        iou = iou_matrix(truth, pred)
        n_true, n_pred = iou.shape
        for t in (0.1, 0.3, 0.5, 0.7):
            tp = brute_force_matches(iou, t)
            want = tp / (n_true + n_pred - tp) if n_true + n_pred else 1.0
            assert average_precision(pred, truth, t) == pytest.approx(want), (trial, t)


def test_metrics_on_real_nuclei_against_a_naive_loop(shared_data):
    import tifffile

    truth = tifffile.imread(shared_data / "stardist_sample_nuclei_2d" / "mask2d.tif").astype(
        np.int32
    )
    n = len(np.unique(truth)) - 1
    assert n == 125
    assert average_precision(truth, truth, [0.5, 0.9]).tolist() == [1.0, 1.0]
    # a plausible prediction: shifted by 2 px, with ids permuted and 10 objects missing
    pred = np.roll(truth, 2, axis=1)
    ids = np.unique(pred)[1:]
    perm = np.zeros(truth.max() + 1, np.int32)
    perm[ids] = np.random.default_rng(1).permutation(ids) + 1000
    pred = perm[pred]
    pred[np.isin(pred, perm[ids[:10]])] = 0
    for t in (0.5, 0.7, 0.9):
        tp = 0
        for i in np.unique(truth)[1:]:
            mask = truth == i
            for j in np.unique(pred[mask]):
                if j and (mask & (pred == j)).sum() / (mask | (pred == j)).sum() >= t:
                    tp += 1
        n_pred = len(np.unique(pred)) - 1
        assert average_precision(pred, truth, t) == pytest.approx(tp / (n + n_pred - tp))
    assert 0.5 < average_precision(pred, truth, 0.5) < 1.0
