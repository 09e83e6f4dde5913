"""Read 2-D microscopy images (TIFF, PNG, Zarr, OME-Zarr) and write label TIFFs.

Small images are read into memory; Zarr and OME-Zarr are opened lazily as dask
arrays (:mod:`napari_dlcb.io.omezarr`), so an image larger than RAM opens in
milliseconds and only the chunks on screen are ever read. OME-Zarr images are
written by :mod:`napari_dlcb.io.omezarr_write`; :func:`write_labels_tiff`
writes compressed label TIFFs.

Every user-facing failure raises :class:`~napari_dlcb.errors.DlcbError` with
one line that names the file, for example
``cannot read 'x.tif': file is truncated or not a TIFF``.

Reading is bounded: only regular files are opened (a pipe or a device such as
``/dev/zero`` is refused before it is touched), and the image size is read
from the header and checked against :data:`MAX_PIXELS` before anything is
decoded. A bigger TIFF is read lazily when the caller allows it (``lazy=True``)
and refused otherwise; a PNG cannot be read in parts, so a bigger one (or one
over Pillow's decompression-bomb limit) is refused with a message saying to
save it as a tiled TIFF or OME-Zarr.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.omezarr import read_zarr
from napari_dlcb.io.paths import is_labels_path, is_zarr_path

if TYPE_CHECKING:  # dask is imported where it is used: cheap import for npe2 and autosave
    import dask.array as da

__all__ = ["MAX_PIXELS", "check_source", "image_shape", "read_image", "write_labels_tiff"]

#: The most pixels (all channels and planes) an image may have to be read whole
#: (256 Mi, e.g. 16384 x 16384 grey): a uint8 image of that size takes 256 MiB, its
#: float32 copy for a model 1 GiB. Bigger TIFF and Zarr images are read lazily.
MAX_PIXELS = 2**28

_TIFF_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # tifffile.TiffFileError is a ValueError
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    RuntimeError,  # imagecodecs' decoder errors (DeflateError, LzwError...)
    MemoryError,  # absurd sizes from a garbled header
)


# --------------------------------------------------------------------------- reading
class _QuietWhileReading(logging.Filter):
    """Drops tifffile's log lines in threads reading through this module.

    tifffile logs what it finds wrong with a file ("invalid offset to first
    page") before raising; the caller's one-line DlcbError already says it.
    """

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)


_QUIET = _QuietWhileReading()


def _open_tiff(p: Path) -> Any:
    """``tifffile.TiffFile(p)`` with tifffile's own log lines silenced in this thread."""
    import tifffile

    log = logging.getLogger("tifffile")
    if _QUIET not in log.filters:
        log.addFilter(_QUIET)
    _QUIET.local.on = True
    try:
        return tifffile.TiffFile(p)
    finally:
        _QUIET.local.on = False


def check_source(path: str | os.PathLike) -> Path:
    """Refuse, in one line, what must not be opened: nothing there, a pipe, a device, 0 bytes.

    ``stat`` does not open the file, so a FIFO or ``/dev/zero`` is refused
    without blocking or reading from it. A Zarr folder passes.

    Parameters
    ----------
    path : str or path-like
        An image file or Zarr folder.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DlcbError
        Missing, not a regular file (or a Zarr folder), or empty.

    Examples
    --------
    >>> check_source("/dev/zero")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: cannot read 'zero': not a regular file (a device or a pipe?)
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DlcbError(f"cannot read '{p.name}': no such file") from None
    except OSError as exc:
        raise DlcbError(f"cannot read '{p.name}': {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        if not is_zarr_path(p):
            raise DlcbError(f"cannot read '{p.name}': a folder, not an image or a Zarr store")
        return p
    if not stat.S_ISREG(st.st_mode):
        raise DlcbError(f"cannot read '{p.name}': not a regular file (a device or a pipe?)")
    if st.st_size == 0:
        raise DlcbError(f"cannot read '{p.name}': the file is empty (0 bytes)")
    return p


def image_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The shape of an image from its header, without decoding the pixels.

    Parameters
    ----------
    path : str or path-like
        A TIFF, PNG or Zarr image.

    Returns
    -------
    tuple of int
        As the file stores it (TIFF: first series; PNG: (Y, X) or (Y, X, bands);
        Zarr: the full-resolution array).

    Raises
    ------
    DlcbError
        Unreadable header.
    """
    p = check_source(path)
    suffix = p.suffix.lower()
    if suffix == ".png":
        return _png_header(p)[0]
    if suffix in (".tif", ".tiff"):
        try:
            with _open_tiff(p) as tif:
                if not tif.series:
                    raise DlcbError(f"cannot read '{p.name}': file is truncated or not a TIFF")
                return tuple(int(n) for n in tif.series[0].shape)
        except _TIFF_READ_ERRORS as exc:
            raise DlcbError(f"cannot read '{p.name}': file is truncated or not a TIFF") from exc
    return tuple(int(n) for n in read_zarr(p).shape)


def _too_big(p: Path, shape: tuple[int, ...], how: str, limit: int = MAX_PIXELS) -> DlcbError:
    n = int(np.prod(shape, dtype=np.float64))
    return DlcbError(
        f"cannot read '{p.name}': {'x'.join(str(s) for s in shape)} is {n / 1e6:,.0f} megapixels, "
        f"more than the {limit / 1e6:,.0f} read whole; {how}"
    )


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
    check_source(p)
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


def _read_tiff(p: Path, *, lazy: bool) -> tuple[np.ndarray | da.Array, str | None]:
    import dask.array as da
    import zarr

    bad = f"cannot read '{p.name}': file is truncated or not a TIFF"
    try:
        tif = _open_tiff(p)
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
        elif int(np.prod(series.shape, dtype=np.float64)) > MAX_PIXELS:
            raise _too_big(
                p, tuple(series.shape), "open it lazily (napari, or read_image(lazy=True))"
            )
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


def _png_header(p: Path) -> tuple[tuple[int, ...], str]:
    """Shape and PIL mode of a PNG, the size read from its IHDR chunk before PIL opens it."""
    from PIL import Image, UnidentifiedImageError

    bad = f"cannot read '{p.name}': file is truncated or not a PNG"
    with open(p, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise DlcbError(bad)
    w, h = struct.unpack(">II", head[16:24])
    if w == 0 or h == 0:
        raise DlcbError(f"cannot read '{p.name}': the image is empty (shape ({h}, {w}))")
    limit = min(MAX_PIXELS, 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS))
    if w * h > limit:
        raise _too_big(
            p, (h, w), "save it as a tiled TIFF or OME-Zarr, which are read in parts", limit
        )
    try:
        with warnings.catch_warnings():  # the size was checked above
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                mode, bands = im.mode, len(im.getbands())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DlcbError(bad) from exc
    return ((h, w) if bands == 1 else (h, w, bands)), mode


def _read_png(p: Path) -> np.ndarray:
    import imageio.v3 as iio
    from PIL import Image

    _, mode = _png_header(p)
    bad = f"cannot read '{p.name}': file is truncated or not a PNG"
    try:
        with warnings.catch_warnings():  # the size was checked by _png_header
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if mode == "P" and is_labels_path(p):
                # palette label masks (e.g. PASCAL VOC): the index is the label
                with Image.open(p) as im:
                    im.load()
                    return np.asarray(im)
            return np.asarray(iio.imread(p, plugin="pillow"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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


def write_labels_tiff(path: str | os.PathLike, labels: Any) -> Path:
    """Write a label image as a deflate-compressed TIFF, keeping its integer dtype.

    Large arrays (dask, or over 256 MiB) are written block by block, one dask block
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
    block = (512, 512)  # TIFF tiles: the storage blocks of a tiled TIFF
    darr = da.asarray(labels)
    lead = darr.shape[:-2]
    darr = darr.rechunk((1,) * len(lead) + block)

    def blocks() -> Iterator[np.ndarray]:
        for idx in np.ndindex(*darr.numblocks):
            yield np.asarray(darr.blocks[idx]).reshape(darr.blocks[idx].shape[-2:])

    tifffile.imwrite(
        p,
        blocks(),
        shape=darr.shape,
        dtype=darr.dtype,
        tile=block,
        bigtiff=nbytes > 2**31,
        **opts,
    )
    return p
