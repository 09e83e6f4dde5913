"""Block-wise prediction of a huge image on a ``dask.distributed`` cluster.

The same blocks, halos and storage as
:func:`~napari_dlcb.inference.blockwise.predict_zarr`, but every block is a task.
A task loads the saved model once per worker (then reuses it), reads its block
plus halo from the source, and writes its chunk-aligned block of the
destination store itself, so no image data passes through the client and
tasks never write the same chunk. Source and destination must therefore be
reachable from every worker (a shared file system, or a local cluster).

Example::

    from dask.distributed import Client, LocalCluster
    with Client(LocalCluster(n_workers=4, threads_per_worker=1)) as client:
        predict_zarr_distributed("my_model/", "big.ome.zarr", "pred.ome.zarr",
                                 client=client, labels="auto")
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.data.images import ImageSource
from napari_dlcb.data.normalize import cyx_normalizer, freeze_normalizer
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.blockwise import BlockSettings, block_grid, predict_block
from napari_dlcb.inference.stitch import Stitcher, instances_block, relabel_block
from napari_dlcb.inference.store import Block, create_store, prediction_arrays
from napari_dlcb.inference.tiling import TileEngine
from napari_dlcb.io.omezarr import pixel_size
from napari_dlcb.models.spec import InferenceSpec
from napari_dlcb.models.state import inference_mode_on

__all__ = ["predict_zarr_distributed"]

# (model folder, device) -> (model, meta): each worker process loads a model once
_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


def _worker_model(model_dir: str, device: str) -> tuple[Any, Any, Any]:
    """The cached model of this worker, its metadata and its device."""
    from napari_dlcb.models.saved import load_model

    dev = resolve_device(device)
    key = (model_dir, str(dev))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(model_dir, device=dev)
        model, meta = _MODELS[key]
    return model, meta, dev


@dataclass(frozen=True)
class _Job:
    """What every predict task needs besides its block (picklable)."""

    device: str
    source: Any
    channel_axis: int | None
    normalizer: Any
    activation: str | None
    amp: bool
    batch_size: int
    size_multiple: int | None
    settings: BlockSettings


def _predict_task(block: Block, *, model_dir: str, store: str, job: _Job) -> Block:
    """Predict one block on a worker and write it into the store."""
    import dask

    model, _, dev = _worker_model(model_dir, job.device)
    source = ImageSource(job.source, job.channel_axis)
    engine = TileEngine(
        model,
        dev,
        cyx_normalizer(job.normalizer),
        job.activation,
        job.amp,
        job.batch_size,
        job.size_multiple,
    )
    prob_array, label_array = prediction_arrays(store)
    # the model is shared by the worker's threads; eval + inference mode only reads it.
    # A dask source is computed right here: submitting to the cluster from inside a
    # task could wait forever for the thread this task occupies.
    with inference_mode_on(model, dev), dask.config.set(scheduler="synchronous"):
        predict_block(engine, source, block, prob_array, label_array, job.settings)
    return block


def _instances_task(
    index: int, block: Block, *, store: str, shape: tuple[int, int], settings: BlockSettings
) -> tuple[int, int, np.ndarray, dict[str, np.ndarray]]:
    prob_array, label_array = prediction_arrays(store)
    count, present, strips = instances_block(
        prob_array, label_array, block, shape, margin=settings.margin, options=settings.postprocess
    )
    return index, count, present, strips


def _relabel_task(block: Block, offset: int, lut: np.ndarray, *, store: str) -> Block:
    _, label_array = prediction_arrays(store)
    relabel_block(label_array, block, offset, lut)
    return block


def _output_channels(model_dir: str, in_channels: int) -> int:
    """Number of output channels, from one forward pass on the client."""
    import torch

    from napari_dlcb.models.saved import load_model

    model, _ = load_model(model_dir, device="cpu")
    with torch.inference_mode():
        return int(model(torch.zeros(1, in_channels, 64, 64)).shape[1])


def _run(
    client: Any, futures: list, on_result: Callable[[Any], None] | None, tick: Callable
) -> None:
    """Wait for ``futures``, passing each result on; cancel the rest on error."""
    from distributed import as_completed

    try:
        for future in as_completed(futures):
            result = future.result()
            if on_result is not None:
                on_result(result)
            tick()
    except BaseException:
        client.cancel(futures)
        raise


def _default_client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError) as err:
        raise DlcbError(
            "no dask.distributed client: start one (Client(LocalCluster())) or pass client="
        ) from err


# over 80 lines only by its signature and docstring (18 documented options)
def predict_zarr_distributed(
    model_dir: str | os.PathLike,
    source: Any,
    dest: str | os.PathLike,
    *,
    client: Any = None,
    block: int = 1024,
    tile: int | tuple[int, int] | None = None,
    halo: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    channel_axis: int | None = None,
    amp: bool = True,
    dtype: str = "uint8",
    labels: str | None = None,
    class_values: Sequence[int] | None = None,
    postprocess: dict | None = None,
    margin: int = 64,
    overwrite: bool = False,
    progress: Callable[[int, int], Any] | None = None,
) -> Path:
    """Predict a saved model block by block on a dask cluster into an OME-Zarr store.

    The output (layout, values, stitched instance labels) is the same as
    :func:`~napari_dlcb.inference.blockwise.predict_zarr` with the model's
    normalisation, activation and halo (its :class:`InferenceSpec`).

    Parameters
    ----------
    model_dir : str or path-like
        A saved model folder (:func:`napari_dlcb.models.saved.save_model`),
        readable by every worker.
    source : str, path-like or zarr array
        The image (a Zarr array or OME-Zarr image), readable by every worker.
        In-memory arrays work too but are sent to every task.
    dest : str or path-like
        The OME-Zarr folder to write, on storage every worker can write to.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    block, tile, batch_size, channel_axis, amp, dtype, class_values, margin, overwrite
        As for :func:`~napari_dlcb.inference.blockwise.predict_zarr`.
    halo : int, optional
        Default: the model's declared halo, else 32.
    device : str
        Resolved on each worker (``"auto"``: its GPU if it has one).
    labels : {None, "auto", "classes", "instances"}
        ``"auto"`` follows the model's ``label_kind`` (instances or classes).
    postprocess : dict, optional
        Instance post-processing options, over ``meta.extra["postprocess"]``.
    progress : callable, optional
        ``progress(done, total)`` after every finished task.

    Returns
    -------
    pathlib.Path
        ``dest``.
    """
    from napari_dlcb.models.saved import load_meta

    client = _default_client(client)
    model_dir = str(Path(model_dir).resolve())
    spec = InferenceSpec.from_meta(load_meta(model_dir))
    settings = BlockSettings.check(
        block=block,
        tile=tile,
        halo=spec.halo if halo is None else halo,
        overlap=None,
        batch_size=batch_size,
        activation=spec.activation,
        dtype=dtype,
        labels=spec.label_mode if labels == "auto" else labels,
        class_values=spec.class_values if class_values is None else class_values,
        margin=margin,
        postprocess=spec.postprocess_options(postprocess),
    )
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
    if isinstance(source, (str, os.PathLike)):
        source = str(Path(source).resolve())
    src = ImageSource(source, channel_axis)
    job = _Job(
        device,
        source,
        channel_axis,
        freeze_normalizer(spec.normalizer(), src),
        spec.activation,
        amp,
        int(batch_size),
        spec.size_multiple,
        settings,
    )
    return _execute(client, model_dir, dest, src, job, overwrite=overwrite, progress=progress)


def _execute(
    client: Any,
    model_dir: str,
    dest: Path,
    src: ImageSource,
    job: _Job,
    *,
    overwrite: bool,
    progress: Callable[[int, int], Any] | None,
) -> Path:
    """Create the store, run the tasks, then move the finished store to ``dest``."""
    out = create_store(
        dest,
        channels=_output_channels(model_dir, src.channels),
        shape=src.shape,
        block=job.settings.block,
        dtype=job.settings.dtype,
        labels=job.settings.labels is not None,
        activation=job.activation,
        halo=job.settings.halo,
        scale=pixel_size(job.source),
        overwrite=overwrite,
    )
    try:
        _run_tasks(client, model_dir, str(out.path), src.shape, job, progress)
        return out.finish()
    except BaseException:
        out.discard()
        raise


def _run_tasks(
    client: Any,
    model_dir: str,
    store: str,
    shape: tuple[int, int],
    job: _Job,
    progress: Callable[[int, int], Any] | None,
) -> None:
    """The three passes of :func:`predict_zarr_distributed` as dask tasks."""
    settings = job.settings
    blocks = block_grid(shape, settings.block)
    total = len(blocks) * len(settings.stages)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    futures = client.map(
        _predict_task, blocks, model_dir=model_dir, store=store, job=job, pure=False
    )
    _run(client, futures, None, tick)
    if settings.labels != "instances":
        return
    stitcher = Stitcher((-(-shape[0] // settings.block), -(-shape[1] // settings.block)))
    futures = client.map(
        _instances_task,
        range(len(blocks)),
        blocks,
        store=store,
        shape=shape,
        settings=settings,
        pure=False,
    )
    _run(client, futures, lambda r: stitcher.add(*r), tick)
    offsets, lut = stitcher.lookup()
    lut_future = client.scatter(lut, broadcast=True)
    futures = client.map(
        _relabel_task,
        blocks,
        [int(o) for o in offsets],
        [lut_future] * len(blocks),
        store=store,
        pure=False,
    )
    _run(client, futures, None, tick)
