"""The store a block-wise prediction writes: an OME-Zarr image of probabilities (+ labels).

Layout (NGFF 0.4, Zarr v2): ``0`` holds the probabilities (C, Y, X), stored as
``round(255 p)`` uint8 by default (error <= 0.002) or float16/float32, in
chunks of (C, block, block); ``labels/segmentation/0`` the labels (Y, X)
int32. The store is built by the package's one OME-Zarr writer
(:class:`~napari_dlcb.io.omezarr_write.OmeZarrBuilder`) at a temporary path
and renamed into place when complete.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from napari_dlcb.io.omezarr_write import OmeZarrBuilder

__all__ = [
    "LABELS_NAME",
    "PROBABILITY_DTYPES",
    "Block",
    "create_store",
    "decode_probabilities",
    "encode_probabilities",
    "open_prediction",
    "open_prediction_lazy",
    "prediction_arrays",
    "store_block",
]

#: Name of the label image written under ``labels/``.
LABELS_NAME = "segmentation"
#: How probabilities may be stored.
PROBABILITY_DTYPES = ("uint8", "float16", "float32")

#: An output block: ((row start, row stop), (column start, column stop)).
Block = tuple[tuple[int, int], tuple[int, int]]


def encode_probabilities(prob: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities as stored: uint8 = round(255 p), or float16/float32."""
    if dtype == "uint8":
        return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    return prob.astype(dtype)


def decode_probabilities(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_probabilities`, float32."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1 / 255)
    return stored.astype(np.float32)


def create_store(
    dest: str | os.PathLike,
    *,
    channels: int,
    shape: tuple[int, int],
    block: int,
    dtype: str,
    labels: bool,
    activation: str | None,
    halo: int,
    scale: tuple[float, float] = (1.0, 1.0),
    overwrite: bool = False,
) -> OmeZarrBuilder:
    """Start the OME-Zarr store of a prediction, at a temporary path beside ``dest``.

    ``<tmp>/0`` holds the probabilities (C, Y, X) of ``dtype`` in chunks of
    (C, block, block), ``<tmp>/labels/segmentation/0`` the labels (Y, X) int32
    if ``labels``. Fill them (:func:`prediction_arrays` opens them from any
    process), then ``finish()`` renames the store to ``dest``. ``activation``
    and ``halo`` are recorded in the image's metadata.
    """
    from napari_dlcb.io.omezarr_write import OmeZarrBuilder

    chunks = (block, block)
    info = {
        "block": block,
        "halo": halo,
        "activation": activation or "none",
        "probability_scale": 255 if dtype == "uint8" else 1,
    }
    out = OmeZarrBuilder(dest, overwrite=overwrite, zarr_only=False)
    try:
        out.image(
            (channels, *shape),
            dtype,
            axes="cyx",
            chunks=chunks,
            scale=(1.0, *scale),
            name="probabilities",
            metadata=info,
            whole_axes="c",
        )
        if labels:
            out.labels(LABELS_NAME, shape, "int32", axes="yx", chunks=chunks, scale=scale)
    except BaseException:
        out.discard()
        raise
    return out


def prediction_arrays(path: str | os.PathLike, mode: str = "r+") -> tuple[Any, Any | None]:
    """(probabilities, labels or None) zarr arrays of a prediction store (finished or not)."""
    import zarr

    root = zarr.open_group(str(path), mode=mode)
    return root["0"], root.get(f"labels/{LABELS_NAME}/0")


def store_block(
    prob: np.ndarray,
    block: Block,
    prob_array: Any,
    label_array: Any,
    *,
    dtype: str,
    class_labels: bool = False,
    class_values: Sequence[int] | None = None,
) -> None:
    """Write one block's probabilities (and, with ``class_labels``, its class labels)."""
    from napari_dlcb.inference.postprocess import classes_from_probabilities

    (r0, r1), (c0, c1) = block
    prob_array[:, r0:r1, c0:c1] = encode_probabilities(prob, dtype)
    if class_labels and label_array is not None:
        label_array[r0:r1, c0:c1] = classes_from_probabilities(prob, class_values)


def open_prediction(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read what :func:`~napari_dlcb.inference.blockwise.predict_zarr` wrote, as float32 probabilities and labels.

    Parameters
    ----------
    path : str or path-like
        The ``dest`` of ``predict_zarr``.

    Returns
    -------
    probabilities : ndarray of float32, shape (C, Y, X)
        uint8 storage is divided by 255.
    labels : ndarray of int32, shape (Y, X), or None

    Notes
    -----
    This loads everything into memory; use :func:`open_prediction_lazy` for
    large results.
    """
    prob, labels = prediction_arrays(path, mode="r")
    return decode_probabilities(np.asarray(prob)), None if labels is None else np.asarray(labels)


def open_prediction_lazy(
    path: str | os.PathLike, *, smallest: int = 2048
) -> tuple[list[Any], list[Any] | None]:
    """Open what :func:`~napari_dlcb.inference.blockwise.predict_zarr` wrote lazily, as dask pyramids for a viewer.

    Nothing is read until a level's chunks are computed, so a result larger
    than memory can be shown as napari multiscale layers.

    Parameters
    ----------
    path : str or path-like
        The ``dest`` of ``predict_zarr``.
    smallest : int
        Coarser levels (every 2nd pixel of the previous one) are added until
        both sides are at most this.

    Returns
    -------
    probabilities : list of dask arrays, shapes (C, Y / 2**k, X / 2**k)
        As stored (uint8 = p * 255, or float).
    labels : list of dask arrays (Y / 2**k, X / 2**k), or None

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from napari_dlcb.inference.blockwise import predict_zarr
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "p.ome.zarr"
    >>> _ = list(predict_zarr(torch.nn.Conv2d(1, 2, 1), np.ones((300, 200), np.float32), out, block=128, device="cpu"))
    >>> prob, labels = open_prediction_lazy(out, smallest=100)
    >>> [p.shape for p in prob], labels
    ([(2, 300, 200), (2, 150, 100), (2, 75, 50)], None)
    """
    import dask.array as da

    def pyramid(arr: Any) -> list[Any]:
        levels = [da.from_zarr(arr)]
        while max(levels[-1].shape[-2:]) > smallest:
            levels.append(levels[-1][..., ::2, ::2])
        return levels

    prob, labels = prediction_arrays(path, mode="r")
    return pyramid(prob), None if labels is None else pyramid(labels)
