"""2-D images as (C, Y, X): the one channel rule, and lazy windows of any image.

The channel rule
----------------
Every image a model sees goes through :func:`channel_layout`:

* ``channel_axis`` given: the image must be 3-D and that axis holds the
  channels, all of them (nothing is dropped);
* a 2-D image is one channel (grey);
* a 3-D image without ``channel_axis`` is RGB(A) when its last axis has 3 or 4
  entries (channels last; an alpha channel is dropped), one channel when its
  first axis has length 1, and otherwise a one-line :class:`DlcbError` asking
  for ``channel_axis``. Nothing else is guessed: a (3, 512, 512) stack and a
  3-channel image look the same, so the caller must say which it is.

:func:`to_cyx` applies the rule to an in-memory image; :class:`ImageSource`
applies it to a lazy one (zarr, dask, a path) and reads (C, h, w) windows of
it, mirrored beyond the border, without reading the rest.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["MIN_SIDE", "ImageSource", "channel_layout", "check_size", "reflect_index", "to_cyx"]

#: The fewest pixels an image may have along each of its (Y, X) axes: a model with
#: a receptive field of dozens of pixels has nothing to work with below this.
MIN_SIDE = 8


def check_size(
    shape: tuple[int, ...], name: str = "image", channel_axis: int | None = None
) -> None:
    """Raise a one-line :class:`DlcbError` for an image below ``MIN_SIDE`` pixels a side.

    Examples
    --------
    >>> check_size((1, 1), "dot.png")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: dot.png is 1x1 pixels; napari-dlcb needs at least 8x8
    """
    shape = tuple(int(n) for n in shape)
    if not 2 <= len(shape) <= 3:
        raise DlcbError(f"{name} is not a 2-D grey or multichannel image (shape {shape})")
    try:
        axis, _ = channel_layout(shape, channel_axis)
    except DlcbError:
        axis = None
    yx = [n for i, n in enumerate(shape) if i != axis][:2] if len(shape) == 3 else shape[:2]
    if min(yx) < MIN_SIDE:
        raise DlcbError(
            f"{name} is {yx[0]}x{yx[1]} pixels; napari-dlcb needs at least {MIN_SIDE}x{MIN_SIDE}"
        )


def channel_layout(
    shape: tuple[int, ...], channel_axis: int | None = None
) -> tuple[int | None, int]:
    """Where the channels of an image of ``shape`` are, by the one channel rule.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    channel_axis : int, optional
        The channel axis, if the caller knows it.

    Returns
    -------
    axis : int or None
        The channel axis (non-negative), or None for a 2-D grey image.
    channels : int
        How many channels are used: the first ``channels`` entries of ``axis``
        (3 for an RGBA image, whose alpha is dropped).

    Raises
    ------
    DlcbError
        Not 2-D or 3-D, a ``channel_axis`` out of range or given for a 2-D
        image, or a 3-D image whose channel axis cannot be told.

    Examples
    --------
    >>> channel_layout((5, 6)), channel_layout((5, 6, 4)), channel_layout((2, 5, 6), 0)
    ((None, 1), (2, 3), (0, 2))
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise DlcbError(f"expected a 2-D grey or multichannel image, got shape {shape}")
    if channel_axis is not None:
        if ndim != 3:
            raise DlcbError(f"channel_axis={channel_axis} needs a 3-D image, got shape {shape}")
        if not -3 <= channel_axis < 3:
            raise DlcbError(f"channel_axis={channel_axis} is out of range for a 3-D image")
        axis = channel_axis % 3
        return axis, shape[axis]
    if ndim == 2:
        return None, 1
    if shape[-1] in (3, 4):
        return 2, 3
    if shape[0] == 1:
        return 0, 1
    raise DlcbError(
        f"image of shape {shape} is not 2-D; pass channel_axis to say which axis holds the channels"
    )


def to_cyx(image: Any, channel_axis: int | None = None) -> np.ndarray:
    """Return a (C, Y, X) view of a 2-D grey or multichannel image (see :func:`channel_layout`).

    Parameters
    ----------
    image : array-like
        2-D, or 3-D with channels.
    channel_axis : int, optional
        The channel axis of a 3-D image.

    Returns
    -------
    ndarray, shape (C, Y, X)
        A view where possible, in the image's dtype.

    Examples
    --------
    >>> to_cyx(np.zeros((5, 6, 3))).shape
    (3, 5, 6)
    >>> to_cyx(np.zeros((2, 5, 6)), channel_axis=0).shape
    (2, 5, 6)
    """
    arr = np.asarray(image)
    axis, channels = channel_layout(arr.shape, channel_axis)
    if axis is None:
        return arr[None]
    arr = np.moveaxis(arr, axis, 0)
    return arr[:channels] if channels < arr.shape[0] else arr


def reflect_index(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, size)`` like ``np.pad(mode="reflect")``.

    Examples
    --------
    >>> reflect_index(-2, 5, 4).tolist()
    [2, 1, 0, 1, 2, 3, 2]
    """
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


class ImageSource:
    """A 2-D image, in memory or lazy, read as (C, h, w) windows of a mirrored plane.

    Windows may reach outside the image: indices are mirrored with numpy's
    ``"reflect"`` rule, so every window is a window of one and the same
    infinite reflect-padded image, whatever was read before. Only the pixels
    of a window are read from a lazy image.

    Parameters
    ----------
    array : array-like, zarr array, dask array or path
        The image; a path is opened as a Zarr array or the full-resolution
        level of an OME-Zarr image.
    channel_axis : int, optional
        As for :func:`channel_layout`.

    Attributes
    ----------
    shape : (int, int)
        Rows and columns.
    channels : int
        Number of channels read.

    Examples
    --------
    >>> src = ImageSource(np.arange(12.0).reshape(3, 4))
    >>> src.shape, src.read((-1, 1), (0, 2)).tolist()
    ((3, 4), [[[4.0, 5.0], [0.0, 1.0]]])
    """

    def __init__(self, array: Any, channel_axis: int | None = None) -> None:
        if isinstance(array, (str, os.PathLike)):
            from napari_dlcb.io.omezarr import open_zarr_image

            array = open_zarr_image(array)
        if not hasattr(array, "shape") or not hasattr(array, "__getitem__"):
            array = np.asarray(array)
        self.array = array
        self.channel_axis, self.channels = channel_layout(tuple(array.shape), channel_axis)
        spatial = [n for i, n in enumerate(array.shape) if i != self.channel_axis]
        self.shape: tuple[int, int] = (int(spatial[0]), int(spatial[1]))
        if min(self.shape) < 1:
            raise DlcbError(f"image of shape {tuple(array.shape)} is empty")

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Read the window ``[r0, r1) x [c0, c1)`` of the mirrored image as (C, h, w)."""
        r_idx = reflect_index(rows[0], rows[1], self.shape[0])
        c_idx = reflect_index(cols[0], cols[1], self.shape[1])
        r_lo, r_hi = int(r_idx.min()), int(r_idx.max()) + 1
        c_lo, c_hi = int(c_idx.min()), int(c_idx.max()) + 1
        key: list[slice] = [slice(r_lo, r_hi), slice(c_lo, c_hi)]
        if self.channel_axis is not None:
            key.insert(self.channel_axis, slice(0, self.channels))
        block = np.asarray(self.array[tuple(key)])
        if self.channel_axis is None:
            block = block[None]
        elif self.channel_axis != 0:
            block = np.moveaxis(block, self.channel_axis, 0)
        inside = (
            rows[0] >= 0 and cols[0] >= 0 and rows[1] <= self.shape[0] and cols[1] <= self.shape[1]
        )
        if inside:
            return block  # no mirrored pixels
        r_local, c_local = r_idx - r_lo, c_idx - c_lo
        return block[:, r_local[:, None], c_local[None, :]]
