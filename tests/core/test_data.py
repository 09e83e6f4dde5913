"""Label kinds, normalisation, augmentation and splits."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb.data.augment import Augment, random_crop
from napari_dlcb.data.labels import class_values_for, make_target
from napari_dlcb.data.normalize import Normalizer, check_image, to_cyx
from napari_dlcb.data.splits import block_mask, group_split, kfold, train_val_split
from napari_dlcb.errors import DlcbError


def test_scribble_targets_ignore_unlabelled():
    lab = np.array([[0, 1, 2], [3, 0, 1]])
    cv = class_values_for([lab], "scribbles")
    assert cv == [1, 2, 3]
    assert make_target(lab, "scribbles", cv).tolist() == [[-1, 0, 1], [2, -1, 0]]


def test_classes_keep_original_values():
    lab = np.array([[0, 255], [255, 0]], np.uint8)
    cv = class_values_for([lab], "classes")
    assert cv == [0, 255]
    assert make_target(lab, "classes", cv).tolist() == [[0, 1], [1, 0]]


def test_instances_become_background_interior_boundary():
    lab = np.zeros((9, 12), int)
    lab[1:8, 1:6] = 1
    lab[1:8, 6:11] = 2  # touching
    t = make_target(lab, "instances", class_values_for([lab], "instances"))
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[lab == 0] == 0).all()
    assert t[4, 5] == 2 and t[4, 6] == 2  # the touching line is boundary on both sides
    assert t[4, 3] == 1
    assert make_target(lab, "instances", [0, 1, 2], n_classes=2).max() == 1


@pytest.mark.parametrize(
    "labels,kind,msg",
    [
        ([np.zeros((4, 4), int)], "scribbles", "no annotation"),
        ([np.full((4, 4), 2)], "scribbles", "only one class"),
        ([np.ones((4, 4), int)], "classes", "single class"),
        ([np.zeros((4, 4), int)], "instances", "no objects"),
        ([np.zeros((4, 4), int)], "blobs", "unknown label kind"),
    ],
)
def test_bad_annotations_give_one_line_errors(labels, kind, msg):
    with pytest.raises(DlcbError, match=msg) as err:
        class_values_for(labels, kind)
    assert "\n" not in str(err.value)


def test_normalizer_uses_training_statistics_only():
    train = [np.linspace(0, 100, 10000).reshape(100, 100)]
    n = Normalizer.fit(train, mode="percentile", p_low=0, p_high=100)
    other = np.full((4, 4), 200.0)
    other[0, 0] = 0
    out = n(other)
    assert out.shape == (1, 4, 4)
    assert out[0, 1, 1] == pytest.approx(2.0)  # not re-fitted on the new image
    again = Normalizer.from_dict(n.to_dict())
    np.testing.assert_array_equal(again(other), out)


def test_normalizer_per_image_and_channels():
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    n = Normalizer.fit([rgb], mode="zscore")
    out = n(rgb)
    assert out.shape == (3, 32, 32)
    np.testing.assert_allclose(out.reshape(3, -1).mean(1), 0, atol=1e-5)
    z = Normalizer(mode="per_image_zscore")(rgb[..., 0] * 3.0 + 7)
    assert z.std() == pytest.approx(1, rel=1e-4)
    with pytest.raises(DlcbError, match="channels"):
        n(rgb[..., :2].transpose(2, 0, 1))


@pytest.mark.parametrize(
    "img,msg",
    [
        (np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), 7), "constant"),
        (np.zeros((0, 5)), "empty"),
    ],
)
def test_check_image_rejects_bad_images(img, msg):
    with pytest.raises(DlcbError, match=msg):
        check_image(img)


def test_to_cyx_conventions():
    assert to_cyx(np.zeros((5, 6))).shape == (1, 5, 6)
    assert to_cyx(np.zeros((5, 6, 4))).shape == (3, 5, 6)  # alpha dropped
    assert to_cyx(np.zeros((2, 5, 6)), channel_axis=0).shape == (2, 5, 6)
    with pytest.raises(DlcbError):
        to_cyx(np.zeros((2, 3, 4, 5)))


def test_fixed_zscore_statistics_from_a_bioimageio_package():
    """BioImage.IO's fixed zero_mean_unit_variance is imported as mean/std, which were ignored."""
    norm = Normalizer.from_dict({"mode": "zscore", "mean": 10.0, "std": 2.0, "eps": 1e-6})
    np.testing.assert_allclose(norm(np.full((4, 4), 14.0)), 2.0)
    two = Normalizer.from_dict({"mode": "zscore", "mean": [0.0, 10.0], "std": [1.0, 5.0]})
    out = two(np.stack([np.full((3, 3), 1.0), np.full((3, 3), 20.0)]), channel_axis=0)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 2.0])
    assert Normalizer.from_dict(Normalizer(mode="zscore", low=[1.0], high=[2.0]).to_dict()).low == [
        1.0
    ]


def test_one_channel_rule_for_arrays_and_lazy_sources():
    """Issue 9: to_cyx and the tiled reader had different channel rules."""
    from napari_dlcb.data.images import ImageSource, channel_layout

    rng = np.random.default_rng(0)
    cases = [
        (rng.random((5, 6)), None, 1),
        (rng.random((5, 6, 3)), None, 3),  # RGB
        (rng.random((5, 6, 4)), None, 3),  # RGBA: alpha dropped
        (rng.random((1, 5, 6)), None, 1),  # a leading singleton is one channel
        (rng.random((2, 5, 6)), 0, 2),
        (rng.random((5, 6, 4)), -1, 4),  # an explicit channel axis keeps every channel
    ]
    for arr, axis, channels in cases:
        cyx = to_cyx(arr, axis)
        assert cyx.shape == (channels, 5, 6), (arr.shape, axis)
        np.testing.assert_array_equal(ImageSource(arr, axis).read((0, 5), (0, 6)), cyx)
    for shape, axis, match in [
        ((3, 40, 40), None, "channel_axis"),  # a stack or 3 channels: say which
        ((5, 6), 0, "3-D"),
        ((2, 5, 6), 3, "out of range"),
        ((2, 3, 4, 5), None, "2-D"),
    ]:
        with pytest.raises(DlcbError, match=match):
            channel_layout(shape, axis)


def test_augment_keeps_image_and_target_aligned():
    rng = np.random.default_rng(1)
    img = np.zeros((1, 64, 64), np.float32)
    img[0, 10:20, 30:50] = 1
    tgt = (img[0] > 0).astype(np.int64)
    aug = Augment(intensity=0, noise=0)
    for _ in range(20):
        a, t = aug(img, tgt, rng)
        assert a.shape == img.shape and t.shape == tgt.shape
        valid = t >= 0
        assert ((a[0] > 0.5) == (t == 1))[valid].mean() > 0.97


def test_random_crop_pads_small_images_with_ignore():
    img = np.ones((1, 10, 12), np.float32)
    tgt = np.zeros((10, 12), np.int64)
    a, t = random_crop(img, tgt, 16, np.random.default_rng(0))
    assert a.shape == (1, 16, 16) and t.shape == (16, 16)
    assert (t[10:] == -1).all() and (t[:10, :12] == 0).all()


def test_splits_are_disjoint_and_complete():
    tr, va = train_val_split(20, val_fraction=0.25, seed=3)
    assert len(va) == 5 and not set(tr) & set(va) and len(tr) + len(va) == 20
    seen = np.concatenate([v for _, v in kfold(11, 3)])
    assert sorted(seen.tolist()) == list(range(11))
    tr, va, te = group_split(["chr1", "chr2", "chr8", "chr1"], ["chr8"], ["chr2"])
    assert tr.tolist() == [0, 3] and va.tolist() == [2] and te.tolist() == [1]
    with pytest.raises(DlcbError):
        group_split(["chr1"], ["chrX"])


def test_block_mask_holds_out_annotated_blocks():
    labelled = np.zeros((256, 256), bool)
    labelled[::7, ::5] = True
    m = block_mask(labelled.shape, val_fraction=0.25, block=64, labelled=labelled)
    assert 0.1 < m.mean() < 0.4
    assert (m & labelled).any() and (~m & labelled).any()
