"""Block-wise prediction of a huge image on a ``dask.distributed`` cluster.

The same blocks, halos and storage as
:func:`~napari_dlcb.inference.tiled.predict_zarr`, but every block is a task.
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
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.tiled import (
    Block,
    _as_pair,
    _blocks,
    _check_zarr_options,
    _Engine,
    _inference_on,
    _instances_block,
    _predict_block,
    _relabel_block,
    _Source,
    _source_scale,
    _Stitcher,
    _tile_normalizer,
    _ZarrLayout,
    freeze_normalizer,
)

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


def _arrays(store: str) -> tuple[Any, Any]:
    import zarr

    from napari_dlcb.inference.tiled import LABELS_NAME

    root = zarr.open_group(store, mode="r+")
    return root["0"], root.get(f"labels/{LABELS_NAME}/0")


def _predict_task(block: Block, *, model_dir: str, store: str, settings: dict) -> Block:
    """Predict one block on a worker and write it into the store."""
    import dask

    model, _, dev = _worker_model(model_dir, settings["device"])
    source = _Source(settings["source"], settings["channel_axis"])
    engine = _Engine(
        model,
        dev,
        _tile_normalizer(settings["normalizer"]),
        settings["activation"],
        settings["amp"],
        settings["batch_size"],
    )
    prob_array, label_array = _arrays(store)
    # the model is shared by the worker's threads; eval + inference mode only reads it.
    # A dask source is computed right here: submitting to the cluster from inside a
    # task could wait forever for the thread this task occupies.
    with _inference_on(model, dev), dask.config.set(scheduler="synchronous"):
        _predict_block(
            engine,
            source,
            block,
            prob_array,
            label_array,
            model_tile=settings["model_tile"],
            halo=settings["halo"],
            overlap=settings["overlap"],
            dtype=settings["dtype"],
            labels=settings["labels"],
            class_values=settings["class_values"],
        )
    return block


def _instances_task(
    index: int, block: Block, *, store: str, shape: tuple[int, int], margin: int, options: dict
) -> tuple[int, int, np.ndarray, dict[str, np.ndarray]]:
    prob_array, label_array = _arrays(store)
    count, present, strips = _instances_block(
        prob_array, label_array, block, shape, margin=margin, options=options
    )
    return index, count, present, strips


def _relabel_task(block: Block, offset: int, lut: np.ndarray, *, store: str) -> Block:
    _, label_array = _arrays(store)
    _relabel_block(label_array, block, offset, lut)
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


def predict_zarr_distributed(
    model_dir: str | os.PathLike,
    source: Any,
    dest: str | os.PathLike,
    *,
    client: Any = None,
    tile: int = 1024,
    halo: int = 32,
    model_tile: int | tuple[int, int] | None = None,
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
    :func:`~napari_dlcb.inference.tiled.predict_zarr` with the model's
    normalisation and activation.

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
    tile, halo, model_tile, batch_size, channel_axis, amp, dtype, class_values, margin, overwrite
        As for :func:`~napari_dlcb.inference.tiled.predict_zarr`.
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
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.models.saved import load_meta

    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError) as err:
            raise DlcbError(
                "no dask.distributed client: start one (Client(LocalCluster())) or pass client="
            ) from err
    model_dir = str(Path(model_dir).resolve())
    meta = load_meta(model_dir)
    activation = None if meta.output_activation == "none" else meta.output_activation
    if labels == "auto":
        labels = "instances" if meta.label_kind == "instances" else "classes"
    if labels == "classes" and class_values is None:
        class_values = meta.class_values
        if class_values is None and meta.label_kind == "scribbles":
            class_values = list(range(1, len(meta.classes) + 1))
    options = {**dict(meta.extra.get("postprocess", {})), **dict(postprocess or {})}
    _check_zarr_options(dtype, activation, labels, int(tile), int(margin))
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
    if isinstance(source, (str, os.PathLike)):
        source = str(Path(source).resolve())
    src = _Source(source, channel_axis)
    normalizer = freeze_normalizer(Normalizer.from_dict(meta.normalization), src)
    layout = _ZarrLayout.create(
        dest,
        channels=_output_channels(model_dir, src.channels),
        shape=src.shape,
        block=int(tile),
        dtype=dtype,
        labels=labels is not None,
        overwrite=overwrite,
        scale=_source_scale(source),
        info={
            "tile": int(tile),
            "halo": int(halo),
            "activation": activation or "none",
            "probability_scale": 255 if dtype == "uint8" else 1,
        },
    )
    store = str(layout.tmp)
    settings = {
        "device": device,
        "source": source,
        "channel_axis": channel_axis,
        "normalizer": normalizer,
        "activation": activation,
        "amp": amp,
        "batch_size": int(batch_size),
        "model_tile": _as_pair(model_tile, "model_tile"),
        "halo": int(halo),
        "overlap": int(halo),
        "dtype": dtype,
        "labels": labels,
        "class_values": class_values,
    }
    blocks = _blocks(src.shape, int(tile))
    total = len(blocks) * (3 if labels == "instances" else 1)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        futures = client.map(
            _predict_task,
            blocks,
            model_dir=model_dir,
            store=store,
            settings=settings,
            pure=False,
        )
        _run(client, futures, None, tick)
        if labels == "instances":
            grid = (-(-src.shape[0] // int(tile)), -(-src.shape[1] // int(tile)))
            stitcher = _Stitcher(grid)
            futures = client.map(
                _instances_task,
                range(len(blocks)),
                blocks,
                store=store,
                shape=src.shape,
                margin=int(margin),
                options=options,
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
        return layout.commit()
    except BaseException:
        layout.discard()
        raise
