"""Image I/O: TIFF/PNG/OME-Zarr readers and writers, npe2 reader/writer hooks."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_dlcb.errors import DlcbError
from napari_dlcb.io import _npe2
from napari_dlcb.io.images import read_image, write_labels_tiff
from napari_dlcb.io.omezarr import ome_zarr_label_names, read_multiscale, read_zarr
from napari_dlcb.io.omezarr_write import add_ome_zarr_labels, write_ome_zarr
from napari_dlcb.io.paths import image_stem, is_labels_path
from napari_dlcb.io.project import AnnotationStore


def _noise(shape, dtype=np.uint16, seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, min(info.max, 60000), shape).astype(dtype)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("a/cells.ome.tif", "cells"),
        ("cells.ome.zarr", "cells"),
        ("x.png", "x"),
        ("x.dlcb.zarr", "x"),
    ],
)
def test_image_stem(name, stem):
    assert image_stem(name) == stem


def test_is_labels_path():
    assert is_labels_path("a_labels.tif") and is_labels_path("a_masks.png")
    assert is_labels_path("a_mask.ome.zarr") and not is_labels_path("labels.tif")


def test_failed_write_keeps_the_old_image_and_leaves_nothing(tmp_path):
    """The one OME-Zarr writer builds beside the destination and renames when complete."""
    path = write_ome_zarr(tmp_path / "img.ome.zarr", np.ones((64, 64), np.uint8), chunks=(32, 32))

    def boom(block):
        raise RuntimeError("disk on fire")

    bad = da.zeros((64, 64), np.uint8, chunks=32).map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_ome_zarr(path, bad, chunks=(32, 32))
    assert [p.name for p in tmp_path.iterdir()] == ["img.ome.zarr"]
    assert int(read_multiscale(path)[0][0].sum().compute()) == 64 * 64


def test_names_that_say_mask_open_as_labels(tmp_path, shared_data):
    """Issue 8: a ``*mask*.tif`` (StarDist's ``mask2d.tif``) opened as an Image layer."""
    for name in ("mask2d.tif", "cellmask.tif", "nuclei_masks_01.tif", "img_labels_02.png"):
        assert is_labels_path(name), name
    for name in ("unlabelled.tif", "masked_cells.tif", "nuclei.tif", "labels.tif"):
        assert not is_labels_path(name), name
    lab = np.zeros((16, 16), np.uint16)
    lab[4:8, 4:8] = 3
    tifffile.imwrite(tmp_path / "mask2d.tif", lab)
    real = shared_data / "stardist_sample_nuclei_2d" / "mask2d.tif"
    for path in (str(tmp_path / "mask2d.tif"), str(real)):
        ((data, kwargs, kind),) = _npe2.get_reader(path)(path)
        assert kind == "labels" and kwargs["name"] == "mask2d" and data.dtype.kind in "iu"
    image = str(shared_data / "stardist_sample_nuclei_2d" / "img2d.tif")
    assert [kind for _, _, kind in _npe2.get_reader(image)(image)] == ["image"]


# ----------------------------------------------------------------------------- TIFF / PNG


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_labels_tiff_round_trip_keeps_dtype(tmp_path, dtype):
    labels = _noise((37, 53), dtype)
    path = write_labels_tiff(tmp_path / "sub" / "l.tif", labels)
    back = read_image(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_labels_tiff_bool_and_errors(tmp_path):
    back = read_image(write_labels_tiff(tmp_path / "m.tif", np.eye(5, dtype=bool)))
    assert back.dtype == np.uint8 and back.sum() == 5
    with pytest.raises(DlcbError, match="must be integers"):
        write_labels_tiff(tmp_path / "f.tif", np.zeros((3, 3), np.float32))


def test_labels_tiff_from_dask_is_tiled_and_exact(tmp_path):
    labels = _noise((1100, 700), np.int32, seed=3)
    path = write_labels_tiff(tmp_path / "big.tif", da.from_array(labels, chunks=300))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].is_tiled
    np.testing.assert_array_equal(read_image(path), labels)


def test_real_tiff_eager_and_lazy(shared_data):
    path = shared_data / "stardist_sample_nuclei_2d" / "img2d.tif"
    ref = tifffile.imread(path)
    eager = read_image(path)
    lazy = read_image(path, lazy=True)
    assert isinstance(eager, np.ndarray) and isinstance(lazy, da.Array)
    assert eager.shape == (512, 512)
    np.testing.assert_array_equal(eager, ref)
    np.testing.assert_array_equal(lazy.compute(), ref)


def test_real_png(shared_data):
    path = shared_data / "isbi2012_em_membrane" / "train" / "image" / "0.png"
    img = read_image(path)
    assert img.shape == (512, 512) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, np.asarray(Image.open(path)))


def test_png_16bit_round_trip(tmp_path):
    img = _noise((40, 30), np.uint16)
    iio.imwrite(tmp_path / "a.png", img)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)


def test_png_alpha_dropped(tmp_path):
    rgba = _noise((20, 30, 4), np.uint8)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    la = _noise((20, 30, 2), np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la[..., 0])


def test_palette_png_labels_read_as_indices(tmp_path):
    idx = np.zeros((10, 12), np.uint8)
    idx[2:5, 3:7] = 1
    idx[6:9, 1:4] = 2
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "x_labels.png")
    im.save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x_labels.png"), idx)
    assert read_image(tmp_path / "x.png").shape == (10, 12, 3)  # an image: colours


def test_rgb_tiff_contiguous_planar_and_rgba(tmp_path):
    rgb = _noise((24, 32, 3), np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    rgba = _noise((24, 32, 4), np.uint8, seed=1)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif", lazy=True).compute(), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), rgba[..., :3])


def test_singleton_axes_squeezed(tmp_path):
    img = _noise((1, 1, 20, 30))
    tifffile.imwrite(tmp_path / "s.tif", img, metadata={"axes": "TCYX"}, imagej=True)
    assert read_image(tmp_path / "s.tif").shape == (20, 30)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("lazy", [False, True])
def test_truncated_tiff_is_a_clear_error(tmp_path, compression, lazy):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, _noise((300, 400)), compression=compression)
    data = path.read_bytes()
    assert read_image(path).shape == (300, 400)  # intact file reads
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DlcbError, match=r"^cannot read 'x.tif': file is truncated or not a TIFF$"):
        read_image(path, lazy=lazy)


def test_garbage_and_header_only_tiffs(tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"hello, this is not an image")
    tifffile.imwrite(tmp_path / "ok.tif", _noise((8, 8)))
    (tmp_path / "head.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:6])
    for name in ("junk.tif", "head.tif"):
        with pytest.raises(DlcbError, match="truncated or not a TIFF"):
            read_image(tmp_path / name)


def test_corrupt_png(tmp_path):
    iio.imwrite(tmp_path / "a.png", _noise((64, 64), np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DlcbError, match="truncated or not a PNG"):
        read_image(tmp_path / "a.png")


def test_missing_unsupported_empty_nan(tmp_path):
    with pytest.raises(DlcbError, match="no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DlcbError, match=r"unsupported file type '\.jpg'"):
        read_image(tmp_path / "x.jpg")
    with pytest.warns(UserWarning):
        tifffile.imwrite(tmp_path / "e.tif", np.zeros((0, 5), np.uint8))
    with pytest.raises(DlcbError, match="the image is empty"):
        read_image(tmp_path / "e.tif")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(DlcbError, match="every pixel is NaN"):
        read_image(tmp_path / "nan.tif")
    partly = np.full((4, 4), np.nan, np.float32)
    partly[0, 0] = 1
    tifffile.imwrite(tmp_path / "partly.tif", partly)
    assert read_image(tmp_path / "partly.tif").shape == (4, 4)


# ----------------------------------------------------------------------------- OME-Zarr


def test_ome_zarr_multiscale_written_block_by_block_and_read_lazily(tmp_path):
    img = _noise((1000, 1100))
    lab = _noise((1000, 1100), np.int32, seed=2) % 50
    calls = {"img": 0, "lab": 0}
    lock = threading.Lock()

    def counted(block, key):
        if block.size:  # dask also calls it once on an empty array to infer the meta
            with lock:
                calls[key] += 1
        return block

    dimg = da.from_array(img, chunks=256).map_blocks(counted, "img", dtype=img.dtype)
    dlab = da.from_array(lab, chunks=256).map_blocks(counted, "lab", dtype=lab.dtype)
    path = write_ome_zarr(
        tmp_path / "a.ome.zarr",
        dimg,
        chunks=(256, 256),
        n_levels=3,
        scale=(0.5, 0.25),
        labels={"nuclei": dlab},
    )
    n_blocks = dimg.npartitions
    assert calls == {"img": n_blocks, "lab": n_blocks}  # each source block computed once

    levels, meta = read_multiscale(path)
    assert all(isinstance(lv, da.Array) for lv in levels)
    assert [lv.shape for lv in levels] == [(1000, 1100), (500, 550), (250, 275)]
    assert levels[0].chunksize == (256, 256)
    assert meta["axes"] == "yx" and meta["kind"] == "image" and meta["version"] == "0.4"
    assert meta["scale"] == [0.5, 0.25] and meta["translate"] == [0.0, 0.0]
    np.testing.assert_array_equal(levels[0].compute(), img)
    mean = img.reshape(500, 2, 550, 2).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(levels[1].compute(), np.round(mean).astype(np.uint16))

    assert ome_zarr_label_names(path) == ["nuclei"]
    llevels, lmeta = read_multiscale(path / "labels" / "nuclei")
    assert lmeta["kind"] == "labels" and len(llevels) == 3
    np.testing.assert_array_equal(llevels[2].compute(), lab[::4, ::4][:250, :275])

    attrs = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    level1 = attrs["datasets"][1]["coordinateTransformations"]
    assert level1 == [
        {"type": "scale", "scale": [1.0, 0.5]},
        {"type": "translation", "translation": [0.25, 0.125]},  # mean pixel centre
    ]


def test_ome_zarr_is_valid_ngff_for_other_readers(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    path = write_ome_zarr(
        tmp_path / "v.ome.zarr",
        _noise((300, 200)),
        chunks=(128, 128),
        labels={"cells": np.ones((300, 200), np.uint8)},
    )
    nodes = list(Reader(parse_url(str(path)))())
    image = nodes[0]
    assert image.load(Multiscales) is not None
    assert [tuple(d.shape) for d in image.data] == [(300, 200)]
    models = pytest.importorskip("ome_zarr_models.v04")
    import zarr

    models.Image.from_zarr(zarr.open_group(path, mode="r"))  # raises if invalid


def test_ome_zarr_v05_and_default_levels(tmp_path):
    path = write_ome_zarr(
        tmp_path / "v5.ome.zarr", _noise((2100, 600)), version="0.5", chunks=(512, 512)
    )
    assert (path / "zarr.json").is_file() and not (path / ".zattrs").exists()
    levels, meta = read_multiscale(path)
    assert meta["version"] == "0.5"
    # default: halve until the longest side is <= 1024
    assert [lv.shape for lv in levels] == [(2100, 600), (1050, 300), (525, 150)]


def test_ome_zarr_singleton_axes_and_channels(tmp_path):
    data = _noise((1, 1, 1, 64, 48))
    path = write_ome_zarr(tmp_path / "t.ome.zarr", data, axes="tczyx", chunks=(32, 32), n_levels=2)
    levels, meta = read_multiscale(path)
    assert meta["axes"] == "yx" and levels[0].shape == (64, 48) and len(meta["scale"]) == 2
    raw, raw_meta = read_multiscale(path, squeeze=False)
    assert raw_meta["axes"] == "tczyx" and raw[0].shape == (1, 1, 1, 64, 48)
    cyx = write_ome_zarr(tmp_path / "c.ome.zarr", _noise((3, 64, 48)), axes="cyx", chunks=(32, 32))
    assert read_multiscale(cyx)[1]["channel_axis"] == 0
    with pytest.raises(DlcbError, match="axes 'xy'"):
        write_ome_zarr(tmp_path / "bad.ome.zarr", data[0, 0, 0], axes="xy")


def test_read_image_and_read_zarr_on_zarr(tmp_path):
    img = _noise((128, 96))
    path = write_ome_zarr(tmp_path / "i.ome.zarr", img, chunks=(64, 64), n_levels=2)
    full = read_image(path)
    assert isinstance(full, da.Array)
    np.testing.assert_array_equal(full.compute(), img)
    assert read_zarr(path, level=1).shape == (64, 48)
    import zarr

    zarr.create_array(tmp_path / "plain.zarr", data=img, chunks=(32, 32))
    plain = read_image(tmp_path / "plain.zarr")
    assert isinstance(plain, da.Array)
    np.testing.assert_array_equal(plain.compute(), img)
    with pytest.raises(DlcbError, match="level 5"):
        read_zarr(path, level=5)


def test_write_ome_zarr_replaces_store_but_never_a_folder(tmp_path):
    path = tmp_path / "x.ome.zarr"
    write_ome_zarr(path, np.zeros((32, 32), np.uint8), chunks=(16, 16))
    write_ome_zarr(path, np.ones((16, 16), np.uint8), chunks=(16, 16))
    assert read_multiscale(path)[0][0].shape == (16, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.zarr"]  # no temp leftovers
    folder = tmp_path / "precious.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DlcbError, match="refusing to overwrite"):
        write_ome_zarr(folder, np.zeros((8, 8), np.uint8))
    assert (folder / "notes.txt").read_text() == "keep me"


def test_add_labels_to_existing_image(tmp_path):
    path = write_ome_zarr(
        tmp_path / "i.ome.zarr", _noise((256, 128)), chunks=(64, 64), n_levels=3, scale=(2.0, 2.0)
    )
    lab = np.zeros((256, 128), np.uint16)
    lab[10:50, 20:90] = 7
    add_ome_zarr_labels(path, lab, name="cells")
    add_ome_zarr_labels(path, lab, name="cells")  # replacing keeps one entry
    assert ome_zarr_label_names(path) == ["cells"]
    levels, meta = read_multiscale(path / "labels" / "cells")
    assert len(levels) == 3 and meta["scale"] == [2.0, 2.0]
    np.testing.assert_array_equal(levels[1].compute(), lab[::2, ::2])
    with pytest.raises(DlcbError, match="shape"):
        add_ome_zarr_labels(path, lab[:10], name="bad")


# ----------------------------------------------------------------------------- npe2 hooks


def test_get_reader_accepts_and_declines(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _noise((8, 8)))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    assert callable(_npe2.get_reader(str(tmp_path / "a.tif")))
    assert _npe2.get_reader(str(tmp_path / "a.txt")) is None
    assert _npe2.get_reader(str(tmp_path / "missing.tif")) is None
    assert _npe2.get_reader(str(tmp_path / "folder")) is None
    assert _npe2.get_reader([str(tmp_path / "a.tif"), str(tmp_path / "a.txt")]) is None


def test_reader_layer_types(tmp_path):
    tifffile.imwrite(tmp_path / "cells.tif", _noise((20, 30)))
    write_labels_tiff(tmp_path / "cells_masks.tif", np.ones((20, 30), np.int32))
    iio.imwrite(tmp_path / "rgb.png", _noise((20, 30, 3), np.uint8))
    path = [str(tmp_path / n) for n in ("cells.tif", "cells_masks.tif", "rgb.png")]
    layers = _npe2.get_reader(path)(path)
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("cells", "image"),
        ("cells_masks", "labels"),
        ("rgb", "image"),
    ]
    assert layers[0][1]["rgb"] is False and layers[2][1]["rgb"] is True
    assert layers[0][1]["metadata"]["source_path"] == path[0]


def test_reader_ome_zarr_multiscale_with_labels(tmp_path):
    path = write_ome_zarr(
        tmp_path / "m.ome.zarr",
        _noise((256, 256)),
        chunks=(64, 64),
        n_levels=3,
        scale=(0.5, 0.5),
        labels={"nuclei": np.ones((256, 256), np.int32)},
    )
    layers = _npe2.get_reader(str(path))(str(path))
    (img, ikw, ikind), (lab, lkw, lkind) = layers
    assert ikind == "image" and ikw["multiscale"] is True and ikw["scale"] == [0.5, 0.5]
    assert isinstance(img, list) and len(img) == 3 and isinstance(img[0], da.Array)
    assert lkind == "labels" and lkw["name"] == "nuclei" and len(lab) == 3


def test_reader_restores_autosaved_annotations(tmp_path):
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, _noise((20, 30)))
    scribbles = np.zeros((20, 30), np.uint8)
    scribbles[5, 2:9] = 2
    store = AnnotationStore(image)
    store.save("scribbles", scribbles, metadata={"label_kind": "scribbles", "scale": [1, 1]})
    layers = _npe2.get_reader(str(image))(str(image))
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    data, kw, _ = layers[1]
    np.testing.assert_array_equal(data, scribbles)
    assert kw["name"] == "scribbles" and kw["metadata"]["label_kind"] == "scribbles"
    # dropping the store itself on napari opens the annotations
    only = _npe2.get_reader(str(store.path))(str(store.path))
    assert [(kw["name"], kind) for _, kw, kind in only] == [("scribbles", "labels")]


def test_npe2_writers_round_trip(tmp_path):
    lab = np.zeros((64, 48), np.int32)
    lab[4:20, 8:30] = 3
    out = _npe2.write_labels_tiff(str(tmp_path / "l.tif"), lab, {"name": "l"})
    assert out == [str(tmp_path / "l.tif")]
    np.testing.assert_array_equal(read_image(out[0]), lab)

    meta = {"name": "cells", "scale": (2.0, 3.0), "translate": (1.0, 0.0)}
    (zpath,) = _npe2.write_labels_ome_zarr(str(tmp_path / "l.ome.zarr"), lab, meta)
    ((data, kw, kind),) = _npe2.get_reader(zpath)(zpath)
    assert kind == "labels" and kw["scale"] == [2.0, 3.0] and kw["translate"] == [1.0, 0.0]
    np.testing.assert_array_equal(np.asarray(data), lab)

    image = write_ome_zarr(tmp_path / "img.ome.zarr", _noise((64, 48)), chunks=(32, 32))
    (into,) = _npe2.write_labels_ome_zarr(str(image), [lab], {"name": "cells"})
    assert into.endswith("labels/cells") and ome_zarr_label_names(image) == ["cells"]
    assert read_multiscale(image)[1]["kind"] == "image"  # the image survived


def test_npe2_module_import_is_light():
    code = (
        "import sys, napari_dlcb.io._npe2; "
        "heavy = {'torch', 'zarr', 'dask', 'qtpy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
