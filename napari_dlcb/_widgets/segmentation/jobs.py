"""What the Segmentation dock's jobs run in their worker threads (no Qt here).

Each function is handed to :class:`~napari_dlcb._widgets._jobs.JobRunner`,
which runs it off the GUI thread, shows its progress in napari's activity
dock, stops it and reports its errors. Everything slow happens here: reading
a model from disk, building the task (normalisation, targets, the quick-mode
feature cache), training, prediction and saving.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Status",
    "TrainerReady",
    "blockwise_job",
    "build_task",
    "predict_job",
    "save_job",
    "start_warmup",
    "training_job",
]


@dataclass
class Status:
    """A status line from the worker (not a training event)."""

    text: str


@dataclass
class TrainerReady:
    """The worker built the task; the dock keeps it for Resume, Predict and Save."""

    trainer: Any


def build_task(
    images: list[np.ndarray], labels: list[np.ndarray], config: Any, base_model: Any = None
) -> Any:
    """The segmentation task of the annotation (loads the base model; worker thread)."""
    from napari_dlcb.tasks.segmentation import SegmentationTask

    if base_model is not None:
        return SegmentationTask(images, labels, config=config, base=base_model)
    return SegmentationTask(images, labels, config=config)


def training_job(
    images: list[np.ndarray] | None,
    labels: list[np.ndarray] | None,
    config: Any,
    base_model: Any,
    trainer: Any,
    fit_kwargs: dict[str, Any],
    *,
    stop: threading.Event,
) -> Iterator[Any]:
    """Build the task if there is none yet, show its first overlay, drain its ``fit``.

    Stops at ``stop`` (training keeps what it learnt).
    """
    from napari_dlcb.training.events import Preview

    if trainer is None:
        yield Status("Preparing data and model…")
        trainer = build_task(images, labels, config, base_model)
        yield TrainerReady(trainer)
        if stop.is_set():
            return
        image = fit_kwargs.get("preview_image")
        if image is not None and hasattr(trainer, "prepare"):
            # the starting model's overlay as soon as the features are cached, before
            # the engine scores the starting weights (seconds earlier on a busy CPU)
            trainer.prepare()
            first = trainer.preview(image, fit_kwargs.get("preview_region"))
            if first is not None:
                yield Preview(epoch=0, step=-1, data=first)
        if stop.is_set():
            return
    yield from trainer.fit(stop=stop, **fit_kwargs)


def predict_job(
    trainer: Any, base: str, image: Any, channel_axis: int | None, device: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Segment a whole image with the task trained here, else with the base model.

    A base named by a path is read here, in the worker; a wrong file is a
    one-line :class:`~napari_dlcb.errors.DlcbError`.
    """
    image = np.asarray(image)
    if trainer is not None:
        prob, labels = trainer.predict(image)
        return prob, labels, trainer.meta
    from napari_dlcb.inference.segment import load_for_inference, segment

    model, meta = load_for_inference(base, device=device)
    prob, labels = segment((model, meta), image, channel_axis=channel_axis, device=device)
    return prob, labels, meta


def blockwise_job(
    source: Any, image: Any, dest: str, channel_axis: int | None, device: str
) -> Iterator[Any]:
    """Segment a big lazy image block by block into the OME-Zarr store ``dest``.

    Yields :class:`~napari_dlcb.training.events.JobProgress` per block and, at
    the end, ``{"path": dest}``. Closing the generator (Stop) cancels the run
    and leaves nothing at ``dest``.
    """
    from napari_dlcb.inference.segment import segment_zarr
    from napari_dlcb.training.events import JobProgress

    events = segment_zarr(source, image, dest, channel_axis=channel_axis, device=device)
    try:
        for ev in events:
            if "path" in ev:
                yield {"path": ev["path"]}
            else:
                stage = ev.get("stage", "predict")
                yield JobProgress(int(ev.get("done", 0)), ev.get("total"), f"{stage} block")
    finally:
        events.close()  # cancelled: the store is removed


def save_job(trainer: Any, path: str) -> Path:
    """Write the trained model folder (metadata, safetensors, TorchScript)."""
    return trainer.save(path)


def export_job(trainer: Any, path: str) -> Any:
    """Write the trained model as a BioImage.IO package and run the zoo's test on it."""
    from napari_dlcb.models.bioimageio_export import export_bioimageio

    return export_bioimageio(trainer.model, path, meta=trainer.meta, test=True)


WARMUP_MODULES = (
    "torch",
    "napari_dlcb.tasks.segmentation.task",
    "napari_dlcb.inference.tiled",
    "napari_dlcb.inference.postprocess",
    "napari_dlcb.data.labels",
)
_warmup_thread: threading.Thread | None = None


def _warmup_imports() -> None:
    """Import the training stack and run one tiny optimiser step (background thread).

    The first optimiser step imports ``torch._dynamo`` and initialises the
    convolution backend lazily; both hold the GIL for hundreds of milliseconds.
    """
    import importlib

    try:
        for name in WARMUP_MODULES:
            importlib.import_module(name)
        import torch

        conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        opt = torch.optim.Adam(conv.parameters(), lr=1e-3)
        conv(torch.zeros(1, 1, 8, 8)).sum().backward()
        opt.step()
    except Exception:  # noqa: BLE001 - any real problem is reported when training starts
        return


def start_warmup() -> threading.Thread:
    """Import torch and the training modules in the background, once per process.

    Importing C extensions holds the GIL for long stretches (about a second for
    torch, scipy and scikit-image on a slow machine). Doing it while the user
    is still choosing layers keeps those stalls out of the live training view
    and makes the first Train press start at once. (A plain thread, not a job:
    it has no result, no progress and nothing to stop.)
    """
    global _warmup_thread
    if _warmup_thread is None:
        _warmup_thread = threading.Thread(
            target=_warmup_imports, name="napari-dlcb-warmup", daemon=True
        )
        _warmup_thread.start()
    return _warmup_thread
