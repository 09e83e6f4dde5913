"""Paired image/target augmentation: flips, 90-degree rotations, scale-crop, intensity.

Geometric transforms are applied identically to the image (C, Y, X) and the
target (Y, X); intensity transforms touch the image only. Everything is NumPy
and driven by an explicit ``numpy.random.Generator`` so runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Augment", "random_crop"]


@dataclass
class Augment:
    """Random augmentation policy.

    Parameters
    ----------
    flips, rot90 : bool
        Random horizontal/vertical flips and multiples of 90 degrees.
    scale : tuple of float or None
        Range of isotropic zoom factors (nearest for targets), e.g. (0.8, 1.25).
    intensity : float
        Strength of random gain/offset/gamma jitter (0 disables).
    noise : float
        Standard deviation of additive Gaussian noise (0 disables).
    """

    flips: bool = True
    rot90: bool = True
    scale: tuple[float, float] | None = (0.8, 1.25)
    intensity: float = 0.2
    noise: float = 0.02

    def __call__(
        self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one (C, Y, X) image and its (Y, X) target; shapes are kept."""
        img, tgt = image, target
        if self.scale is not None:
            f = float(np.exp(rng.uniform(np.log(self.scale[0]), np.log(self.scale[1]))))
            if abs(f - 1) > 0.02:
                img, tgt = _zoom_keep_shape(img, tgt, f, rng)
        if self.flips:
            if rng.random() < 0.5:
                img, tgt = img[:, ::-1], tgt[::-1]
            if rng.random() < 0.5:
                img, tgt = img[:, :, ::-1], tgt[:, ::-1]
        if self.rot90 and img.shape[1] == img.shape[2]:
            k = int(rng.integers(4))
            img, tgt = np.rot90(img, k, axes=(1, 2)), np.rot90(tgt, k)
        img = np.ascontiguousarray(img, dtype=np.float32)
        tgt = np.ascontiguousarray(tgt)
        if self.intensity > 0:
            s = self.intensity
            gain = rng.uniform(1 - s, 1 + s, (img.shape[0], 1, 1)).astype(np.float32)
            off = rng.uniform(-s / 2, s / 2, (img.shape[0], 1, 1)).astype(np.float32)
            img = img * gain + off
            if rng.random() < 0.5:
                lo = img.min()
                rngv = max(float(img.max() - lo), 1e-6)
                gamma = float(np.exp(rng.uniform(-s, s)))
                img = ((img - lo) / rngv) ** gamma * rngv + lo
        if self.noise > 0:
            img = img + rng.normal(0, self.noise, img.shape).astype(np.float32)
        return img.astype(np.float32, copy=False), tgt


def _zoom_keep_shape(
    img: np.ndarray, tgt: np.ndarray, f: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    c, h, w = img.shape
    zi = ndi.zoom(img, (1, f, f), order=1, mode="reflect", grid_mode=True)
    zt = ndi.zoom(tgt, (f, f), order=0, mode="nearest", grid_mode=True)
    zh, zw = zt.shape
    if zh >= h and zw >= w:
        r0, c0 = int(rng.integers(zh - h + 1)), int(rng.integers(zw - w + 1))
        return zi[:, r0 : r0 + h, c0 : c0 + w], zt[r0 : r0 + h, c0 : c0 + w]
    ph, pw = max(0, h - zh), max(0, w - zw)
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    zi = np.pad(zi, ((0, 0), *pad), mode="reflect")
    zt = np.pad(zt, pad, mode="constant", constant_values=-1)
    return zi[:, :h, :w], zt[:h, :w]


def random_crop(
    image: np.ndarray,
    target: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    centre: tuple[int, int] | None = None,
    fill: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a ``size`` x ``size`` patch (padding small images), optionally around ``centre``.

    Images are reflect-padded, targets padded with ``fill`` (ignored by the loss).
    """
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(
            image, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge"
        )
        target = np.pad(target, ((0, ph), (0, pw)), constant_values=fill)
        h, w = target.shape
    if centre is None:
        r0, c0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    else:
        jitter = rng.integers(-size // 4, size // 4 + 1, 2)
        r0 = int(np.clip(centre[0] - size // 2 + jitter[0], 0, h - size))
        c0 = int(np.clip(centre[1] - size // 2 + jitter[1], 0, w - size))
    return image[:, r0 : r0 + size, c0 : c0 + size], target[r0 : r0 + size, c0 : c0 + size]
