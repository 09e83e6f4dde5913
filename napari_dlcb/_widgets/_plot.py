"""Learning-curve dock plot: training and validation loss per epoch.

A matplotlib figure under a warning banner. The banner turns on when the
engine yields ``Warning(kind="overfitting")`` or when :func:`overfitting_onset`
sees the validation loss rise while the training loss falls.

The figure is drawn by matplotlib's Agg renderer on a background thread and
shown as a pixmap. A ``FigureCanvasQTAgg`` draws on the GUI thread instead:
measured on a 2-core machine under load, one draw of this small plot took
150-500 ms, longer than the whole event-loop stall budget (200 ms) of the live
training view. Off the GUI thread, a redraw costs the event loop the pixmap
swap only. Requests are coalesced: at most one render runs, and only the
latest pending state is drawn next.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import Signal
from qtpy.QtGui import QColor, QImage, QPainter, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["LearningCurvePlot", "overfitting_onset"]

logger = logging.getLogger(__name__)

_BG = "#262930"  # napari dark theme
_FG = "#d1d2d4"
_TRAIN = "#4fa3ff"
_VAL = "#ff9f43"
EMPTY_HINT = "The loss per epoch appears here\nwhen training starts."
_WARN_STYLE = (
    "QLabel { background: #8a5a00; color: white; font-weight: bold;"
    " padding: 4px; border-radius: 3px; }"
)


def overfitting_onset(
    train: Sequence[float], val: Sequence[float], *, patience: int = 3
) -> int | None:
    """Index of the epoch where validation loss starts to diverge from training loss.

    Overfitting is declared when, over the last ``patience`` epochs, the
    validation loss rose at every step and ended above its best value while the
    training loss kept falling. NaN validation losses (no validation set) never
    trigger it.

    Parameters
    ----------
    train, val : sequence of float
        Losses per epoch, same length.
    patience : int
        Number of consecutive rising validation epochs required.

    Returns
    -------
    int or None
        Index of the last epoch before the rise, or ``None``.

    Examples
    --------
    >>> overfitting_onset([1.0, 0.8, 0.6, 0.5, 0.4], [1.0, 0.7, 0.75, 0.8, 0.9])
    1
    >>> overfitting_onset([1.0, 0.8, 0.6], [1.0, 0.8, 0.7]) is None
    True
    """
    n = min(len(train), len(val))
    if n < patience + 1:
        return None
    tr, va = list(train[-(patience + 1) : n]), list(val[-(patience + 1) : n])
    if any(math.isnan(v) for v in va + tr):
        return None
    best_val = min(v for v in val[:n] if not math.isnan(v))
    rising = all(b > a for a, b in zip(va, va[1:]))
    falling = tr[-1] < tr[0]
    if rising and falling and va[-1] > best_val:
        return n - patience - 1
    return None


class _PixmapView(QWidget):
    """Shows a pixmap; unlike ``QLabel.setPixmap`` a new image never triggers a relayout.

    (``QLabel`` calls ``updateGeometry()``, which lays out the whole napari window
    again, on every new pixmap.)
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap: QPixmap | None = None

    def pixmap(self) -> QPixmap | None:
        """The pixmap shown."""
        return self._pixmap

    def setPixmap(self, pixmap: QPixmap) -> None:  # noqa: N802 - Qt naming
        """Show ``pixmap`` (repaint only)."""
        self._pixmap = pixmap
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(_BG))
        if self._pixmap is not None:
            ratio = self._pixmap.devicePixelRatio() or 1.0
            w, h = self._pixmap.width() / ratio, self._pixmap.height() / ratio
            x, y = (self.width() - w) / 2, (self.height() - h) / 2
            painter.drawPixmap(int(x), int(y), self._pixmap)
        painter.end()


class LearningCurvePlot(QWidget):
    """Dockable plot of training and validation loss per epoch.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    _rendered = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dlcb_learning_curve")
        self.image_label = _PixmapView(self)
        self.image_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.image_label.setMinimumSize(220, 170)
        # a banner over the top of the plot, outside the layout: showing it moves no
        # widget, so the window (and napari's canvas) is not laid out again mid-training
        self.warning_label = QLabel(self.image_label)
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(_WARN_STYLE)
        self.warning_label.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.image_label, 1)

        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.best_epoch: int | None = None
        self.resumes: list[int] = []
        self.onset: int | None = None
        self.n_renders = 0

        # touched only by the render thread after construction
        self._figure = Figure(figsize=(4.0, 2.6), dpi=90, facecolor=_BG)
        # fixed margins: constrained layout makes every draw ~4x slower
        self._figure.subplots_adjust(left=0.15, right=0.97, top=0.88, bottom=0.19)
        self._agg = FigureCanvasAgg(self._figure)
        self._ax = self._figure.add_subplot(111)
        self._style_axes()
        (self._train_line,) = self._ax.plot([], [], "-o", ms=3, lw=1.5, color=_TRAIN, label="train")
        (self._val_line,) = self._ax.plot(
            [], [], "-o", ms=3, lw=1.5, color=_VAL, label="validation"
        )
        (self._best_marker,) = self._ax.plot(
            [], [], "*", ms=11, color="#ffe066", label="best", zorder=5
        )
        self._extra_artists: list = []
        self._ax.legend(loc="upper right", fontsize=7, facecolor=_BG, edgecolor=_FG, labelcolor=_FG)

        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlcb-plot")
        self._rendered.connect(self._show_image)
        executor = self._executor  # not self: the slot must not keep the widget alive
        self.destroyed.connect(lambda *_: executor.shutdown(wait=False))

    # ------------------------------------------------------------------ public
    @property
    def warning_text(self) -> str:
        """The overfitting warning shown, or ``""``."""
        return "" if self.warning_label.isHidden() else self.warning_label.text()

    @property
    def rendering(self) -> bool:
        """Whether a render is running or waiting."""
        with self._lock:
            return self._busy or self._pending is not None

    def reset(self) -> None:
        """Forget every epoch and warning (a new training run)."""
        self.epochs.clear()
        self.train_loss.clear()
        self.val_loss.clear()
        self.resumes.clear()
        self.best_epoch = None
        self.onset = None
        self.clear_warning()
        self._redraw()

    def mark_resume(self) -> None:
        """Draw a dotted line where training was resumed."""
        if self.epochs:
            self.resumes.append(self.epochs[-1])
            self._redraw()

    def add_epoch(
        self, epoch: int, train_loss: float, val_loss: float, *, is_best: bool = False
    ) -> None:
        """Append one epoch (1-based numbers shown on the x axis)."""
        self.epochs.append(int(epoch))
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))
        if is_best:
            self.best_epoch = int(epoch)
        if self.onset is None:
            idx = overfitting_onset(self.train_loss, self.val_loss)
            if idx is not None:
                self.onset = self.epochs[idx]
                self.show_warning(
                    f"Overfitting: validation loss has risen since epoch {self.onset} "
                    "while training loss falls. Stop, or paint more labels; "
                    "the best weights are kept."
                )
        self._redraw()

    def show_warning(self, message: str, *, epoch: int | None = None) -> None:
        """Show the warning banner (and shade the plot from ``epoch`` on, if given)."""
        if epoch is not None and epoch >= 0 and self.onset is None:
            self.onset = int(epoch)
        self.warning_label.setText("\u26a0 " + message.strip())
        self._place_warning()
        self.warning_label.setVisible(True)
        self._redraw()

    def _place_warning(self) -> None:
        width = max(self.image_label.width() - 8, 50)
        self.warning_label.setGeometry(4, 4, width, self.warning_label.heightForWidth(width))

    def clear_warning(self) -> None:
        """Hide the warning banner."""
        self.warning_label.clear()
        self.warning_label.setVisible(False)

    def shutdown(self) -> None:
        """Stop the render thread (pending renders are dropped)."""
        with self._lock:
            self._closed = True
            self._pending = None
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ Qt
    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._place_warning()  # the banner stays as wide as the plot
        self._redraw()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._redraw()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)

    # ------------------------------------------------------------------ rendering
    def _redraw(self) -> None:
        """Ask the render thread for a new image of the current state (main thread)."""
        ratio = float(self.devicePixelRatioF()) if hasattr(self, "devicePixelRatioF") else 1.0
        w = max(self.image_label.width(), 220)
        h = max(self.image_label.height(), 170)
        state = {
            "epochs": list(self.epochs),
            "train": list(self.train_loss),
            "val": list(self.val_loss),
            "best": self.best_epoch,
            "resumes": list(self.resumes),
            "onset": self.onset,
            "size": (int(w * ratio), int(h * ratio)),
            "ratio": ratio,
        }
        with self._lock:
            if self._closed:
                return
            self._pending = state
            if self._busy:
                return
            self._busy = True
        try:
            self._executor.submit(self._render_loop)
        except RuntimeError:  # executor shut down
            with self._lock:
                self._busy = False

    def _render_loop(self) -> None:
        """Render thread: draw the latest pending state until none is left."""
        while True:
            with self._lock:
                state, self._pending = self._pending, None
                if state is None or self._closed:
                    self._busy = False
                    return
            try:
                image = self._render(state)
            except Exception:  # noqa: BLE001 - a failed plot must not kill the thread
                logger.exception("learning-curve plot: render failed")
                continue
            try:
                self._rendered.emit(image)  # queued to the GUI thread
            except RuntimeError:  # the widget was deleted meanwhile
                with self._lock:
                    self._busy = False
                return

    def _render(self, state: dict[str, Any]) -> tuple[bytes, int, int, float]:
        ax = self._ax
        epochs, train, val = state["epochs"], state["train"], state["val"]
        self._train_line.set_data(epochs, train)
        self._val_line.set_data(epochs, val)
        best = state["best"]
        if best is not None and best in epochs:
            i = epochs.index(best)
            y = val[i] if not math.isnan(val[i]) else train[i]
            self._best_marker.set_data([best], [y])
        else:
            self._best_marker.set_data([], [])
        for artist in self._extra_artists:
            artist.remove()
        self._extra_artists = [
            ax.axvline(x + 0.5, color=_FG, ls=":", lw=1) for x in state["resumes"]
        ]
        if state["onset"] is not None:
            end = max(epochs or [state["onset"]]) + 0.5
            self._extra_artists.append(
                ax.axvspan(state["onset"], end, color="#ff6b6b", alpha=0.15, lw=0)
            )
        # no epoch yet: a hint instead of autoscaled axes around nothing (-0.04..0.04)
        ax.tick_params(labelbottom=bool(epochs), labelleft=bool(epochs))
        if epochs:
            ax.relim()
            ax.autoscale_view()
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.set_xlim(0.0, 1.0)
            ax.set_ylim(0.0, 1.0)
            self._extra_artists.append(
                ax.text(0.5, 0.5, EMPTY_HINT, ha="center", va="center", color=_FG, fontsize=8)
            )
        w, h = state["size"]
        dpi = 90 * state["ratio"]
        self._figure.set_dpi(dpi)
        self._figure.set_size_inches(w / dpi, h / dpi)
        self._agg.draw()
        buf = self._agg.buffer_rgba()
        return bytes(buf), buf.shape[1], buf.shape[0], state["ratio"]

    def _show_image(self, image: tuple[bytes, int, int, float]) -> None:
        data, w, h, ratio = image
        qimage = QImage(data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        pixmap = QPixmap.fromImage(qimage)
        pixmap.setDevicePixelRatio(ratio)
        self.image_label.setPixmap(pixmap)
        self.n_renders += 1

    def _style_axes(self) -> None:
        ax = self._ax
        ax.set_facecolor(_BG)
        for spine in ax.spines.values():
            spine.set_color(_FG)
        ax.tick_params(colors=_FG, labelsize=7)
        ax.set_xlabel("epoch", color=_FG, fontsize=8)
        ax.set_ylabel("loss", color=_FG, fontsize=8)
        ax.set_title("Learning curve", color=_FG, fontsize=9)
        ax.grid(True, color="#3b3f46", lw=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
