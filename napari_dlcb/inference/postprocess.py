"""Probability maps to labels: instances (seeded watershed) or class label values.

Two label conventions come out of a segmentation model (see ``ModelMeta`` in
``docs/ARCHITECTURE.md``):

* ``label_kind == "instances"``: an int32 image of object ids, 0 = background,
  ids consecutive from 1. Made by :func:`instances_from_probabilities`, either
  from a 3-class (background / interior / boundary) map, or from a foreground
  probability by a distance-transform watershed.
* ``label_kind in ("classes", "scribbles")``: the arg-max class of each pixel,
  written with the label value the class had in the training labels
  (``meta.class_values``, e.g. 0 / 255 for the ISBI 2012 membranes).

The segmentation metrics are in :mod:`napari_dlcb.inference.metrics`.

Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_dlcb.errors import DlcbError

__all__ = [
    "classes_from_probabilities",
    "instances_from_probabilities",
    "labels_from_probabilities",
]

_INSTANCE_MODES = ("auto", "bg_interior_boundary", "foreground")


def _as_prob(prob: np.ndarray) -> np.ndarray:
    """Return ``prob`` as a float32 (C, Y, X) array; 2-D input becomes one channel."""
    prob = np.asarray(prob)
    if prob.ndim == 2:
        prob = prob[None]
    if prob.ndim != 3:
        raise DlcbError(
            f"probabilities must be (C, Y, X) or (Y, X), got an array of shape {prob.shape}"
        )
    if not np.issubdtype(prob.dtype, np.floating):
        if prob.dtype == np.uint8:  # predict_zarr's uint8 storage: p * 255
            return prob.astype(np.float32) / 255.0
        raise DlcbError(f"probabilities must be floating point or uint8, got {prob.dtype}")
    return prob.astype(np.float32, copy=False)


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map the non-zero ids of ``labels`` to 1..N in order of first id, as int32."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to 0 (in place)."""
    if min_size > 1 and labels.max(initial=0) > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    return labels


def instances_from_probabilities(
    prob: np.ndarray,
    *,
    mode: str = "auto",
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    seed_erosion: int = 0,
    min_seed_size: int | None = None,
    h: float = 2.0,
    smooth: float = 1.0,
    min_size: int = 10,
    keep_unseeded: bool = True,
) -> np.ndarray:
    """Split a probability map into object instances with a seeded watershed.

    Parameters
    ----------
    prob : ndarray, shape (C, Y, X) or (Y, X)
        Per-pixel probabilities (float, or uint8 scaled by 255 as
        :func:`~napari_dlcb.inference.tiled.predict_zarr` stores them).
    mode : {"auto", "bg_interior_boundary", "foreground"}
        ``"bg_interior_boundary"``: channels are background, interior and
        boundary. Seeds are the connected components of ``interior >
        seed_threshold`` (optionally eroded); they are grown by a watershed on
        the boundary probability, restricted to the foreground
        ``1 - background > fg_threshold``. ``"foreground"``: one foreground
        channel (C = 1, e.g. a sigmoid output) or two (C = 2, background and
        foreground); the mask ``foreground > fg_threshold`` is split by a
        watershed on its distance transform, seeded at its h-maxima.
        ``"auto"`` picks the first for C = 3 and the second for C <= 2.
    fg_threshold : float
        Foreground probability threshold.
    seed_threshold : float
        Interior probability above which a pixel is a seed (3-class mode).
    seed_erosion : int
        Erode the seed mask by this many pixels first, which separates seeds
        joined by thin bridges (3-class mode).
    min_seed_size : int, optional
        Seeds with fewer pixels are ignored, so that specks of interior
        probability do not split an object (3-class mode). Default
        ``max(2, min_size // 4)``.
    h : float
        Minimum height, in pixels of distance, of a distance-transform maximum
        that makes a new object (foreground mode). Larger values merge more.
    smooth : float
        Sigma of the Gaussian that smooths the distance transform before the
        maxima are found (foreground mode); 0 turns it off.
    min_size : int
        Objects with fewer pixels are removed.
    keep_unseeded : bool
        In 3-class mode, foreground components that contain no seed become
        objects of their own instead of being dropped.

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)
        0 = background, objects numbered 1..N consecutively.

    Examples
    --------
    Two touching discs in a foreground map become two objects:

    >>> yy, xx = np.mgrid[:64, :96]
    >>> fg = ((yy - 32) ** 2 + (xx - 30) ** 2 < 18**2) | ((yy - 32) ** 2 + (xx - 62) ** 2 < 18**2)
    >>> labels = instances_from_probabilities(fg[None].astype(np.float32))
    >>> int(labels.max())
    2
    """
    prob = _as_prob(prob)
    if _instance_mode(mode, prob.shape[0]) == "bg_interior_boundary":
        if min_seed_size is None:
            min_seed_size = max(2, int(min_size) // 4)
        labels = _seeded_by_interior(
            prob, fg_threshold, seed_threshold, seed_erosion, int(min_seed_size), keep_unseeded
        )
    else:
        labels = _split_by_distance(prob[-1] > fg_threshold, h=h, smooth=smooth)
    labels = _remove_small(np.asarray(labels, np.int32), int(min_size))
    return _relabel_consecutive(labels)


def _instance_mode(mode: str, n_channels: int) -> str:
    """The instance mode for ``n_channels`` probability channels, checked."""
    if mode not in _INSTANCE_MODES:
        raise DlcbError(f"mode must be one of {', '.join(_INSTANCE_MODES)}, got {mode!r}")
    if mode == "auto":
        if n_channels == 3:
            return "bg_interior_boundary"
        if n_channels in (1, 2):
            return "foreground"
        raise DlcbError(
            f"cannot make instances from {n_channels} channels: expected 3 "
            "(background, interior, boundary) or 1-2 (foreground)"
        )
    if mode == "bg_interior_boundary" and n_channels != 3:
        raise DlcbError(
            f"mode 'bg_interior_boundary' needs 3 channels (background, interior, "
            f"boundary), got {n_channels}"
        )
    if mode == "foreground" and n_channels not in (1, 2):
        raise DlcbError(
            f"mode 'foreground' needs 1 (foreground) or 2 (background, foreground) "
            f"channels, got {n_channels}"
        )
    return mode


def _seeded_by_interior(
    prob: np.ndarray,
    fg_threshold: float,
    seed_threshold: float,
    seed_erosion: int,
    min_seed_size: int,
    keep_unseeded: bool,
) -> np.ndarray:
    """Watershed of the boundary map from interior seeds, inside the foreground (3 classes)."""
    from skimage.segmentation import watershed

    background, interior, boundary = prob
    mask = (1.0 - background) > fg_threshold
    seed_mask = (interior > seed_threshold) & mask
    if seed_erosion > 0:
        seed_mask = ndi.binary_erosion(seed_mask, iterations=int(seed_erosion))
    seeds, _ = ndi.label(seed_mask)
    seeds = _remove_small(seeds, min_seed_size)
    labels = watershed(boundary, markers=seeds, mask=mask)
    if keep_unseeded:
        orphans, n_orphans = ndi.label(mask & (labels == 0))
        if n_orphans:
            labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return labels


def _split_by_distance(mask: np.ndarray, *, h: float, smooth: float) -> np.ndarray:
    """Distance-transform watershed of a binary mask, seeded at h-maxima."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask).astype(np.float32)
    if smooth > 0:
        distance = ndi.gaussian_filter(distance, smooth) * mask
    peaks = h_maxima(distance, h) > 0
    markers, _ = ndi.label(peaks & mask)
    labels = watershed(-distance, markers=markers, mask=mask)
    # components too flat to have an h-maximum keep one id each
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return labels


def _meta_get(meta: Any, name: str, default: Any = None) -> Any:
    """Read a ``ModelMeta`` field from the dataclass or from a plain dict."""
    if isinstance(meta, Mapping):
        return meta.get(name, default)
    return getattr(meta, name, default)


def classes_from_probabilities(
    prob: np.ndarray,
    class_values: Sequence[int] | None = None,
    *,
    threshold: float = 0.5,
) -> np.ndarray:
    """Arg-max class of each pixel, written as the class's label value.

    Parameters
    ----------
    prob : ndarray, shape (C, Y, X) or (Y, X)
        Class probabilities. A single channel is a foreground probability:
        class 1 where it exceeds ``threshold``, else class 0.
    class_values : sequence of int, optional
        Label value for each class index (``ModelMeta.class_values``). Default
        is the class index itself.
    threshold : float
        Threshold for a single-channel map.

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)

    Examples
    --------
    >>> p = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)  # (2, 1, 2)
    >>> classes_from_probabilities(p, [0, 255]).tolist()
    [[0, 255]]
    """
    prob = _as_prob(prob)
    if prob.shape[0] == 1:
        index = (prob[0] > threshold).astype(np.intp)
        n_classes = 2
    else:
        index = np.argmax(prob, axis=0)
        n_classes = prob.shape[0]
    if class_values is None:
        return index.astype(np.int32)
    values = np.asarray(class_values, dtype=np.int64)
    if values.size != n_classes:
        raise DlcbError(
            f"class_values has {values.size} entries but the probabilities have {n_classes} classes"
        )
    return values[index].astype(np.int32)


def labels_from_probabilities(prob: np.ndarray, meta: Any, **kwargs: Any) -> np.ndarray:
    """Turn a model's probabilities into labels with the model's training convention.

    Parameters
    ----------
    prob : ndarray, shape (C, Y, X)
        Output of :func:`~napari_dlcb.inference.tiled.predict_tiled`.
    meta : ModelMeta or dict
        Read: ``label_kind`` (``"instances"``, ``"classes"``, ``"scribbles"`` or
        None), ``class_values`` and, for instances, ``extra["postprocess"]``: a
        dict of keyword arguments for :func:`instances_from_probabilities`
        (thresholds tuned for the model), overridden by ``kwargs``.
    **kwargs
        Passed to :func:`instances_from_probabilities` for instance models,
        or ``threshold`` for class models.

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)
        Instance ids (0 = background) or class label values.

    Examples
    --------
    >>> p = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)
    >>> labels_from_probabilities(p, {"label_kind": "classes", "class_values": [0, 255]}).tolist()
    [[0, 255]]
    """
    kind = _meta_get(meta, "label_kind")
    if kind == "instances":
        extra = _meta_get(meta, "extra") or {}
        stored = dict(extra.get("postprocess", {}) if isinstance(extra, Mapping) else {})
        known = set(inspect.signature(instances_from_probabilities).parameters) - {"prob"}
        unknown = sorted(set(stored) - known)
        if unknown:  # written by another version: use what we understand
            warnings.warn(
                f"ignoring unknown post-processing options in the model metadata: {unknown}",
                stacklevel=2,
            )
        options = {k: v for k, v in stored.items() if k in known}
        bad = sorted(set(kwargs) - known)
        if bad:
            raise DlcbError(f"unknown post-processing option(s) {bad}; use {sorted(known)}")
        options.update(kwargs)
        return instances_from_probabilities(prob, **options)
    if kind in ("classes", "scribbles", None):
        values = _meta_get(meta, "class_values")
        if values is None and kind == "scribbles":
            # scribble layers use 0 for "not annotated": class k was drawn as k + 1
            n_classes = len(_meta_get(meta, "classes") or []) or max(2, _as_prob(prob).shape[0])
            values = list(range(1, n_classes + 1))
        return classes_from_probabilities(prob, values, **kwargs)
    raise DlcbError(f"unknown label_kind {kind!r}: expected 'instances', 'classes' or 'scribbles'")
