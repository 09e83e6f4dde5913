"""Intensity normalisation, with statistics from the training data only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["Normalizer", "to_cyx", "check_image"]

MODES = ("percentile", "zscore", "per_image_percentile", "per_image_zscore", "none")


def to_cyx(image: Any, channel_axis: int | None = None) -> np.ndarray:
    """Return a (C, Y, X) view of a 2-D grey or multichannel image.

    ``channel_axis=None`` means a 2-D image is grey and a 3-D image whose last
    axis has 3 or 4 entries is RGB(A) (alpha dropped).

    Examples
    --------
    >>> to_cyx(np.zeros((5, 6, 3))).shape
    (3, 5, 6)
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if channel_axis is None:
            if arr.shape[-1] in (3, 4):
                channel_axis = -1
            elif arr.shape[0] <= 4:
                channel_axis = 0
            else:
                raise DlcbError(
                    f"image of shape {arr.shape} is not 2-D; give channel_axis for a "
                    "multichannel image"
                )
        arr = np.moveaxis(arr, channel_axis, 0)
        if arr.shape[0] == 4 and channel_axis in (-1, 2):
            arr = arr[:3]
        return arr
    raise DlcbError(f"expected a 2-D grey or RGB image, got an array of shape {arr.shape}")


def check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise a one-line :class:`DlcbError` for empty, NaN or constant images."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise DlcbError(f"{name} is empty")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = "NaN" if np.isnan(arr).any() else "infinite"
            raise DlcbError(f"{name} contains {bad} values ({(~finite).sum()} pixels)")
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
        """Return the normalised image as float32, shape (C, Y, X)."""
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
        if flat.shape[1] > 4_000_000:
            flat = flat[:, :: flat.shape[1] // 4_000_000 + 1]
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
        """Inverse of :meth:`to_dict`; ``None``/``{}`` means no normalisation."""
        if not d:
            return cls(mode="none")
        return cls(
            mode=d.get("mode", "none"),
            low=list(d.get("low", [])),
            high=list(d.get("high", [])),
            p_low=float(d.get("p_low", 1.0)),
            p_high=float(d.get("p_high", 99.8)),
        )
