"""The Genome view's canvas as a genome browser: stacked named tracks, a bp ruler, zoom along the genome.

napari's camera zooms both axes alike; a genome browser zooms only along the
genome. :class:`GenomeBrowser` keeps every genome layer's y axis at
``1 / zoom`` (see :func:`napari_dlcb.tasks.genome_layout.place`), so a track
is the same number of screen pixels tall at any zoom, and pins the stack to
the top of the canvas (a vertical drag scrolls it when it is taller). Around
the data it keeps, in step with the camera:

- a **ruler**: ticks at a 1-2-5 step, labelled in 1-based coordinates, and the
  visible locus as UCSC and IGV write it;
- a **name panel** at the left with the track titles and sub-row titles
  (A/C/G/T, task names), as in IGV;
- **feature labels** (BED names, variant ids, motif names) at the centre of the
  visible part of each feature, left out where they would overlap;
- the **base letters**, for the visible bases only, once a base is wide enough.

Zoom out stops at the whole region, pan at its ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from napari_dlcb._widgets._common import viewer_camera
from napari_dlcb._widgets.genome_overlays import (
    MAX_REGION,
    frame_layer,
    overlay_layers,
    update_layer,
)
from napari_dlcb.io.regions import Region, format_locus
from napari_dlcb.tasks.genome_layout import (
    BASE_HEX,
    LETTER_PX,
    RULER_PX,
    Track,
    declutter,
    format_position,
    label_width,
    layout,
    place,
    ruler_ticks,
)

if TYPE_CHECKING:
    import napari

__all__ = ["MAX_REGION", "GenomeBrowser"]

MAX_PX_PER_BP = 40.0  # closest zoom
PANEL_PX = 60.0  # the name panel at the left
#: tracks of model results: removed when another region is shown
RESULT_TRACKS = ("prediction", "attribution", "motif_hits")


class GenomeBrowser(QObject):
    """Lays out and annotates the genome layers of one napari viewer (see module docs)."""

    def __init__(self, viewer: napari.Viewer, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.region: Region | None = None
        self.sequence = ""
        self.tracks: dict[str, Track] = {}
        self._tops: dict[str, tuple[float, float]] = {}
        self._zoom: float | None = None
        self._scroll_px = 0.0
        self._busy = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(40)  # at most ~25 updates a second, whatever the wheel does
        self._timer.timeout.connect(self.refresh)
        self.camera = viewer_camera(viewer)
        self.camera.events.zoom.connect(self._on_camera)
        self.camera.events.center.connect(self._on_camera)
        viewer.canvas.events.size.connect(self._on_resize)
        self._span: tuple[float, float] | None = None  # genome span shown, kept on resize

    # ------------------------------------------------------------------ layers
    def layers(self, track: str | None = None, kind: str | None = None) -> list[Any]:
        """The genome layers (of one track, or of one kind)."""
        return [
            ly
            for ly in self.viewer.layers
            if ly.metadata.get("genome_view")
            and (track is None or ly.metadata.get("track") == track)
            and (kind is None or ly.metadata.get("kind") == kind)
        ]

    def layer(self, kind: str) -> Any:
        """The first genome layer of ``kind``, or None."""
        found = self.layers(kind=kind)
        return found[0] if found else None

    def clear(self) -> None:
        """Remove every genome layer (a new genome or region replaces them all)."""
        for layer in self.layers():
            self.viewer.layers.remove(layer)
        self.tracks.clear()
        self.region = None

    def show(self, region: Region, layer_data: list[tuple], tracks: list[Track]) -> list[Any]:
        """Show ``layer_data`` for ``region`` instead of what was shown; fit the region to the width.

        The layers of the previous region are updated in place where a layer
        of the same kind and track exists: napari runs a full garbage
        collection for every layer removed (0.1-0.6 s each), so replacing a
        dozen layers on every Go would stall the window for seconds. Results
        of the previous region (predictions, logos, motif sites) are removed;
        its mutation-map band is hidden, to be reused.
        """
        old: dict[tuple, Any] = {}
        for layer in self.layers():
            m = layer.metadata
            if m.get("track") in RESULT_TRACKS:
                self.viewer.layers.remove(layer)
            else:
                old.setdefault((m.get("kind"), m.get("track")), layer)
        self.region = region
        self.sequence = layer_data[0][1]["metadata"].get("sequence", "")
        self.tracks = {t.key: t for t in tracks}
        self.viewer.canvas.background_color_override = "white"
        self._put(old, frame_layer(region))
        added = self._put(old, layer_data)
        self._put(old, overlay_layers(region))
        for layer in old.values():
            if layer.metadata.get("kind") == "mutation_map":
                layer.visible = False
            else:
                self.viewer.layers.remove(layer)
        self._raise_overlays()
        self.fit()
        return added

    def _put(self, old: dict, layer_data: list[tuple]) -> list[Any]:
        """Update the matching old layer with each item of ``layer_data``, else add a layer."""
        out = []
        for item in layer_data:
            m = item[1]["metadata"]
            layer = old.pop((m["kind"], m["track"]), None)
            if layer is not None and update_layer(layer, *item, self._geometry(item[1])):
                out.append(layer)
                continue
            if layer is not None:
                self.viewer.layers.remove(layer)
            out += self._add([item])
        return out

    def update(self, layer: Any, item: tuple) -> bool:
        """Give ``layer`` the data and options of ``item`` (a layer tuple) in place, if it can."""
        return update_layer(layer, *item, self._geometry(item[1]))

    @staticmethod
    def _geometry(kwargs: dict) -> dict:
        m = kwargs["metadata"]
        if "y_range" in m or m.get("kind") in ("annotations", "baseline"):
            # y is placed by the layer's affine (see _place), x by its scale/translate
            return {
                "scale": (1.0, m.get("x_scale", 1.0)),
                "translate": (0.0, m.get("x_translate", 0.0)),
            }
        return {k: kwargs[k] for k in ("scale", "translate") if k in kwargs}

    def _raise_overlays(self) -> None:
        layers = self.viewer.layers
        for layer in [ly for ly in self.layers() if ly.metadata.get("overlay")]:
            if layers.index(layer) != len(layers) - 1:
                layers.move(layers.index(layer), len(layers))

    def set_track(self, track: Track, layer_data: list[tuple]) -> list[Any]:
        """Add or replace one track (predictions, a mutation map...) and re-stack the tracks."""
        for layer in self.layers(track=track.key):
            self.viewer.layers.remove(layer)
        self.tracks[track.key] = track
        added = self._add(layer_data)
        self._raise_overlays()  # annotations stay on top
        self.relayout(force=True)
        return added

    def add_hidden(self, layer_data: list[tuple]) -> list[Any]:
        """Add layers without a track yet (invisible), to be shown later by :meth:`show_track`.

        Adding a napari layer costs a few hundred ms on a slow machine; a result
        band made ahead, hidden, is shown later without that stall.
        """
        added = self._add([(d, {**k, "visible": False}, t) for d, k, t in layer_data])
        self._raise_overlays()
        return added

    def show_track(self, track: Track) -> None:
        """Give a track made by :meth:`add_hidden` its place, and show its layers."""
        self.tracks[track.key] = track
        self.relayout(force=True)
        for layer in self.layers(track=track.key):
            layer.visible = True
        self._timer.start()  # titles and ruler follow, coalesced

    def remove_track(self, key: str) -> None:
        """Remove one track and close the gap it leaves."""
        for layer in self.layers(track=key):
            self.viewer.layers.remove(layer)
        if self.tracks.pop(key, None) is not None:
            self.relayout(force=True)

    def _add(self, layer_data: list[tuple]) -> list[Any]:
        added = []
        for data, kwargs, kind in layer_data:
            kwargs = {**kwargs, **self._geometry(kwargs)}
            kwargs["metadata"] = {**kwargs["metadata"], "genome_view": True}
            added.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs))
        return added

    # ------------------------------------------------------------------ camera
    def canvas_size(self) -> tuple[float, float]:
        """Canvas (height, width) in px."""
        h, w = self.viewer.canvas.size
        return float(max(h, 1)), float(max(w, 1))

    def px_per_bp(self) -> float:
        """Screen px per bp at the current zoom."""
        return float(self.camera.zoom)

    def canvas_span(self) -> tuple[float, float]:
        """World x (bp) at the left and right edges of the canvas."""
        _, w = self.canvas_size()
        centre, half = float(self.camera.center[-1]), w / 2 / max(self.px_per_bp(), 1e-12)
        return centre - half, centre + half

    @property
    def origin(self) -> int:
        """Genome position of world x = 0 (the region's start; see napari_dlcb.tasks.genome_layers)."""
        return self.region.start if self.region is not None else 0

    def visible_span(self) -> tuple[float, float]:
        """World x of the data area (right of the name panel to the right edge)."""
        lo, hi = self.canvas_span()
        return lo + PANEL_PX / max(self.px_per_bp(), 1e-12), hi

    def visible_positions(self) -> tuple[int, int]:
        """The positions within the region now on screen, ``[lo, hi)``."""
        if self.region is None:
            return 0, 0
        lo, hi = self.visible_span()
        n = len(self.region)
        a = int(np.clip(np.floor(lo + 0.5), 0, n - 1))
        b = int(np.clip(np.ceil(hi + 0.5), a + 1, n))
        return a, b

    def fit(self) -> None:
        """Zoom so the whole region fills the data area."""
        if self.region is not None:
            self._scroll_px = 0.0
            self.go_to(self.region.start, self.region.end)

    def go_to(self, start: float, end: float) -> None:
        """Show genome positions ``start .. end`` (0-based, half-open) across the data area."""
        _, w = self.canvas_size()
        zoom = (w - PANEL_PX) / max(end - start, 1)
        self._busy = True
        try:
            self.camera.zoom = zoom
            left = start - self.origin - 0.5 - PANEL_PX / zoom
            self.camera.center = (float(self.camera.center[-2]), left + w / 2 / zoom)
        finally:
            self._busy = False
        self.relayout(force=True)
        self.refresh()

    def _on_camera(self, event: Any = None) -> None:
        if not self._busy and self.region is not None:
            self._timer.start()

    def _on_resize(self, event: Any = None) -> None:
        """A wider or narrower canvas shows the same part of the genome, like a browser."""
        if self.region is not None and self._span is not None:
            QTimer.singleShot(0, lambda span=self._span: self.go_to(*span))

    def refresh(self) -> None:
        """Re-place the tracks if the zoom changed, then update the annotations."""
        if self.region is None:
            return
        self.relayout()
        lo, hi = self.visible_span()
        self._span = (lo + 0.5 + self.origin, hi + 0.5 + self.origin)
        self._annotate(lo, hi)
        self._panel()
        for layer in self.layers(kind="labels"):
            self._labels(layer, lo, hi)
        self._letters(lo, hi)

    def _clamped(self) -> tuple[float, float, float]:
        """Zoom, centre x and scroll (px) kept inside the region and the stack."""
        h, w = self.canvas_size()
        least = (w - PANEL_PX) / max(len(self.region), 1)
        zoom = float(np.clip(self.camera.zoom, least, max(MAX_PX_PER_BP, least)))
        half = w / 2 / zoom
        lo = -0.5 - PANEL_PX / zoom  # the name panel covers the left
        hi = len(self.region) - 0.5
        cx = float(self.camera.center[-1])
        cx = (lo + hi) / 2 if hi - lo <= 2 * half else float(np.clip(cx, lo + half, hi - half))
        if self._zoom is not None and abs(zoom - self._zoom) < 1e-12:
            # a pan: a vertical drag scrolls the stack
            self._scroll_px = float(self.camera.center[-2]) * zoom - h / 2
        total = max((t + ht for t, ht in self._tops.values()), default=RULER_PX) + 8
        return zoom, cx, float(np.clip(self._scroll_px, 0.0, max(0.0, total - h)))

    def relayout(self, *, force: bool = False) -> None:
        """Put every track at its place for the current zoom; keep the camera in bounds."""
        if self.region is None:
            return
        self._busy = True
        try:
            self._tops = layout(list(self.tracks.values()))
            zoom, cx, self._scroll_px = self._clamped()
            h, _ = self.canvas_size()
            if zoom != self.camera.zoom:
                self.camera.zoom = zoom
            cy = (h / 2 + self._scroll_px) / zoom
            if abs(self.camera.center[-1] - cx) > 1e-9 or abs(self.camera.center[-2] - cy) > 1e-9:
                self.camera.center = (cy, cx)
            if force or self._zoom is None or abs(zoom - self._zoom) > 1e-12:
                self._zoom = zoom
                for layer in self.layers():
                    self._place(layer, zoom)
        finally:
            self._busy = False

    def _place(self, layer: Any, zoom: float) -> None:
        m = layer.metadata
        if m.get("track") in self._tops:
            (top, height), y_range = self._tops[m["track"]], m["y_range"]
        elif m.get("kind") in ("annotations", "baseline"):
            top, height, y_range = 0.0, 1.0, (0.0, 1.0)  # their data y is in stack px
        else:
            return
        (sy, _), (ty, _) = place(y_range, top, height, zoom)
        # The y placement changes with every zoom: one affine (one event) instead of
        # scale + translate. The x placement (bp) stays in the layer's scale/translate.
        affine = np.array([[sy, 0.0, ty], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        if not np.allclose(layer.affine.affine_matrix, affine, rtol=1e-12, atol=0):
            self._set_affine(layer, affine)

    @staticmethod
    def _set_affine(layer: Any, affine: np.ndarray) -> None:
        # One event per layer and zoom; napari then recomputes the dims of every layer
        # (20-30 ms on a busy 2-core machine). Blocking that needs napari's private
        # handler, which napari 0.10 forbids to plugins: a zoom step costs ~0.3 s there.
        layer.affine = affine

    # ------------------------------------------------------------------ annotations
    def _annotate(self, lo: float, hi: float) -> None:
        """Ruler ticks and labels, the visible locus, track and row titles: one points layer."""
        layer = self.layer("annotations")
        if layer is None:
            return
        _, w = self.canvas_size()
        zoom = self.px_per_bp()
        left = lo - PANEL_PX / zoom
        base = RULER_PX - 6
        o = self.origin
        ticks = ruler_ticks(o + max(lo, -0.5), o + hi, width_px=w - PANEL_PX)
        a, b = self.visible_positions()
        shown = Region(self.region.chrom, self.region.start + a, self.region.start + b)
        pts: list[tuple[float, float, str, str]] = [  # (y, x, text, kind)
            (15.0, left + 4 / zoom, f"{format_locus(shown)}   ({len(shown):,} bp)", "disc")
        ]
        for t in ticks:
            x = t - 1.0 - o  # 1-based position t is the base at 0-based t - 1
            pts.append((base + 1.0, x - label_width("|", 9) / 2 / zoom, "|", "disc"))
            text = format_position(int(t), hi - lo)
            pts.append((base - 10.0, x - label_width(text, 9) / 2 / zoom, text, "disc"))
        for key, (top, height) in self._tops.items():
            track = self.tracks[key]
            pts.append((top - 3.0, left + 4 / zoom, track.title, "disc"))
            n = len(track.row_titles)
            for i, name in enumerate(track.row_titles):
                pts.append((top + (i + 0.5) * height / n + 5.0, left + 6 / zoom, name, "disc"))
        ys, xs, texts, _ = zip(*pts)
        layer.data = np.stack([ys, xs], 1)
        layer.features = {"label": np.array(texts, dtype=object)}
        layer.refresh_text()

    def _panel(self) -> None:
        layer = self.layer("panel")
        if layer is None:
            return
        zoom = self.px_per_bp()
        left, _ = self.canvas_span()
        height = max((t + ht for t, ht in self._tops.values()), default=RULER_PX) - RULER_PX + 4
        width = PANEL_PX - 2
        # one white pixel (centred at 0, spanning +-0.5) stretched over the panel
        affine = np.array(
            [
                [height / zoom, 0.0, (RULER_PX + height / 2) / zoom],
                [0.0, width / zoom, left + width / 2 / zoom],
                [0.0, 0.0, 1.0],
            ]
        )
        self._set_affine(layer, affine)

    def _labels(self, layer: Any, lo: float, hi: float) -> None:
        f = layer.features
        if not len(f):
            return
        a = np.maximum(f["x0"].to_numpy(float), lo)
        b = np.minimum(f["x1"].to_numpy(float), hi)
        on = b > a
        centres = np.where(on, (a + b) / 2, f["x0"].to_numpy(float))
        widths = np.array([label_width(str(s), 9) for s in f["name"]])
        rows = f["row"].to_numpy(float)
        keep = on & declutter((centres - lo) * self.px_per_bp(), widths, rows)
        labels = np.where(keep, f["name"].astype(str), "")
        data = np.stack([rows, centres], 1)
        if np.array_equal(layer.data, data) and np.array_equal(f["label"].to_numpy(), labels):
            return
        layer.data = data
        layer.features = f.assign(label=labels)
        layer.refresh_text()

    def _letters(self, lo: float, hi: float) -> None:
        layer = self.layer("letters")
        if layer is None or not self.sequence:
            return
        shown = self.px_per_bp() >= LETTER_PX
        one_hot = self.layer("sequence")
        if one_hot is not None and one_hot.opacity != (0.15 if shown else 1.0):
            one_hot.opacity = 0.15 if shown else 1.0  # letters over a faint one-hot
        if not shown:
            if len(layer.data):
                layer.data = np.zeros((0, 2))
            return
        i0 = int(max(0, np.floor(lo)))
        i1 = int(min(len(self.sequence), np.ceil(hi) + 1))
        bases = self.sequence[i0:i1].upper()
        rows = np.array(["ACGT".find(b) if b in "ACGT" else 1.5 for b in bases], float)
        data = np.stack([rows, np.arange(i0, i1, dtype=float)], 1)
        if len(layer.data) == len(data) and np.array_equal(layer.data, data):
            return
        layer.data = data
        layer.features = {
            "base": list(bases),
            "color": [BASE_HEX.get(b, "#888888") for b in bases],
        }
        layer.refresh_text()
