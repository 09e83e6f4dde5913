"""The segmentation task: painted images -> fine-tuned U-Net -> labels.

==============================================  =======================================
:class:`SegmentationConfig`                     every option, validated (cheap import)
:class:`SegmentationTask` (``SegmentationTrainer``)  fit / predict / save
:class:`~.live.LivePreview`                     the live overlay and saliency, budgeted
==============================================  =======================================

Modules: :mod:`.config` (options), :mod:`.task` (the task), :mod:`.start` (the
base model: resolve, adapt, parameter groups, fixed normalisation statistics),
:mod:`.quick` (frozen encoder, cached features), :mod:`.live` (live view).

Importing this package is cheap: the names below load on first use, and torch
only with the task.
"""

from __future__ import annotations

from napari_dlcb.lazy import lazy_exports

_EXPORTS = {
    "SegmentationConfig": "config",
    "QUICK_EPOCH_SECONDS": "config",
    "SegmentationTask": "task",
    "SegmentationTrainer": "task",
    "LivePreview": "live",
    "LIVE_SALIENCY": "live",
    "LIVE_SALIENCY_SHARE": "live",
    "PREVIEW_SHARE": "live",
}
#: names that moved to the layers below (kept importable from here)
_MOVED = {
    "FOREGROUND": "napari_dlcb.data.labels",
    "partial_label_loss": "napari_dlcb.training.losses",
    "segmentation_metrics": "napari_dlcb.training.metrics",
}

__all__ = sorted(_EXPORTS)

# cache=True: later look-ups skip __getattr__
__getattr__, __dir__ = lazy_exports(__name__, {**_EXPORTS, **_MOVED}, cache=True)
