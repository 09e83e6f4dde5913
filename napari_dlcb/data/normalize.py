"""Intensity normalisation, with statistics from the training data only.

:class:`Normalizer` maps an image to float32 (C, Y, X). Its dataset modes
(``"percentile"``, ``"zscore"``) use fixed statistics stored with the model, so
they are point-wise: a tile normalised alone equals the same pixels of the
normalised whole image. Its per-image modes compute statistics on each image;
to use one tile by tile (tiled and block-wise prediction) it is first *frozen*
on the whole image with :func:`freeze_normalizer`, which gives exactly what
normalising the whole image at once gives. For a huge image that is one
streaming pass over it; to avoid repeating it (for example for every viewport
of a live preview), freeze once and pass the frozen normaliser, or pass known
statistics directly::

    frozen = freeze_normalizer(normalizer, big_image)        # one pass
    Normalizer(mode="zscore", low=[mean], high=[std])         # known statistics
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_dlcb.data.images import ImageSource, to_cyx
from napari_dlcb.errors import DlcbError

__all__ = [
    "Normalizer",
    "check_image",
    "check_finite",
    "check_pixels",
    "cyx_normalizer",
    "freeze_normalizer",
    "is_per_image",
    "sample_pixels",
]

MODES = ("percentile", "zscore", "per_image_percentile", "per_image_zscore", "none")
#: Pixels per channel that per-image statistics are computed from.
STATS_SAMPLES = 4_000_000


def check_pixels(image: Any, name: str = "image", *, channel_axis: int | None = None) -> None:
    """Raise a one-line :class:`DlcbError` for an image no model should see.

    The one rule for images at training *and* prediction time: intensities are
    real numbers (integers or floats), the image is at least
    :data:`~napari_dlcb.data.images.MIN_SIDE` pixels on each side, and every
    pixel is finite. NaN or infinite pixels are refused, not guessed: any
    value put in their place (0, the minimum, the median) is a made-up signal
    that the model would segment, and per-image statistics of an image with
    NaN are NaN, which used to give an all-background result without a word.

    Parameters
    ----------
    image : array-like
        The image (any layout; only in-memory arrays are scanned for NaN).
    name : str
        How messages name it.
    channel_axis : int, optional
        The channel axis of a 3-D image (see
        :func:`~napari_dlcb.data.images.channel_layout`).

    Examples
    --------
    >>> check_pixels(np.array([[np.nan] * 8] * 8), "a.tif")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: a.tif has 64 NaN pixels (100.0%); replace them (e.g. with 0) or crop them away: napari-dlcb does not guess values
    """
    from napari_dlcb.data.images import check_size

    dtype = np.dtype(getattr(image, "dtype", np.asarray(image).dtype))
    if dtype.kind == "b":
        raise DlcbError(
            f"{name} is a boolean (mask) image, not intensities; a mask belongs with the labels"
        )
    if dtype.kind not in "uif":
        raise DlcbError(f"{name} has {dtype} pixels; napari-dlcb reads integer or real intensities")
    check_size(tuple(getattr(image, "shape", ())), name, channel_axis)
    if isinstance(image, np.ndarray):
        check_finite(image, name)


def check_finite(image: np.ndarray, name: str = "image") -> None:
    """Raise a one-line :class:`DlcbError` if a real-valued image has NaN or infinite pixels.

    The one rule for training and prediction alike: such pixels are refused,
    never guessed (a NaN pixel would turn a whole normalised image, and every
    prediction that sees it, into NaN).

    Examples
    --------
    >>> check_finite(np.array([1.0, np.inf]), "b.tif")
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: b.tif has 1 NaN or infinite pixels (50.0%); replace them (e.g. with 0) or crop them away: napari-dlcb does not guess values
    """
    if image.dtype.kind not in "fc":
        return
    finite = np.isfinite(image)
    if not finite.all():
        bad = int((~finite).sum())
        what = "NaN" if np.isnan(image).any() and not np.isinf(image).any() else "NaN or infinite"
        raise DlcbError(
            f"{name} has {bad} {what} pixels ({100 * bad / image.size:.1f}%); replace them "
            "(e.g. with 0) or crop them away: napari-dlcb does not guess values"
        )


def check_image(image: np.ndarray, name: str = "image", *, channel_axis: int | None = None) -> None:
    """Raise a one-line :class:`DlcbError` for empty, NaN or constant images (training)."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise DlcbError(f"{name} is empty")
    check_pixels(arr, name, channel_axis=channel_axis)
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        raise DlcbError(f"{name} is constant (every pixel is {lo}); there is nothing to segment")


@dataclass
class Normalizer:
    """Scale intensities to about [0, 1] (percentile) or zero mean, unit variance.

    Dataset modes (``"percentile"``, ``"zscore"``) use statistics fitted on the
    training images only and stored with the model; per-image modes compute
    them on each image (what the BioImage.IO nuclei model and the built-in
    U-Net were trained with).

    Examples
    --------
    >>> n = Normalizer.fit([np.arange(100.0).reshape(10, 10)], mode="percentile")
    >>> float(n(np.array([[n.low[0]]]))[0, 0, 0])
    0.0
    """

    mode: str = "percentile"
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    p_low: float = 1.0
    p_high: float = 99.8

    @classmethod
    def fit(
        cls,
        images: Sequence[np.ndarray],
        *,
        mode: str = "percentile",
        channel_axis: int | None = None,
        p_low: float = 1.0,
        p_high: float = 99.8,
        max_samples: int = 2_000_000,
        seed: int = 0,
    ) -> Normalizer:
        """Fit statistics on training images (a random pixel subsample if large)."""
        if mode not in MODES:
            raise DlcbError(f"unknown normalisation {mode!r}; use one of {', '.join(MODES)}")
        norm = cls(mode=mode, p_low=p_low, p_high=p_high)
        if mode not in ("percentile", "zscore"):
            return norm
        rng = np.random.default_rng(seed)
        cyx = [to_cyx(im, channel_axis) for im in images]
        per_img = max(1, max_samples // max(1, len(cyx)))
        samples = []
        for im in cyx:
            flat = im.reshape(im.shape[0], -1)
            if flat.shape[1] > per_img:
                flat = flat[:, rng.choice(flat.shape[1], per_img, replace=False)]
            samples.append(flat.astype(np.float64))
        allpx = np.concatenate(samples, axis=1)
        if mode == "percentile":
            norm.low = [float(v) for v in np.percentile(allpx, p_low, axis=1)]
            norm.high = [float(v) for v in np.percentile(allpx, p_high, axis=1)]
        else:
            norm.low = [float(v) for v in allpx.mean(axis=1)]
            norm.high = [float(v) for v in allpx.std(axis=1)]
        return norm

    def __call__(self, image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
        """Return the normalised image as float32, shape (C, Y, X).

        Channels follow the one channel rule (:func:`~napari_dlcb.data.images.channel_layout`):
        pass ``channel_axis=0`` for an image that is already (C, Y, X).
        """
        im = to_cyx(image, channel_axis).astype(np.float32, copy=False)
        if self.mode == "none":
            return np.ascontiguousarray(im)
        if self.mode in ("per_image_percentile", "per_image_zscore"):
            return self._apply(im, *self.image_stats(im))
        lo = np.asarray(self.low, np.float32)
        hi = np.asarray(self.high, np.float32)
        if lo.size not in (1, im.shape[0]):
            raise DlcbError(
                f"image has {im.shape[0]} channels but the model was trained on {lo.size}"
            )
        return self._apply(im, lo, hi)

    def image_stats(self, im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel statistics of one (C, Y, X) image for the per-image modes."""
        flat = im.reshape(im.shape[0], -1)
        if flat.shape[1] > STATS_SAMPLES:
            flat = flat[:, :: flat.shape[1] // STATS_SAMPLES + 1]
        if self.mode.endswith("zscore"):
            return flat.mean(1).astype(np.float32), flat.std(1).astype(np.float32)
        return (
            np.percentile(flat, self.p_low, axis=1).astype(np.float32),
            np.percentile(flat, self.p_high, axis=1).astype(np.float32),
        )

    def _apply(self, im: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32).reshape(-1, 1, 1)
        b = np.asarray(b, np.float32).reshape(-1, 1, 1)
        if self.mode.endswith("zscore"):
            return ((im - a) / np.maximum(b, 1e-6)).astype(np.float32)
        return ((im - a) / np.maximum(b - a, 1e-6)).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-serialisable form stored in model metadata."""
        return {
            "mode": self.mode,
            "low": self.low,
            "high": self.high,
            "p_low": self.p_low,
            "p_high": self.p_high,
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalizer:
        """Inverse of :meth:`to_dict`; ``None``/``{}`` means no normalisation.

        A ``"zscore"`` dict may give its statistics as ``mean`` and ``std`` (a
        number or one per channel), as BioImage.IO's fixed
        ``zero_mean_unit_variance`` is imported, instead of ``low``/``high``.

        Examples
        --------
        >>> Normalizer.from_dict({"mode": "zscore", "mean": 10.0, "std": 2.0}).low
        [10.0]
        """
        if not d:
            return cls(mode="none")
        low, high = d.get("low"), d.get("high")
        if d.get("mode") == "zscore" and not low and d.get("mean") is not None:
            low, high = d.get("mean"), d.get("std")
        return cls(
            mode=d.get("mode", "none"),
            low=[float(v) for v in np.ravel(low if low is not None else [])],
            high=[float(v) for v in np.ravel(high if high is not None else [])],
            p_low=float(d.get("p_low", 1.0)),
            p_high=float(d.get("p_high", 99.8)),
        )


# ----------------------------------------------------------------------------- tiles


def is_per_image(normalizer: Any) -> bool:
    """Whether ``normalizer`` is a per-image :class:`Normalizer` (statistics from each image)."""
    mode = getattr(normalizer, "mode", None)
    return (
        isinstance(mode, str)
        and mode.startswith("per_image")
        and hasattr(normalizer, "image_stats")
    )


def sample_pixels(source: ImageSource, max_samples: int = STATS_SAMPLES) -> np.ndarray:
    """Every k-th pixel in row-major order, (C, 1, n) float32, read in row bands.

    This is exactly the subsample ``Normalizer.image_stats`` takes of an
    in-memory image, gathered without holding the image in memory.

    Examples
    --------
    >>> sample_pixels(ImageSource(np.arange(12.0).reshape(3, 4)), 5)[0, 0].tolist()
    [0.0, 3.0, 6.0, 9.0]
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
        A :class:`Normalizer` in a per-image mode is turned into the
        equivalent dataset-mode normaliser, with this image's statistics
        (computed from the same pixel subsample as ``Normalizer.image_stats``
        uses, in a streaming pass for lazy images). Anything else is returned
        unchanged.
    image : array-like, zarr array, dask array, path or ImageSource
        The whole image the tiles come from.
    channel_axis : int, optional
        Channel axis of ``image``.

    Returns
    -------
    callable or None
        A point-wise normaliser.

    Examples
    --------
    >>> img = np.arange(64.0).reshape(8, 8)
    >>> frozen = freeze_normalizer(Normalizer(mode="per_image_zscore"), img)
    >>> frozen.mode, bool(np.allclose(frozen(img[:2, :2]), Normalizer(mode="per_image_zscore")(img)[:, :2, :2]))
    ('zscore', True)
    """
    if normalizer is None or not is_per_image(normalizer):
        return normalizer
    source = image if isinstance(image, ImageSource) else ImageSource(image, channel_axis)
    low, high = normalizer.image_stats(sample_pixels(source))
    mode = normalizer.mode.removeprefix("per_image_")
    fields = {"mode": mode, "low": [float(v) for v in low], "high": [float(v) for v in high]}
    if hasattr(normalizer, "to_dict") and hasattr(type(normalizer), "from_dict"):
        return type(normalizer).from_dict({**normalizer.to_dict(), **fields})
    return type(normalizer)(**fields)  # pragma: no cover - other Normalizer-like classes


def cyx_normalizer(normalizer: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a normaliser as (C, h, w) -> float32 (C, h, w), whatever its signature.

    Parameters
    ----------
    normalizer : callable or None
        A :class:`Normalizer` (or anything taking an image, optionally with
        ``channel_axis=``); None only casts to float32.

    Returns
    -------
    callable

    Examples
    --------
    >>> cyx_normalizer(lambda x: 2 * x)(np.ones((1, 2, 2), np.uint8)).tolist()
    [[[2.0, 2.0], [2.0, 2.0]]]
    """
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
