"""Tiled and block-wise prediction, post-processing and headless segmentation.

Importing this package is cheap: the functions below are loaded on first
use, and torch only when a model runs.

==========================================  ===========================================
:func:`predict_tiled`                       whole image, blended tiles -> (C, Y, X)
:func:`predict_region`                      one viewport with context (live preview)
:func:`predict_zarr`                        larger than memory, block by block (generator)
:func:`predict_zarr_distributed`            the same on a ``dask.distributed`` cluster
:func:`freeze_normalizer`                   per-image statistics of a whole (lazy) image
:func:`segment` / :func:`segment_zarr`      saved model + image -> probabilities, labels
:func:`labels_from_probabilities`           the model's label convention
:func:`instances_from_probabilities`        seeded watershed into instances
:func:`average_precision` and friends       segmentation metrics
==========================================  ===========================================
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "predict_tiled": "tiled",
    "predict_region": "tiled",
    "predict_zarr": "tiled",
    "freeze_normalizer": "tiled",
    "open_prediction": "tiled",
    "open_prediction_lazy": "tiled",
    "predict_zarr_distributed": "distributed",
    "segment": "segment",
    "segment_zarr": "segment",
    "Segmentation": "segment",
    "labels_from_probabilities": "postprocess",
    "instances_from_probabilities": "postprocess",
    "classes_from_probabilities": "postprocess",
    "average_precision": "postprocess",
    "iou_matrix": "postprocess",
    "pixel_error": "postprocess",
    "foreground_iou": "postprocess",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
