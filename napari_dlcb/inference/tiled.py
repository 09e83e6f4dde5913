"""Tiled, blended prediction of a 2-D image in memory, or of one viewport of any image.

* :func:`predict_tiled`: a whole in-memory image;
* :func:`predict_viewport`: one viewport of an image, with real context from
  around it (the live preview in the GUI);
* :func:`~napari_dlcb.inference.blockwise.predict_zarr`: an image larger than
  memory, block by block into an OME-Zarr store.

All three run the same engine (:mod:`napari_dlcb.inference.tiling`, which
explains how tiles are placed and blended) and give the same numbers on the
same pixels.

Normalisation
-------------
``normalizer`` maps an image to float32. It is applied to each tile as it is
read, so it must be point-wise: fixed statistics, as the dataset modes of
:class:`napari_dlcb.data.normalize.Normalizer` have. A ``Normalizer`` in a
per-image mode is first frozen with statistics of the whole image by
:func:`~napari_dlcb.data.normalize.freeze_normalizer`, which reads all of it:
freeze once and pass the frozen normaliser when predicting many viewports.

Nothing in this module imports torch at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.data.images import ImageSource
from napari_dlcb.data.normalize import cyx_normalizer, freeze_normalizer
from napari_dlcb.device import resolve_device
from napari_dlcb.inference.tiling import (
    Region,
    TileEngine,
    as_pair,
    check_activation,
    check_sizes,
    clip_region,
)
from napari_dlcb.models.spec import DEFAULT_HALO

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["freeze_normalizer", "predict_tiled", "predict_viewport"]


def predict_viewport(
    model: Any,
    image: Any,
    region: Region,
    *,
    tile: int | tuple[int, int] | None = None,
    halo: int = DEFAULT_HALO,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    size_multiple: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """Predict one rectangular region (a viewport) of an image, with context from around it.

    Pixels up to ``halo`` beyond the region are read from the image (mirrored
    only where the region touches the image border), so the result equals
    the corresponding crop of :func:`predict_tiled` on the whole image for
    any model whose receptive field is within ``halo``. This is what the live
    preview calls for the current viewport.

    Parameters
    ----------
    model, batch_size, device, channel_axis, activation, amp, size_multiple, progress
        As for :func:`predict_tiled`.
    image : array-like, zarr array, dask array, path or ImageSource
        2-D (Y, X), or with channels (see
        :func:`~napari_dlcb.data.images.channel_layout`). Only the region plus
        its halo is read.
    region : (slice, slice) or ((r0, r1), (c0, c1))
        Rows and columns to predict; clipped to the image.
    tile : int or (int, int), optional
        Largest tile side in pixels (input window, halo included). Default:
        the region plus its halo as one tile up to ``AUTO_MAX_TILE`` (1152)
        pixels per side, else the fewest tiles that fit.
    halo, overlap
        As for :func:`predict_tiled`.
    normalizer : callable, optional
        As for :func:`predict_tiled`. A per-image :class:`Normalizer` is frozen
        on the whole image first, which reads all of it: freeze once with
        :func:`freeze_normalizer` when predicting many regions.

    Returns
    -------
    ndarray of float32, shape (K, h, w)
        Probabilities (or logits) for exactly the (clipped) region.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> img = np.random.default_rng(0).random((300, 400), dtype=np.float32)
    >>> predict_viewport(model, img, (slice(100, 164), slice(0, 50)), device="cpu").shape
    (2, 64, 50)
    """
    from napari_dlcb.models.state import inference_mode_on

    activation = check_activation(activation)
    overlap = check_sizes(halo, overlap, batch_size)
    source = image if isinstance(image, ImageSource) else ImageSource(image, channel_axis)
    rows, cols = clip_region(region, source.shape)
    normalize = cyx_normalizer(freeze_normalizer(normalizer, source))
    dev = resolve_device(device)
    engine = TileEngine(model, dev, normalize, activation, amp, int(batch_size), size_multiple)
    with inference_mode_on(model, dev):
        return engine.predict(
            source,
            (rows, cols),
            tile=as_pair(tile, "tile"),
            halo=int(halo),
            overlap=overlap,
            progress=progress,
        )


# over 80 lines only by its signature and docstring (13 documented options)
def predict_tiled(
    model: Any,
    image: Any,
    *,
    tile: int | tuple[int, int] | None = 256,
    halo: int = DEFAULT_HALO,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    size_multiple: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """Predict a whole image tile by tile, blending overlapping tiles without seams.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (B, C, Y, X) float32 and returns (B, K, Y, X) logits (a U-Net).
        It is run in eval mode under ``torch.inference_mode`` and handed back
        with its training flags and device unchanged.
    image : array-like
        2-D (Y, X), RGB(A) (Y, X, 3|4), or 3-D with a ``channel_axis``; any
        size (smaller than a tile, not a multiple of it) and any real dtype.
    tile : int or (int, int) or None
        Largest input tile side, halo included (256); ``None`` chooses large
        tiles automatically. Smaller images use one smaller tile.
    halo : int
        Context pixels at each tile edge that are not written (32; a model's
        own is ``InferenceSpec.halo``). Beyond the border the image is mirrored.
    overlap : int, optional
        Width of the cosine blending zone between tiles (default ``halo``).
    batch_size : int
        Tiles per forward pass; the result does not depend on it.
    device : str or torch.device
        ``"auto"``: CUDA, else MPS, else CPU.
    normalizer : callable, optional
        Image -> float32, e.g. a :class:`~napari_dlcb.data.normalize.Normalizer`;
        None means the image is already normalised. Per-image normalisers are
        frozen on the whole image (see :func:`freeze_normalizer`).
    channel_axis : int, optional
        Channel axis of a multichannel image.
    activation : {"softmax", "sigmoid", None}
        Output activation over the class axis; None returns logits.
    amp : bool
        float16 autocast on CUDA only.
    size_multiple : int, optional
        Tile sides the model needs (``InferenceSpec.size_multiple``).
    progress : callable, optional
        ``progress(done, total)`` after every batch.

    Returns
    -------
    ndarray of float32, shape (K, Y, X)
        Per-class probabilities on the input grid.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Conv2d(1, 3, 3, padding=1)
    >>> img = np.random.default_rng(0).random((300, 517))
    >>> prob = predict_tiled(model, img, tile=128, halo=8, device="cpu")
    >>> prob.shape, bool(np.allclose(prob.sum(0), 1, atol=1e-5))
    ((3, 300, 517), True)
    """
    source = ImageSource(image, channel_axis)
    return predict_viewport(
        model,
        source,
        ((0, source.shape[0]), (0, source.shape[1])),
        tile=tile,
        halo=halo,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        normalizer=normalizer,
        activation=activation,
        amp=amp,
        size_multiple=size_multiple,
        progress=progress,
    )
