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
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "freeze_normalizer",
    "open_prediction",
    "predict_region",
    "predict_tiled",
    "predict_zarr",
    "resolve_device",
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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA if available, else Apple MPS, else CPU.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` or anything :class:`torch.device` accepts.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DlcbError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from err


def _model_device(model: Any) -> torch.device | None:
    """Device of the model's first parameter or buffer; None for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


@contextlib.contextmanager
def _inference_model(model: Any, device: torch.device) -> Iterator[Any]:
    """Put ``model`` in eval mode on ``device``; hand it back unchanged afterwards.

    The training flag of every sub-module and the original device are restored
    in a ``finally`` block, also when the caller's generator is closed early.
    """
    import torch

    modes = [(m, m.training) for m in model.modules()]
    original = _model_device(model)
    try:
        model.eval()
        if original is not None and original != device:
            model.to(device)
        with torch.inference_mode():
            yield model
    finally:
        for module, mode in modes:
            module.train(mode)
        if original is not None and _model_device(model) != original:
            model.to(original)


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
    except Exception as err:  # noqa: BLE001 - zarr raises many types for unreadable stores
        raise DlcbError(f"cannot open {path} as zarr: {err}") from err
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


def _axis_plan(start: int, stop: int, tile: int, halo: int, overlap: int) -> list[_AxisTile]:
    """Tiles of input length ``tile`` whose weighted cores cover ``[start, stop)``.

    Cores (tile minus ``halo`` each side) are spaced evenly and overlap by at
    least ``overlap``; inside each overlap a transition zone of up to
    ``overlap`` pixels carries a ``sin²``/``cos²`` hand-over. Weights of all
    tiles sum to one at every output index.
    """
    core = tile - 2 * halo
    span = stop - start
    if span <= core:
        core_starts = [start]
    else:
        max_step = max(1, core - overlap)
        n = -(-(span - core) // max_step) + 1
        core_starts = [start + round(k * (span - core) / (n - 1)) for k in range(n)]
    zones = []  # (zone start, zone length) between tile k-1 and tile k
    for k in range(1, len(core_starts)):
        step = core_starts[k] - core_starts[k - 1]
        length = max(0, min(overlap, core - step, step - 1))
        shared_lo, shared_hi = core_starts[k], core_starts[k - 1] + core
        zones.append((shared_lo + (shared_hi - shared_lo - length) // 2, length))
    tiles = []
    for k, c0 in enumerate(core_starts):
        lo = start if k == 0 else zones[k - 1][0]
        hi = stop if k == len(core_starts) - 1 else zones[k][0] + zones[k][1]
        weight = np.ones(hi - lo, np.float32)
        if k > 0 and zones[k - 1][1]:
            length = zones[k - 1][1]
            weight[:length] = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
        if k < len(core_starts) - 1 and zones[k][1]:
            length = zones[k][1]
            ramp = np.cos(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
            weight[hi - lo - length :] = ramp
        tiles.append(_AxisTile(c0 - halo, lo, hi, weight))
    return tiles


def _tile_size(tile: int | None, span: int, halo: int, overlap: int) -> int:
    """The tile side used along one axis of ``span`` output pixels.

    A given ``tile`` is the largest side used: it is shrunk (to a multiple of
    the largest power of two, up to 32, that divides it) when the image is
    smaller. ``None`` chooses the fewest tiles of at most ``AUTO_MAX_TILE``.
    """
    needed = span + 2 * halo
    if tile is None:
        multiple = AUTO_MULTIPLE
        core_max = AUTO_MAX_TILE - 2 * halo
        if needed <= AUTO_MAX_TILE or core_max <= overlap:
            tile = needed
        else:
            n = -(-(span - core_max) // (core_max - overlap)) + 1
            tile = -(-(span + (n - 1) * overlap) // n) + 2 * halo
        return -(-tile // multiple) * multiple
    multiple = min(AUTO_MULTIPLE, tile & -tile)
    if needed < tile:
        return min(tile, -(-needed // multiple) * multiple)
    return tile


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
        use_amp = self.amp and self.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            try:
                y = self.model(x)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
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
        tiles_y = _tile_size(tile[0], r1 - r0, halo, overlap)
        tiles_x = _tile_size(tile[1], c1 - c0, halo, overlap)
        for side in (tiles_y, tiles_x):
            if side <= 2 * halo:
                raise DlcbError(f"tile ({side}) must be larger than twice the halo ({halo})")
        plan_y = _axis_plan(r0, r1, tiles_y, halo, overlap)
        plan_x = _axis_plan(c0, c1, tiles_x, halo, overlap)
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
    with _inference_model(model, dev):
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
