"""Deterministic synthetic fluorescence nuclei images with instance ground truth.

Used to make the shipped sample data and to pretrain the built-in U-Net. The
images imitate widefield nuclei stains: touching and overlapping ellipses,
chromatin texture, optical blur, uneven illumination, Poisson-Gaussian noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["synthetic_nuclei"]


def synthetic_nuclei(
    shape: tuple[int, int] = (512, 512),
    *,
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (7.0, 16.0),
    touching: float = 0.35,
    blur: float = 1.5,
    noise: float = 0.04,
    illumination: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a synthetic nuclei image and its instance labels.

    Parameters
    ----------
    shape : tuple of int
        Image shape (rows, cols).
    n_nuclei : int, optional
        Number of nuclei to try to place; default fills about 25 % of the area.
    radius : tuple of float
        Range of nucleus semi-axis lengths in pixels.
    touching : float
        Fraction of nuclei placed so that they touch or overlap a neighbour.
    blur : float
        Sigma of the Gaussian point-spread function, in pixels.
    noise : float
        Standard deviation of the Gaussian read noise, relative to signal.
    illumination : float
        Strength of the low-frequency illumination gradient (0 = flat).
    seed : int
        Random seed; equal seeds give identical outputs.

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
        The fluorescence image.
    labels : ndarray of int32, shape ``shape``
        Instance labels, 0 = background, 1..N = nuclei.

    Examples
    --------
    >>> img, lab = synthetic_nuclei((128, 128), seed=1)
    >>> img.shape, lab.max() > 0
    ((128, 128), True)
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    mean_r = float(np.mean(radius))
    if n_nuclei is None:
        n_nuclei = max(1, int(0.25 * rows * cols / (np.pi * mean_r**2)))
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    labels, signal = _place_nuclei(rng, shape, n_nuclei, radius, touching, yy, xx)
    labels = _largest_pieces(labels)
    signal = np.where(labels > 0, signal, 0).astype(np.float32)
    img = _render(rng, signal, blur, noise, illumination, yy, xx)
    return img, labels


def _place_nuclei(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_nuclei: int,
    radius: tuple[float, float],
    touching: float,
    yy: np.ndarray,
    xx: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Random ellipses (ids 1..N) and their brightness, some touching a neighbour."""
    rows, cols = shape
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    centres: list[tuple[float, float, float]] = []
    next_id = 1
    for _ in range(n_nuclei * 4):
        if next_id > n_nuclei:
            break
        a, b = rng.uniform(*radius, size=2)
        if centres and rng.random() < touching:
            cy, cx, cr = centres[rng.integers(len(centres))]
            ang = rng.uniform(0, 2 * np.pi)
            d = (cr + max(a, b)) * rng.uniform(0.8, 1.0)
            y0, x0 = cy + d * np.sin(ang), cx + d * np.cos(ang)
        else:
            y0, x0 = rng.uniform(0, rows), rng.uniform(0, cols)
        if not (0 <= y0 < rows and 0 <= x0 < cols):
            continue
        if any(
            (y0 - cy) ** 2 + (x0 - cx) ** 2 < (0.7 * (cr + min(a, b))) ** 2
            for cy, cx, cr in centres
        ):
            continue
        theta = rng.uniform(0, np.pi)
        r0 = int(max(a, b)) + 2
        sl = (
            slice(max(0, int(y0) - r0), min(rows, int(y0) + r0 + 1)),
            slice(max(0, int(x0) - r0), min(cols, int(x0) + r0 + 1)),
        )
        dy, dx = yy[sl] - y0, xx[sl] - x0
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        free = inside & (labels[sl] == 0)
        if free.sum() < 0.6 * inside.sum():
            continue
        labels[sl][free] = next_id
        brightness = rng.uniform(0.45, 1.0)
        signal[sl][free] = brightness
        centres.append((y0, x0, max(a, b)))
        next_id += 1
    return labels, signal


def _largest_pieces(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest connected piece of each nucleus (>= 20 px), renumbered 1..N."""
    out = np.zeros_like(labels)
    new_id = 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        comp, n = ndi.label(labels[sl] == i)
        if n == 0:
            continue
        sizes = ndi.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
        keep = comp == (int(np.argmax(sizes)) + 1)
        if keep.sum() < 20:
            continue
        out[sl][keep] = new_id
        new_id += 1
    return out


def _render(
    rng: np.random.Generator,
    signal: np.ndarray,
    blur: float,
    noise: float,
    illumination: float,
    yy: np.ndarray,
    xx: np.ndarray,
) -> np.ndarray:
    """Chromatin texture, blur, illumination, background and noise, as uint16."""
    shape = signal.shape
    rows, cols = shape
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 1.2)
    signal = signal * (1.0 + 0.25 * texture / (texture.std() + 1e-6))
    signal = ndi.gaussian_filter(signal, blur)
    gy, gx = rng.uniform(-1, 1, 2)
    illum = 1.0 + illumination * ((yy / rows - 0.5) * gy + (xx / cols - 0.5) * gx)
    illum *= 1.0 + 0.5 * illumination * np.exp(
        -(
            ((yy / rows - rng.uniform(0.2, 0.8)) ** 2 + (xx / cols - rng.uniform(0.2, 0.8)) ** 2)
            / 0.1
        )
    )
    img = (0.08 + signal) * illum
    img = rng.poisson(np.clip(img, 0, None) * 400).astype(np.float32) / 400
    img += rng.normal(0, noise, shape).astype(np.float32)
    return np.clip(img * 20000 + 500, 0, 65535).astype(np.uint16)
