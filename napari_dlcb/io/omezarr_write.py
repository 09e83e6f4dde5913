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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import PendingDir
from napari_dlcb.io.omezarr import ome_attrs, read_multiscale
from napari_dlcb.io.paths import image_stem

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["OmeZarrBuilder", "add_ome_zarr_labels", "write_ome_zarr"]

_SPATIAL = ("y", "x")
_COARSEST_SIDE = 1024  # default pyramid: stop once the longest side fits on a screen


class OmeZarrBuilder:
    """One OME-Zarr image and its label images, built in a :class:`PendingDir`.

    Create the full-resolution arrays with :meth:`image` and :meth:`labels`,
    fill them (any order, any process that can write :attr:`path`), then call
    :meth:`finish` to write the coarser levels and the NGFF metadata and move
    the image into place. Leaving a ``with`` block without :meth:`finish`
    (an error, a cancelled job) deletes everything.

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
        self.root = _create_group(self.pending.path, version)
        self._parts: list[tuple[Any, str, str, _LevelSpec, dict, bool]] = []
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
        spec = _LevelSpec(axes, tuple(chunks), n_levels, scale, translate, self.version, whole_axes)
        array = _create_level(self.root, "0", shape, dtype, spec)
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
        _set_ome_attrs(lab_root, {"labels": list(self._label_names)}, self.version)
        group = lab_root.create_group(str(name))
        spec = _LevelSpec(axes, tuple(chunks), n_levels, scale, translate, self.version)
        array = _create_level(group, "0", shape, dtype, spec)
        self._parts.append((group, "labels", str(name), spec, {}, True))
        return array

    def finish(self) -> Path:
        """Write the coarser levels and the metadata, then move the image into place."""
        for group, kind, name, spec, extra, child in self._parts:
            _write_pyramid(group, kind, spec)
            _write_multiscale_attrs(group, kind, name, spec, is_child_label=child, extra=extra)
        self._done = True
        return self.pending.commit()

    def discard(self) -> None:
        """Delete the unfinished image."""
        self.pending.discard()

    def __enter__(self) -> OmeZarrBuilder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
    n = _n_levels(arr.shape, axes, n_levels)
    geometry = {
        "axes": axes,
        "chunks": chunks,
        "n_levels": n,
        "scale": scale,
        "translate": translate,
    }
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
    yx_chunks = tuple(levels[0].chunksize[axes.index(a)] for a in _SPATIAL if a in axes)
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
        whole_axes: str = "",
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
        self.whole_axes = whole_axes

    def chunks_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = []
        for ax, n in zip(self.axes, shape):
            if ax in _SPATIAL:
                c = self.yx_chunks[_SPATIAL.index(ax)]
            else:
                c = n if ax in self.whole_axes else 1
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
    group: Any,
    kind: str,
    name: str,
    spec: _LevelSpec,
    *,
    is_child_label: bool,
    extra: Mapping[str, Any] | None = None,
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
    meta = {
        "method": "mean" if kind == "image" else "stride",
        "writer": "napari-dlcb",
        **dict(extra or {}),
    }
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
