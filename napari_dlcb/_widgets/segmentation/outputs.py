"""Predict's results as layers: foreground probability and segmentation, on the image's grid.

In-memory results replace the data of existing output layers (or add them);
block-by-block results are opened lazily from their OME-Zarr store as
multiscale layers. Both are drawn on top of the live prediction, which the
dock hides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb._widgets._common import layer_grid
from napari_dlcb._widgets.segmentation.live import display_labels
from napari_dlcb._widgets.segmentation.panel import OUTPUT_KEY

if TYPE_CHECKING:
    import napari

__all__ = ["PYRAMID_SMALLEST", "show_blockwise", "show_prediction"]

PYRAMID_SMALLEST = 2048  # coarsest level of a block-wise result's lazy pyramid


def _set_output(viewer: napari.Viewer, name: str, data: Any, grid: dict, *, image: bool) -> None:
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.scale, layer.translate = grid["scale"], grid["translate"]
        if not image:
            layer.visible = True
        return
    if image:
        viewer.add_image(
            data,
            name=name,
            colormap="magma",
            visible=False,
            contrast_limits=(0.0, 1.0),
            metadata={OUTPUT_KEY: "probability"},
            **grid,
        )
    else:
        viewer.add_labels(data, name=name, opacity=0.6, metadata={OUTPUT_KEY: "seg"}, **grid)


def show_prediction(
    viewer: napari.Viewer, name: str, prob: np.ndarray, labels: np.ndarray, meta: Any
) -> str:
    """Add or update ``<name> foreground probability`` and ``<name> segmentation``.

    Returns
    -------
    str
        What was found ("12 object(s)", "2 foreground class(es)").
    """
    image = viewer.layers[name]
    grid = layer_grid(image)
    kind = getattr(meta, "label_kind", None)
    prob = np.asarray(prob)
    foreground = 1.0 - prob[0] if prob.shape[0] > 1 else prob[0]
    shown = display_labels(labels, kind)
    _set_output(viewer, f"{name} foreground probability", foreground, grid, image=True)
    _set_output(viewer, f"{name} segmentation", shown, grid, image=False)
    n = int((np.unique(shown) != 0).sum())
    return f"{n} object(s)" if kind == "instances" else f"{n} foreground class(es)"


def show_blockwise(viewer: napari.Viewer, name: str, path: str) -> None:
    """Open a block-by-block result lazily (multiscale) on image ``name``'s grid."""
    from napari_dlcb.inference import open_prediction_lazy

    grid = layer_grid(viewer.layers[name])
    prob, labels = open_prediction_lazy(path, smallest=PYRAMID_SMALLEST)
    scale = 255.0 if prob[0].dtype == np.uint8 else 1.0  # uint8 storage = p * 255
    single = prob[0].shape[0] == 1  # sigmoid model: channel 0 is the foreground
    fg = [p[0] / scale if single else 1.0 - p[0] / scale for p in prob]
    for lname in (f"{name} foreground probability", f"{name} segmentation"):
        if lname in viewer.layers:
            viewer.layers.remove(lname)
    viewer.add_image(
        fg if len(fg) > 1 else fg[0],
        multiscale=len(fg) > 1,
        name=f"{name} foreground probability",
        colormap="magma",
        visible=False,
        contrast_limits=(0.0, 1.0),
        metadata={OUTPUT_KEY: "probability", "path": path},
        **grid,
    )
    if labels is not None:
        viewer.add_labels(
            labels if len(labels) > 1 else labels[0],
            multiscale=len(labels) > 1,
            name=f"{name} segmentation",
            opacity=0.6,
            metadata={OUTPUT_KEY: "seg", "path": path},
            **grid,
        )
