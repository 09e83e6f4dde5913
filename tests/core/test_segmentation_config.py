"""One config for the segmentation task, built the same way by the CLI and the dock."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_dlcb.data.splits import stroke_mask
from napari_dlcb.data.strokes import simulate_strokes
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.segmentation import SegmentationConfig


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 0, "epochs must be from 1"),
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("lr", -1e-3, "lr must be a finite number > 0"),
        ("val_fraction", 1.0, "val_fraction must be a fraction in [0, 1)"),
        ("patch_size", 100, "patch_size must be a multiple of 16"),
        ("patch_size", 16, "patch_size must be from 32 to 2048"),
        ("batch_size", 0, "batch_size must be from 1"),
        ("mode", "turbo", "unknown training mode 'turbo'"),
        ("label_kind", "masks", "unknown label kind 'masks'"),
        ("device", "gpu", "device must be auto, cpu, cuda"),
        ("live_saliency", "deeplift", "unknown live saliency method 'deeplift'"),
        ("pretrained_lr_factor", 2.0, "pretrained_lr_factor must be a finite number > 0"),
        ("distill", -1, "distill must be a finite number >= 0"),
        ("epoch_seconds", 0, "epoch_seconds must be a finite number > 0"),
    ],
)
def test_bad_option_is_one_line_naming_it(field, value, words):
    with pytest.raises(DlcbError) as err:
        SegmentationConfig(**{field: value}).validate()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_mode_defaults_and_old_names():
    quick = SegmentationConfig(mode="linear").validate()
    assert quick.mode == "quick" and quick.patch == 128 and quick.epoch_limit == 3.0
    full = SegmentationConfig(mode="full").validate()
    assert full.patch == 256 and full.epoch_limit is None and full.samples == 32
    # pretrained layers: slow under a few strokes (quick), full speed under dense labels
    assert quick.lr_factor == 0.1 and full.lr_factor == 1.0
    assert full.replace(pretrained_lr_factor=0.3).lr_factor == 0.3
    assert SegmentationConfig(live_saliency="off").validate().live_saliency is None
    with pytest.raises(DlcbError, match="unknown option 'epoch'"):
        quick.replace(epoch=3)
    again = SegmentationConfig.from_dict(quick.to_dict())
    assert again == quick


def test_cli_and_dock_build_the_same_config():
    from napari_dlcb.commands.segmentation import config_from_args

    args = argparse.Namespace(
        labels_kind="scribbles",
        base="builtin",
        mode="auto",
        val_fraction=0.2,
        patch_size=None,
        no_augment=False,
        seed=0,
        device="auto",
        epochs=30,
        lr=1e-3,
        pretrained_lr_factor=None,
        batch_size=4,
        samples_per_epoch=None,
        epoch_seconds=None,
        early_stopping=15,
        max_minutes=None,
        distill=3.0,
    )
    assert config_from_args(args) == SegmentationConfig().validate()


def test_stroke_mask_holds_out_whole_strokes_of_every_class():
    rng = np.random.default_rng(0)
    truth = np.zeros((128, 128), np.int32)
    for i, (r, c) in enumerate(rng.integers(12, 116, (12, 2)), start=1):
        truth[r - 6 : r + 6, c - 6 : c + 6] = i
    strokes = simulate_strokes(truth, n_objects=6, n_background=6, seed=1)
    target = strokes.astype(np.int64) - 1
    held = stroke_mask(target, val_fraction=0.3, seed=0)
    from scipy import ndimage as ndi

    for value in (0, 1):
        runs, n = ndi.label(target == value, structure=np.ones((3, 3)))
        ids = np.unique(runs[held & (runs > 0)])
        assert 1 <= len(ids) < n  # some strokes of each class held out, some kept
        for k in ids:  # whole strokes, never pieces
            assert held[runs == k].all()
    assert stroke_mask(np.full((8, 8), -1), val_fraction=0.2) is None


def test_simulated_strokes_are_thin_lines_on_the_right_side():
    truth = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    for i, (r, c) in enumerate([(40, 40), (40, 150), (150, 60), (140, 150)], start=1):
        truth[(yy - r) ** 2 / 15**2 + (xx - c) ** 2 / 9**2 <= 1] = i
    a = simulate_strokes(truth, n_objects=3, n_background=4, seed=3)
    assert np.array_equal(a, simulate_strokes(truth, n_objects=3, n_background=4, seed=3))
    assert not np.array_equal(a, simulate_strokes(truth, n_objects=3, n_background=4, seed=4))
    assert (truth[a == 2] > 0).all() and (truth[a == 1] == 0).all()
    from scipy import ndimage as ndi

    assert ndi.label(a == 2, structure=np.ones((3, 3)))[1] == 3
    assert ndi.label(a == 1, structure=np.ones((3, 3)))[1] == 4
    # lines, not masks: a 3-px brush covers a small part of each nucleus
    assert (a == 2).sum() < 0.5 * (truth > 0).sum()
    assert ndi.binary_erosion(a > 0, iterations=2).sum() == 0  # nowhere thicker than 3 px
