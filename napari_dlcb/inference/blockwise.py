"""Block-wise prediction of an image larger than memory into an OME-Zarr store.

The output is cut into *blocks* (the storage chunks, ``block`` pixels square).
Each block is predicted from the block plus a ``halo`` of real context around
it, by the tiling engine (:mod:`napari_dlcb.inference.tiling`, whose network
windows are the *tiles*), and written before the next block is read, so peak
memory is set by the block, not by the image. Instance labels are then made
block by block and joined across block faces
(:mod:`napari_dlcb.inference.stitch`).

The store is built by the package's one OME-Zarr writer
(:class:`~napari_dlcb.io.omezarr_write.OmeZarrBuilder`) under a temporary
name and renamed into place when complete: a cancelled or failed run leaves
nothing at the destination. :func:`~napari_dlcb.inference.distributed.predict_zarr_distributed`
runs the same blocks as dask tasks, with the helpers below.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.data.images import ImageSource
from napari_dlcb.data.normalize import cyx_normalizer, freeze_normalizer
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.stitch import Stitcher, instances_block, relabel_block
from napari_dlcb.inference.store import (
    PROBABILITY_DTYPES,
    Block,
    create_store,
    prediction_arrays,
    store_block,
)
from napari_dlcb.inference.tiling import TileEngine, as_pair, check_activation, check_sizes
from napari_dlcb.io.omezarr import pixel_size
from napari_dlcb.models.spec import DEFAULT_HALO

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_dlcb.io.omezarr_write import OmeZarrBuilder

__all__ = ["BlockSettings", "block_grid", "predict_block", "predict_zarr"]

_LABEL_MODES = (None, "classes", "instances")


@dataclass(frozen=True)
class BlockSettings:
    """The checked options of one block-wise prediction (picklable, for dask tasks).

    Build it with :meth:`check`; fields are as for :func:`predict_zarr`.
    """

    block: int = 1024
    tile: tuple[int | None, int | None] = (None, None)
    halo: int = DEFAULT_HALO
    overlap: int = DEFAULT_HALO
    dtype: str = "uint8"
    labels: str | None = None
    class_values: tuple[int, ...] | None = None
    margin: int = 64
    postprocess: dict = field(default_factory=dict)

    @classmethod
    def check(
        cls,
        *,
        block: int,
        tile: int | tuple[int, int] | None,
        halo: int,
        overlap: int | None,
        batch_size: int,
        activation: str | None,
        dtype: str,
        labels: str | None,
        class_values: Sequence[int] | None,
        margin: int,
        postprocess: Mapping[str, Any] | None,
    ) -> BlockSettings:
        """Check every option with a one-line :class:`DlcbError`; ``activation`` is checked."""
        overlap = check_sizes(halo, overlap, batch_size)
        if dtype not in PROBABILITY_DTYPES:
            raise DlcbError(f"dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {dtype!r}")
        if dtype == "uint8" and activation is None:
            raise DlcbError("dtype='uint8' stores probabilities; use float16/float32 for logits")
        if labels not in _LABEL_MODES:
            raise DlcbError(f"labels must be None, 'classes' or 'instances', got {labels!r}")
        if labels is not None and activation is None:
            raise DlcbError("labels need probabilities: use activation 'softmax' or 'sigmoid'")
        if int(block) < 1 or int(margin) < 0:
            raise DlcbError(f"block must be >= 1 and margin >= 0, got {block} and {margin}")
        return cls(
            block=int(block),
            tile=as_pair(tile, "tile"),
            halo=int(halo),
            overlap=overlap,
            dtype=dtype,
            labels=labels,
            class_values=None if class_values is None else tuple(int(v) for v in class_values),
            margin=int(margin),
            postprocess=dict(postprocess or {}),
        )

    @property
    def stages(self) -> list[str]:
        """The passes over the blocks: predict, then instances and relabel for instances."""
        return ["predict"] + (["instances", "relabel"] if self.labels == "instances" else [])


def block_grid(shape: tuple[int, int], block: int) -> list[Block]:
    """Chunk-aligned output blocks in row-major order.

    Examples
    --------
    >>> block_grid((3, 5), 4)
    [((0, 3), (0, 4)), ((0, 3), (4, 5))]
    """
    return [
        ((r, min(r + block, shape[0])), (c, min(c + block, shape[1])))
        for r in range(0, shape[0], block)
        for c in range(0, shape[1], block)
    ]


def predict_block(
    engine: TileEngine,
    source: ImageSource,
    block: Block,
    prob_array: Any,
    label_array: Any,
    settings: BlockSettings,
) -> None:
    """Predict one block (reading it plus its halo) and store it."""
    prob = engine.predict(
        source, block, tile=settings.tile, halo=settings.halo, overlap=settings.overlap
    )
    _store(prob, block, prob_array, label_array, settings)


def _store(
    prob: np.ndarray, block: Block, prob_array: Any, label_array: Any, settings: BlockSettings
) -> None:
    store_block(
        prob,
        block,
        prob_array,
        label_array,
        dtype=settings.dtype,
        class_labels=settings.labels == "classes",
        class_values=settings.class_values,
    )


def _new_store(
    dest: Path,
    settings: BlockSettings,
    *,
    channels: int,
    shape: tuple[int, int],
    activation: str | None,
    scale: tuple[float, float],
    overwrite: bool,
) -> OmeZarrBuilder:
    return create_store(
        dest,
        channels=channels,
        shape=shape,
        block=settings.block,
        dtype=settings.dtype,
        labels=settings.labels is not None,
        activation=activation,
        halo=settings.halo,
        scale=scale,
        overwrite=overwrite,
    )


# over 80 lines only by its signature and docstring (20 documented options)
def predict_zarr(
    model: Any,
    source: Any,
    dest: str | os.PathLike,
    *,
    block: int = 1024,
    tile: int | tuple[int, int] | None = None,
    halo: int = DEFAULT_HALO,
    overlap: int | None = None,
    batch_size: int = 1,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    size_multiple: int | None = None,
    dtype: str = "uint8",
    labels: str | None = None,
    class_values: Sequence[int] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    margin: int = 64,
    overwrite: bool = False,
) -> Iterator[dict]:
    """Predict an image larger than memory block by block into an OME-Zarr store.

    Where the model's receptive field is within ``halo`` the result equals
    :func:`~napari_dlcb.inference.tiled.predict_tiled` of the whole image.
    Arguments are checked when the function is called; the work happens as
    the returned generator is iterated. Close it (or stop iterating) to
    cancel: a cancelled run leaves nothing at ``dest``.

    Parameters
    ----------
    model, batch_size, device, normalizer, channel_axis, activation, amp, size_multiple
        As for :func:`~napari_dlcb.inference.tiled.predict_tiled`; the model
        is handed back unchanged when the generator finishes or is closed. A
        per-image normaliser is frozen on the whole source first (one
        streaming pass).
    source : zarr array, dask array, ndarray or path
        The image. A path may be a Zarr array or an OME-Zarr image (full
        resolution is read, and its pixel size copied to the output).
    dest : str or path-like
        Output folder, an NGFF 0.4 OME-Zarr image (Zarr v2): ``dest/0`` holds
        the probabilities (C, Y, X) in chunks of (C, block, block), and
        ``dest/labels/segmentation/0`` the labels (Y, X) int32 if requested.
    block : int
        Output block side, the chunk size of the stored arrays (1024).
    tile : int or (int, int), optional
        Largest network tile inside a block. Default: the block plus its halo
        in one tile while that is at most 1152 pixels per side.
    halo, overlap : int
        Context read around each block and each tile (32); blending width
        between tiles inside a block (default ``halo``).
    dtype : {"uint8", "float16", "float32"}
        Storage of probabilities. ``"uint8"`` (default) stores
        ``round(255 * p)``: error <= 0.002. ``open_prediction`` decodes it.
    labels : {None, "classes", "instances"}
        Also write labels: the arg-max class written as ``class_values``, or
        objects made by ``instances_from_probabilities`` (with ``postprocess``
        options) on a window ``margin`` pixels larger than each block, joined
        across block faces and numbered 1..N (two more passes over the blocks).
    class_values, postprocess, margin
        See ``labels``; objects up to about ``margin`` (64) pixels come out
        identical on both sides of a block face.
    overwrite : bool
        Replace an existing ``dest``.

    Returns
    -------
    generator of dict
        Yields ``{"done": i, "total": n, "stage": "predict" | "instances" |
        "relabel", "block": ((r0, r1), (c0, c1))}`` after every block; the
        last event also has ``"path"``, the finished store.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> img = np.random.default_rng(0).random((200, 300), dtype=np.float32)
    >>> from napari_dlcb.inference.store import open_prediction
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "pred.ome.zarr"
    >>> events = list(predict_zarr(model, img, out, block=128, halo=8, device="cpu"))
    >>> events[-1]["done"], events[-1]["total"], open_prediction(out)[0].shape
    (6, 6, (2, 200, 300))
    """
    activation = check_activation(activation)
    settings = BlockSettings.check(
        block=block,
        tile=tile,
        halo=halo,
        overlap=overlap,
        batch_size=batch_size,
        activation=activation,
        dtype=dtype,
        labels=labels,
        class_values=class_values,
        margin=margin,
        postprocess=postprocess,
    )
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
    src = ImageSource(source, channel_axis)
    dev = resolve_device(device)
    normalize = cyx_normalizer(None)  # replaced by the frozen normaliser when the run starts
    engine = TileEngine(model, dev, normalize, activation, amp, int(batch_size), size_multiple)
    return _events(engine, src, normalizer, dest, settings, overwrite, pixel_size(source))


def _events(
    engine: TileEngine,
    src: ImageSource,
    normalizer: Any,
    dest: Path,
    settings: BlockSettings,
    overwrite: bool,
    scale: tuple[float, float],
) -> Iterator[dict]:
    """The generator behind :func:`predict_zarr` (arguments already checked)."""
    from napari_dlcb.models.state import inference_mode_on

    blocks = block_grid(src.shape, settings.block)
    total = len(blocks) * len(settings.stages)
    out: OmeZarrBuilder | None = None
    finished = False
    event: dict = {}
    try:
        engine.normalize = cyx_normalizer(freeze_normalizer(normalizer, src))
        with inference_mode_on(engine.model, engine.device):
            for done, block in enumerate(blocks, start=1):
                prob = engine.predict(
                    src, block, tile=settings.tile, halo=settings.halo, overlap=settings.overlap
                )
                if out is None:  # the number of classes is known after one block
                    out = _new_store(
                        dest,
                        settings,
                        channels=prob.shape[0],
                        shape=src.shape,
                        activation=engine.activation,
                        scale=scale,
                        overwrite=overwrite,
                    )
                    prob_array, label_array = prediction_arrays(out.path)
                _store(prob, block, prob_array, label_array, settings)
                del prob
                event = {"done": done, "total": total, "stage": "predict", "block": block}
                if done < total:  # the last event comes once the store is complete
                    yield event
        assert out is not None
        if settings.labels == "instances":
            event = yield from _instance_passes(
                prob_array, label_array, blocks, src.shape, settings
            )
        path = out.finish()
        finished = True
        yield {**event, "path": path}
    finally:
        if out is not None and not finished:
            out.discard()


def _instance_passes(
    prob_array: Any,
    label_array: Any,
    blocks: list[Block],
    shape: tuple[int, int],
    settings: BlockSettings,
) -> Generator[dict, None, dict]:
    """Instances block by block, then one relabelling pass; returns the last event."""
    total = 3 * len(blocks)
    done = len(blocks)
    grid = (-(-shape[0] // settings.block), -(-shape[1] // settings.block))
    stitcher = Stitcher(grid)
    for i, block in enumerate(blocks):
        result = instances_block(
            prob_array,
            label_array,
            block,
            shape,
            margin=settings.margin,
            options=settings.postprocess,
        )
        stitcher.add(i, *result)
        done += 1
        yield {"done": done, "total": total, "stage": "instances", "block": block}
    offsets, lut = stitcher.lookup()
    event: dict = {}
    for block, offset in zip(blocks, offsets):
        relabel_block(label_array, block, int(offset), lut)
        done += 1
        event = {"done": done, "total": total, "stage": "relabel", "block": block}
        if done < total:
            yield event
    return event
