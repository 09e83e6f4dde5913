"""Layers the Genome view adds around the tracks, and in-place updates of reused layers.

* :func:`frame_layer` - an invisible frame that keeps napari's dims range fixed;
* :func:`overlay_layers` - the ruler's baseline, the name panel and ONE points
  layer with every text of the ruler and of the name panel;
* :func:`update_layer` - give an existing layer new data (napari runs a full
  garbage collection for every layer removed, so the view reuses its layers).

Used by :class:`~napari_dlcb._widgets.genome_browser.GenomeBrowser`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_dlcb.io.regions import Region
from napari_dlcb.tasks.genome_layout import RULER_PX

__all__ = ["FRAME_STEP", "MAX_REGION", "TEXT", "frame_layer", "overlay_layers", "update_layer"]

MAX_REGION = 1_000_000  # longest region shown (bp); see frame_layer
FRAME_STEP = 0.01  # the frame's y scale: below any track's y scale at the closest zoom
TEXT = "#202020"
_OVERLAY = {"track": "_overlay", "overlay": True}


def frame_layer(region: Region) -> list[tuple]:
    """An invisible frame larger than the view can ever be, with the smallest y step.

    napari's dims range is the union of the layers' extents stepped by their
    smallest scale; every change of it re-slices every layer. With the frame
    the range stays put when the tracks are re-scaled on zoom, so re-scaling a
    layer costs that layer only. (napari's Qt dims slider fails beyond ~1e9
    steps, hence :data:`MAX_REGION`.)
    """
    r = region
    span = max(len(r), 10_000)
    deepest = 3000.0 * span / 500.0  # world y of a 3000 px stack on a 500 px wide canvas
    corners = np.array([[-1.0 / FRAME_STEP, -span], [deepest / FRAME_STEP, len(r) + span]])
    kwargs = {
        "name": "genome frame",
        "visible": False,
        "scale": (FRAME_STEP, 1.0),
        "metadata": {"kind": "frame", "track": "_frame"},
    }
    return [(corners, kwargs, "points")]


def overlay_layers(region: Region) -> list[tuple]:
    r = region
    base = RULER_PX - 6
    baseline = {
        "name": "ruler",
        "shape_type": "line",
        "edge_color": TEXT,
        "edge_width": 1,
        "metadata": {"kind": "baseline", **_OVERLAY},
    }
    panel = {
        "name": "name panel",
        "rgb": True,
        "affine": np.array([[1.0, 0.0, RULER_PX], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        "metadata": {"kind": "panel", **_OVERLAY},
    }
    # ticks (vertical bars) and every text of the ruler and the name panel in ONE
    # points layer: one update per camera move. napari draws "upper_left" text with
    # its lower-left corner at the point.
    annotations = {
        "name": "ruler and track names",
        "size": 1,
        "canvas_size_limits": (0, 7),
        "face_color": "transparent",
        "border_width": 0,
        "features": {"label": np.array([], dtype=object)},
        "text": {"string": "{label}", "color": TEXT, "size": 9, "anchor": "upper_left"},
        "metadata": {"kind": "annotations", **_OVERLAY},
    }
    return [
        ([np.array([[base, -0.5], [base, len(r) - 0.5]])], baseline, "shapes"),
        (np.full((1, 1, 4), 255, np.uint8), panel, "image"),
        (np.zeros((0, 2)), annotations, "points"),
    ]


def update_layer(layer: Any, data: Any, kwargs: dict, kind: str, geometry: dict) -> bool:
    """Give an existing layer new data in place (False when it cannot take them)."""
    from napari.layers import Image, Points, Shapes

    types = {"image": Image, "points": Points, "shapes": Shapes}
    if not isinstance(layer, types[kind]):
        return False
    if kind == "image" and (
        bool(kwargs.get("rgb", False)) != bool(layer.rgb)
        or kwargs.get("multiscale", False)
        or layer.multiscale
    ):
        return False
    layer.metadata = {**kwargs["metadata"], "genome_view": True}
    layer.name = kwargs["name"]
    if kind == "shapes":
        layer.data = [(d, kwargs.get("shape_type", "rectangle")) for d in data]
        if "edge_width" in kwargs:
            layer.edge_width = kwargs["edge_width"]
    else:
        layer.data = data
    if "features" in kwargs:
        layer.features = kwargs["features"]
    if kind == "points":
        layer.refresh_text()
    if "contrast_limits" in kwargs:
        layer.contrast_limits = kwargs["contrast_limits"]
    for name in ("scale", "translate"):
        if name in geometry and tuple(getattr(layer, name)) != tuple(geometry[name]):
            setattr(layer, name, geometry[name])
    layer.visible = kwargs.get("visible", True)
    return True
