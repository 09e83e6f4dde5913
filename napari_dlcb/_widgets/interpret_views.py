"""Interpretation dock, network views: filters, top activating patches, activation maximisation.

:class:`NetworkViewsMixin` is the part of :class:`~napari_dlcb._widgets.interpret.InterpretWidget`
that shows what the network has learnt. Each view is computed in a job and
added as an image placed *beside* the source image, in a column to its right,
below the views already there (:func:`place_beside`), so no view is drawn over
the image or over another view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_dlcb._widgets._common import layer_grid
from napari_dlcb.errors import DlcbError

__all__ = ["VIEW_KEY", "NetworkViewsMixin", "place_beside"]

#: ``layer.metadata`` key marking a network view placed beside an image
VIEW_KEY = "dlcb_network_view"
_GAP = 0.05  # gap between the image and the views, and between views (fraction of image width)


def _extent(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """World (row, col) of the top-left and bottom-right corners of a 2-D image layer."""
    shape = np.asarray(layer.data.shape[:2] if getattr(layer, "rgb", False) else layer.data.shape)
    grid = layer_grid(layer)
    lo = np.asarray(grid["translate"], float)
    return lo, lo + shape[-2:] * np.asarray(grid["scale"], float)


def place_beside(viewer: Any, source: Any, shape: tuple[int, int], name: str) -> dict[str, Any]:
    """``scale`` and ``translate`` that put a (rows, cols) image right of ``source``.

    Views form a column to the right of the source image: the new one goes
    below the lowest view already there (except one named ``name``, which it
    replaces), so nothing overlaps. Without a source image, views stack from
    the origin.

    Returns
    -------
    dict
        ``{"scale": (sy, sx), "translate": (ty, tx)}`` for ``viewer.add_image``.
    """
    if source is None:
        scale, left, top, gap = np.ones(2), 0.0, 0.0, 0.0
    else:
        lo, hi = _extent(source)
        scale = np.asarray(layer_grid(source)["scale"], float)
        gap = _GAP * (hi[1] - lo[1])
        left, top = hi[1] + gap, lo[0]
    for ly in viewer.layers:
        if ly.metadata.get(VIEW_KEY) and ly.name != name:
            v_lo, v_hi = _extent(ly)
            if v_hi[1] > left and v_lo[1] < left + shape[1] * scale[1] + gap:
                top = max(top, v_hi[0] + gap)
    return {"scale": tuple(scale), "translate": (top, left)}


@dataclass
class _Patches:
    top: Any  # napari_dlcb.interpret.network.TopPatches
    channel: int


def _filters_job(models: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    from napari_dlcb.interpret.network import filter_grid

    model, _ = models.get(source)
    return filter_grid(model)


def _patches_job(
    models: Any, source: str, data: np.ndarray, channel_axis: int | None, layer: str | None,
    channel: int, k: int,
) -> _Patches:  # fmt: skip
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.interpret.network import top_activating_patches

    model, meta = models.get(source)
    x = Normalizer.from_dict(meta.normalization)(data, channel_axis=channel_axis)
    top = top_activating_patches(model, [x], layer=layer, channel=channel, k=k, channel_axis=0)
    return _Patches(top, channel)


def _actmax_job(
    models: Any, source: str, layer: str | None, channel: int
) -> tuple[str, np.ndarray, list[float], int]:
    from napari_dlcb.interpret.common import layer_name, resolve_layer
    from napari_dlcb.interpret.network import activation_maximisation

    model, meta = models.get(source)
    mod = resolve_layer(model, layer)
    in_channels = int(getattr(meta, "in_channels", 1) or 1)
    image, trace = activation_maximisation(
        model, layer=mod, channel=channel, in_channels=in_channels
    )
    return layer_name(model, mod), image, trace, channel


class NetworkViewsMixin:
    """Filters, top activating patches and activation maximisation of the interpretation dock."""

    jobs: Any
    viewer: Any

    def _source_layer(self) -> Any:
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _add_view(self, data: np.ndarray, name: str, **kwargs: Any) -> Any:
        """Add (or replace) a view beside the source image."""
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        shape = data.shape[-2:] if not kwargs.get("rgb") else data.shape[:2]
        place = place_beside(self.viewer, self._source_layer(), tuple(shape), name)
        if data.ndim == 3 and not kwargs.get("rgb"):  # (C, Y, X) as a stack
            place = {k: (1.0 if k == "scale" else 0.0, *v) for k, v in place.items()}
        layer = self.viewer.add_image(data, name=name, **place, **kwargs)
        layer.metadata[VIEW_KEY] = True
        return layer

    # ------------------------------------------------------------------ filters
    def show_filters(self) -> Any:
        """Add the first-layer filters of the model as an image grid (in a job)."""
        return self._start("First-layer filters", _filters_job, on_return=self._add_filters)

    def _add_filters(self, out: tuple[np.ndarray, np.ndarray]) -> Any:
        grid, w = out
        style = {"colormap": "gray", "contrast_limits": (0, 1)} if grid.ndim == 2 else {}
        layer = self._add_view(grid, "filters (first layer)", rgb=grid.ndim == 3, **style)
        self.status.setText(
            f"{w.shape[0]} filters of {w.shape[1]} channel(s), {w.shape[2]}x{w.shape[3]}"
        )
        self.last_filters = layer
        return layer

    # ------------------------------------------------------------------ top patches
    def show_top_patches(self) -> Any:
        """Find the top-k patches of a channel on the chosen image (in a job)."""
        try:
            layer, data, channel_axis = self._image()
        except DlcbError as err:
            self.jobs.report(err)
            return None
        return self._start(
            "Top activating patches",
            _patches_job,
            data,
            channel_axis,
            self.layer_edit.text().strip() or None,
            int(self.channel_spin.value()),
            int(self.k_spin.value()),
            on_return=lambda out: self._add_patches(layer, out),
        )

    def _add_patches(self, source: Any, out: _Patches) -> None:
        tp, channel = out.top, out.channel
        name = f"top locations ch {channel}"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self._add_view(tp.grid, f"top patches ch {channel}", colormap="gray")
        pts = self.viewer.add_points(  # the locations are on the image itself
            tp.locations[:, 1:], name=name, size=tp.patch_size, symbol="square",
            face_color="transparent", border_color="yellow",
            features={"rank": np.arange(1, len(tp.values) + 1), "activation": tp.values},
            text={"string": "{rank}", "color": "yellow", "size": 8}, **layer_grid(source),
        )  # fmt: skip
        self.status.setText(
            f"top {len(tp.values)} patches ({tp.patch_size} px) for channel {channel}"
        )
        self.last_points = pts

    # ------------------------------------------------------------------ activation maximisation
    def show_activation_maximisation(self) -> Any:
        """Generate an input maximising the chosen channel of the chosen layer (in a job)."""
        return self._start(
            "Activation maximisation",
            _actmax_job,
            self.layer_edit.text().strip() or None,
            int(self.channel_spin.value()),
            on_return=self._add_actmax,
        )

    def _add_actmax(self, out: tuple[str, np.ndarray, list[float], int]) -> Any:
        layer_name, image, trace, channel = out
        name = f"act-max {layer_name}[{channel}]"
        data = image[0] if image.shape[0] == 1 else image  # (Y, X), or (C, Y, X) as a stack
        layer = self._add_view(data, name, colormap="gray")
        layer.metadata["activation_maximisation"] = {
            "layer": layer_name,
            "channel": channel,
            "trace": list(trace),
        }
        self.status.setText(
            f"{name}: mean activation {trace[0]:.3g} -> {trace[-1]:.3g} in {len(trace)} steps"
        )
        self.last_actmax = layer
        return layer
