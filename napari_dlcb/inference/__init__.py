"""Tiled and block-wise prediction, post-processing and headless segmentation.

Importing this package is cheap: the functions below are loaded on first
use, and torch only when a model runs.

==========================================  ===========================================
:func:`predict_tiled`                       whole image, blended tiles -> (C, Y, X)
:func:`predict_viewport`                    one viewport with context (live preview)
:func:`predict_zarr`                        larger than memory, block by block (generator)
:func:`predict_zarr_distributed`            the same on a ``dask.distributed`` cluster
:func:`open_prediction` (``_lazy``)         read what ``predict_zarr`` wrote
:func:`freeze_normalizer`                   per-image statistics of a whole (lazy) image
:func:`segment` / :func:`segment_zarr`      saved model + image -> probabilities, labels
:func:`labels_from_probabilities`           the model's label convention
:func:`instances_from_probabilities`        seeded watershed into instances
:func:`average_precision` and friends       segmentation metrics
:func:`predict_proba` / :func:`predict_crops`  cell crops -> class probabilities
:func:`predict_sequences` / :func:`predict_track`  one-hot DNA -> task outputs / tracks
==========================================  ===========================================

Modules: ``tiling`` (the engine: tile plan, blending, batches), ``tiled``
(in-memory images and viewports), ``blockwise`` (OME-Zarr, block by block),
``store`` (the OME-Zarr prediction store), ``stitch`` (instances across
blocks), ``distributed``, ``segment``, ``postprocess`` (labels), ``metrics``. A *tile* is a window the network sees;
a *block* is a piece of storage.
"""

from __future__ import annotations

from napari_dlcb.lazy import lazy_exports

_EXPORTS = {
    "predict_tiled": "tiled",
    "predict_viewport": "tiled",
    "predict_zarr": "blockwise",
    "freeze_normalizer": "tiled",  # lives in data.normalize; re-exported for callers
    "open_prediction": "store",
    "open_prediction_lazy": "store",
    "predict_zarr_distributed": "distributed",
    "segment": "segment",
    "segment_zarr": "segment",
    "Segmentation": "segment",
    "labels_from_probabilities": "postprocess",
    "instances_from_probabilities": "postprocess",
    "classes_from_probabilities": "postprocess",
    "average_precision": "metrics",
    "iou_matrix": "metrics",
    "pixel_error": "metrics",
    "foreground_iou": "metrics",
    "predict_crops": "classify",
    "predict_proba": "classify",
    "load_sequence_model": "sequence",
    "predict_sequences": "sequence",
    "predict_track": "sequence",
}

__all__ = sorted(_EXPORTS)


# cache=True: later look-ups skip __getattr__
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, cache=True)
