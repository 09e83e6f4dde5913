"""The Cell classifier dock's jobs: what runs in a worker thread, and what it yields.

Each function here is run by the dock's :class:`~napari_dlcb._widgets._jobs.JobRunner`
(never on the GUI thread): building the task (crops, pretrained weights,
cached features), training, the final predictions, per-cell saliency and the
embedding. They yield small dataclasses that the dock turns into layers on
the main thread. Pretraining on every cell (:func:`pretrain_job`) and the
multiple-instance image classifier (:func:`mil_job`) run here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = [
    "CellMap",
    "Pretrained",
    "Results",
    "TaskReady",
    "cell_saliency_job",
    "mil_job",
    "pretrain_job",
    "training_job",
]


@dataclass
class TaskReady:
    """The core task, built in the worker."""

    task: Any


@dataclass
class Results:
    """Predictions made in the worker at the end of training."""

    ids: np.ndarray
    probs: np.ndarray
    class_image: np.ndarray
    confusion: dict[str, Any]
    #: the live cell's map with the final weights (``CellClassificationTask.saliency_preview``)
    saliency: dict[str, Any] | None = None


@dataclass
class CellMap:
    """One cell's saliency map (the items of ``CellClassificationTask.saliency_preview``)."""

    data: dict[str, Any]


def training_job(
    image: np.ndarray,
    labels: np.ndarray,
    annotations: dict[int, str],
    config: Any,
    *,
    classes: list[str],
    channel_axis: int | None,
    live: list[Any],
    stop: Any = None,
) -> Iterator[Any]:
    """Build the task, train it, predict every cell; yield events and results.

    ``live`` is a one-item list holding the live-saliency request; the dock
    may replace it while training runs (the training thread reads it at each
    preview).
    """
    from napari_dlcb.tasks.cells import CellClassificationTask

    task = CellClassificationTask(
        image, labels, annotations, classes=classes, config=config, channel_axis=channel_axis
    )
    if live[0] is not None and not np.any(task.crops.ids == live[0].object_id):
        live[0] = None  # the selected label is no object: no live map
    yield TaskReady(task)
    yield from task.fit(stop=stop, preview_saliency=lambda: live[0])
    yield _results(task, live[0])


def _results(task: Any, request: Any) -> Results:
    """Predictions, the class image (and its colours, compiled here) and the live cell's map."""
    from napari_dlcb._widgets.classifier_results import class_colormap

    ids, probs = task.predict()
    class_img = task.class_image(probs)
    # napari JIT-compiles the label colouring on first use: do it off the GUI thread
    class_colormap(len(task.classes)).map(class_img.ravel()[:16])
    final = None
    if request is not None:  # the live cell's map with the final (best) weights
        try:
            final = task.saliency_preview(request)
        except (DlcbError, RuntimeError):
            final = None  # already reported by the live preview
    return Results(ids, probs, class_img, task.training_confusion(), final)


def cell_saliency_job(task: Any, request: Any) -> Iterator[Any]:
    """One cell's saliency map with the task's current weights (a job of its own)."""
    from napari_dlcb.training.events import JobProgress

    yield JobProgress(0, 1, f"saliency of cell {request.object_id}")
    data = task.saliency_preview(request)
    yield JobProgress(1, 1, "done")
    yield CellMap(data)


@dataclass
class Pretrained:
    """An encoder pretrained on the image's cells, saved as a model folder."""

    path: str
    n_cells: int
    error_before: float
    error_after: float
    kept: str


def pretrain_job(
    image: np.ndarray,
    labels: np.ndarray,
    config: Any,
    *,
    crop_size: int | str,
    channel_axis: int | None,
    out: str,
    stop: Any = None,
) -> Iterator[Any]:
    """Pretrain an autoencoder on a crop of every object, save it; yield events, then :class:`Pretrained`."""
    from napari_dlcb.tasks.pretrain import AutoencoderPretrainer
    from napari_dlcb.training.events import Finished, JobProgress

    yield JobProgress(0, None, "cutting a crop around every cell")
    task = AutoencoderPretrainer.from_objects(
        image, labels, crop_size=crop_size, channel_axis=channel_axis, config=config
    )
    before = task.reconstruction_error()
    kept = ""
    for ev in task.fit(stop=stop):
        kept = ev.kept if isinstance(ev, Finished) else kept
        yield ev
    path = task.save(out)
    yield Pretrained(str(path), task.n_images, before, task.reconstruction_error(), kept)


def mil_job(model: str, image: np.ndarray, *, channel_axis: int | None) -> Iterator[Any]:
    """Classify the whole image with a MIL model; yield progress, then the ``MILPrediction``."""
    from napari_dlcb.tasks.mil import classify_image
    from napari_dlcb.training.events import JobProgress

    yield JobProgress(0, 1, "classifying the image")
    result = classify_image(model, image, channel_axis=channel_axis)
    yield JobProgress(1, 1, "done")
    yield result
