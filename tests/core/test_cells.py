"""Object crops and regionprops tables from instance labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlcb.data.cells import auto_crop_size, object_crops, object_ids, regionprops_table
from napari_dlcb.errors import DlcbError


@pytest.fixture
def scene():
    img = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    lab = np.zeros((40, 50), np.int32)
    lab[18:23, 20:25] = 3  # centre (20, 22): well inside
    lab[0:3, 0:4] = 7  # touches the top-left corner
    lab[30:36, 44:50] = 9  # touches the right border
    return img, lab


def test_crops_are_centred_on_objects(scene):
    img, lab = scene
    oc = object_crops(img, lab, size=8)
    assert oc.ids.tolist() == [3, 7, 9]
    assert oc.crops.shape == (3, 1, 8, 8) and oc.crops.dtype == img.dtype
    np.testing.assert_allclose(oc.centres[0], (20, 22))
    assert oc.origins[0].tolist() == [16, 18]
    np.testing.assert_array_equal(oc.crops[0, 0], img[16:24, 18:26])
    # the object's own mask sits in the middle of its crop
    assert oc.masks[0].sum() == 25 and oc.masks[0][4, 4]


def test_border_objects_are_padded_and_reported(scene):
    img, lab = scene
    oc = object_crops(img, lab, size=8)
    assert oc.touching_border.tolist() == [7, 9]
    assert any("border" in n and "7, 9" in n for n in oc.notes)
    # reflect padding: crop of object 7 (centre (1, 1.5)) starts at (-3, -2)
    c = oc.crops[1, 0]
    assert c[3, 2] == img[0, 0] and c[2, 2] == img[1, 0]
    assert oc.masks[1].sum() == 12


def test_selected_ids_neighbour_masking_and_large_objects():
    img = np.full((30, 30), 5.0)
    lab = np.zeros((30, 30), np.int32)
    lab[10:20, 10:14] = 1
    lab[10:20, 14:18] = 2
    img[lab == 2] = 100
    oc = object_crops(img, lab, size=12, ids=[1], mask_neighbours=True)
    assert oc.ids.tolist() == [1]
    assert oc.crops.max() == 5.0  # the neighbour's bright pixels were replaced
    oc2 = object_crops(img, lab, size=6, ids=[2])
    assert any("larger than the 6x6" in n for n in oc2.notes)
    with pytest.raises(DlcbError, match="object 4 is not"):
        object_crops(img, lab, ids=[4])


def test_multichannel_crops():
    img = np.random.default_rng(0).random((3, 20, 20))
    lab = np.zeros((20, 20), int)
    lab[8:12, 8:12] = 1
    oc = object_crops(img, lab, size=6, channel_axis=0)
    assert oc.crops.shape == (1, 3, 6, 6)
    np.testing.assert_array_equal(oc.crops[0], img[:, 7:13, 7:13])


def test_empty_labels_and_bad_shapes():
    with pytest.raises(DlcbError, match="no objects"):
        object_crops(np.zeros((10, 10)), np.zeros((10, 10), int))
    with pytest.raises(DlcbError, match="no objects"):
        regionprops_table(np.zeros((10, 10), int))
    with pytest.raises(DlcbError, match="differ in shape"):
        object_crops(np.zeros((10, 10)), np.ones((10, 11), int))
    with pytest.raises(DlcbError, match="integers"):
        object_crops(np.zeros((10, 10)), np.ones((10, 10), float))


def test_regionprops_table(scene):
    img, lab = scene
    t = regionprops_table(lab, img)
    assert t.object_id.tolist() == [3, 7, 9]
    assert t.area.tolist() == [25, 12, 36]
    assert t.touches_border.tolist() == [False, True, True]
    assert t.intensity_mean.iloc[0] == pytest.approx(img[lab == 3].mean())
    np.testing.assert_allclose(t[["centroid_row", "centroid_col"]].iloc[0], (20, 22))
    assert "intensity_mean" not in regionprops_table(lab).columns
    assert object_ids(lab).tolist() == [3, 7, 9]


def test_auto_crop_size_follows_the_objects():
    lab = np.zeros((200, 200), np.int32)
    for k in range(10):  # ten objects of 20 x 12 px: 1.5 x 20 = 30 -> 32 (a multiple of 8)
        lab[k * 20 : k * 20 + 20, 0:12] = k + 1
    assert auto_crop_size(lab) == 32
    lab[0:60, 100:160] = 99  # one big object does not move the 90th percentile ...
    assert auto_crop_size(lab) == 32
    for k in range(5):  # ... many larger ones do: sides 10 x 20, 5 x 40, 1 x 60
        lab[k * 40 : k * 40 + 30, 160:200] = 100 + k
    assert auto_crop_size(lab) == 64  # 1.5 x 40 (the 90th percentile) = 60 -> 64
    big = np.zeros((400, 400), np.int32)
    big[:300, :300] = 1
    assert auto_crop_size(big) == 128  # clamped
    assert auto_crop_size(np.zeros((10, 10), np.int32)) == 32  # no objects


def test_default_crop_holds_real_nuclei(shared_data):
    """Issue 8: the default crop was 32 px, smaller than 18 % of the StarDist nuclei."""
    import tifffile
    from scipy import ndimage as ndi

    from napari_dlcb.tasks.classification_config import CellsConfig

    folder = shared_data / "stardist_sample_nuclei_2d"
    img = tifffile.imread(folder / "img2d.tif")
    lab = tifffile.imread(folder / "mask2d.tif").astype(np.int32)
    sides = [
        max(s[0].stop - s[0].start, s[1].stop - s[1].start)
        for s in ndi.find_objects(lab)
        if s is not None
    ]
    size = auto_crop_size(lab)
    assert size == 56 and size % 8 == 0  # 1.5 x 34 px (the 90th percentile) -> 56
    assert CellsConfig().validate().crop_size == "auto"  # the default chooses it
    assert max(sides) <= size  # every nucleus fits whole
    oc = object_crops(img, lab, size=size)
    assert not any("larger than" in n for n in oc.notes)
    # the 32-px crop that used to be the default cuts many of them
    assert any("larger than the 32x32" in n for n in object_crops(img, lab, size=32).notes)
