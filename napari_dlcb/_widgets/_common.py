"""GUI helpers shared by the napari-dlcb widgets.

Everything here runs on the Qt main thread unless a docstring says otherwise:

- :func:`notify_error` turns an exception into a one-line napari notification
  (never a traceback dialog);
- :class:`ThrottledCall` applies the latest of many updates at most once per
  interval, so a fast worker cannot flood the event loop with layer refreshes;
- :class:`EventLoopProbe` measures the longest event-loop stall with a re-armed
  single-shot ``QTimer``;
- :func:`visible_region` and :class:`ViewportTracker` compute the part of an
  image that is on screen and hand it to a worker thread through a lock-guarded
  :class:`RegionHolder`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QSize, Qt, QTimer
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._notify import notify_error, notify_info, notify_warning

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "EventLoopProbe",
    "RegionHolder",
    "StatusText",
    "ThrottledCall",
    "ViewportTracker",
    "layer_grid",
    "notify_error",
    "notify_info",
    "notify_warning",
    "viewer_camera",
    "visible_region",
]


Region = tuple[slice, slice]


# --------------------------------------------------------------------------- throttling
class ThrottledCall(QObject):
    """Call ``func`` with the most recent arguments at most once per ``interval_ms``.

    The first submission after a quiet period is applied at once (leading edge);
    submissions that arrive sooner replace each other and the last one is applied
    when the interval has passed (trailing edge). Nothing is ever queued up, so a
    worker that yields faster than the GUI can draw only costs a pointer swap.

    Parameters
    ----------
    func : callable
        Called on the main thread as ``func(*args)``.
    interval_ms : int
        Minimum time between two calls.
    parent : QObject, optional
        Qt parent (keeps the timer alive with its owner).
    """

    def __init__(
        self, func: Callable[..., Any], interval_ms: int = 1000, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._func = func
        self._interval = max(int(interval_ms), 0)
        self._pending: tuple[Any, ...] | None = None
        self._last = -float("inf")
        self.n_calls = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)

    @property
    def interval_ms(self) -> int:
        """Minimum time between two calls, in milliseconds."""
        return self._interval

    @property
    def pending(self) -> bool:
        """Whether an update is waiting for the interval to pass."""
        return self._pending is not None

    def submit(self, *args: Any) -> None:
        """Offer new arguments; they replace any that have not been applied yet."""
        self._pending = args
        if self._timer.isActive():
            return
        wait_ms = self._interval - (time.monotonic() - self._last) * 1000.0
        if wait_ms <= 0:
            self._fire()
        else:
            self._timer.start(int(np.ceil(wait_ms)))

    def flush(self) -> None:
        """Apply a pending update now."""
        self._timer.stop()
        if self._pending is not None:
            self._fire()

    def cancel(self) -> None:
        """Drop a pending update."""
        self._timer.stop()
        self._pending = None

    def _fire(self) -> None:
        args, self._pending = self._pending, None
        if args is None:
            return
        self._last = time.monotonic()
        self.n_calls += 1
        try:
            self._func(*args)
        except Exception as err:  # noqa: BLE001 - a failed redraw must not kill the loop
            notify_error(err)


# --------------------------------------------------------------------------- status text
class StatusText(QWidget):
    """A fixed-height, word-wrapped text line that never triggers a relayout.

    ``QLabel.setText`` calls ``updateGeometry()``, which makes Qt lay out the
    whole napari main window again (dozens of Python ``sizeHint`` calls, 100-300
    ms on a slow machine). A status line that changes several times a second
    must not do that: this widget only repaints itself.

    Parameters
    ----------
    lines : int
        Height in text lines.
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, lines: int = 3, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._lines = lines
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * lines + 4)

    def text(self) -> str:
        """The text shown."""
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        """Show ``text`` (plain text; a newline breaks the line)."""
        if text != self._text:
            self._text = text
            self.setToolTip(text)
            self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(200, self.height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
        painter.drawText(self.rect().adjusted(2, 2, -2, -2), int(flags), self._text)
        painter.end()


# --------------------------------------------------------------------------- responsiveness
class EventLoopProbe(QObject):
    """Measure how long the Qt event loop goes without serving a timer.

    A single-shot ``QTimer`` of ``interval_ms`` is re-armed in its own callback.
    The gap between two callbacks is ``interval_ms`` plus however long the event
    loop was busy (a stall). ``max_gap_ms`` is the longest gap seen, a
    conservative upper bound on the longest stall a user could feel.

    Examples
    --------
    >>> probe = EventLoopProbe()  # doctest: +SKIP
    >>> probe.start()  # doctest: +SKIP
    >>> ...  # train
    >>> probe.stop(); print(f"{probe.max_gap_ms:.0f} ms")  # doctest: +SKIP
    """

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = int(interval_ms)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._last: float | None = None
        self.max_gap_ms = 0.0
        self.n_ticks = 0
        self.gaps_ms: list[float] = []

    @property
    def running(self) -> bool:
        """Whether the probe is armed."""
        return self._last is not None

    @property
    def max_stall_ms(self) -> float:
        """Longest time the loop was busy beyond the timer interval."""
        return max(self.max_gap_ms - self.interval_ms, 0.0)

    def start(self) -> None:
        """Start (or restart) measuring from zero."""
        self.max_gap_ms = 0.0
        self.n_ticks = 0
        self.gaps_ms = []
        self._last = time.perf_counter()
        self._timer.start(self.interval_ms)

    def stop(self) -> float:
        """Stop measuring; return ``max_gap_ms``."""
        self._timer.stop()
        self._last = None
        return self.max_gap_ms

    def _tick(self) -> None:
        if self._last is None:
            return
        now = time.perf_counter()
        gap = (now - self._last) * 1000.0
        self.gaps_ms.append(gap)
        self.max_gap_ms = max(self.max_gap_ms, gap)
        self.n_ticks += 1
        self._last = now
        self._timer.start(self.interval_ms)


# --------------------------------------------------------------------------- viewport
def viewer_camera(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, else ``viewer.camera``)."""
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera


def layer_grid(layer: Layer) -> dict[str, Any]:
    """Keyword arguments that put a new 2-D layer on ``layer``'s last two axes.

    Returns ``scale`` and ``translate`` (rows, cols) so that a prediction made on
    the image's pixel grid lands exactly on the image in world coordinates.
    """
    return {
        "scale": tuple(float(s) for s in layer.scale[-2:]),
        "translate": tuple(float(t) for t in layer.translate[-2:]),
    }


def plane_shape(layer: Layer) -> tuple[int, int]:
    """(rows, cols) of the 2-D plane that ``layer`` shows (RGB channels excluded)."""
    shape = layer.data.shape
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return int(shape[-2]), int(shape[-1])


def visible_region(
    viewer: napari.Viewer, layer: Layer, *, margin: int = 0, min_size: int = 16
) -> Region | None:
    """Rows and columns of ``layer``'s data that are visible in the canvas.

    Computed from the camera (centre and zoom) and the canvas size, converted to
    the layer's data pixels with its own scale and translate, and clipped to the
    data. Must run on the main thread.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose camera is used.
    layer : napari.layers.Layer
        Layer whose pixel grid the region refers to (2-D plane = last two axes).
    margin : int
        Extra pixels on every side (context for the network).
    min_size : int
        Regions smaller than this (zoomed in very far) are grown to it.

    Returns
    -------
    tuple of slice or None
        ``(row_slice, col_slice)``, or ``None`` when nothing of the layer is on
        screen or the view is 3-D.
    """
    if viewer.dims.ndisplay != 2:
        return None
    rows, cols = plane_shape(layer)
    canvas_h, canvas_w = viewer.canvas.size
    camera = viewer_camera(viewer)
    zoom = float(camera.zoom)
    if zoom <= 0 or canvas_h <= 0 or canvas_w <= 0:
        return None
    displayed = list(viewer.dims.displayed)
    point = np.asarray(viewer.dims.point, dtype=float)
    center = np.asarray(camera.center, dtype=float)[-2:]
    half = np.array([canvas_h, canvas_w], dtype=float) / zoom / 2.0
    corners_world = []
    for dr in (-1.0, 1.0):
        for dc in (-1.0, 1.0):
            p = point.copy()
            p[displayed] = center + half * np.array([dr, dc])
            corners_world.append(p)
    try:
        corners = np.array([layer.world_to_data(p)[-2:] for p in corners_world], dtype=float)
    except (ValueError, IndexError):  # layer dims do not match the viewer's
        return None
    lo = np.floor(corners.min(axis=0)) - margin
    hi = np.ceil(corners.max(axis=0)) + margin
    size = hi - lo
    grow = np.maximum(min_size - size, 0) / 2.0
    lo, hi = lo - np.floor(grow), hi + np.ceil(grow)
    r0, c0 = int(max(lo[0], 0)), int(max(lo[1], 0))
    r1, c1 = int(min(hi[0], rows)), int(min(hi[1], cols))
    if r1 <= r0 or c1 <= c0:
        return None
    return slice(r0, r1), slice(c0, c1)


class RegionHolder:
    """Thread-safe slot for the latest viewport region.

    The main thread :meth:`set` s it; the training worker calls the holder (it is
    a ``preview_region`` callable) to read it.
    """

    def __init__(self, region: Region | None = None) -> None:
        self._lock = threading.Lock()
        self._region = region
        self.n_reads = 0

    def set(self, region: Region | None) -> None:
        """Store a new region (main thread)."""
        with self._lock:
            self._region = region

    def get(self) -> Region | None:
        """Return the latest region (any thread)."""
        with self._lock:
            self.n_reads += 1
            return self._region

    __call__ = get


class ViewportTracker:
    """Keep a :class:`RegionHolder` in sync with what ``layer`` shows on screen.

    Listens to camera, dims and canvas-size events and recomputes the region on
    the main thread; the computation is a handful of arithmetic operations.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer: Layer,
        holder: RegionHolder | None = None,
        *,
        margin: int = 16,
    ) -> None:
        self.viewer = viewer
        self.layer = layer
        self.margin = margin
        self.holder = holder if holder is not None else RegionHolder()
        camera = viewer_camera(viewer)
        self._emitters = [
            camera.events.center,
            camera.events.zoom,
            viewer.dims.events.current_step,
            viewer.dims.events.ndisplay,
            viewer.canvas.events.size,
            layer.events.scale,
            layer.events.translate,
        ]
        for emitter in self._emitters:
            emitter.connect(self.update)
        self.update()

    def update(self, event: Any = None) -> None:
        """Recompute the region now (main thread)."""
        self.holder.set(visible_region(self.viewer, self.layer, margin=self.margin))

    def disconnect(self) -> None:
        """Stop listening to viewer events."""
        for emitter in self._emitters:
            emitter.disconnect(self.update)
        self._emitters = []


def attribution_colormap() -> Any:
    """Diverging blue-transparent-red colormap for saliency/attribution layers over an image.

    Zero is fully transparent and the alpha grows with ``|value|``, so a map
    drawn over its image (symmetric contrast limits) hides nothing where the
    model does not care, unlike ``bwr``, whose white zero washes the image out.
    """
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[
            [0.1, 0.3, 1.0, 1.0],
            [0.1, 0.3, 1.0, 0.0],
            [1.0, 0.15, 0.1, 0.0],
            [1.0, 0.15, 0.1, 1.0],
        ],
        controls=[0.0, 0.5, 0.5, 1.0],
        name="dlcb_attribution",
        display_name="attribution (blue - transparent - red)",
    )


@contextmanager
def keep_selection(viewer: napari.Viewer) -> Iterator[None]:
    """Add layers without making them active, so the user keeps painting where they were.

    Uses the layer list's ``_activate_on_insert`` switch when it exists (it also
    saves two selection updates, ~0.2 s each on a slow machine); otherwise the
    previous active layer is restored afterwards.
    """
    layers = viewer.layers
    active = layers.selection.active
    switch = hasattr(layers, "_activate_on_insert")
    if switch:
        layers._activate_on_insert = False
    try:
        yield
    finally:
        if switch:
            layers._activate_on_insert = True
        elif active is not None and active in layers:
            layers.selection.active = active


def combo_box(items: list[str], *, tooltip: str = "") -> QComboBox:
    """A combo box holding ``items``, with ``tooltip`` (none if empty)."""
    box = QComboBox()
    box.addItems(items)
    if tooltip:
        box.setToolTip(tooltip)
    return box


def check_box(text: str, *, checked: bool = True, tooltip: str = "") -> QCheckBox:
    """A check box labelled ``text``, ticked or not, with ``tooltip`` (none if empty)."""
    box = QCheckBox(text)
    box.setChecked(checked)
    if tooltip:
        box.setToolTip(tooltip)
    return box


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s rows, inside a scroll area that fills it.

    A tall dock then scrolls inside napari's dock area instead of growing the
    window past the screen.
    """
    content = QWidget()
    layout = QVBoxLayout(content)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return layout


def refill_combo(combo: Any, names: list[str], *, default: str | None = None) -> None:
    """Replace a combo box's items, keeping the current choice when it is still there.

    Otherwise ``default`` is chosen (when given). Signals are blocked meanwhile,
    so listeners see no transient selection.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    elif default is not None:
        combo.setCurrentText(default)
    combo.blockSignals(False)
