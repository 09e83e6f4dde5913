"""Sequence logos as RGBA images, so that a logo can be a napari layer on the bp axis.

A logo stacks the letters A, C, G, T at each position with heights given by a
(4, L) matrix: an attribution map (usually non-zero only at the observed base:
``attribution * one_hot``), a mutation-map summary, or a motif's information
content. Positive values stack up from a baseline, negative values down from
it (the convention of logomaker and tangermeme's ``plot_logo``); within a
stack the largest letter is furthest from the baseline.

Glyphs are the bold DejaVu Sans letters that ship with matplotlib, rasterised
once per size from their outline (``matplotlib.textpath.TextPath``) and
stretched to fill each letter's cell, as logo makers do. Nothing here imports
Qt or napari.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from napari_dlcb.errors import DlcbError

__all__ = ["BASE_COLORS", "logo_image", "logo_placement"]

#: RGB of A, C, G, T: the classic logo colours (green, blue, orange, red)
BASE_COLORS = np.array([[16, 150, 72], [37, 92, 153], [247, 179, 43], [214, 40, 57]], np.uint8)
_TEMPLATE = 96  # glyph template resolution (rows and columns)


@lru_cache(maxsize=4)
def _glyph(letter: str) -> np.ndarray:
    """Boolean (96, 96) mask of ``letter``, its ink stretched to fill the square."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path
    from matplotlib.textpath import TextPath

    path = TextPath(
        (0, 0), letter, size=1, prop=FontProperties(family="DejaVu Sans", weight="bold")
    )
    verts = path.vertices
    (x0, y0), (x1, y1) = verts.min(0), verts.max(0)
    unit = Path((verts - (x0, y0)) / (x1 - x0, y1 - y0), path.codes)
    g = (np.arange(_TEMPLATE) + 0.5) / _TEMPLATE
    xx, yy = np.meshgrid(g, 1.0 - g)  # image rows go down, glyph y goes up
    inside = unit.contains_points(np.stack([xx.ravel(), yy.ravel()], 1))
    return inside.reshape(_TEMPLATE, _TEMPLATE)


@lru_cache(maxsize=4096)
def _stretched(letter: int, height: int, width: int) -> np.ndarray:
    t = _glyph("ACGT"[letter])
    rows = ((np.arange(height) + 0.5) * _TEMPLATE / height).astype(int)
    cols = ((np.arange(width) + 0.5) * _TEMPLATE / width).astype(int)
    return t[rows][:, cols]


def logo_image(
    values: np.ndarray,
    *,
    px_per_base: int = 12,
    height: int = 64,
    max_height: float | None = None,
    gap: int = 1,
) -> np.ndarray:
    """Draw a (4, L) matrix as a letter logo: an RGBA image of shape (height, L * px_per_base, 4).

    Parameters
    ----------
    values : ndarray, shape (4, L)
        Letter heights, rows A, C, G, T. Signed: negative letters hang below the
        baseline, which is the middle row when any value is negative and the
        bottom row otherwise.
    px_per_base : int
        Image columns per position (the letter width, ``gap`` included).
    height : int
        Image rows.
    max_height : float, optional
        The stack height that fills the space on one side of the baseline
        (default: the tallest stack), so that logos can share a scale.
    gap : int
        Transparent columns between neighbouring positions.

    Returns
    -------
    ndarray of uint8, shape (height, L * px_per_base, 4)
        Transparent background; ``image[..., 3] > 0`` where a letter is drawn.

    Examples
    --------
    >>> v = np.zeros((4, 3)); v[0, 0] = 1.0; v[3, 2] = -0.5
    >>> img = logo_image(v, px_per_base=8, height=32)
    >>> img.shape
    (32, 24, 4)
    >>> bool(img[:16, :8, 3].any()), bool(img[16:, :8, 3].any())  # A above the baseline
    (True, False)
    >>> bool(img[16:, 16:, 3].any()), bool(img[:16, 16:, 3].any())  # T hangs below
    (True, False)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != 4:
        raise DlcbError(f"a logo needs a (4, L) matrix (rows A, C, G, T), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise DlcbError("logo values contain NaN or infinite numbers")
    if px_per_base < 1 or height < 2:
        raise DlcbError("px_per_base must be >= 1 and height >= 2")
    length = v.shape[1]
    pos, neg = np.clip(v, 0, None), np.clip(-v, 0, None)
    two_sided = bool(neg.any())
    baseline = height // 2 if two_sided else height  # row index just below the baseline
    room = baseline if two_sided else height  # rows on each side
    top = float(max_height) if max_height else float(max(pos.sum(0).max(), neg.sum(0).max()))
    img = np.zeros((height, length * px_per_base, 4), np.uint8)
    if top <= 0:
        return img
    w = max(1, px_per_base - gap)
    for i in np.flatnonzero((pos > 0).any(0) | (neg > 0).any(0)):
        cells = img[:, i * px_per_base + (px_per_base - w) // 2 :][:, :w]
        _draw_stack(cells, pos[:, i], baseline, room, room / top, up=True)
        _draw_stack(cells, neg[:, i], baseline, room, room / top, up=False)
    return img


def _draw_stack(
    cells: np.ndarray, mag: np.ndarray, baseline: int, room: int, per_unit: float, *, up: bool
) -> None:
    """Draw one position's letters (heights ``mag``) above (or below) the baseline, in place."""
    edge = 0.0  # distance from the baseline, in rows
    w = cells.shape[1]
    for b in np.argsort(mag):  # small letters next to the baseline
        if mag[b] <= 0:
            continue
        lo, hi = edge, min(room, edge + mag[b] * per_unit)
        edge = hi
        r0, r1 = int(round(lo)), int(round(hi))
        if r1 <= r0:
            continue
        mask = _stretched(int(b), r1 - r0, w)
        if up:
            rows = slice(baseline - r1, baseline - r0)
        else:  # upside down below the baseline, as logomaker draws it
            rows = slice(baseline + r0, baseline + r1)
            mask = mask[::-1]
        cell = cells[rows]
        cell[mask, :3] = BASE_COLORS[b]
        cell[mask, 3] = 255


def logo_placement(
    length: int, image_shape: tuple[int, ...], *, start: float, band_top: float, band_height: float
) -> dict[str, tuple[float, float]]:
    """``scale`` and ``translate`` that put a logo image on a bp axis.

    Column ``j`` of a (4, L) map drawn at ``scale=(s, 1)``, ``translate=(t, start)``
    is centred on ``start + j``; this places the logo's letters for position
    ``j`` over the same base, spanning rows ``band_top`` to ``band_top + band_height``.

    Parameters
    ----------
    length : int
        Positions in the logo (L).
    image_shape : tuple
        Shape of :func:`logo_image`'s output.
    start : float
        World x of position 0's centre.
    band_top, band_height : float
        World y of the band's top edge, and its height.

    Returns
    -------
    dict with ``scale`` and ``translate``

    Examples
    --------
    >>> logo_placement(10, (50, 100, 4), start=100.0, band_top=0.0, band_height=50.0)
    {'scale': (1.0, 0.1), 'translate': (0.5, 99.55)}
    """
    rows, cols = int(image_shape[0]), int(image_shape[1])
    px = cols / max(1, length)
    sy, sx = band_height / rows, 1.0 / px
    # pixel k is centred at translate + k * scale; position j spans j - 0.5 .. j + 0.5
    return {
        "scale": (sy, sx),
        "translate": (band_top + 0.5 * sy, start - 0.5 + 0.5 * sx),
    }
