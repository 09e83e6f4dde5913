"""Tiled, blended prediction of 2-D images of any size, in memory or block by block.

How the tiling works
--------------------
Every tile is a fixed-size window of the input. Its outer ``halo`` pixels
only give the network context and never reach the output. The inner parts
("cores") of neighbouring tiles overlap, and across each overlap a cosine
ramp hands over from one tile to the next: the weights are ``cos²`` and
``sin²`` of the same angle, so they sum to exactly one and no weight map has
to be divided out. Outside the image the input is mirrored (numpy's
``"reflect"``), so a prediction equals the model run on the whole image
reflect-padded by ``halo`` wherever the model's receptive field is smaller
than ``halo``, whatever the tile size, batch size or image size. Tiles are
shrunk for images smaller than one tile.

Tiles start on a fixed grid of the image (multiples of the model's
``multiple`` attribute, the U-Net's ``2 ** depth``, else 32 pixels). A
network that pools is shift-equivariant only for shifts by whole pooling
cells, so this keeps every tile, viewport and Zarr block on the same pooling
phase as one pass over the whole image: for the built-in U-Net, 256 px tiles
then differ from a single pass by at most 0.01 in probability (0.32 with
tiles placed anywhere; ``benchmarks/bench_viewport.py``).

The same engine serves three callers:

* :func:`predict_tiled`: a whole in-memory image;
* :func:`predict_region`: one viewport of an image, with real context from
  around it (the live preview in the GUI);
* :func:`predict_zarr`: an image larger than memory, read and written block
  by block as a generator, so the GUI can show progress and cancel.

Normalisation
-------------
``normalizer`` maps an image to float32. It is applied to each tile as it is
read, so it must be point-wise: fixed statistics, as the dataset modes of
:class:`napari_dlcb.data.normalize.Normalizer` have. A ``Normalizer`` in a
per-image mode (``"per_image_zscore"``, ``"per_image_percentile"``) is first
*frozen* with statistics of the whole image by :func:`freeze_normalizer`,
which gives exactly what normalising the whole image at once gives. For a
huge image that means one streaming pass over it; to avoid repeating it (for
example for every viewport of a live preview), freeze once and pass the
frozen normaliser, or pass precomputed statistics directly::

    frozen = freeze_normalizer(normalizer, big_image)        # one pass
    Normalizer(mode="zscore", low=[mean], high=[std])         # known statistics

Nothing in this module imports torch at import time.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "freeze_normalizer",
    "open_prediction",
    "predict_region",
    "predict_tiled",
    "predict_zarr",
    "open_prediction_lazy",
]

#: Largest tile side chosen automatically (``tile=None``): a 1024 px viewport
#: plus a 32 px halo on each side runs as one tile.
AUTO_MAX_TILE = 1152
#: Automatic tile sides are multiples of this (U-Nets downsample by 2**depth).
AUTO_MULTIPLE = 32
#: Pixels per channel that per-image statistics are computed from (as Normalizer does).
_STATS_SAMPLES = 4_000_000

Region = tuple[slice, slice] | Sequence[tuple[int, int]]


# ----------------------------------------------------------------------------- device


def _inference_on(model: Any, device: Any) -> Any:
    from napari_dlcb.models.state import inference_mode_on

    return inference_mode_on(model, device)


# ----------------------------------------------------------------------------- sources


class _Source:
    """A 2-D image, in memory or lazy, read as (C, Y, X) windows of a mirrored plane.

    Windows may reach outside the image: indices are mirrored with numpy's
    ``"reflect"`` rule, so every window is a window of one and the same
    infinite reflect-padded image, whatever was read before.
    """

    def __init__(self, array: Any, channel_axis: int | None) -> None:
        if isinstance(array, (str, os.PathLike)):
            array = _open_zarr_image(array)
        if not hasattr(array, "shape") or not hasattr(array, "__getitem__"):
            array = np.asarray(array)
        ndim = len(array.shape)
        if channel_axis is None:
            if ndim != 2:
                raise DlcbError(
                    f"image of shape {tuple(array.shape)} is not 2-D; pass channel_axis for a "
                    "multichannel image"
                )
        else:
            if ndim != 3:
                raise DlcbError(
                    f"channel_axis={channel_axis} needs a 3-D image, got shape {tuple(array.shape)}"
                )
            if not -3 <= channel_axis < 3:
                raise DlcbError(f"channel_axis={channel_axis} is out of range for a 3-D image")
            channel_axis %= 3
        self.array = array
        self.channel_axis = channel_axis
        spatial = [n for i, n in enumerate(array.shape) if i != channel_axis]
        self.shape: tuple[int, int] = (int(spatial[0]), int(spatial[1]))
        self.channels = 1 if channel_axis is None else int(array.shape[channel_axis])
        if min(self.shape) < 1:
            raise DlcbError(f"image of shape {tuple(array.shape)} is empty")

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Read the window ``[r0, r1) x [c0, c1)`` of the mirrored image as (C, h, w)."""
        r_idx = _reflect_index(rows[0], rows[1], self.shape[0])
        c_idx = _reflect_index(cols[0], cols[1], self.shape[1])
        r_lo, r_hi = int(r_idx.min()), int(r_idx.max()) + 1
        c_lo, c_hi = int(c_idx.min()), int(c_idx.max()) + 1
        key: list[slice] = [slice(r_lo, r_hi), slice(c_lo, c_hi)]
        if self.channel_axis is not None:
            key.insert(self.channel_axis, slice(None))
        block = np.asarray(self.array[tuple(key)])
        if self.channel_axis is None:
            block = block[None]
        elif self.channel_axis != 0:
            block = np.moveaxis(block, self.channel_axis, 0)
        inside = (
            rows[0] >= 0 and cols[0] >= 0 and rows[1] <= self.shape[0] and cols[1] <= self.shape[1]
        )
        if inside:
            return block  # no mirrored pixels
        r_local, c_local = r_idx - r_lo, c_idx - c_lo
        return block[:, r_local[:, None], c_local[None, :]]


def _reflect_index(start: int, stop: int, size: int) -> np.ndarray:
    """Indices ``start..stop-1`` mirrored into ``[0, size)`` like ``np.pad(mode="reflect")``."""
    idx = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(idx)
    period = 2 * (size - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= size, period - idx, idx)


def _open_zarr_image(path: str | os.PathLike) -> Any:
    """Open a zarr array, or the full-resolution array of an OME-Zarr image group."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise DlcbError(f"no such zarr store: {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError, TypeError) as err:  # zarr's errors derive from these
        raise DlcbError(f"cannot open {path} as a zarr image: {err}") from err
    if hasattr(node, "shape"):
        return node
    attrs = dict(node.attrs)
    ms = attrs.get("ome", attrs).get("multiscales")
    key = ms[0]["datasets"][0]["path"] if ms else "0"
    try:
        return node[key]
    except KeyError as err:
        raise DlcbError(f"{path} is a zarr group without an image array '{key}'") from err


# ----------------------------------------------------------------------------- normalisation


def _is_per_image(normalizer: Any) -> bool:
    mode = getattr(normalizer, "mode", None)
    return (
        isinstance(mode, str)
        and mode.startswith("per_image")
        and hasattr(normalizer, "image_stats")
    )


def _sample_pixels(source: _Source, max_samples: int = _STATS_SAMPLES) -> np.ndarray:
    """Every k-th pixel in row-major order, (C, 1, n) float32, read in row bands.

    This is exactly the subsample ``Normalizer.image_stats`` takes of an
    in-memory image, gathered without holding the image in memory.
    """
    n_rows, n_cols = source.shape
    total = n_rows * n_cols
    step = 1 if total <= max_samples else total // max_samples + 1
    band = max(1, 2**22 // n_cols)
    parts = []
    for r0 in range(0, n_rows, band):
        r1 = min(n_rows, r0 + band)
        block = source.read((r0, r1), (0, n_cols)).reshape(source.channels, -1)
        first = (-r0 * n_cols) % step
        parts.append(block[:, first::step].astype(np.float32))
    return np.concatenate(parts, axis=1)[:, None, :]


def freeze_normalizer(
    normalizer: Any, image: Any, *, channel_axis: int | None = None
) -> Callable[..., np.ndarray] | None:
    """Fix a per-image normaliser's statistics on a whole image, so tiles can use it.

    Parameters
    ----------
    normalizer : Normalizer, callable or None
        A :class:`~napari_dlcb.data.normalize.Normalizer` in a per-image mode
        is turned into the equivalent dataset-mode normaliser, with this
        image's statistics (computed from the same pixel subsample as
        ``Normalizer.image_stats`` uses, in a streaming pass for lazy
        images). Anything else is returned unchanged.
    image : array-like, zarr array, dask array or path
        The whole image the tiles come from.
    channel_axis : int, optional
        Channel axis of ``image``.

    Returns
    -------
    callable or None
        A point-wise normaliser.

    Examples
    --------
    >>> from napari_dlcb.data.normalize import Normalizer
    >>> img = np.arange(64.0).reshape(8, 8)
    >>> frozen = freeze_normalizer(Normalizer(mode="per_image_zscore"), img)
    >>> frozen.mode, bool(np.allclose(frozen(img[:2, :2]), Normalizer(mode="per_image_zscore")(img)[:, :2, :2]))
    ('zscore', True)
    """
    if normalizer is None or not _is_per_image(normalizer):
        return normalizer
    source = image if isinstance(image, _Source) else _Source(image, channel_axis)
    low, high = normalizer.image_stats(_sample_pixels(source))
    mode = normalizer.mode.removeprefix("per_image_")
    fields = {"mode": mode, "low": [float(v) for v in low], "high": [float(v) for v in high]}
    if hasattr(normalizer, "to_dict") and hasattr(type(normalizer), "from_dict"):
        return type(normalizer).from_dict({**normalizer.to_dict(), **fields})
    return type(normalizer)(**fields)  # pragma: no cover - other Normalizer-like classes


def _tile_normalizer(normalizer: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a normaliser as (C, h, w) -> float32 (C, h, w), whatever its signature."""
    if normalizer is None:
        return lambda tile: tile.astype(np.float32, copy=False)
    if not callable(normalizer):
        raise DlcbError(f"normalizer must be callable or None, got {type(normalizer).__name__}")
    try:
        takes_axis = "channel_axis" in inspect.signature(normalizer).parameters
    except (TypeError, ValueError):  # builtins without a signature
        takes_axis = False

    def apply(tile: np.ndarray) -> np.ndarray:
        if tile.shape[0] == 1:
            out = normalizer(tile[0], channel_axis=None) if takes_axis else normalizer(tile[0])
        else:
            out = normalizer(tile, channel_axis=0) if takes_axis else normalizer(tile)
        out = np.asarray(out, dtype=np.float32)
        return out[None] if out.ndim == 2 else out

    return apply


# ----------------------------------------------------------------------------- tiling plan


@dataclass(frozen=True)
class _AxisTile:
    """One tile along one axis: input window and output weights."""

    start: int  # first input index (may be negative: mirrored)
    lo: int  # first output index with weight > 0
    hi: int  # one past the last
    weight: np.ndarray  # float32 weights for [lo, hi)


def _axis_plan(
    start: int, stop: int, tile: int, halo: int, overlap: int, align: int = 1
) -> list[_AxisTile]:
    """Tiles of input length ``tile`` whose weighted cores cover ``[start, stop)``.

    Core starts lie on multiples of ``align`` in image coordinates, so every
    tile of every call sees the image on the same pooling grid (a U-Net that
    downsamples by 16 is equivariant only to shifts by multiples of 16).
    Cores (tile minus ``halo`` each side) are spread evenly and overlap by at
    least ``overlap`` where possible; inside each overlap a transition zone of
    up to ``overlap`` pixels carries a ``sin²``/``cos²`` hand-over. The
    weights of all tiles sum to one at every output index.
    """
    core = tile - 2 * halo
    if core < align:
        align = 1
    first = (start // align) * align
    last = max(first, -(-(stop - core) // align) * align)  # its core reaches ``stop``
    if last == first:
        core_starts = [first]
    else:
        max_step = max(align, ((core - overlap) // align) * align)
        steps = (last - first) // align
        n = -(-(last - first) // max_step) + 1
        core_starts = [first + align * round(k * steps / (n - 1)) for k in range(n)]
    zones = []  # (zone start, zone length) between tile k-1 and tile k
    for k in range(1, len(core_starts)):
        step = core_starts[k] - core_starts[k - 1]
        length = max(0, min(overlap, core - step, step - 1))
        shared_lo, shared_hi = core_starts[k], core_starts[k - 1] + core
        zones.append((shared_lo + (shared_hi - shared_lo - length) // 2, length))
    tiles = []
    for k, c0 in enumerate(core_starts):
        lo = c0 if k == 0 else zones[k - 1][0]
        hi = c0 + core if k == len(core_starts) - 1 else zones[k][0] + zones[k][1]
        weight = np.ones(hi - lo, np.float32)
        if k > 0 and zones[k - 1][1]:
            length = zones[k - 1][1]
            weight[:length] = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
        if k < len(core_starts) - 1 and zones[k][1]:
            length = zones[k][1]
            ramp = np.cos(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
            weight[hi - lo - length :] = ramp
        keep_lo, keep_hi = max(lo, start), min(hi, stop)  # the plan may overhang the range
        if keep_hi > keep_lo:
            tiles.append(
                _AxisTile(c0 - halo, keep_lo, keep_hi, weight[keep_lo - lo : keep_hi - lo])
            )
    return tiles


def _tile_size(tile: int | None, span: int, halo: int, overlap: int, offset: int = 0) -> int:
    """The tile side used along one axis of ``span`` output pixels.

    ``offset`` is how far the range starts after the aligned grid line before
    it (the first core begins there). A given ``tile`` is the largest side
    used: it is shrunk (to a multiple of the largest power of two, up to 32,
    that divides it) when the image is smaller. ``None`` chooses the fewest
    tiles of at most ``AUTO_MAX_TILE``.
    """
    needed = span + offset + 2 * halo
    if tile is None:
        multiple = AUTO_MULTIPLE
        core_max = AUTO_MAX_TILE - 2 * halo
        if needed <= AUTO_MAX_TILE:
            tile = needed
        elif core_max <= overlap:
            raise DlcbError(
                f"halo {halo} and overlap {overlap} are too large for automatic tiles of at most "
                f"{AUTO_MAX_TILE} px; pass tile="
            )
        else:
            n = -(-(span + offset - core_max) // (core_max - overlap)) + 1
            tile = -(-(span + offset + (n - 1) * overlap) // n) + 2 * halo
        return -(-tile // multiple) * multiple
    if tile < 1:
        raise DlcbError(f"tile must be a positive number of pixels, got {tile}")
    multiple = min(AUTO_MULTIPLE, tile & -tile)
    if needed < tile:
        return min(tile, -(-needed // multiple) * multiple)
    return tile


def _grid(model: Any) -> int:
    """Alignment of tile positions: the model's downsampling factor, else 32."""
    multiple = getattr(model, "multiple", None)
    if isinstance(multiple, int) and 1 <= multiple <= 256:
        return multiple
    return AUTO_MULTIPLE


def _as_pair(value: int | Sequence[int] | None, name: str) -> tuple[Any, Any]:
    if value is None or isinstance(value, (int, np.integer)):
        return value, value
    pair = tuple(value)
    if len(pair) != 2:
        raise DlcbError(f"{name} must be an int or a (rows, cols) pair, got {value!r}")
    return pair[0], pair[1]


def _normalise_region(region: Region, shape: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Clip a (row, col) region of slices or (start, stop) pairs to the image."""
    try:
        parts = list(region)
    except TypeError as err:
        raise DlcbError("region must be a (row_slice, col_slice) pair") from err
    if len(parts) != 2:
        raise DlcbError(f"region must have 2 entries (rows, cols), got {len(parts)}")
    out = []
    for part, size in zip(parts, shape):
        if isinstance(part, slice):
            if part.step not in (None, 1):
                raise DlcbError("region slices must have step 1")
            lo, hi, _ = part.indices(size)
        else:
            lo, hi = (max(0, min(size, int(v))) for v in part)
        if hi <= lo:
            raise DlcbError(f"region {region!r} is empty inside an image of shape {shape}")
        out.append((lo, hi))
    return tuple(out)


# ----------------------------------------------------------------------------- engine


def _activate(logits: torch.Tensor, activation: str | None) -> torch.Tensor:
    import torch

    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def _check_activation(activation: str | None) -> str | None:
    if activation in ("none", "identity"):
        return None
    if activation not in ("softmax", "sigmoid", None):
        raise DlcbError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
    return activation


@dataclass
class _Engine:
    """Runs a model over tiles of a :class:`_Source`; the model is prepared by the caller."""

    model: Any
    device: torch.device
    normalize: Callable[[np.ndarray], np.ndarray]
    activation: str | None
    amp: bool
    batch_size: int

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (or logits) for a (B, C, h, w) float32 batch, as numpy float32."""
        import torch

        x = torch.from_numpy(batch).to(self.device)
        amp = self.amp and self.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext():
            try:
                y = self.model(x)
            except RuntimeError as err:  # wrong channels, too little memory...
                text = str(err).strip()
                oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5
                if isinstance(err, oom) or "out of memory" in text:
                    raise DlcbError(
                        f"out of memory on {self.device} for a batch of shape {tuple(x.shape)}; "
                        "use a smaller tile or batch_size"
                    ) from err
                first = text.splitlines()[0] if text else type(err).__name__
                raise DlcbError(
                    f"the model cannot process a tile of shape {tuple(x.shape)}: {first}"
                ) from err
        if not isinstance(y, torch.Tensor) or y.ndim != 4 or y.shape[-2:] != x.shape[-2:]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise DlcbError(
                f"the model returned {shape} for a tile of shape {tuple(x.shape)}; it must "
                "return (B, classes, Y, X) logits on the input grid"
            )
        return _activate(y.float(), self.activation).cpu().numpy()

    def predict(
        self,
        source: _Source,
        region: tuple[tuple[int, int], tuple[int, int]],
        *,
        tile: tuple[int | None, int | None],
        halo: int,
        overlap: int,
        progress: Callable[[int, int], Any] | None = None,
    ) -> np.ndarray:
        """Blended prediction of ``region`` of ``source``, shape (K, h, w) float32."""
        (r0, r1), (c0, c1) = region
        align = _grid(self.model)
        tiles_y = _tile_size(tile[0], r1 - r0, halo, overlap, r0 % align)
        tiles_x = _tile_size(tile[1], c1 - c0, halo, overlap, c0 % align)
        for side in (tiles_y, tiles_x):
            if side <= 2 * halo:
                raise DlcbError(f"tile ({side}) must be larger than twice the halo ({halo})")
        plan_y = _axis_plan(r0, r1, tiles_y, halo, overlap, align)
        plan_x = _axis_plan(c0, c1, tiles_x, halo, overlap, align)
        jobs = [(ty, tx) for ty in plan_y for tx in plan_x]
        total = -(-len(jobs) // self.batch_size)
        out: np.ndarray | None = None
        for b in range(total):
            chunk = jobs[b * self.batch_size : (b + 1) * self.batch_size]
            batch = np.stack(
                [
                    self.normalize(
                        source.read((ty.start, ty.start + tiles_y), (tx.start, tx.start + tiles_x))
                    )
                    for ty, tx in chunk
                ]
            )
            pred = self.forward(batch)
            if out is None:
                out = np.zeros((pred.shape[1], r1 - r0, c1 - c0), np.float32)
            for (ty, tx), p in zip(chunk, pred):
                window = p[
                    :,
                    ty.lo - ty.start : ty.hi - ty.start,
                    tx.lo - tx.start : tx.hi - tx.start,
                ]
                out[:, ty.lo - r0 : ty.hi - r0, tx.lo - c0 : tx.hi - c0] += (
                    window * ty.weight[:, None] * tx.weight[None, :]
                )
            if progress is not None:
                progress(b + 1, total)
        assert out is not None  # at least one tile always exists
        return out


def _check_sizes(halo: int, overlap: int | None, batch_size: int) -> int:
    if halo < 0:
        raise DlcbError(f"halo must be >= 0, got {halo}")
    if batch_size < 1:
        raise DlcbError(f"batch_size must be >= 1, got {batch_size}")
    overlap = halo if overlap is None else overlap
    if overlap < 0:
        raise DlcbError(f"overlap must be >= 0, got {overlap}")
    return int(overlap)


# ----------------------------------------------------------------------------- public API


def predict_region(
    model: Any,
    image: Any,
    region: Region,
    *,
    tile: int | tuple[int, int] | None = None,
    halo: int = 32,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    progress: Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """Predict one rectangular region of an image, with context from around it.

    Pixels up to ``halo`` beyond the region are read from the image (mirrored
    only where the region touches the image border), so the result equals
    the corresponding crop of :func:`predict_tiled` on the whole image for
    any model whose receptive field is within ``halo``. This is what the live
    preview calls for the current viewport.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (B, C, Y, X) float32 and returns (B, K, Y, X) logits. Handed
        back in its original mode and on its original device.
    image : array-like, zarr array, dask array or path
        2-D (Y, X), or 3-D with a ``channel_axis``. Only the region plus its
        halo is read.
    region : (slice, slice) or ((r0, r1), (c0, c1))
        Rows and columns to predict; clipped to the image.
    tile : int or (int, int), optional
        Largest tile side in pixels (input window, halo included). Default:
        the region plus its halo as one tile up to ``AUTO_MAX_TILE`` (1152)
        pixels per side, else the fewest tiles that fit.
    halo : int
        Context pixels each side of every tile that are not written.
    overlap : int, optional
        Width of the blending zone between neighbouring tiles (default
        ``halo``).
    batch_size : int
        Tiles per forward pass.
    device : str or torch.device
        ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``...
    normalizer : callable, optional
        Image -> float32, applied per tile; see the module docs for per-image
        normalisation. A per-image :class:`Normalizer` is frozen on the whole
        image first, which reads all of it: freeze once with
        :func:`freeze_normalizer` when predicting many regions.
    channel_axis : int, optional
        Channel axis of a multichannel image.
    activation : {"softmax", "sigmoid", None}
        Applied to the logits over the class axis; None returns logits.
    amp : bool
        Use float16 autocast on CUDA (ignored on other devices).
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch.

    Returns
    -------
    ndarray of float32, shape (K, h, w)
        Probabilities (or logits) for exactly the (clipped) region.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> img = np.random.default_rng(0).random((300, 400), dtype=np.float32)
    >>> predict_region(model, img, (slice(100, 164), slice(0, 50)), device="cpu").shape
    (2, 64, 50)
    """
    activation = _check_activation(activation)
    overlap = _check_sizes(halo, overlap, batch_size)
    source = image if isinstance(image, _Source) else _Source(image, channel_axis)
    rows, cols = _normalise_region(region, source.shape)
    normalizer = freeze_normalizer(normalizer, source)
    dev = resolve_device(device)
    engine = _Engine(model, dev, _tile_normalizer(normalizer), activation, amp, int(batch_size))
    with _inference_on(model, dev):
        return engine.predict(
            source,
            (rows, cols),
            tile=_as_pair(tile, "tile"),
            halo=int(halo),
            overlap=overlap,
            progress=progress,
        )


def predict_tiled(
    model: Any,
    image: Any,
    *,
    tile: int | tuple[int, int] | None = 256,
    halo: int = 32,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    progress: Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """Predict a whole image tile by tile, blending overlapping tiles without seams.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (B, C, Y, X) float32 and returns (B, K, Y, X) logits (a U-Net).
        It is run in eval mode under ``torch.inference_mode`` and handed back
        with its training flags and device unchanged.
    image : array-like
        2-D (Y, X), or 3-D with a ``channel_axis``; any size (smaller than a
        tile, not a multiple of it) and any real dtype.
    tile : int or (int, int) or None
        Largest input tile side, halo included (256). Smaller images use one
        smaller tile. ``None`` chooses large tiles automatically.
    halo : int
        Context pixels at each tile edge that are not written (32). Beyond
        the image border the image is mirrored.
    overlap : int, optional
        Width of the cosine blending zone between tiles (default ``halo``).
    batch_size : int
        Tiles per forward pass; the result does not depend on it.
    device : str or torch.device
        ``"auto"`` picks CUDA, else MPS, else CPU.
    normalizer : callable, optional
        Image -> float32, e.g. a :class:`~napari_dlcb.data.normalize.Normalizer`;
        None means the image is already normalised. Per-image normalisers are
        frozen on the whole image (see :func:`freeze_normalizer`).
    channel_axis : int, optional
        Channel axis of a multichannel image.
    activation : {"softmax", "sigmoid", None}
        Output activation over the class axis; None returns logits.
    amp : bool
        float16 autocast on CUDA only.
    progress : callable, optional
        ``progress(done, total)`` after every batch.

    Returns
    -------
    ndarray of float32, shape (K, Y, X)
        Per-class probabilities on the input grid.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Conv2d(1, 3, 3, padding=1)
    >>> img = np.random.default_rng(0).random((300, 517))
    >>> prob = predict_tiled(model, img, tile=128, halo=8, device="cpu")
    >>> prob.shape, bool(np.allclose(prob.sum(0), 1, atol=1e-5))
    ((3, 300, 517), True)
    """
    source = _Source(image, channel_axis)
    return predict_region(
        model,
        source,
        ((0, source.shape[0]), (0, source.shape[1])),
        tile=tile,
        halo=halo,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        normalizer=normalizer,
        activation=activation,
        amp=amp,
        progress=progress,
    )


# ----------------------------------------------------------------------------- zarr

#: Name of the label image that :func:`predict_zarr` writes under ``labels/``.
LABELS_NAME = "segmentation"
_PROB_DTYPES = ("uint8", "float16", "float32")
_LABEL_MODES = (None, "classes", "instances")


#: An output block: ((row start, row stop), (column start, column stop)).
Block = tuple[tuple[int, int], tuple[int, int]]


def _blocks(shape: tuple[int, int], block: int) -> list[Block]:
    """Chunk-aligned output blocks in row-major order."""
    return [
        ((r, min(r + block, shape[0])), (c, min(c + block, shape[1])))
        for r in range(0, shape[0], block)
        for c in range(0, shape[1], block)
    ]


def _encode(prob: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities as stored: uint8 = round(255 p), or float16/float32."""
    if dtype == "uint8":
        return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    return prob.astype(dtype)


def _decode(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_encode`, float32."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1 / 255)
    return stored.astype(np.float32)


def _ome_attrs(name: str, axes: str, scale: Sequence[float], extra: dict) -> dict:
    """NGFF 0.4 ``multiscales`` attributes for a single-level image."""
    kinds = {"c": "channel", "y": "space", "x": "space"}
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": name,
                "axes": [{"name": a, "type": kinds[a]} for a in axes],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(s) for s in scale]}
                        ],
                    }
                ],
                "metadata": {"writer": "napari-dlcb", **extra},
            }
        ]
    }


def _new_array(group: Any, key: str, shape: tuple, dtype: str, chunks: tuple) -> Any:
    """A Zarr v2 array as NGFF 0.4 wants it (``/`` chunk keys, Blosc zstd)."""
    import numcodecs

    return group.create_array(
        key,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        fill_value=0,
        compressors=numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )


def _source_scale(source: Any) -> tuple[float, float]:
    """Pixel size (y, x) of an OME-Zarr source path, else (1, 1)."""
    if not isinstance(source, (str, os.PathLike)):
        return 1.0, 1.0
    try:
        from napari_dlcb.io.images import read_multiscale

        _, meta = read_multiscale(source, squeeze=False)
        axes, scale = meta["axes"], meta["scale"]
        return float(scale[axes.index("y")]), float(scale[axes.index("x")])
    except (DlcbError, ImportError, KeyError, ValueError, OSError):
        return 1.0, 1.0


@dataclass
class _ZarrLayout:
    """The OME-Zarr store that predictions are written into, built at a temporary path.

    ``tmp/0`` holds probabilities (C, Y, X) and ``tmp/labels/<LABELS_NAME>/0``
    the labels (Y, X) int32; :meth:`commit` renames ``tmp`` to ``dest``.
    """

    dest: Path
    tmp: Path

    @classmethod
    def create(
        cls,
        dest: str | os.PathLike,
        *,
        channels: int,
        shape: tuple[int, int],
        block: int,
        dtype: str,
        labels: bool,
        overwrite: bool,
        scale: tuple[float, float],
        info: dict,
    ) -> _ZarrLayout:
        import uuid

        import zarr

        dest = Path(dest)
        if dest.exists() and not overwrite:
            raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        bl = (min(block, shape[0]), min(block, shape[1]))
        _new_array(root, "0", (channels, *shape), dtype, (channels, *bl))
        root.attrs.update(_ome_attrs("probabilities", "cyx", (1.0, *scale), info))
        if labels:
            lab_root = root.create_group("labels")
            lab_root.attrs["labels"] = [LABELS_NAME]
            lab = lab_root.create_group(LABELS_NAME)
            _new_array(lab, "0", shape, "int32", bl)
            lab.attrs.update(_ome_attrs(LABELS_NAME, "yx", scale, {}))
            lab.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
        return cls(dest, tmp)

    def arrays(self, mode: str = "r+") -> tuple[Any, Any | None]:
        """(probabilities, labels or None) of the temporary store."""
        import zarr

        root = zarr.open_group(str(self.tmp), mode=mode)
        labels = root.get(f"labels/{LABELS_NAME}/0")
        return root["0"], labels

    def commit(self) -> Path:
        import shutil

        if self.dest.exists():
            old = self.dest.with_name(f"{self.tmp.name}.old")
            os.replace(self.dest, old)
            os.replace(self.tmp, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.dest)
        return self.dest

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def _store_block(
    prob: np.ndarray,
    block: Block,
    prob_array: Any,
    label_array: Any | None,
    *,
    dtype: str,
    labels: str | None,
    class_values: Sequence[int] | None,
) -> None:
    """Write one block's probabilities (and class labels) into the store."""
    from napari_dlcb.inference.postprocess import classes_from_probabilities

    (r0, r1), (c0, c1) = block
    prob_array[:, r0:r1, c0:c1] = _encode(prob, dtype)
    if labels == "classes" and label_array is not None:
        label_array[r0:r1, c0:c1] = classes_from_probabilities(prob, class_values)


def _predict_block(
    engine: _Engine,
    source: _Source,
    block: Block,
    prob_array: Any,
    label_array: Any | None,
    *,
    model_tile: tuple[int | None, int | None],
    halo: int,
    overlap: int,
    dtype: str,
    labels: str | None,
    class_values: Sequence[int] | None,
) -> None:
    """Predict one block (reading it plus its halo) and store it."""
    prob = engine.predict(source, block, tile=model_tile, halo=halo, overlap=overlap)
    _store_block(
        prob, block, prob_array, label_array, dtype=dtype, labels=labels, class_values=class_values
    )


# Instances of a large image, block by block ------------------------------------------
#
# 1. Each block is segmented on a window reaching ``margin`` pixels into its
#    neighbours; its core is stored with block-local ids 1..n.
# 2. Neighbouring windows overlap on a strip of width 2 * margin around their
#    shared face. Objects of the two windows whose masks on that strip have
#    IoU >= 0.5 are the same object and are joined. Objects that merely touch
#    at the face stay apart: each window sees both of them whole.
# 3. Every block is relabelled once: (block, local id) -> consecutive global id.


def _instances_block(
    prob_array: Any,
    label_array: Any,
    block: Block,
    shape: tuple[int, int],
    *,
    margin: int,
    options: Mapping[str, Any],
) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """Segment one block's window and store its core with block-local ids.

    Returns the number of local ids, the ids present in the core, and the
    window's labels on the strips around its four faces (``"right"``,
    ``"left"``, ``"down"``, ``"up"``), in image coordinates
    ``[face - margin, face + margin)`` clipped to the image, so that two
    neighbours' strips of a shared face cover the same pixels.
    """
    from napari_dlcb.inference.postprocess import instances_from_probabilities

    (r0, r1), (c0, c1) = block
    n_rows, n_cols = shape
    w0, w1 = max(0, r0 - margin), min(n_rows, r1 + margin)
    v0, v1 = max(0, c0 - margin), min(n_cols, c1 + margin)
    lab = instances_from_probabilities(
        _decode(np.asarray(prob_array[:, w0:w1, v0:v1])), **dict(options)
    )
    core = lab[r0 - w0 : r1 - w0, c0 - v0 : c1 - v0]
    label_array[r0:r1, c0:c1] = core

    def rows_at(face: int) -> slice:
        return slice(max(0, face - margin) - w0, min(n_rows, face + margin) - w0)

    def cols_at(face: int) -> slice:
        return slice(max(0, face - margin) - v0, min(n_cols, face + margin) - v0)

    strips = {
        "right": lab[:, cols_at(c1)],
        "left": lab[:, cols_at(c0)],
        "down": lab[rows_at(r1), :],
        "up": lab[rows_at(r0), :],
    }
    present = np.unique(core)
    return int(lab.max(initial=0)), present[present > 0], strips


def _strip_pairs(a: np.ndarray, b: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """(id in a, id in b) of objects whose masks on two label strips have IoU >= min_iou."""
    from napari_dlcb.inference.postprocess import _overlaps

    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    rows, cols, iou, _, _ = _overlaps(a, b)
    keep = iou >= min_iou
    a_ids, b_ids = np.unique(a), np.unique(b)
    a_ids, b_ids = a_ids[a_ids != 0], b_ids[b_ids != 0]
    return np.stack([a_ids[rows[keep]], b_ids[cols[keep]]], axis=1).astype(np.int64)


class _Stitcher:
    """Collects per-block instance results (in any order) and joins them across faces."""

    _FACES = {
        "right": (0, 1, "left"),
        "left": (0, -1, "right"),
        "down": (1, 0, "up"),
        "up": (-1, 0, "down"),
    }

    def __init__(self, grid: tuple[int, int]) -> None:
        self.grid = grid
        n = grid[0] * grid[1]
        self.counts = np.zeros(n, np.int64)
        self.present: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        self.waiting: dict[int, dict[str, np.ndarray]] = {}
        self.pairs: list[np.ndarray] = []  # rows of (block i, id, block j, id)

    def add(self, i: int, count: int, present: np.ndarray, strips: dict[str, np.ndarray]) -> None:
        """Record block ``i``'s result and match it with neighbours already recorded."""
        self.counts[i] = count
        self.present[i] = present
        row, col = divmod(i, self.grid[1])
        keep = {}
        for key, (dr, dc, other_key) in self._FACES.items():
            r, c = row + dr, col + dc
            if not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]):
                continue
            j = r * self.grid[1] + c
            other = self.waiting.get(j, {}).pop(other_key, None)
            if other is None:
                keep[key] = strips[key]
                continue
            pairs = _strip_pairs(strips[key], other)
            if len(pairs):
                block_ids = np.broadcast_to(np.array([i, j]), pairs.shape)
                self.pairs.append(
                    np.stack([block_ids[:, 0], pairs[:, 0], block_ids[:, 1], pairs[:, 1]], axis=1)
                )
        self.waiting[i] = keep

    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-block id offsets, and a table from offset local id to consecutive global id."""
        from scipy import sparse
        from scipy.sparse.csgraph import connected_components

        offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        n = int(self.counts.sum()) + 1
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 4), np.int64)
        a = offsets[pairs[:, 0]] + pairs[:, 1]
        b = offsets[pairs[:, 2]] + pairs[:, 3]
        graph = sparse.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        present = np.zeros(n, bool)
        for off, ids in zip(offsets, self.present):
            present[ids + off] = True
        _, rank = np.unique(component[present], return_inverse=True)
        lut = np.zeros(n, np.int64)
        lut[present] = rank.ravel() + 1
        return offsets, lut


def _relabel_block(label_array: Any, block: Block, offset: int, lut: np.ndarray) -> None:
    """Replace a block's local ids by global ones."""
    (r0, r1), (c0, c1) = block
    local = np.asarray(label_array[r0:r1, c0:c1]).astype(np.int64)
    label_array[r0:r1, c0:c1] = np.where(local > 0, lut[local + offset], 0).astype(np.int32)


def open_prediction(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read what :func:`predict_zarr` wrote, as float32 probabilities and labels.

    Parameters
    ----------
    path : str or path-like
        The ``dest`` of :func:`predict_zarr`.

    Returns
    -------
    probabilities : ndarray of float32, shape (C, Y, X)
        uint8 storage is divided by 255.
    labels : ndarray of int32, shape (Y, X), or None

    Notes
    -----
    This loads everything into memory; open ``path/0`` lazily (e.g. with
    ``napari_dlcb.io.images.read_zarr``) for large results.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r")
    labels = root.get(f"labels/{LABELS_NAME}/0")
    return _decode(np.asarray(root["0"])), None if labels is None else np.asarray(labels)


def open_prediction_lazy(
    path: str | os.PathLike, *, smallest: int = 2048
) -> tuple[list[Any], list[Any] | None]:
    """Open what :func:`predict_zarr` wrote lazily, as dask pyramids for a viewer.

    Nothing is read until a level's chunks are computed, so a result larger
    than memory can be shown as napari multiscale layers.

    Parameters
    ----------
    path : str or path-like
        The ``dest`` of :func:`predict_zarr`.
    smallest : int
        Coarser levels (every 2nd pixel of the previous one) are added until
        both sides are at most this.

    Returns
    -------
    probabilities : list of dask arrays, shapes (C, Y / 2**k, X / 2**k)
        As stored (uint8 = p * 255, or float).
    labels : list of dask arrays (Y / 2**k, X / 2**k), or None

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "p.ome.zarr"
    >>> _ = list(predict_zarr(torch.nn.Conv2d(1, 2, 1), np.ones((300, 200), np.float32), out, tile=128, device="cpu"))
    >>> prob, labels = open_prediction_lazy(out, smallest=100)
    >>> [p.shape for p in prob], labels
    ([(2, 300, 200), (2, 150, 100), (2, 75, 50)], None)
    """
    import dask.array as da
    import zarr

    root = zarr.open_group(str(path), mode="r")

    def pyramid(arr: Any) -> list[Any]:
        levels = [da.from_zarr(arr)]
        while max(levels[-1].shape[-2:]) > smallest:
            levels.append(levels[-1][..., ::2, ::2])
        return levels

    labels = root.get(f"labels/{LABELS_NAME}/0")
    return pyramid(root["0"]), None if labels is None else pyramid(labels)


def _check_zarr_options(
    dtype: str, activation: str | None, labels: str | None, tile: int, margin: int
) -> None:
    if dtype not in _PROB_DTYPES:
        raise DlcbError(f"dtype must be one of {', '.join(_PROB_DTYPES)}, got {dtype!r}")
    if dtype == "uint8" and activation is None:
        raise DlcbError("dtype='uint8' stores probabilities; use float16/float32 for logits")
    if labels not in _LABEL_MODES:
        raise DlcbError(f"labels must be None, 'classes' or 'instances', got {labels!r}")
    if labels is not None and activation is None:
        raise DlcbError("labels need probabilities: use activation 'softmax' or 'sigmoid'")
    if tile < 1 or margin < 0:
        raise DlcbError(f"tile must be >= 1 and margin >= 0, got {tile} and {margin}")


def predict_zarr(
    model: Any,
    source: Any,
    dest: str | os.PathLike,
    *,
    tile: int = 1024,
    halo: int = 32,
    model_tile: int | tuple[int, int] | None = None,
    overlap: int | None = None,
    batch_size: int = 1,
    device: str | torch.device = "auto",
    normalizer: Any = None,
    channel_axis: int | None = None,
    activation: str | None = "softmax",
    amp: bool = True,
    dtype: str = "uint8",
    labels: str | None = None,
    class_values: Sequence[int] | None = None,
    postprocess: Mapping[str, Any] | None = None,
    margin: int = 64,
    overwrite: bool = False,
) -> Iterator[dict]:
    """Predict an image larger than memory block by block into an OME-Zarr store.

    Each ``tile`` x ``tile`` output block is predicted from the block plus a
    ``halo`` of real context around it (mirrored only at the image border)
    and written before the next is read, so peak memory is set by ``tile``,
    not by the image. Where the model's receptive field is within ``halo``
    the result equals :func:`predict_tiled` of the whole image.

    Arguments are checked when the function is called; the work happens as
    the returned generator is iterated. Close it (or stop iterating) to
    cancel: a cancelled run leaves nothing at ``dest``.

    Parameters
    ----------
    model : torch.nn.Module
        As for :func:`predict_tiled`; handed back unchanged when the generator
        finishes or is closed.
    source : zarr array, dask array, ndarray or path
        2-D (Y, X) image, or 3-D with ``channel_axis``. A path may be a Zarr
        array or an OME-Zarr image (full resolution is read, and its pixel
        size copied to the output).
    dest : str or path-like
        Output folder, an NGFF 0.4 OME-Zarr image (Zarr v2): ``dest/0`` holds
        the probabilities (C, Y, X) in chunks of (C, tile, tile), and
        ``dest/labels/segmentation/0`` the labels (Y, X) int32 if requested.
        Built under a temporary name and renamed into place when complete.
    tile : int
        Output block side, also the chunk size of the stored arrays (1024).
    halo : int
        Context pixels read around each block and each model tile (32).
    model_tile : int or (int, int), optional
        Largest tile the model sees inside a block. Default: the block plus
        its halo in one tile while that is at most 1152 pixels per side.
    overlap : int, optional
        Blending width between model tiles inside a block (default ``halo``).
    batch_size, device, normalizer, channel_axis, activation, amp
        As for :func:`predict_tiled`. A per-image normaliser is frozen on the
        whole source first (one streaming pass; see :func:`freeze_normalizer`).
    dtype : {"uint8", "float16", "float32"}
        Storage of probabilities. ``"uint8"`` (default) stores
        ``round(255 * p)``: error <= 0.002, half the size of float16. Divide
        by 255 to read it back (:func:`open_prediction` does).
    labels : {None, "classes", "instances"}
        Also write labels. ``"classes"``: arg-max class written as
        ``class_values``. ``"instances"``: objects made by
        :func:`~napari_dlcb.inference.postprocess.instances_from_probabilities`
        on a window ``margin`` pixels larger than each block, joined across
        block faces, numbered 1..N (two more passes over the stored blocks).
    class_values : sequence of int, optional
        Label value of each class for ``labels="classes"``.
    postprocess : mapping, optional
        Keyword arguments for ``instances_from_probabilities``.
    margin : int
        Extra window around each block for instances (64): objects up to
        about this size come out identical on both sides of a block face.
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
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "pred.ome.zarr"
    >>> events = list(predict_zarr(model, img, out, tile=128, halo=8, device="cpu"))
    >>> events[-1]["done"], events[-1]["total"], open_prediction(out)[0].shape
    (6, 6, (2, 200, 300))
    """
    activation = _check_activation(activation)
    overlap = _check_sizes(halo, overlap, batch_size)
    _check_zarr_options(dtype, activation, labels, int(tile), int(margin))
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DlcbError(f"{dest} exists; pass overwrite=True to replace it")
    src = _Source(source, channel_axis)
    tiles = _as_pair(model_tile, "model_tile")
    dev = resolve_device(device)
    return _predict_zarr_events(
        model,
        src,
        dest,
        dev=dev,
        tile=int(tile),
        halo=int(halo),
        model_tile=tiles,
        overlap=overlap,
        batch_size=int(batch_size),
        normalizer=normalizer,
        activation=activation,
        amp=amp,
        dtype=dtype,
        labels=labels,
        class_values=class_values,
        postprocess=dict(postprocess or {}),
        margin=int(margin),
        overwrite=overwrite,
        scale=_source_scale(source),
    )


def _predict_zarr_events(
    model: Any,
    src: _Source,
    dest: Path,
    *,
    dev: torch.device,
    tile: int,
    halo: int,
    model_tile: tuple[int | None, int | None],
    overlap: int,
    batch_size: int,
    normalizer: Any,
    activation: str | None,
    amp: bool,
    dtype: str,
    labels: str | None,
    class_values: Sequence[int] | None,
    postprocess: dict,
    margin: int,
    overwrite: bool,
    scale: tuple[float, float],
) -> Iterator[dict]:
    """The generator behind :func:`predict_zarr` (arguments already checked)."""
    blocks = _blocks(src.shape, tile)
    stages = ["predict"] + (["instances", "relabel"] if labels == "instances" else [])
    total = len(blocks) * len(stages)
    layout: _ZarrLayout | None = None
    committed = False
    event: dict = {}
    done = 0
    try:
        engine = _Engine(
            model,
            dev,
            _tile_normalizer(freeze_normalizer(normalizer, src)),
            activation,
            amp,
            batch_size,
        )
        with _inference_on(model, dev):
            for block in blocks:
                prob = engine.predict(src, block, tile=model_tile, halo=halo, overlap=overlap)
                if layout is None:  # the number of classes is known after one block
                    layout = _ZarrLayout.create(
                        dest,
                        channels=prob.shape[0],
                        shape=src.shape,
                        block=tile,
                        dtype=dtype,
                        labels=labels is not None,
                        overwrite=overwrite,
                        scale=scale,
                        info={
                            "tile": tile,
                            "halo": halo,
                            "activation": activation or "none",
                            "probability_scale": 255 if dtype == "uint8" else 1,
                        },
                    )
                    prob_array, label_array = layout.arrays()
                _store_block(
                    prob,
                    block,
                    prob_array,
                    label_array,
                    dtype=dtype,
                    labels=labels,
                    class_values=class_values,
                )
                del prob
                done += 1
                event = {"done": done, "total": total, "stage": "predict", "block": block}
                if done < total:  # the last event comes once the store is complete
                    yield event
        assert layout is not None
        if labels == "instances":
            grid = (-(-src.shape[0] // tile), -(-src.shape[1] // tile))
            stitcher = _Stitcher(grid)
            for i, block in enumerate(blocks):
                stitcher.add(
                    i,
                    *_instances_block(
                        prob_array,
                        label_array,
                        block,
                        src.shape,
                        margin=margin,
                        options=postprocess,
                    ),
                )
                done += 1
                yield {"done": done, "total": total, "stage": "instances", "block": block}
            offsets, lut = stitcher.lookup()
            for block, offset in zip(blocks, offsets):
                _relabel_block(label_array, block, int(offset), lut)
                done += 1
                event = {"done": done, "total": total, "stage": "relabel", "block": block}
                if done < total:
                    yield event
        path = layout.commit()
        committed = True
        yield {**event, "path": path}
    finally:
        if layout is not None and not committed:
            layout.discard()
