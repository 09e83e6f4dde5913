"""The tiling engine: plan tiles with a halo, blend them without seams, run batches.

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

Words: a *tile* is a window the network sees (:func:`axis_plan`,
:class:`TileEngine`); a *block* is a piece of storage (a Zarr chunk) that
block-wise prediction (:mod:`napari_dlcb.inference.blockwise`) fills.

Nothing in this module imports torch at import time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.data.images import ImageSource
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AUTO_MAX_TILE",
    "AUTO_MULTIPLE",
    "AxisTile",
    "Region",
    "TileEngine",
    "activate",
    "as_pair",
    "axis_plan",
    "check_activation",
    "check_sizes",
    "clip_region",
    "grid",
    "tile_size",
]

#: Largest tile side chosen automatically (``tile=None``): a 1024 px viewport
#: plus a 32 px halo on each side runs as one tile.
AUTO_MAX_TILE = 1152
#: Automatic tile sides are multiples of this (U-Nets downsample by 2**depth).
AUTO_MULTIPLE = 32

#: A (row, column) region: two slices or two (start, stop) pairs.
Region = tuple[slice, slice] | Sequence[tuple[int, int]]


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis: input window and output weights."""

    start: int  # first input index (may be negative: mirrored)
    lo: int  # first output index with weight > 0
    hi: int  # one past the last
    weight: np.ndarray  # float32 weights for [lo, hi)


def axis_plan(
    start: int, stop: int, tile: int, halo: int, overlap: int, align: int = 1
) -> list[AxisTile]:
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
            tiles.append(AxisTile(c0 - halo, keep_lo, keep_hi, weight[keep_lo - lo : keep_hi - lo]))
    return tiles


def tile_size(
    tile: int | None,
    span: int,
    halo: int,
    overlap: int,
    offset: int = 0,
    size_multiple: int | None = None,
) -> int:
    """The tile side used along one axis of ``span`` output pixels.

    ``offset`` is how far the range starts after the aligned grid line before
    it (the first core begins there). A given ``tile`` is the largest side
    used: it is shrunk (to a multiple of the largest power of two, up to 32,
    that divides it, and of ``size_multiple``) when the image is smaller.
    ``None`` chooses the fewest tiles of at most ``AUTO_MAX_TILE``, with sides
    multiples of 32 and of ``size_multiple``.
    """
    needed = span + offset + 2 * halo
    extra = int(size_multiple or 1)
    if tile is None:
        multiple = math.lcm(AUTO_MULTIPLE, extra)
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
    multiple = math.lcm(min(AUTO_MULTIPLE, tile & -tile), extra)
    if needed < tile:
        return min(tile, -(-needed // multiple) * multiple)
    return tile


def grid(model: Any, size_multiple: int | None = None) -> int:
    """Alignment of tile positions: the model's downsampling factor, else 32.

    A ``size_multiple`` (the input sides a model needs) is folded in: the grid
    is the least common multiple of both.
    """
    multiple = getattr(model, "multiple", None)
    if not (isinstance(multiple, int) and 1 <= multiple <= 256):
        multiple = AUTO_MULTIPLE
    return math.lcm(multiple, int(size_multiple or 1))


def as_pair(value: int | Sequence[int] | None, name: str) -> tuple[Any, Any]:
    """``value`` as a (rows, cols) pair: an int (or None) is used for both."""
    if value is None or isinstance(value, (int, np.integer)):
        return value, value
    pair = tuple(value)
    if len(pair) != 2:
        raise DlcbError(f"{name} must be an int or a (rows, cols) pair, got {value!r}")
    return pair[0], pair[1]


def clip_region(region: Region, shape: tuple[int, int]) -> tuple[tuple[int, int], ...]:
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


# ----------------------------------------------------------------------------- the engine


def activate(logits: torch.Tensor, activation: str | None) -> torch.Tensor:
    """Softmax or sigmoid over the class axis (dim 1); None leaves logits."""
    import torch

    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def check_activation(activation: str | None) -> str | None:
    """``activation`` checked; ``"none"``/``"identity"`` become None."""
    if activation in ("none", "identity"):
        return None
    if activation not in ("softmax", "sigmoid", None):
        raise DlcbError(f"activation must be 'softmax', 'sigmoid' or None, got {activation!r}")
    return activation


@dataclass
class TileEngine:
    """Runs a model over tiles of an :class:`~napari_dlcb.data.images.ImageSource`.

    The caller prepares the model (``inference_mode_on``) and checks the options.

    Parameters
    ----------
    model : torch.nn.Module
        (B, C, h, w) -> (B, K, h, w) logits.
    device : torch.device
        Where tiles are sent.
    normalize : callable
        (C, h, w) -> float32 (C, h, w), point-wise (see
        :func:`~napari_dlcb.data.normalize.cyx_normalizer`).
    activation : {"softmax", "sigmoid", None}
        Output activation.
    amp : bool
        float16 autocast on CUDA.
    batch_size : int
        Tiles per forward pass.
    size_multiple : int, optional
        Tile sides the model needs (see :func:`grid`).
    """

    model: Any
    device: torch.device
    normalize: Callable[[np.ndarray], np.ndarray]
    activation: str | None
    amp: bool
    batch_size: int
    size_multiple: int | None = None

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
        out = activate(y.float(), self.activation).cpu().numpy()
        if not np.isfinite(out).all():
            raise DlcbError(
                "the model returned NaN or infinite values (its weights may be broken, e.g. a "
                "training run that diverged)"
            )
        return out

    def predict(
        self,
        source: ImageSource,
        region: tuple[tuple[int, int], tuple[int, int]],
        *,
        tile: tuple[int | None, int | None],
        halo: int,
        overlap: int,
        progress: Callable[[int, int], Any] | None = None,
    ) -> np.ndarray:
        """Blended prediction of ``region`` of ``source``, shape (K, h, w) float32."""
        (r0, r1), (c0, c1) = region
        align = grid(self.model, self.size_multiple)
        tiles_y = tile_size(tile[0], r1 - r0, halo, overlap, r0 % align, self.size_multiple)
        tiles_x = tile_size(tile[1], c1 - c0, halo, overlap, c0 % align, self.size_multiple)
        for side in (tiles_y, tiles_x):
            if side <= 2 * halo:
                raise DlcbError(f"tile ({side}) must be larger than twice the halo ({halo})")
        plan_y = axis_plan(r0, r1, tiles_y, halo, overlap, align)
        plan_x = axis_plan(c0, c1, tiles_x, halo, overlap, align)
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
            if not np.isfinite(batch).all():  # the same rule as training: refused, not guessed
                raise DlcbError(
                    "the image has NaN or infinite pixels (or its normalisation does); replace "
                    "them (e.g. with 0) or crop them away: napari-dlcb does not guess values"
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


def check_sizes(halo: int, overlap: int | None, batch_size: int) -> int:
    """Check halo, overlap and batch size; return the overlap (default: the halo)."""
    if halo < 0:
        raise DlcbError(f"halo must be >= 0, got {halo}")
    if batch_size < 1:
        raise DlcbError(f"batch_size must be >= 1, got {batch_size}")
    overlap = halo if overlap is None else overlap
    if overlap < 0:
        raise DlcbError(f"overlap must be >= 0, got {overlap}")
    return int(overlap)
