"""Sample data: shipped files match the generator; the mosaic is built lazily."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_dlcb import _sample_data as sd
from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.images import read_image
from napari_dlcb.io.omezarr import read_multiscale
from napari_dlcb.io.omezarr_write import write_ome_zarr


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DLCB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- shipped files


def test_shipped_files_exist_and_are_small():
    d = sd.sample_data_dir()
    for name, dtype in (
        ("nuclei.tif", np.uint16),
        ("nuclei_labels.tif", np.int32),
        ("nuclei_scribbles.tif", np.uint8),
    ):
        path = d / name
        assert path.stat().st_size < 1_000_000, name
        arr = read_image(path)
        assert arr.shape == (512, 512) and arr.dtype == dtype, name
    assert (d / "README.md").is_file()


def test_shipped_files_match_the_generator(tmp_path):
    made = sd.make_nuclei_samples(tmp_path)
    shipped = sd.sample_data_dir()
    for path in made.values():
        np.testing.assert_array_equal(read_image(path), read_image(shipped / path.name))
    image, labels = synthetic_nuclei((512, 512), seed=sd.SAMPLE_SEED)
    np.testing.assert_array_equal(read_image(shipped / "nuclei.tif"), image)
    np.testing.assert_array_equal(read_image(shipped / "nuclei_labels.tif"), labels)


def test_scribbles_look_like_brush_strokes():
    d = sd.sample_data_dir()
    labels = read_image(d / "nuclei_labels.tif")
    s = read_image(d / "nuclei_scribbles.tif")
    assert set(np.unique(s).tolist()) == {0, 1, 2}
    assert 0.002 < (s > 0).mean() < 0.02  # sparse: about 1 % of the pixels
    # nucleus strokes stay inside nuclei, background strokes outside
    assert np.all(labels[s == 2] > 0) and np.all(labels[s == 1] == 0)
    assert len(np.unique(labels[s == 2])) == 12  # through a dozen nuclei
    # thin lines, not masks: nothing survives a 2-pixel erosion
    assert not ndi.binary_erosion(s > 0, iterations=2).any()
    # a few long strokes in the background
    comps, n = ndi.label(s == 1, structure=np.ones((3, 3)))
    lengths = ndi.sum_labels(np.ones_like(comps), comps, index=np.arange(1, n + 1)) / 3
    assert 4 <= n <= 10 and np.median(lengths) > 15


def test_scribbles_are_deterministic_and_seeded():
    _, labels = synthetic_nuclei((256, 256), seed=5)
    a = sd.scribbles_from_labels(labels, n_nuclei=5, seed=1)
    b = sd.scribbles_from_labels(labels, n_nuclei=5, seed=1)
    c = sd.scribbles_from_labels(labels, n_nuclei=5, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(labels[a == 2])) == 5


def test_nuclei_and_session_samples():
    (img, ikw, ikind), (lab, lkw, lkind) = sd.nuclei_sample()
    assert ikind == "image" and lkind == "labels"
    assert img.dtype == np.uint16 and lab.max() > 100
    assert ikw["metadata"]["source_path"].endswith("nuclei.tif")
    assert lkw["metadata"]["label_kind"] == "instances"
    (simg, _, _), (scrib, skw, skind) = sd.session_sample()
    np.testing.assert_array_equal(simg, img)
    assert skind == "labels" and skw["name"] == "scribbles"
    assert skw["metadata"] == {"label_kind": "scribbles"}
    assert set(np.unique(scrib).tolist()) == {0, 1, 2}


def test_sample_module_import_is_light():
    code = (
        "import sys, napari_dlcb._sample_data; "
        "heavy = {'torch', 'zarr', 'dask', 'qtpy', 'skimage'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- mosaic


def test_mosaic_is_built_tile_by_tile_and_opened_lazily(cache, monkeypatch):
    size, tile = 2048, 256
    # small chunks, so that the memory measured is the build's, not one 2x2-chunk block
    monkeypatch.setattr(sd, "MOSAIC_CHUNKS", (256, 256))
    # warm the imports (module objects would count in the peak below)
    synthetic_nuclei((64, 64), seed=0)
    write_ome_zarr(
        cache / "warm.ome.zarr",
        np.zeros((64, 64), np.uint16),
        labels={"a": np.zeros((64, 64), np.int32)},
    )
    shutil.rmtree(cache / "warm.ome.zarr")
    peaks = {}
    for side in (size // 2, size):
        tracemalloc.start()
        try:
            with dask.config.set(num_workers=2):  # same concurrency on any CI machine
                path = sd.mosaic_path(size=side, tile=tile, seed=3)
            peaks[side] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # 4x the pixels, about the same memory: the build holds a few tiles, not the mosaic
    assert peaks[size] < 2 * peaks[size // 2], peaks
    assert peaks[size] < 0.6 * size * size * (2 + 4), peaks  # uint16 image + int32 labels
    assert path.name == f"nuclei_mosaic_{size}_t{tile}_s3_v1.ome.zarr"
    assert path.parent == cache / "samples"
    assert len(list(path.parent.iterdir())) == 2  # the two mosaics, no temp leftovers

    t0 = time.perf_counter()
    levels, meta = read_multiscale(path)
    assert time.perf_counter() - t0 < 1.0
    assert all(isinstance(lv, da.Array) for lv in levels)
    assert [lv.shape for lv in levels] == [(2048, 2048), (1024, 1024)]
    assert levels[0].chunksize == (256, 256) and meta["name"] == "nuclei mosaic"

    index = 1 * (size // tile) + 2  # row 1, column 2
    img, lab = synthetic_nuclei((tile, tile), seed=3 + index)
    rows, cols = slice(tile, 2 * tile), slice(2 * tile, 3 * tile)
    np.testing.assert_array_equal(levels[0][rows, cols].compute(), img)
    block = levels[0][:512, 256:768].compute().astype(np.float64)
    expected = np.round(block.reshape(256, 2, 256, 2).mean(axis=(1, 3)))
    np.testing.assert_array_equal(levels[1][:256, 128:384].compute(), expected)

    mlab, lmeta = read_multiscale(path / "labels" / "nuclei")
    assert lmeta["kind"] == "labels"
    got = mlab[0][rows, cols].compute()
    np.testing.assert_array_equal(got, np.where(lab > 0, lab + index * 65536, 0))

    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert sd.mosaic_path(size=size, tile=tile, seed=3) == path  # cached, not rebuilt
    assert time.perf_counter() - t0 < 0.5 and path.stat().st_mtime_ns == mtime


def test_mosaic_sample_layers(cache, monkeypatch):
    small = sd.mosaic_path(size=512, tile=256)
    monkeypatch.setattr(sd, "mosaic_path", lambda **_: small)
    (img, ikw, ikind), (lab, lkw, lkind) = sd.mosaic_sample()
    assert ikind == "image" and lkind == "labels"
    assert isinstance(img[0], da.Array) or isinstance(img, da.Array)
    assert lkw["visible"] is False and lkw["metadata"]["label_kind"] == "instances"
    assert ikw["metadata"]["source_path"] == str(small)


@pytest.mark.parametrize(("size", "tile"), [(1000, 256), (512, 100), (256, 512)])
def test_mosaic_bad_sizes(cache, size, tile):
    with pytest.raises(DlcbError, match="multiple"):
        sd.mosaic_path(size=size, tile=tile)
