"""Geometry of the Genome view: track stacking, anisotropic placement, ruler ticks, label packing.

Pure functions (numpy only) used by :mod:`napari_dlcb.tasks.genome_layers`
to build layers and by the Genome view to keep them laid out as the camera
moves. Units: x in bp (world x = 0-based genome position; base ``i`` spans
``i - 0.5 .. i + 0.5``), y in screen px (a track keeps its height in px at any
zoom: its layers' y scale is ``px / zoom``, see :func:`place`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BASE_HEX",
    "GAP_PX",
    "LETTER_PX",
    "PALETTE",
    "RULER_PX",
    "TITLE_PX",
    "TRACK_ORDER",
    "Track",
    "bar_image",
    "declutter",
    "format_position",
    "label_width",
    "layout",
    "pack_rows",
    "place",
    "place_layer",
    "ruler_ticks",
    "track_meta",
]

RULER_PX = 46.0  # height of the bp ruler
TITLE_PX = 15.0  # title row above each track
GAP_PX = 4.0  # between tracks
LETTER_PX = 6.0  # smallest width of a base (px) at which letters are drawn
#: Top to bottom. The opened files first; model results below them (as IGV adds new
#: tracks at the bottom), so computing a result never moves the tracks above it.
TRACK_ORDER = (
    "sequence",
    "signal",
    "intervals",
    "variants",
    "prediction",
    "mutation_map",
    "attribution",
    "motif_hits",
)
#: A, C, G, T colours of logos and letters (green, blue, orange, red, as IGV and logomaker)
BASE_HEX = {"A": "#109648", "C": "#255c99", "G": "#f7a12b", "T": "#d62839", "N": "#888888"}
PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#d62728"]


@dataclass
class Track:
    """A track of the genome view: a title row, then ``height`` px of layers."""

    key: str
    kind: str
    title: str
    height: float
    #: titles of sub-rows (A/C/G/T, task names), drawn at the left of the track, top to bottom
    row_titles: list[str] = field(default_factory=list)


def layout(tracks: Sequence[Track], *, top: float = RULER_PX) -> dict[str, tuple[float, float]]:
    """Top and height (px) of each track's body, stacked in :data:`TRACK_ORDER` order.

    Examples
    --------
    >>> layout([Track("s", "sequence", "seq", 28), Track("v", "variants", "VCF", 30)])
    {'s': (61.0, 28), 'v': (108.0, 30)}
    """
    order = {k: i for i, k in enumerate(TRACK_ORDER)}
    out: dict[str, tuple[float, float]] = {}
    y = top
    for t in sorted(tracks, key=lambda t: order.get(t.kind, len(order))):
        y += TITLE_PX
        out[t.key] = (y, t.height)
        y += t.height + GAP_PX
    return out


def place(
    y_range: tuple[float, float],
    top: float,
    height: float,
    zoom: float,
    *,
    x_scale: float = 1.0,
    x_translate: float = 0.0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``scale`` and ``translate`` that put data rows ``y_range`` on ``height`` screen px at ``top``.

    World y is screen px / ``zoom`` (the camera's zoom), so with the camera's
    centre at ``canvas_height / 2 / zoom`` the track is drawn from ``top`` px
    below the canvas's top edge, whatever the zoom.

    Examples
    --------
    >>> place((-0.5, 3.5), top=40.0, height=28.0, zoom=2.0, x_translate=100.0)
    ((3.5, 1.0), (21.75, 100.0))
    """
    y0, y1 = y_range
    sy = height / (y1 - y0) / zoom
    return (sy, x_scale), (top / zoom - y0 * sy, x_translate)


def pack_rows(starts: np.ndarray, ends: np.ndarray, *, gap: float = 0.0) -> np.ndarray:
    """Row of each interval so that intervals in a row do not overlap (IGV's expanded mode).

    Greedy first fit in order of start; ``gap`` is the space kept between
    neighbours (in the same unit as the coordinates, e.g. room for a label).

    Examples
    --------
    >>> pack_rows(np.array([0, 5, 12, 3]), np.array([10, 8, 20, 4])).tolist()
    [0, 1, 0, 1]
    """
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    rows = np.zeros(len(starts), int)
    row_end: list[float] = []
    for i in np.argsort(starts, kind="stable"):
        for r, e in enumerate(row_end):
            if starts[i] >= e + gap:
                rows[i], row_end[r] = r, ends[i]
                break
        else:
            rows[i] = len(row_end)
            row_end.append(ends[i])
    return rows


def declutter(centres: np.ndarray, widths: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which labels to draw so that none overlaps another in its row (all in screen px).

    Labels are taken left to right; one that would overlap the last label
    kept in its row is left out.

    Examples
    --------
    >>> declutter(np.array([10.0, 15.0, 40.0]), np.array([20.0, 20.0, 20.0]), np.zeros(3)).tolist()
    [True, False, True]
    """
    centres, widths = np.asarray(centres, float), np.asarray(widths, float)
    keep = np.zeros(len(centres), bool)
    last: dict[Any, float] = {}
    for i in np.argsort(centres, kind="stable"):
        left = centres[i] - widths[i] / 2
        if left >= last.get(rows[i], -math.inf) + 4:
            keep[i] = True
            last[rows[i]] = centres[i] + widths[i] / 2
    return keep


def label_width(text: str, size: float = 10.0) -> float:
    """Approximate width in px of a label in napari's default font."""
    return 0.8 * size * len(text) + 4


def ruler_ticks(lo: float, hi: float, *, width_px: float, min_px: float = 110.0) -> np.ndarray:
    """1-based positions of ruler ticks in ``[lo, hi]`` at a 1-2-5 step at least ``min_px`` apart.

    Examples
    --------
    >>> ruler_ticks(0, 1000, width_px=1000).tolist()
    [200, 400, 600, 800, 1000]
    """
    span = max(hi - lo, 1.0)
    raw = span * min_px / max(width_px, 1.0)
    mag = 10 ** math.floor(math.log10(max(raw, 1.0)))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = max(1, math.ceil((lo + 1) / step) * step)
    return np.arange(first, hi + 1, step, dtype=np.int64)


def format_position(pos: int, span: float) -> str:
    """A 1-based position as a browser ruler writes it (bp, kb or Mb by the visible span).

    Examples
    --------
    >>> format_position(74065000, 20000), format_position(74065200, 800), format_position(1500000, 3e6)
    ('74,065 kb', '74,065,200', '1.5 Mb')
    """
    if span >= 2e6:
        return f"{round(pos / 1e6, 3):g} Mb"
    if span >= 5e3 and pos % 1000 == 0:
        return f"{pos // 1000:,} kb"
    return f"{pos:,}"


def bar_image(
    values: np.ndarray,
    color: str,
    *,
    rows: int = 32,
    top: float | None = None,
    max_columns: int = 8192,
) -> tuple[np.ndarray, int, float]:
    """A signal as an RGBA bar chart: one column per base (or per bin of bases), filled from the bottom.

    An image keeps its look at any zoom (a napari line's width is in data
    units, so it would swell with the anisotropic scale). More than
    ``max_columns`` positions are max-pooled into bins, so a peak never
    disappears and the texture stays below GPU limits.

    Parameters
    ----------
    values : numpy.ndarray
        One value per position (NaN = 0; negative values are drawn as 0).
    color : str
        ``#rrggbb`` of the bars.
    rows : int
        Image height (bar resolution).
    top : float, optional
        Value of a full bar (default: the maximum).
    max_columns : int
        Most columns before binning.

    Returns
    -------
    image : numpy.ndarray
        ``(rows, columns, 4)`` uint8.
    bin : int
        Positions per column.
    top : float

    Examples
    --------
    >>> img, b, top = bar_image(np.array([0.0, 1.0, 2.0]), "#ff0000", rows=4)
    >>> img[..., 3].T.tolist(), b, top
    ([[0, 0, 0, 0], [0, 0, 255, 255], [255, 255, 255, 255]], 1, 2.0)
    """
    v = np.clip(np.nan_to_num(np.asarray(values, float)), 0, None)
    b = max(1, math.ceil(len(v) / max_columns))
    if b > 1:
        v = np.pad(v, (0, (-len(v)) % b)).reshape(-1, b).max(1)
    top = float(top if top is not None else (v.max() if v.size else 0.0)) or 1.0
    h = np.clip(np.round(v / top * rows), 0, rows).astype(int)
    filled = np.arange(rows)[:, None] >= rows - h[None, :]
    img = np.zeros((rows, len(v), 4), np.uint8)
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    img[filled] = (*rgb, 255)
    return img, b, top


def track_meta(kind: str, track: str, y_range: tuple[float, float], **extra: Any) -> dict:
    """The metadata that marks a layer as one track of the Genome view (kind, track, y range)."""
    return {"genome_view": True, "kind": kind, "track": track, "y_range": y_range, **extra}


def place_layer(kwargs: dict, tops: dict, zoom: float) -> dict:
    """Set a layer's ``scale``/``translate`` from its track's top and height (see :func:`place`)."""
    m = kwargs["metadata"]
    top, height = tops[m["track"]]
    scale, translate = place(
        m["y_range"],
        top,
        height,
        zoom,
        x_scale=m.get("x_scale", 1.0),
        x_translate=m.get("x_translate", 0.0),
    )
    kwargs["scale"], kwargs["translate"] = scale, translate
    return kwargs
