"""Sequence logos as RGBA images on the bp axis."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.logo import BASE_COLORS, logo_image, logo_placement


def _ink(img: np.ndarray, col: slice) -> np.ndarray:
    return img[:, col, 3] > 0


def test_letters_colours_and_heights():
    v = np.zeros((4, 4))
    v[0, 0], v[1, 1], v[2, 2], v[3, 3] = 2.0, 1.0, 0.5, 2.0
    img = logo_image(v, px_per_base=10, height=100, gap=0)
    assert img.shape == (100, 40, 4) and img.dtype == np.uint8
    for b in range(4):  # each position is drawn in its base's colour only
        cols = slice(10 * b, 10 * b + 10)
        rgb = img[:, cols, :3][_ink(img, cols)]
        assert len(rgb) and (rgb == BASE_COLORS[b]).all()
    # no negatives: baseline at the bottom; heights proportional to the values
    rows = [np.flatnonzero(_ink(img, slice(10 * b, 10 * b + 10)).any(1)) for b in range(4)]
    assert rows[0].max() == 99 and rows[0].min() == 0  # the tallest fills the image
    assert abs(len(rows[1]) - 50) <= 1 and abs(len(rows[2]) - 25) <= 1


def test_negative_letters_hang_below_a_middle_baseline():
    v = np.zeros((4, 2))
    v[0, 0], v[3, 1] = 1.0, -1.0
    img = logo_image(v, px_per_base=8, height=64)
    up, down = _ink(img, slice(0, 8)), _ink(img, slice(8, 16))
    assert up[:32].any() and not up[32:].any()
    assert down[32:].any() and not down[:32].any()


def test_stacks_put_small_letters_at_the_baseline_and_share_a_scale():
    v = np.zeros((4, 1))
    v[0, 0], v[2, 0] = 3.0, 1.0  # A on top of G
    img = logo_image(v, px_per_base=12, height=80, gap=0)
    colour_rows = {
        b: np.flatnonzero((img[..., :3] == BASE_COLORS[b]).all(-1).any(1)) for b in (0, 2)
    }
    assert colour_rows[2].min() > colour_rows[0].max()  # G (small) lower, next to the baseline
    half = logo_image(v, px_per_base=12, height=80, gap=0, max_height=8.0)
    assert (half[..., 3] > 0).any(1).sum() == pytest.approx(40, abs=1)


def test_placement_puts_each_position_over_its_base():
    length, px, start = 7, 16, 1000.0
    img = logo_image(np.eye(4, length), px_per_base=px, height=32)
    p = logo_placement(length, img.shape, start=start, band_top=95.0, band_height=20.0)
    (sy, sx), (ty, tx) = p["scale"], p["translate"]
    for j in range(length):
        centres = tx + sx * np.arange(j * px, (j + 1) * px)  # world x of the pixel centres
        assert (centres > start + j - 0.5).all() and (centres < start + j + 0.5).all()
    assert ty - sy / 2 == pytest.approx(95.0) and ty + sy * (32 - 0.5) == pytest.approx(115.0)


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((3, 5)), r"\(4, L\)"), (np.full((4, 2), np.nan), "NaN")],
)
def test_bad_input(bad, match):
    with pytest.raises(DlcbError, match=match):
        logo_image(bad)


def test_all_zero_is_blank():
    assert not logo_image(np.zeros((4, 5)))[..., 3].any()
