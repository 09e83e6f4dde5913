"""Open Zarr arrays and OME-Zarr images lazily (NGFF 0.4 and 0.5), and read their metadata.

:func:`read_multiscale` opens every resolution level of an OME-Zarr image as
dask arrays; :func:`read_zarr` one level (or a plain Zarr array);
:func:`open_zarr_image` the full-resolution level as a zarr array, for code
that reads windows of it directly (tiled prediction). Writing is in
:mod:`napari_dlcb.io.omezarr_write`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.paths import image_stem, is_zarr_path

if TYPE_CHECKING:  # dask is imported where it is used: cheap import for npe2 and autosave
    import dask.array as da

__all__ = [
    "SPARSE_ATTR",
    "MissingChunksWarning",
    "missing_chunks",
    "ome_attrs",
    "ome_zarr_label_names",
    "open_zarr",
    "open_zarr_image",
    "pixel_size",
    "read_multiscale",
    "read_zarr",
]


#: group attribute of stores written by napari-dlcb, whose empty chunks are omitted on purpose
SPARSE_ATTR = "napari_dlcb_store"


class MissingChunksWarning(UserWarning):
    """Part of a Zarr image's chunks are missing: that part reads as the fill value."""


def missing_chunks(array: Any) -> tuple[int, int]:
    """How many of a Zarr array's chunks are absent from its store.

    Zarr reads an absent chunk as the array's fill value (usually 0) without a
    word, which is right for sparse labels but hides a damaged or partly
    copied image. Counting the stored chunk keys costs one listing of the
    store, nothing is read.

    Parameters
    ----------
    array : zarr.Array

    Returns
    -------
    missing, total : int
    """
    try:
        total = int(array.nchunks)
        present = int(array.nchunks_initialized)
    except (AttributeError, OSError, TypeError, ValueError):  # a store that cannot list
        return 0, 0
    return max(total - present, 0), total


def _warn_missing(array: Any, p: Path, what: str = "") -> None:
    missing, total = missing_chunks(array)
    if missing:
        warnings.warn(
            f"'{p.name}'{what}: {missing} of {total} chunks are missing from the store and "
            f"read as {array.fill_value!r} (an incomplete copy or a damaged store?)",
            MissingChunksWarning,
            stacklevel=3,
        )


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

    Warns
    -----
    MissingChunksWarning
        Chunks of an image (not of labels) are missing from the store.
    """
    import dask.array as da
    import zarr

    p = Path(path)
    node = open_zarr(p)
    if isinstance(node, zarr.Array):
        if level != 0:
            raise DlcbError(f"cannot read '{p.name}': a plain Zarr array has only level 0")
        from napari_dlcb.io.paths import is_labels_path

        if not is_labels_path(p):
            _warn_missing(node, p)
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
    >>> from napari_dlcb.io.omezarr_write import write_ome_zarr
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.ome.zarr"
    >>> _ = write_ome_zarr(p, np.zeros((64, 64), np.uint8), chunks=(32, 32), n_levels=2)
    >>> levels, meta = read_multiscale(p)
    >>> [lv.shape for lv in levels], meta["axes"]
    ([(64, 64), (32, 32)], 'yx')
    """
    import zarr

    p = Path(path)
    group = open_zarr(p)
    if isinstance(group, zarr.Array):
        raise DlcbError(f"cannot read '{p.name}': a plain Zarr array is not a multiscale image")
    attrs, version = ome_attrs(group)
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs and "0" in group:
        return read_multiscale(p / "0", squeeze=squeeze)
    try:
        ms = attrs["multiscales"][0]
        paths = [d["path"] for d in ms["datasets"]]
        version = str(ms.get("version", version))
        axes = "".join((a["name"] if isinstance(a, dict) else a) for a in ms["axes"])
    except (KeyError, IndexError, TypeError) as exc:
        raise DlcbError(f"cannot read '{p.name}': not an OME-Zarr multiscale image") from exc
    arrays, levels = _open_levels(group, paths, p)
    # sparse label images and napari-dlcb's own stores omit empty chunks on purpose
    if "image-label" not in attrs and SPARSE_ATTR not in dict(group.attrs):
        _warn_missing(arrays[0], p, " (full resolution)")
    ndim = levels[0].ndim
    if len(axes) != ndim:
        raise DlcbError(f"cannot read '{p.name}': {len(axes)} axes for a {ndim}-D array")
    scale, translate = _level0_transform(ms, ndim)
    if squeeze:
        levels, axes, scale, translate = _squeezed(levels, axes, scale, translate)
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


def _open_levels(group: Any, paths: list[str], p: Path) -> tuple[list[Any], list[da.Array]]:
    """The resolution levels of a multiscale group, as Zarr arrays and lazily as dask arrays.

    Parameters
    ----------
    group : zarr.Group
        The multiscale image's group.
    paths : list of str
        Its datasets' paths, full resolution first.
    p : pathlib.Path
        The image's path, for messages.

    Returns
    -------
    arrays : list of zarr.Array
        The levels as stored.
    levels : list of dask.array.Array
        The same, lazily.
    """
    import dask.array as da

    try:
        arrays = [group[q] for q in paths]
        levels = [da.from_zarr(a) for a in arrays]
    except (KeyError, FileNotFoundError, ValueError, TypeError) as exc:
        raise DlcbError(f"cannot read '{p.name}': a resolution level is missing") from exc
    if not levels:
        raise DlcbError(f"cannot read '{p.name}': not an OME-Zarr multiscale image")
    return arrays, levels


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
    attrs, _ = ome_attrs(group)
    names = attrs.get("labels", [])
    return [str(n) for n in names if is_zarr_path(labels_dir / str(n))]


def open_zarr(path: str | os.PathLike) -> Any:
    """Open a Zarr array or group read-only, with a one-line error naming the file.

    Parameters
    ----------
    path : str or path-like
        A Zarr folder (v2 or v3).

    Returns
    -------
    zarr.Array or zarr.Group
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise DlcbError(f"cannot read '{p.name}': no such file")
    try:
        return zarr.open(p, mode="r")
    except (FileNotFoundError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise DlcbError(f"cannot read '{p.name}': not a Zarr array or OME-Zarr image") from exc


def ome_attrs(group: Any) -> tuple[dict[str, Any], str | None]:
    """NGFF attributes of a group: 0.5 nests them under "ome", 0.4 does not."""
    attrs = dict(group.attrs)
    if isinstance(attrs.get("ome"), dict):
        ome = attrs["ome"]
        return ome, str(ome.get("version", "0.5"))
    return attrs, None


def _squeezed(
    levels: list[Any], axes: str, scale: list[float], translate: list[float]
) -> tuple[list[Any], str, list[float], list[float]]:
    """Drop the axes of length 1 at full resolution (keeping at least two)."""
    keep = [i for i, n in enumerate(levels[0].shape) if n != 1]
    if len(keep) < 2:
        return levels, axes, scale, translate
    drop = tuple(i for i in range(len(axes)) if i not in keep)
    levels = [lv.squeeze(axis=drop) if drop else lv for lv in levels]
    return (
        levels,
        "".join(axes[i] for i in keep),
        [scale[i] for i in keep],
        [translate[i] for i in keep],
    )


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


def open_zarr_image(path: str | os.PathLike) -> Any:
    """Open a Zarr array, or the full-resolution array of an OME-Zarr image, as a zarr array.

    Parameters
    ----------
    path : str or path-like
        A Zarr array folder, an OME-Zarr image group, or a ``bioformats2raw``
        root (its first series).

    Returns
    -------
    zarr.Array
        Nothing is read until it is indexed.

    Raises
    ------
    DlcbError
        Missing, or not a Zarr array or image.
    """
    p = Path(path)
    node = open_zarr(p)
    if hasattr(node, "shape"):
        return node
    attrs, _ = ome_attrs(node)
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs and "0" in node:
        return open_zarr_image(p / "0")
    ms = attrs.get("multiscales")
    try:
        key = ms[0]["datasets"][0]["path"] if ms else "0"
        return node[key]
    except (KeyError, IndexError, TypeError) as err:
        raise DlcbError(f"cannot read '{p.name}': a Zarr group without an image array") from err


def pixel_size(path: Any) -> tuple[float, float]:
    """Pixel size (y, x) of an OME-Zarr image path; (1, 1) for anything else.

    Parameters
    ----------
    path : str, path-like or anything
        An OME-Zarr image, or any other source (an array...).

    Returns
    -------
    (float, float)
    """
    if not isinstance(path, (str, os.PathLike)):
        return 1.0, 1.0
    try:
        _, meta = read_multiscale(path, squeeze=False)
        axes, scale = meta["axes"], meta["scale"]
        return float(scale[axes.index("y")]), float(scale[axes.index("x")])
    except (DlcbError, KeyError, ValueError, OSError):
        return 1.0, 1.0
