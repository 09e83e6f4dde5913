"""Painted strokes from ground truth: a deterministic stand-in for a user with a brush.

Tests and benchmarks of fine-tuning on scribbles need annotation that looks
like what a biologist paints in napari: a few thin lines through some nuclei
(label 2) and a few through the background between them (label 1), not whole
masks. :func:`simulate_strokes` draws such lines from an instance label
image, reproducibly for a given ``seed``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_dlcb.errors import DlcbError

__all__ = ["simulate_strokes"]


def simulate_strokes(
    instances: np.ndarray,
    *,
    n_objects: int = 10,
    n_background: int = 8,
    width: int = 3,
    background_length: int = 60,
    margin: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """Thin painted strokes through objects (2) and background (1); 0 elsewhere.

    Object strokes run along the longer axis of randomly chosen objects,
    inside them (``width // 2 + 1`` pixels from their edge). Background strokes
    are straight lines of up to ``background_length`` pixels in random
    directions, cut where they come within ``margin`` pixels of an object, as a
    user paints between nuclei without touching them.

    Parameters
    ----------
    instances : ndarray of int, shape (Y, X)
        Ground-truth instance labels (0 = background).
    n_objects, n_background : int
        Number of object and background strokes.
    width : int
        Brush width in pixels.
    background_length : int
        Longest background stroke, in pixels.
    margin : int
        Closest a background stroke comes to an object, in pixels.
    seed : int
        The same seed gives the same strokes.

    Returns
    -------
    ndarray of uint8, shape (Y, X)
        Scribbles: 0 = not painted, 1 = background, 2 = object.

    Examples
    --------
    >>> truth = np.zeros((64, 64), int)
    >>> truth[10:30, 10:40] = 1
    >>> truth[40:60, 30:50] = 2
    >>> s = simulate_strokes(truth, n_objects=2, n_background=2, seed=0)
    >>> sorted(np.unique(s).tolist())
    [0, 1, 2]
    >>> bool(np.all(truth[s == 2] > 0) and np.all(truth[s == 1] == 0))
    True
    """
    lab = np.asarray(instances)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise DlcbError(f"expected a 2-D integer instance image, got {lab.dtype} {lab.shape}")
    if not (lab > 0).any() or (lab > 0).all():
        raise DlcbError("the instance image needs both objects and background")
    rng = np.random.default_rng(seed)
    out = np.zeros(lab.shape, np.uint8)
    half = max(int(width) // 2, 0)
    _object_strokes(lab, out, n_objects, half, rng)
    _background_strokes(lab, out, n_background, half, background_length, margin, rng)
    return out


def _brush(mask: np.ndarray, half: int) -> np.ndarray:
    if half <= 0:
        return mask
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return ndi.binary_dilation(mask, structure=yy**2 + xx**2 <= half**2)


def _line(shape: tuple[int, int], p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Boolean mask of the straight line from ``p0`` to ``p1`` (clipped to the image)."""
    n = int(np.ceil(np.abs(p1 - p0).max())) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = np.rint(p0[None] * (1 - t) + p1[None] * t).astype(int)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < shape[0]) & (pts[:, 1] >= 0) & (pts[:, 1] < shape[1])
    mask = np.zeros(shape, bool)
    mask[pts[ok, 0], pts[ok, 1]] = True
    return mask


def _object_strokes(
    lab: np.ndarray, out: np.ndarray, n: int, half: int, rng: np.random.Generator
) -> None:
    ids = np.unique(lab[lab > 0])
    objects = ndi.find_objects(lab)
    # objects big enough to hold a stroke of this width
    usable = [i for i in ids if (lab[objects[i - 1]] == i).sum() >= (2 * half + 3) ** 2]
    for i in rng.permutation(usable)[:n]:
        sl = objects[i - 1]
        inside = ndi.binary_erosion(lab[sl] == i, iterations=half + 1)
        if not inside.any():
            continue
        pts = np.argwhere(inside).astype(float)
        centre = pts.mean(0)
        # the longer axis of the object: the main eigenvector of its pixel covariance
        cov = np.cov((pts - centre).T) if len(pts) > 2 else np.eye(2)
        axis = np.linalg.eigh(cov)[1][:, -1]
        reach = np.abs((pts - centre) @ axis).max()
        line = _line(inside.shape, centre - reach * axis, centre + reach * axis)
        stroke = _brush(line & inside, half) & ndi.binary_erosion(lab[sl] == i, iterations=1)
        out[sl][stroke] = 2


def _background_strokes(
    lab: np.ndarray,
    out: np.ndarray,
    n: int,
    half: int,
    length: int,
    margin: int,
    rng: np.random.Generator,
) -> None:
    far = ndi.distance_transform_edt(lab == 0) > margin + half
    starts = np.argwhere(far)
    if len(starts) == 0:
        return
    drawn = 0
    for _ in range(50 * max(n, 1)):
        if drawn >= n:
            break
        p0 = starts[rng.integers(len(starts))].astype(float)
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.sin(angle), np.cos(angle)])
        line = _line(lab.shape, p0 - direction * length / 2, p0 + direction * length / 2)
        # keep the run of the line through the start point that stays away from objects
        runs, _ = ndi.label(line & far, structure=np.ones((3, 3)))
        run = runs == runs[int(p0[0]), int(p0[1])]
        if run.sum() < max(length // 3, 5) or (out[_brush(run, half)] > 0).any():
            continue
        out[_brush(run, half) & (lab == 0)] = 1
        drawn += 1
