"""Headless segmentation with a saved or built-in model: image in, probabilities and labels out.

:func:`segment` is what the CLI (``napari-dlcb predict segmentation``) and
scripts call; :func:`segment_zarr` is the same for images larger than memory.
Both read everything they need from the model's metadata, once, as an
:class:`~napari_dlcb.models.spec.InferenceSpec`: the input normalisation, the
output activation, the context a tile needs (the model's declared halo) and
the label convention.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.spec import InferenceSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_dlcb.models.meta import ModelMeta

__all__ = ["Segmentation", "load_for_inference", "segment", "segment_zarr"]


class Segmentation(NamedTuple):
    """Result of :func:`segment`; unpacks as ``probabilities, labels = ...``."""

    probabilities: np.ndarray
    """float32 (C, Y, X), one channel per ``meta.classes`` entry (one for sigmoid models)."""
    labels: np.ndarray
    """int32 (Y, X): instance ids (0 = background) or class label values."""


def load_for_inference(
    model_or_path: Any, *, device: str | torch.device = "cpu"
) -> tuple[Any, ModelMeta]:
    """Resolve what :func:`segment` accepts into ``(model, meta)``.

    Parameters
    ----------
    model_or_path : str, path-like or (model, meta)
        A napari-dlcb model folder, ``"builtin"`` / ``"builtin:<name>"``, a
        bioimage.io package, or an already loaded ``(model, meta)`` pair
        (``meta`` may be a :class:`ModelMeta` or its dict form).
    device : str or torch.device
        Where a model loaded from disk is put.

    Returns
    -------
    model : torch.nn.Module
    meta : ModelMeta
    """
    from napari_dlcb.models.meta import ModelMeta

    if isinstance(model_or_path, (tuple, list)):
        if len(model_or_path) != 2:
            raise DlcbError("pass a model folder or a (model, meta) pair")
        model, meta = model_or_path
        if isinstance(meta, dict):
            meta = ModelMeta.from_dict(meta)
        if not isinstance(meta, ModelMeta):
            raise DlcbError(f"meta must be a ModelMeta or a dict, got {type(meta).__name__}")
        return model, meta
    if isinstance(model_or_path, (str, os.PathLike)):
        from napari_dlcb.models.registry import resolve_base

        return resolve_base(model_or_path, task="segmentation", device=device)
    raise DlcbError(
        f"expected a model folder or a (model, meta) pair, got {type(model_or_path).__name__}"
    )


def _check_meta(meta: ModelMeta) -> None:
    if meta.task != "segmentation":
        raise DlcbError(f"this is a {meta.task} model, not a segmentation model")
    if meta.input_axes != "bcyx":
        raise DlcbError(f"the model expects {meta.input_axes!r} inputs, not 2-D images (bcyx)")


def _image_cyx(image: Any, channel_axis: int | None, in_channels: int) -> np.ndarray:
    """The image as (C, Y, X) by the one channel rule, checked against the model.

    NaN/Inf pixels, a boolean or complex dtype and too small a size are refused,
    as in training.
    """
    from napari_dlcb.data.images import to_cyx
    from napari_dlcb.data.normalize import check_pixels

    cyx = to_cyx(image, channel_axis)
    if cyx.shape[0] != in_channels:
        raise DlcbError(
            f"the image has {cyx.shape[0]} channel(s) but the model expects {in_channels}"
            + ("; pass channel_axis" if channel_axis is None and np.ndim(image) == 3 else "")
        )
    check_pixels(cyx, "the image", channel_axis=0)
    return cyx


def segment(
    model_or_path: Any,
    image: Any,
    *,
    tile: int | tuple[int, int] | None = 256,
    halo: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    channel_axis: int | None = None,
    amp: bool = True,
    progress: Callable[[int, int], Any] | None = None,
    **postprocess: Any,
) -> Segmentation:
    """Segment an image with a trained model: tiled prediction, then labels.

    Parameters
    ----------
    model_or_path : str, path-like or (model, meta)
        A saved model folder (:func:`napari_dlcb.models.saved.save_model`),
        ``"builtin"``, a bioimage.io package, or a ``(model, meta)`` pair.
    image : array-like
        2-D grey image, or multichannel with ``channel_axis`` (an RGB last
        axis is recognised without it), any dtype and size.
    tile, halo, batch_size, device, channel_axis, amp, progress
        As for :func:`~napari_dlcb.inference.tiled.predict_tiled`; ``halo``
        defaults to the model's declared halo (e.g. a BioImage.IO output halo), else 32.
    **postprocess
        Options for :func:`~napari_dlcb.inference.postprocess.labels_from_probabilities`
        (e.g. ``min_size=30`` for instance models), over the model's own
        ``meta.extra["postprocess"]``.

    Returns
    -------
    Segmentation
        ``(probabilities, labels)``: float32 (C, Y, X) and int32 (Y, X).

    Raises
    ------
    DlcbError
        An image with NaN or infinite pixels (refused as in training: no value is
        guessed), boolean or complex pixels, or under 8 pixels a side.

    Examples
    --------
    >>> from napari_dlcb.data.synthetic import synthetic_nuclei
    >>> from napari_dlcb.models.saved import ModelMeta
    >>> from napari_dlcb.models.unet import UNet2D
    >>> net = UNet2D(1, 3, base=4, depth=2)
    >>> meta = ModelMeta("segmentation", net.architecture(), ["background", "interior", "boundary"],
    ...                  label_kind="instances", normalization={"mode": "per_image_zscore"})
    >>> img, _ = synthetic_nuclei((128, 160), seed=0)
    >>> prob, labels = segment((net, meta), img, device="cpu")
    >>> prob.shape, labels.shape, labels.dtype.name
    ((3, 128, 160), (128, 160), 'int32')

    With a saved model folder or the built-in model: ``segment("my_model/", img)``,
    ``segment("builtin", img)``.
    """
    from napari_dlcb.inference.postprocess import labels_from_probabilities
    from napari_dlcb.inference.tiled import predict_tiled

    model, meta = load_for_inference(model_or_path, device=device)
    _check_meta(meta)
    spec = InferenceSpec.from_meta(meta)
    cyx = _image_cyx(image, channel_axis, spec.in_channels)
    prob = predict_tiled(
        model,
        cyx,
        tile=tile,
        halo=spec.halo if halo is None else halo,
        batch_size=batch_size,
        device=device,
        normalizer=spec.normalizer(),
        channel_axis=0,
        activation=spec.activation,
        amp=amp,
        size_multiple=spec.size_multiple,
        progress=progress,
    )
    return Segmentation(prob, labels_from_probabilities(prob, meta, **postprocess))


def segment_zarr(
    model_or_path: Any,
    source: Any,
    dest: str | os.PathLike,
    *,
    block: int = 1024,
    tile: int | tuple[int, int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str | torch.device = "auto",
    channel_axis: int | None = None,
    amp: bool = True,
    dtype: str = "uint8",
    labels: bool = True,
    margin: int = 64,
    overwrite: bool = False,
    **postprocess: Any,
) -> Iterator[dict]:
    """Segment an image larger than memory into an OME-Zarr store, block by block.

    :func:`~napari_dlcb.inference.blockwise.predict_zarr` with the normalisation,
    activation, halo and label convention taken from the model's metadata:
    instance models write stitched instance ids, class and scribble models
    their class label values.

    Parameters
    ----------
    model_or_path : str, path-like or (model, meta)
        As for :func:`segment`.
    source : zarr array, dask array, ndarray or path
        The image (2-D, or 3-D with ``channel_axis``).
    dest : str or path-like
        The OME-Zarr folder to write.
    block, tile, batch_size, device, channel_axis, amp, dtype, margin, overwrite
        As for :func:`~napari_dlcb.inference.blockwise.predict_zarr`.
    halo : int, optional
        As for :func:`segment`.
    labels : bool
        Also write labels (``dest/labels/segmentation/0``).
    **postprocess
        Options for instance post-processing, over ``meta.extra["postprocess"]``.

    Returns
    -------
    generator of dict
        Progress events of ``predict_zarr``; iterate to run, close to cancel.
    """
    from napari_dlcb.inference.blockwise import predict_zarr

    model, meta = load_for_inference(model_or_path, device=device)
    _check_meta(meta)
    spec = InferenceSpec.from_meta(meta)
    return predict_zarr(
        model,
        source,
        dest,
        block=block,
        tile=tile,
        halo=spec.halo if halo is None else halo,
        batch_size=batch_size,
        device=device,
        normalizer=spec.normalizer(),
        channel_axis=channel_axis,
        activation=spec.activation,
        amp=amp,
        size_multiple=spec.size_multiple,
        dtype=dtype,
        labels=spec.label_mode if labels else None,
        class_values=spec.class_values,
        postprocess=spec.postprocess_options(postprocess) if spec.label_mode == "instances" else {},
        margin=margin,
        overwrite=overwrite,
    )
