"""Write OME-Zarr images: the one OME-Zarr writer of napari-dlcb.

Everything is built in a temporary sibling folder (``.<name>.tmp-<id>``) and
renamed onto the destination only when complete
(:class:`~napari_dlcb.io.atomic.PendingDir`), so a
crash or a cancelled job never leaves a half-written image at the
destination, and a replaced image stays readable until the new one is in place.

* :func:`write_ome_zarr`: an array (numpy or dask, larger than memory) as a
  multiscale image, with optional label images, in one pass;
* :func:`add_ome_zarr_labels`: a label image into an existing image;
* :class:`OmeZarrBuilder`: create the arrays, fill them block by block (from
  this process or from dask workers writing into :attr:`OmeZarrBuilder.path`),
  then :meth:`~OmeZarrBuilder.finish`; what block-wise prediction uses.

Images are NGFF 0.4 (Zarr v2, ``/`` chunk keys) by default, 0.5 (Zarr v3) on
request, Blosc-zstd compressed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import PendingDir
from napari_dlcb.io.omezarr import SPARSE_ATTR, ome_attrs, read_multiscale
from napari_dlcb.io.omezarr_levels import (
    SPATIAL,
    LevelSpec,
    create_group,
    create_level,
    set_ome_attrs,
    write_multiscale_attrs,
    write_pyramid,
)
from napari_dlcb.io.paths import image_stem

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["OmeZarrBuilder", "add_ome_zarr_labels", "write_ome_zarr"]

_COARSEST_SIDE = 1024  # default pyramid: stop once the longest side fits on a screen


class OmeZarrBuilder:
    """One OME-Zarr image and its label images, built in a :class:`PendingDir`.

    Create the full-resolution arrays with :meth:`image` and :meth:`labels`,
    fill them (in any order, from any process that can write :attr:`path`),
    then :meth:`finish` writes the coarser levels and the NGFF metadata and
    moves the image into place. Leaving a ``with`` block without
    :meth:`finish` (an error, a cancelled job) deletes everything.

    Parameters
    ----------
    dest : str or path-like
        The image folder (``*.ome.zarr``).
    version : {"0.4", "0.5"}
        NGFF version: 0.4 (Zarr v2) or 0.5 (Zarr v3).
    overwrite, zarr_only : bool
        As for :class:`PendingDir`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dest = pathlib.Path(tempfile.mkdtemp()) / "p.ome.zarr"
    >>> with OmeZarrBuilder(dest) as out:
    ...     arr = out.image((2, 64, 64), "uint8", axes="cyx", chunks=(32, 32), whole_axes="c")
    ...     arr[:, :32, :32] = 7
    ...     _ = out.finish()
    >>> arr.chunks, read_multiscale(dest)[1]["axes"]
    ((2, 32, 32), 'cyx')
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        *,
        version: Literal["0.4", "0.5"] = "0.4",
        overwrite: bool = True,
        zarr_only: bool = True,
    ) -> None:
        if version not in ("0.4", "0.5"):
            raise DlcbError(
                f"cannot write '{Path(dest).name}': NGFF version must be '0.4' or '0.5'"
            )
        self.pending = PendingDir(dest, overwrite=overwrite, zarr_only=zarr_only)
        self.version = version
        self.root = create_group(self.pending.path, version)
        self._parts: list[tuple[Any, str, str, LevelSpec, dict, bool]] = []
        self._label_names: list[str] = []
        self._done = False

    @property
    def path(self) -> Path:
        """The temporary folder being written."""
        return self.pending.path

    def image(
        self,
        shape: tuple[int, ...],
        dtype: Any,
        *,
        axes: str,
        chunks: Sequence[int],
        n_levels: int = 1,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        name: str | None = None,
        kind: Literal["image", "labels"] = "image",
        metadata: Mapping[str, Any] | None = None,
        whole_axes: str = "",
        parent_image: bool = False,
    ) -> Any:
        """Create the image's full-resolution array (``<root>/0``) and return it.

        ``chunks`` are the (y, x) chunk sides; axes in ``whole_axes`` (e.g.
        ``"c"``) are stored whole in every chunk, other axes one entry per
        chunk. ``metadata`` is added to the multiscale's ``metadata``.
        ``parent_image`` marks a label image that lives in the ``labels/``
        group of an image two folders up.
        """
        spec = LevelSpec(axes, tuple(chunks), n_levels, scale, translate, self.version, whole_axes)
        array = create_level(self.root, "0", shape, dtype, spec)
        name = name or image_stem(self.pending.dest)
        self._parts.append((self.root, kind, name, spec, dict(metadata or {}), parent_image))
        return array

    def labels(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: Any,
        *,
        axes: str,
        chunks: Sequence[int],
        n_levels: int = 1,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
    ) -> Any:
        """Create the full-resolution array of the label image ``labels/<name>`` and return it."""
        lab_root = self.root.require_group("labels")
        self._label_names.append(str(name))
        set_ome_attrs(lab_root, {"labels": list(self._label_names)}, self.version)
        group = lab_root.create_group(str(name))
        spec = LevelSpec(axes, tuple(chunks), n_levels, scale, translate, self.version)
        array = create_level(group, "0", shape, dtype, spec)
        self._parts.append((group, "labels", str(name), spec, {}, True))
        return array

    def finish(self) -> Path:
        """Write the coarser levels and the metadata, then move the image into place."""
        for group, kind, name, spec, extra, child in self._parts:
            write_pyramid(group, kind, spec)
            write_multiscale_attrs(group, kind, name, spec, is_child_label=child, extra=extra)
        # zarr omits chunks equal to the fill value: say so, so that a reader does not
        # mistake them for missing chunks (see napari_dlcb.io.omezarr.missing_chunks)
        self.root.attrs.update({SPARSE_ATTR: {"empty_chunks": "omitted"}})
        self._done = True
        return self.pending.commit()

    def discard(self) -> None:
        """Delete the unfinished image."""
        self.pending.discard()

    def __enter__(self) -> OmeZarrBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.discard()


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
    """Write a multiscale OME-Zarr image block by block, atomically.

    Level 0 is stored straight from ``data`` (numpy or dask) one chunk at a time;
    each coarser level is then computed from the previous *stored* level, so a
    dask graph of a larger-than-memory image is evaluated once and never held
    whole. Images are downsampled 2x2 by the mean, labels by taking every second
    pixel (never inventing label values); only ``y`` and ``x`` are downsampled.

    Parameters
    ----------
    path : str or path-like
        Destination folder (``*.ome.zarr``); an existing Zarr store there is replaced.
    data : array-like
        The image, shaped as ``axes``.
    axes : str
        Names from ``"tczyx"`` in NGFF order: ``"yx"``, ``"cyx"``, ``"zyx"`` ...
    chunks : sequence of int
        Chunk shape of the ``y`` and ``x`` axes (other axes get chunks of 1).
    n_levels : int, optional
        Number of resolution levels. Default: until the longest side is at most
        1024 px. Fewer are written if the image is too small to halve further.
    scale, translate : sequence of float, optional
        Physical pixel size and origin of level 0, one value per axis.
    kind : {"image", "labels"}
        ``"labels"``: an NGFF label image (integers, nearest downsampling).
    labels : mapping of str to array-like, optional
        Label images to store in the image's ``labels/`` group, each shaped like
        ``data``. They are written in the same pass as the image, so a shared
        dask graph (image and labels from one computation) runs once.
    name : str, optional
        Multiscale name (default: the file stem).
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
    arr, label_arrays = _checked(p, data, labels, axes=axes, kind=kind)
    geometry = {"axes": axes, "chunks": chunks, "scale": scale, "translate": translate}
    geometry["n_levels"] = _n_levels(arr.shape, axes, n_levels)
    with OmeZarrBuilder(p, version=version) as out:
        targets = [(out.image(arr.shape, arr.dtype, name=name, kind=kind, **geometry), arr)]
        for key, lab in label_arrays.items():
            targets.append((out.labels(key, lab.shape, lab.dtype, **geometry), lab))
        da.store([a.rechunk(z.chunks) for z, a in targets], [z for z, _ in targets], lock=False)
        out.finish()
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
    yx_chunks = tuple(levels[0].chunksize[axes.index(a)] for a in SPATIAL if a in axes)
    root = zarr.open_group(p, mode="r+")
    version = "0.5" if root.metadata.zarr_format == 3 else "0.4"
    lab_root = root.require_group("labels")
    attrs, _ = ome_attrs(lab_root)
    names = [str(x) for x in attrs.get("labels", []) if str(x) != name] + [name]
    dest = p / "labels" / name
    with OmeZarrBuilder(dest, version=version) as out:
        z = out.image(
            lab.shape,
            lab.dtype,
            axes=axes,
            chunks=yx_chunks,
            n_levels=len(levels),
            scale=meta["scale"],
            translate=meta["translate"],
            name=name,
            kind="labels",
            parent_image=True,
        )
        da.store(lab.rechunk(z.chunks), z, lock=False)
        out.finish()
    set_ome_attrs(lab_root, {"labels": names}, version)
    return dest


def _as_dask(data: Any) -> da.Array:
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    if isinstance(data, (list, tuple)) and data and hasattr(data[0], "shape"):
        data = data[0]
    arr = data if hasattr(data, "shape") and hasattr(data, "dtype") else np.asarray(data)
    return da.from_array(arr, chunks=tuple(min(n, 1024) or 1 for n in arr.shape))


def _checked(
    p: Path, data: Any, labels: Mapping[str, Any] | None, *, axes: str, kind: str
) -> tuple[da.Array, dict[str, da.Array]]:
    """The image and its label images as dask arrays, checked against each other."""
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
    return arr, label_arrays


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
    yx = [n for a, n in zip(axes, shape) if a in SPATIAL]
    possible = 1 + int(math.floor(math.log2(max(1, min(yx)))))  # halving keeps >= 1 px
    if requested is None:
        wanted = 1 + max(0, math.ceil(math.log2(max(yx) / _COARSEST_SIDE)))
    else:
        if requested < 1:
            raise DlcbError(f"n_levels must be at least 1, not {requested}")
        wanted = requested
    return min(wanted, possible)
