"""The live layers while training: the viewport's prediction and its saliency map.

Layers are written in place and re-sliced where possible (no new array, no
dims update, only the texture is uploaded again), new layers never take the
selection away from the layer being painted, and updates come from the dock's
throttle (about one per second).

Label convention in the live and final prediction layers: ``instances`` show
instance ids; ``classes`` show the class values; ``scribbles`` show class
values 2..K with the background class (1) drawn as 0, so objects keep the
colours they were painted with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb._widgets._common import attribution_colormap, layer_grid, plane_shape
from napari_dlcb._widgets.segmentation.panel import OUTPUT_KEY

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer

__all__ = ["FULL_PLANE_PIXELS", "LiveLayers", "add_quietly", "display_labels"]

FULL_PLANE_PIXELS = 2048 * 2048  # live layer as large as the plane up to this size


def display_labels(labels: np.ndarray, label_kind: str | None) -> np.ndarray:
    """Labels as drawn.

    For scribble models the background class (1) becomes 0. The result has the
    smallest unsigned dtype that holds it: napari draws uint8/uint16 labels
    without the (numba-compiled) hashing that wider integers need, which would
    otherwise stall the event loop for a second the first time.
    """
    out = np.asarray(labels)
    if label_kind == "scribbles":
        out = np.where(out == 1, 0, out)
    top = int(out.max(initial=0))
    lo = int(out.min(initial=0))
    if lo >= 0 and top < 2**8:
        return out.astype(np.uint8, copy=False)
    if lo >= 0 and top < 2**16:
        return out.astype(np.uint16, copy=False)
    return out.astype(np.int32, copy=False)


def add_quietly(viewer: napari.Viewer, add: Callable[[], Layer]) -> Layer:
    """Add a layer with ``add()`` and give the selection back to the layer that had it.

    napari makes a new layer the active one; the user painting scribbles keeps
    painting in their layer (public API only).
    """
    selection = viewer.layers.selection
    active = selection.active
    layer = add()
    if active is not None and active in viewer.layers and selection.active is not active:
        selection.active = active
    return layer


class LiveLayers:
    """The live prediction layer and the live saliency layer of one dock."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self.preview_layer: Labels | None = None
        self.saliency_layer: Image | None = None
        self.pending_saliency: dict[str, Any] | None = None
        self.n_preview_updates = 0
        self.n_saliency_updates = 0
        self.region_shown: tuple[slice, slice] | None = None

    # ------------------------------------------------------------------ prediction
    def ensure_preview(self, image: Image, *, visible: bool = True) -> Labels:
        """The live prediction layer of ``image`` (created empty if need be).

        Planes of up to :data:`FULL_PLANE_PIXELS` pixels get a layer of the
        plane's shape, so each update only refreshes the texture; larger
        images get a layer the size of the viewport region, moved with
        ``translate``. ``visible=False`` makes it ahead of time, hidden (the
        dock does so when an image is chosen, so that Train never waits for
        napari to build a layer).
        """
        layer = self.preview_layer
        rows, cols = plane_shape(image)
        grid = layer_grid(image)
        full = rows * cols <= FULL_PLANE_PIXELS
        name = f"{image.name} live prediction"
        if layer is not None and layer in self.viewer.layers:
            if layer.metadata.get("dlcb_full_plane") == full and (
                not full or tuple(layer.data.shape) == (rows, cols)
            ):
                if layer.name != name:  # another image of the same size: start blank
                    layer.name = name
                    layer.data = np.zeros_like(layer.data)
                if not np.allclose(layer.scale, grid["scale"]):  # a transform update is slow
                    layer.scale = grid["scale"]
                if not np.allclose(layer.translate, grid["translate"]):
                    layer.translate = grid["translate"]
                if visible and not layer.visible:
                    layer.visible = True
                return layer
            self.viewer.layers.remove(layer)
        shape = (rows, cols) if full else (1, 1)
        self.preview_layer = add_quietly(
            self.viewer,
            lambda: self.viewer.add_labels(
                np.zeros(shape, np.uint8),
                name=name,
                opacity=0.5,
                visible=visible,
                metadata={OUTPUT_KEY: "live", "dlcb_full_plane": full},
                **grid,
            ),
        )
        return self.preview_layer

    def remove_unused(self) -> None:
        """Remove a live prediction layer that never showed anything."""
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers and self.n_preview_updates == 0:
            self.viewer.layers.remove(layer)
            self.preview_layer = None

    def hide_preview(self) -> None:
        """Hide the live prediction (the final segmentation is then what shows)."""
        layer = self.preview_layer
        if layer is not None and layer in self.viewer.layers:
            layer.visible = False

    def apply_preview(self, image: Image, data: dict[str, Any], label_kind: str | None) -> None:
        """Draw one live prediction (and the newest pending saliency map)."""
        labels = display_labels(data["labels"], label_kind)
        r0, c0 = (int(v) for v in data.get("offset", (0, 0)))
        layer = self.ensure_preview(image)
        h, w = labels.shape
        buf = layer.data
        if (
            layer.metadata.get("dlcb_full_plane")
            and isinstance(buf, np.ndarray)
            and np.can_cast(labels.dtype, buf.dtype)
        ):
            # write in place and re-slice: no new array, no dims update, only the
            # texture is uploaded again (setting layer.data costs ~2x more)
            buf[...] = 0
            buf[r0 : r0 + h, c0 : c0 + w] = labels
            # thumbnail=False: a new thumbnail repaints the whole layer list
            layer.refresh(extent=False, highlight=False, thumbnail=False)
        elif layer.metadata.get("dlcb_full_plane"):
            canvas = np.zeros(buf.shape, labels.dtype)
            canvas[r0 : r0 + h, c0 : c0 + w] = labels
            layer.data = canvas
        else:
            grid = layer_grid(image)
            scale = np.asarray(grid["scale"])
            layer.translate = tuple(np.asarray(grid["translate"]) + scale * np.array([r0, c0]))
            layer.data = labels
        self.region_shown = (slice(r0, r0 + h), slice(c0, c0 + w))
        self.n_preview_updates += 1

    # ------------------------------------------------------------------ saliency
    def ensure_saliency(self, image: Image) -> Image:
        """The live saliency layer, created hidden (shown with the first map)."""
        layer = self.saliency_layer
        name = f"{image.name} live saliency"
        if layer is not None and layer in self.viewer.layers and layer.name == name:
            return layer
        self.saliency_layer = add_quietly(
            self.viewer,
            lambda: self.viewer.add_image(
                np.zeros((1, 1), np.float32),
                name=name,
                colormap=attribution_colormap(),
                contrast_limits=(-1.0, 1.0),
                opacity=0.9,
                blending="translucent",
                visible=False,
                metadata={OUTPUT_KEY: "live saliency", "dlcb_fresh": True},
                **layer_grid(image),
            ),
        )
        return self.saliency_layer

    def apply_saliency(self, image: Image, data: dict[str, Any], classes: list[str]) -> None:
        """Show a live saliency map on the image grid, diverging around 0."""
        smap = np.asarray(data["saliency"], np.float32)
        r0, c0 = (int(v) for v in data.get("saliency_offset", (0, 0)))
        layer = self.ensure_saliency(image)
        grid = layer_grid(image)
        scale = np.asarray(grid["scale"])
        translate = np.asarray(grid["translate"]) + scale * np.array([r0, c0])
        lim = float(np.abs(smap).max()) or 1.0
        if not np.allclose(layer.scale, scale):
            layer.scale = grid["scale"]
        if not np.allclose(layer.translate, translate):
            layer.translate = tuple(translate)
        layer.data = smap
        layer.contrast_limits_range = (-lim, lim)
        layer.contrast_limits = (-lim, lim)
        target = data.get("saliency_target")
        cls = classes[target] if target is not None and 0 <= target < len(classes) else target
        layer.metadata.update(
            {
                "saliency": {
                    "method": data.get("saliency_method", "saliency"),
                    "target": target,
                    "class": cls,
                    "offset": (r0, c0),
                }
            }
        )
        if layer.metadata.pop("dlcb_fresh", False):
            layer.visible = True
        self.n_saliency_updates += 1
