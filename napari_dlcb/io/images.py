"""Read and write 2-D microscopy images: TIFF, PNG, Zarr and OME-Zarr.

Small images are read into memory; Zarr and OME-Zarr are opened lazily as dask
arrays, so an image larger than RAM opens in milliseconds and only the chunks
on screen are ever read. :func:`write_ome_zarr` writes a multiscale OME-Zarr
(NGFF 0.4 by default, 0.5 on request) block by block from a dask array with
bounded memory; :func:`write_labels_tiff` writes compressed label TIFFs.

Every user-facing failure raises :class:`~napari_dlcb.errors.DlcbError` with
one line that names the file, for example
``cannot read 'x.tif': file is truncated or not a TIFF``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # dask is imported where it is used: cheap import for npe2 and autosave
    import dask.array as da

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_NAME_SUFFIXES",
    "add_ome_zarr_labels",
    "image_stem",
    "is_labels_path",
    "is_zarr_path",
    "ome_zarr_label_names",
    "read_image",
    "read_multiscale",
    "read_zarr",
    "write_labels_tiff",
    "write_ome_zarr",
]

#: File name endings :func:`read_image` understands (``.ome.tif`` and
#: ``.ome.zarr`` are covered by their last suffix).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".zarr")

#: A file whose stem ends in one of these holds labels, not intensities.
LABEL_NAME_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_scribbles")

# longest first, so that "x.ome.tif" loses ".ome.tif" and not just ".tif"
_STRIP_SUFFIXES = (
    ".dlcb.zarr",
    ".ome.zarr",
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".png",
    ".zarr",
)

_SPATIAL = ("y", "x")
_COARSEST_SIDE = 1024  # default pyramid: stop once the longest side fits on a screen
_TIFF_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # tifffile.TiffFileError is a ValueError
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    RuntimeError,  # imagecodecs' decoder errors (DeflateError, LzwError...)
    MemoryError,  # absurd sizes from a garbled header
)


# --------------------------------------------------------------------------- names


def image_stem(path: str | os.PathLike) -> str:
    """Return the file name without its image suffixes.

    Parameters
    ----------
    path : str or path-like
        An image file or Zarr folder.

    Returns
    -------
    str
        ``"cells"`` for ``cells.ome.tif``, ``cells.ome.zarr``, ``cells.png`` ...

    Examples
    --------
    >>> image_stem("data/cells.ome.zarr")
    'cells'
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in _STRIP_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_labels_path(path: str | os.PathLike) -> bool:
    """Whether a file name says it holds labels (``*_labels``, ``*_mask(s)`` ...).

    Parameters
    ----------
    path : str or path-like
        File name or path.

    Returns
    -------
    bool
        True if the stem ends in one of :data:`LABEL_NAME_SUFFIXES`.

    Examples
    --------
    >>> is_labels_path("nuclei_masks.tif"), is_labels_path("nuclei.tif")
    (True, False)
    """
    return image_stem(path).lower().endswith(LABEL_NAME_SUFFIXES)


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Zarr store (v2 or v3 metadata at its root).

    Parameters
    ----------
    path : str or path-like
        A folder.

    Returns
    -------
    bool
        True for a folder holding ``zarr.json``, ``.zgroup`` or ``.zarray``.
    """
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ("zarr.json", ".zgroup", ".zarray"))


# --------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, lazy: bool = False) -> np.ndarray | da.Array:
    """Read a 2-D grey or RGB image from TIFF, PNG, Zarr or OME-Zarr.

    Singleton axes are dropped, an alpha channel is dropped (RGBA -> RGB,
    grey+alpha -> grey) and a channel-first RGB TIFF is returned channel-last.
    Stacks and multichannel images keep their other axes, so callers that need
    a plane check ``ndim``.

    Parameters
    ----------
    path : str or path-like
        ``.tif``/``.tiff`` (incl. OME-TIFF, first series, full resolution),
        ``.png``, or a ``.zarr``/``.ome.zarr`` folder (a plain Zarr array or
        the full-resolution level of an OME-Zarr image).
    lazy : bool
        Return a dask array that reads TIFF strips/tiles on demand instead of
        reading the whole file. Zarr is always lazy; PNG is always read whole.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Shape ``(Y, X)`` or ``(Y, X, 3)`` for the usual cases, in the file's dtype.

    Raises
    ------
    DlcbError
        Missing, truncated or corrupt file, unsupported suffix, empty image,
        or an image whose every pixel is NaN.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> _ = write_labels_tiff(p, np.eye(4, dtype=np.uint8))
    >>> read_image(p).shape
    (4, 4)
    """
    import dask.array as da

    p = Path(path)
    if not p.exists():
        raise DlcbError(f"cannot read '{p.name}': no such file")
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        data, axes = _read_tiff(p, lazy=lazy)
    elif suffix == ".png":
        data = _read_png(p)
        axes = "YXS" if data.ndim == 3 else "YX"
        if lazy:
            data = da.from_array(data, chunks=data.shape)
    elif suffix == ".zarr" or is_zarr_path(p):
        data, axes = read_zarr(p), None
    else:
        raise DlcbError(
            f"cannot read '{p.name}': unsupported file type '{suffix or p.name}' "
            "(use .tif, .tiff, .png, .zarr or .ome.zarr)"
        )
    data = _canonical_layout(data, axes)
    _check_not_empty(p, data)
    return data


def read_zarr(path: str | os.PathLike, *, level: int = 0) -> da.Array:
    """Open a Zarr array or one level of an OME-Zarr image lazily.

    Parameters
    ----------
    path : str or path-like
        A Zarr array folder, or an OME-Zarr image (NGFF 0.4 or 0.5).
    level : int
        Resolution level of a multiscale image; 0 is full resolution.

    Returns
    -------
    dask.array.Array
        Chunked like the store; nothing is read until computed.

    Raises
    ------
    DlcbError
        The folder is not a Zarr array or OME-Zarr image, or ``level`` does not exist.
    """
    import dask.array as da
    import zarr

    p = Path(path)
    node = _open_zarr(p)
    if isinstance(node, zarr.Array):
        if level != 0:
            raise DlcbError(f"cannot read '{p.name}': a plain Zarr array has only level 0")
        return da.from_zarr(node)
    levels, _ = read_multiscale(p, squeeze=False)
    if not 0 <= level < len(levels):
        raise DlcbError(f"cannot read '{p.name}': level {level} not in 0..{len(levels) - 1}")
    return levels[level]


def read_multiscale(
    path: str | os.PathLike, *, squeeze: bool = True
) -> tuple[list[da.Array], dict[str, Any]]:
    """Open an OME-Zarr multiscale image (or label image) lazily.

    Parameters
    ----------
    path : str or path-like
        An OME-Zarr image group (NGFF 0.4 or 0.5), a label image inside its
        ``labels/`` group, or a ``bioformats2raw`` root (first series is used).
    squeeze : bool
        Drop axes of length 1 at full resolution (e.g. ``t``/``c``/``z`` of a
        single plane) from every level, ``axes``, ``scale`` and ``translate``.

    Returns
    -------
    levels : list of dask.array.Array
        Full resolution first.
    metadata : dict
        ``axes`` (str, e.g. ``"yx"``), ``scale`` and ``translate`` (level 0,
        one float per axis), ``name`` (str), ``kind`` (``"image"`` or
        ``"labels"``), ``channel_axis`` (int or None), ``version`` (NGFF).

    Raises
    ------
    DlcbError
        Not an OME-Zarr multiscale image.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.ome.zarr"
    >>> _ = write_ome_zarr(p, np.zeros((64, 64), np.uint8), chunks=(32, 32), n_levels=2)
    >>> levels, meta = read_multiscale(p)
    >>> [lv.shape for lv in levels], meta["axes"]
    ([(64, 64), (32, 32)], 'yx')
    """
    import dask.array as da
    import zarr

    p = Path(path)
    group = _open_zarr(p)
    if isinstance(group, zarr.Array):
        raise DlcbError(f"cannot read '{p.name}': a plain Zarr array is not a multiscale image")
    attrs, version = _ome_attrs(group)
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs and "0" in group:
        return read_multiscale(p / "0", squeeze=squeeze)
    try:
        ms = attrs["multiscales"][0]
        paths = [d["path"] for d in ms["datasets"]]
        version = str(ms.get("version", version))
        axes = "".join((a["name"] if isinstance(a, dict) else a) for a in ms["axes"])
    except (KeyError, IndexError, TypeError) as exc:
        raise DlcbError(f"cannot read '{p.name}': not an OME-Zarr multiscale image") from exc
    try:
        levels = [da.from_zarr(group[q]) for q in paths]
    except (KeyError, FileNotFoundError) as exc:
        raise DlcbError(f"cannot read '{p.name}': a resolution level is missing") from exc
    ndim = levels[0].ndim
    if len(axes) != ndim:
        raise DlcbError(f"cannot read '{p.name}': {len(axes)} axes for a {ndim}-D array")
    scale, translate = _level0_transform(ms, ndim)
    if squeeze:
        keep = [i for i, n in enumerate(levels[0].shape) if n != 1]
        if len(keep) >= 2:
            drop = tuple(i for i in range(ndim) if i not in keep)
            levels = [lv.squeeze(axis=drop) if drop else lv for lv in levels]
            axes = "".join(axes[i] for i in keep)
            scale = [scale[i] for i in keep]
            translate = [translate[i] for i in keep]
    meta = {
        "axes": axes,
        "scale": scale,
        "translate": translate,
        "name": str(ms.get("name") or image_stem(p)),
        "kind": "labels" if "image-label" in attrs else "image",
        "channel_axis": axes.index("c") if "c" in axes else None,
        "version": version,
    }
    return levels, meta


def ome_zarr_label_names(path: str | os.PathLike) -> list[str]:
    """Names of the label images stored in an OME-Zarr image's ``labels/`` group.

    Parameters
    ----------
    path : str or path-like
        An OME-Zarr image.

    Returns
    -------
    list of str
        Empty if the image has no labels (or is not OME-Zarr).
    """
    import zarr

    labels_dir = Path(path) / "labels"
    if not is_zarr_path(labels_dir):
        return []
    try:
        group = zarr.open_group(labels_dir, mode="r")
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return []
    attrs, _ = _ome_attrs(group)
    names = attrs.get("labels", [])
    return [str(n) for n in names if is_zarr_path(labels_dir / str(n))]


def _read_tiff(p: Path, *, lazy: bool) -> tuple[np.ndarray | da.Array, str | None]:
    import dask.array as da
    import tifffile
    import zarr

    bad = f"cannot read '{p.name}': file is truncated or not a TIFF"
    try:
        tif = tifffile.TiffFile(p)
    except _TIFF_READ_ERRORS as exc:
        raise DlcbError(bad) from exc
    except OSError as exc:
        raise DlcbError(f"cannot read '{p.name}': {exc.strerror or exc}") from exc
    try:
        if not tif.series:
            raise DlcbError(bad)
        series = tif.series[0]
        axes = series.axes
        if 0 in series.shape:
            raise DlcbError(f"cannot read '{p.name}': the image is empty (shape {series.shape})")
        size = p.stat().st_size
        for page in series.pages:
            if page is None:
                continue
            offsets = getattr(page, "dataoffsets", ())
            counts = getattr(page, "databytecounts", ())
            if any(o + c > size for o, c in zip(offsets, counts)):
                raise DlcbError(bad)
        if lazy:
            store = series.aszarr(level=0)
            data: np.ndarray | da.Array = da.from_zarr(zarr.open(store, mode="r"))
        else:
            data = series.asarray(level=0)
    except DlcbError:
        tif.close()
        raise
    except _TIFF_READ_ERRORS as exc:
        tif.close()
        raise DlcbError(bad) from exc
    if not lazy:
        tif.close()
    return data, axes


def _read_png(p: Path) -> np.ndarray:
    import imageio.v3 as iio
    from PIL import Image, UnidentifiedImageError

    bad = f"cannot read '{p.name}': file is truncated or not a PNG"
    try:
        with Image.open(p) as im:
            mode = im.mode
            if mode == "P" and is_labels_path(p):
                # palette label masks (e.g. PASCAL VOC): the index is the label
                im.load()
                return np.asarray(im)
        return np.asarray(iio.imread(p, plugin="pillow"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DlcbError(f"cannot read '{p.name}': no such file") from exc
        raise DlcbError(bad) from exc


def _canonical_layout(data: Any, axes: str | None) -> Any:
    """Samples (RGB) last, alpha dropped, singleton axes dropped."""
    import dask.array as da

    if axes is not None and "S" in axes and data.ndim == len(axes):
        s = axes.index("S")
        if s != data.ndim - 1:
            move = da.moveaxis if isinstance(data, da.Array) else np.moveaxis
            data = move(data, s, -1)
        if data.shape[-1] == 4:  # RGBA -> RGB
            data = data[..., :3]
        elif data.shape[-1] == 2:  # grey + alpha -> grey
            data = data[..., 0]
    if data.ndim > 2 and 1 in data.shape:
        drop = tuple(i for i, n in enumerate(data.shape) if n == 1)
        if data.ndim - len(drop) >= 2:
            data = data.squeeze(axis=drop)
    return data


def _check_not_empty(p: Path, data: Any) -> None:
    if data.size == 0 or data.ndim < 2:
        raise DlcbError(f"cannot read '{p.name}': the image is empty (shape {tuple(data.shape)})")
    if isinstance(data, np.ndarray) and data.dtype.kind in "fc" and np.isnan(data).all():
        raise DlcbError(f"cannot read '{p.name}': every pixel is NaN")


def _open_zarr(p: Path) -> Any:
    import zarr

    if not p.exists():
        raise DlcbError(f"cannot read '{p.name}': no such file")
    try:
        return zarr.open(p, mode="r")
    except (FileNotFoundError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise DlcbError(f"cannot read '{p.name}': not a Zarr array or OME-Zarr image") from exc


def _ome_attrs(group: Any) -> tuple[dict[str, Any], str | None]:
    """NGFF attributes of a group: 0.5 nests them under "ome", 0.4 does not."""
    attrs = dict(group.attrs)
    if isinstance(attrs.get("ome"), dict):
        ome = attrs["ome"]
        return ome, str(ome.get("version", "0.5"))
    return attrs, None


def _level0_transform(ms: Mapping[str, Any], ndim: int) -> tuple[list[float], list[float]]:
    scale = [1.0] * ndim
    translate = [0.0] * ndim
    for transforms in (
        ms["datasets"][0].get("coordinateTransformations", []),
        ms.get("coordinateTransformations", []),
    ):
        for t in transforms:
            if t.get("type") == "scale" and len(t.get("scale", ())) == ndim:
                translate = [tr * s for tr, s in zip(translate, t["scale"])]
                scale = [a * b for a, b in zip(scale, t["scale"])]
            elif t.get("type") == "translation" and len(t.get("translation", ())) == ndim:
                translate = [a + b for a, b in zip(translate, t["translation"])]
    return scale, translate


# --------------------------------------------------------------------------- writing


def write_labels_tiff(path: str | os.PathLike, labels: Any) -> Path:
    """Write a label image as a deflate-compressed TIFF, keeping its integer dtype.

    Large arrays (dask, or over 256 MiB) are written tile by tile, one dask block
    at a time, as a tiled BigTIFF when needed, so memory stays bounded.

    Parameters
    ----------
    path : str or path-like
        Destination ``.tif``/``.tiff``; parent folders are created.
    labels : array-like
        Integer or boolean array (booleans are written as uint8 0/1).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    DlcbError
        Not an integer array, or nothing to write.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> p = write_labels_tiff(pathlib.Path(tempfile.mkdtemp()) / "l.tif", np.ones((3, 3), np.int32))
    >>> read_image(p).dtype
    dtype('int32')
    """
    import dask.array as da
    import tifffile

    p = Path(path)
    if isinstance(labels, (list, tuple)) and labels and hasattr(labels[0], "shape"):
        labels = labels[0]  # multiscale layer data: full resolution
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise DlcbError(f"cannot write '{p.name}': labels must be integers, not {labels.dtype}")
    if labels.size == 0:
        raise DlcbError(f"cannot write '{p.name}': the labels are empty")
    p.parent.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = {
        "compression": "zlib",
        "compressionargs": {"level": 6},
        "predictor": labels.dtype.itemsize <= 4,  # libtiff has no 64-bit predictor
        "photometric": "minisblack",
        "metadata": None,
    }
    nbytes = labels.size * labels.dtype.itemsize
    big = isinstance(labels, da.Array) or nbytes > 256 * 2**20
    if not big:
        tifffile.imwrite(p, np.asarray(labels), **opts)
        return p
    tile = (512, 512)
    darr = da.asarray(labels)
    lead = darr.shape[:-2]
    darr = darr.rechunk((1,) * len(lead) + tile)

    def tiles() -> Iterator[np.ndarray]:
        for idx in np.ndindex(*darr.numblocks):
            yield np.asarray(darr.blocks[idx]).reshape(darr.blocks[idx].shape[-2:])

    tifffile.imwrite(
        p,
        tiles(),
        shape=darr.shape,
        dtype=darr.dtype,
        tile=tile,
        bigtiff=nbytes > 2**31,
        **opts,
    )
    return p


def write_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    *,
    axes: str = "yx",
    chunks: Sequence[int] = (1024, 1024),
    n_levels: int | None = None,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    kind: Literal["image", "labels"] = "image",
    labels: Mapping[str, Any] | None = None,
    name: str | None = None,
    version: Literal["0.4", "0.5"] = "0.4",
) -> Path:
    """Write a multiscale OME-Zarr image block by block.

    Level 0 is stored straight from ``data`` (numpy or dask) one chunk at a time;
    each coarser level is then computed from the previous *stored* level, so a
    dask graph of a larger-than-memory image is evaluated once and never held
    whole. Images are downsampled 2x2 by the mean, labels by taking every second
    pixel (never inventing label values). Only ``y`` and ``x`` are downsampled.
    The folder is built beside ``path`` and renamed into place when complete, so
    a crash never leaves a half-written image at ``path``.

    Parameters
    ----------
    path : str or path-like
        Destination folder (``*.ome.zarr``); an existing Zarr store there is replaced.
    data : array-like
        The image, shaped as ``axes``.
    axes : str
        Axis names from ``"tczyx"`` in NGFF order, e.g. ``"yx"``, ``"cyx"``, ``"zyx"``.
    chunks : sequence of int
        Chunk shape of the ``y`` and ``x`` axes (other axes get chunks of 1).
    n_levels : int, optional
        Number of resolution levels. Default: until the longest side is at most
        1024 px. Fewer are written if the image is too small to halve further.
    scale, translate : sequence of float, optional
        Physical pixel size and origin of level 0, one value per axis.
    kind : {"image", "labels"}
        ``"labels"`` writes an NGFF label image (``image-label`` metadata,
        nearest downsampling; integer data only).
    labels : mapping of str to array-like, optional
        Label images to store in the image's ``labels/`` group, each shaped like
        ``data``. They are written in the same pass as the image, so a shared
        dask graph (image and labels from one computation) runs once.
    name : str, optional
        Multiscale name; defaults to the file stem.
    version : {"0.4", "0.5"}
        NGFF version: 0.4 (Zarr v2, read by most tools today) or 0.5 (Zarr v3).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DlcbError
        Bad axes, shapes, dtype, or a destination that is not a Zarr store.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "img.ome.zarr"
    >>> _ = write_ome_zarr(p, np.ones((256, 256), np.uint16), chunks=(64, 64), n_levels=3)
    >>> [lv.shape for lv in read_multiscale(p)[0]]
    [(256, 256), (128, 128), (64, 64)]
    """
    import dask.array as da

    p = Path(path)
    arr = _as_dask(data)
    _check_axes(p, axes, arr.ndim)
    label_arrays = {str(k): _as_dask(v) for k, v in (labels or {}).items()}
    for key, lab in label_arrays.items():
        if lab.shape != arr.shape:
            raise DlcbError(
                f"cannot write '{p.name}': labels '{key}' shape {lab.shape} != image {arr.shape}"
            )
        _check_label_dtype(p, lab)
    if kind == "labels":
        _check_label_dtype(p, arr)
    if version not in ("0.4", "0.5"):
        raise DlcbError(f"cannot write '{p.name}': NGFF version must be '0.4' or '0.5'")
    n = _n_levels(arr.shape, axes, n_levels)
    spec = _LevelSpec(axes, tuple(chunks), n, scale, translate, version)

    with _replace_dir(p) as tmp:
        root = _create_group(tmp, version)
        targets = [(root, arr, kind, name or image_stem(p))]
        if label_arrays:
            lab_group = root.create_group("labels")
            _set_ome_attrs(lab_group, {"labels": list(label_arrays)}, version)
            for key, lab in label_arrays.items():
                targets.append((lab_group.create_group(key), lab, "labels", key))
        stored = [_create_level(g, "0", a.shape, a.dtype, spec) for g, a, _, _ in targets]
        da.store(
            [a.rechunk(z.chunks) for (_, a, _, _), z in zip(targets, stored)],
            stored,
            lock=False,
        )
        for group, _, knd, nm in targets:
            _write_pyramid(group, knd, spec)
            _write_multiscale_attrs(group, knd, nm, spec, is_child_label=group is not root)
    return p


def add_ome_zarr_labels(
    path: str | os.PathLike,
    labels: Any,
    *,
    name: str = "labels",
) -> Path:
    """Add (or replace) a label image in an existing OME-Zarr image's ``labels/`` group.

    The label pyramid gets the image's number of levels, chunks, axes and
    transforms, so it overlays the image at every resolution.

    Parameters
    ----------
    path : str or path-like
        An OME-Zarr image written by any NGFF 0.4/0.5 writer.
    labels : array-like
        Integer labels with the image's full-resolution shape.
    name : str
        Name of the label image (``labels/<name>``).

    Returns
    -------
    pathlib.Path
        The label image folder, ``path / "labels" / name``.

    Raises
    ------
    DlcbError
        Not an OME-Zarr image, or labels of another shape or dtype.
    """
    import dask.array as da
    import zarr

    p = Path(path)
    levels, meta = read_multiscale(p, squeeze=False)
    lab = _as_dask(labels)
    if lab.shape != levels[0].shape:
        raise DlcbError(
            f"cannot write '{name}': labels shape {lab.shape} != image {levels[0].shape}"
        )
    _check_label_dtype(p, lab)
    if not name or "/" in name or name.startswith("."):
        raise DlcbError(f"cannot write labels named '{name}' into '{p.name}'")
    axes = meta["axes"]
    yx_chunks = tuple(levels[0].chunksize[axes.index(a)] for a in _SPATIAL if a in axes)
    root = zarr.open_group(p, mode="r+")
    version = "0.5" if root.metadata.zarr_format == 3 else "0.4"
    spec = _LevelSpec(axes, yx_chunks, len(levels), meta["scale"], meta["translate"], version)
    lab_root = root.require_group("labels")
    attrs, _ = _ome_attrs(lab_root)
    names = [str(x) for x in attrs.get("labels", []) if str(x) != name] + [name]
    dest = p / "labels" / name
    with _replace_dir(dest) as tmp:
        group = _create_group(tmp, version)
        z = _create_level(group, "0", lab.shape, lab.dtype, spec)
        da.store(lab.rechunk(z.chunks), z, lock=False)
        _write_pyramid(group, "labels", spec)
        _write_multiscale_attrs(group, "labels", name, spec, is_child_label=True)
    _set_ome_attrs(lab_root, {"labels": names}, version)
    return dest


class _LevelSpec:
    """Geometry shared by every pyramid written in one call."""

    def __init__(
        self,
        axes: str,
        chunks: tuple[int, ...],
        n_levels: int,
        scale: Sequence[float] | None,
        translate: Sequence[float] | None,
        version: str,
    ) -> None:
        ndim = len(axes)
        if len(chunks) != 2 or any(int(c) < 1 for c in chunks):
            raise DlcbError(f"chunks must be two positive sizes (y, x), not {chunks}")
        for label, vec in (("scale", scale), ("translate", translate)):
            if vec is not None and len(vec) != ndim:
                raise DlcbError(f"{label} needs {ndim} values for axes '{axes}', got {len(vec)}")
        self.axes = axes
        self.yx_chunks = tuple(int(c) for c in chunks)
        self.n_levels = n_levels
        self.scale = [float(s) for s in scale] if scale is not None else [1.0] * ndim
        self.translate = [float(t) for t in translate] if translate is not None else [0.0] * ndim
        self.version = version

    def chunks_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = []
        for ax, n in zip(self.axes, shape):
            c = self.yx_chunks[_SPATIAL.index(ax)] if ax in _SPATIAL else 1
            out.append(max(1, min(c, n)))
        return tuple(out)

    def factor(self, level: int) -> list[int]:
        return [2**level if ax in _SPATIAL else 1 for ax in self.axes]


def _as_dask(data: Any) -> da.Array:
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        data = data[0]
    arr = data if hasattr(data, "shape") and hasattr(data, "dtype") else np.asarray(data)
    return da.from_array(arr, chunks=tuple(min(n, 1024) or 1 for n in arr.shape))


def _check_axes(p: Path, axes: str, ndim: int) -> None:
    in_order = "".join(a for a in "tczyx" if a in axes) == axes
    if len(axes) != ndim or not in_order or not axes.endswith("yx"):
        raise DlcbError(
            f"cannot write '{p.name}': axes '{axes}' must be {ndim} of t, c, z, y, x "
            "in that order, ending in 'yx'"
        )


def _check_label_dtype(p: Path, arr: da.Array) -> None:
    if arr.dtype.kind not in "iub":
        raise DlcbError(f"cannot write '{p.name}': labels must be integers, not {arr.dtype}")


def _n_levels(shape: tuple[int, ...], axes: str, requested: int | None) -> int:
    yx = [n for a, n in zip(axes, shape) if a in _SPATIAL]
    possible = 1 + int(math.floor(math.log2(max(1, min(yx)))))  # halving keeps >= 1 px
    if requested is None:
        wanted = 1 + max(0, math.ceil(math.log2(max(yx) / _COARSEST_SIDE)))
    else:
        if requested < 1:
            raise DlcbError(f"n_levels must be at least 1, not {requested}")
        wanted = requested
    return min(wanted, possible)


def _create_group(path: Path, version: str) -> Any:
    import zarr

    return zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)


def _create_level(
    group: Any, key: str, shape: tuple[int, ...], dtype: Any, spec: _LevelSpec
) -> Any:
    dtype = np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)
    kwargs: dict[str, Any] = {"fill_value": 0}
    if spec.version == "0.4":
        import numcodecs

        kwargs["compressors"] = numcodecs.Blosc(
            cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE
        )
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        from zarr.codecs import BloscCodec

        kwargs["compressors"] = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
        kwargs["dimension_names"] = list(spec.axes)
    return group.create_array(
        key, shape=shape, dtype=dtype, chunks=spec.chunks_for(shape), **kwargs
    )


def _write_pyramid(group: Any, kind: str, spec: _LevelSpec) -> None:
    import dask.array as da

    spatial = [i for i, a in enumerate(spec.axes) if a in _SPATIAL]
    for level in range(1, spec.n_levels):
        src = da.from_zarr(group[str(level - 1)])
        trimmed = tuple(
            slice(0, n - n % 2) if i in spatial else slice(None) for i, n in enumerate(src.shape)
        )
        src = src[trimmed]
        out_shape = tuple(n // 2 if i in spatial else n for i, n in enumerate(src.shape))
        chunks = spec.chunks_for(out_shape)
        # blocks of twice the output chunk: every output chunk comes from one block
        src = src.rechunk(tuple(c * 2 if i in spatial else c for i, c in enumerate(chunks)))
        if kind == "labels":
            down = src[
                tuple(
                    slice(None, None, 2) if i in spatial else slice(None) for i in range(src.ndim)
                )
            ]
        else:
            dtype = src.dtype
            down = da.coarsen(np.mean, src.astype(np.float32), dict.fromkeys(spatial, 2))
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                down = da.clip(da.round(down), info.min, info.max)
            down = down.astype(dtype)
        z = _create_level(group, str(level), out_shape, src.dtype, spec)
        da.store(down.rechunk(z.chunks), z, lock=False)


def _write_multiscale_attrs(
    group: Any, kind: str, name: str, spec: _LevelSpec, *, is_child_label: bool
) -> None:
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    datasets = []
    for level in range(spec.n_levels):
        f = spec.factor(level)
        s = [s0 * fi for s0, fi in zip(spec.scale, f)]
        # a mean over f pixels is centred (f - 1) / 2 pixels in; a stride pick is not
        shift = 0.0 if kind == "labels" else 0.5
        t = [t0 + shift * (fi - 1) * s0 for t0, fi, s0 in zip(spec.translate, f, spec.scale)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": s}]
        if any(t):
            transforms.append({"type": "translation", "translation": t})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    fmt = FormatV04() if spec.version == "0.4" else FormatV05()
    meta = {"method": "mean" if kind == "image" else "stride", "writer": "napari-dlcb"}
    write_multiscales_metadata(
        group, datasets, fmt=fmt, axes=list(spec.axes), name=name, metadata=meta
    )
    if kind == "labels":
        label_meta: dict[str, Any] = {"version": spec.version}
        if is_child_label:
            label_meta["source"] = {"image": "../../"}
        _set_ome_attrs(group, {"image-label": label_meta}, spec.version)


def _set_ome_attrs(group: Any, values: Mapping[str, Any], version: str) -> None:
    if version == "0.4":
        group.attrs.update(dict(values))
    else:
        ome = dict(group.attrs.get("ome", {}))
        ome.update(values)
        ome["version"] = version
        group.attrs["ome"] = ome


@contextlib.contextmanager
def _replace_dir(dest: Path) -> Iterator[Path]:
    """Build a folder beside ``dest`` and swap it in only when complete."""
    if dest.exists() and not (dest.is_dir() and is_zarr_path(dest)):
        kind = "folder" if dest.is_dir() else "file"
        raise DlcbError(f"refusing to overwrite '{dest.name}': it is a {kind}, not a Zarr store")
    dest.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = dest.with_name(f".{dest.name}.tmp-{token}")
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{token}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
