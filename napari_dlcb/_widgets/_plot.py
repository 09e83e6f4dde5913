"""Learning-curve dock plot: training and validation loss per epoch.

A small matplotlib canvas (``FigureCanvasQTAgg``) under a warning banner. The
banner turns on when the engine yields ``Warning(kind="overfitting")`` or when
:func:`overfitting_onset` sees the validation loss rise while the training loss
falls. Redraws use ``draw_idle`` so a burst of epochs costs one paint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["LearningCurvePlot", "overfitting_onset"]

_BG = "#262930"  # napari dark theme
_FG = "#d1d2d4"
_TRAIN = "#4fa3ff"
_VAL = "#ff9f43"
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


class LearningCurvePlot(QWidget):
    """Dockable plot of training and validation loss per epoch.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dlcb_learning_curve")
        self.warning_label = QLabel(self)
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(_WARN_STYLE)
        self.warning_label.setVisible(False)

        self.figure = Figure(figsize=(4.0, 2.6), dpi=90, facecolor=_BG, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(170)
        self.ax = self.figure.add_subplot(111)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.canvas)

        self.epochs: list[int] = []
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.best_epoch: int | None = None
        self.resumes: list[int] = []
        self.onset: int | None = None
        self._style_axes()
        (self._train_line,) = self.ax.plot([], [], "-o", ms=3, lw=1.5, color=_TRAIN, label="train")
        (self._val_line,) = self.ax.plot([], [], "-o", ms=3, lw=1.5, color=_VAL, label="validation")
        (self._best_marker,) = self.ax.plot(
            [], [], "*", ms=11, color="#ffe066", label="best", zorder=5
        )
        self._extra_artists: list = []
        self.ax.legend(loc="upper right", fontsize=7, facecolor=_BG, edgecolor=_FG, labelcolor=_FG)
        self.canvas.draw_idle()

    # ------------------------------------------------------------------ public
    @property
    def warning_text(self) -> str:
        """The overfitting warning shown, or ``""``."""
        return self.warning_label.text() if self.warning_label.isVisible() else ""

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
        """Show the warning banner (and a marker at ``epoch`` if given)."""
        if epoch is not None and epoch >= 0 and self.onset is None:
            self.onset = int(epoch)
        self.warning_label.setText("\u26a0 " + message.strip())
        self.warning_label.setVisible(True)
        self._redraw()

    def clear_warning(self) -> None:
        """Hide the warning banner."""
        self.warning_label.clear()
        self.warning_label.setVisible(False)

    # ------------------------------------------------------------------ drawing
    def _style_axes(self) -> None:
        ax = self.ax
        ax.set_facecolor(_BG)
        for spine in ax.spines.values():
            spine.set_color(_FG)
        ax.tick_params(colors=_FG, labelsize=7)
        ax.set_xlabel("epoch", color=_FG, fontsize=8)
        ax.set_ylabel("loss", color=_FG, fontsize=8)
        ax.set_title("Learning curve", color=_FG, fontsize=9)
        ax.grid(True, color="#3b3f46", lw=0.5)

    def _redraw(self) -> None:
        self._train_line.set_data(self.epochs, self.train_loss)
        self._val_line.set_data(self.epochs, self.val_loss)
        if self.best_epoch is not None and self.best_epoch in self.epochs:
            i = self.epochs.index(self.best_epoch)
            self._best_marker.set_data([self.best_epoch], [self.val_loss[i]])
            if math.isnan(self.val_loss[i]):
                self._best_marker.set_data([self.best_epoch], [self.train_loss[i]])
        else:
            self._best_marker.set_data([], [])
        for artist in self._extra_artists:
            artist.remove()
        self._extra_artists = []
        for x in self.resumes:
            self._extra_artists.append(self.ax.axvline(x + 0.5, color=_FG, ls=":", lw=1))
        if self.onset is not None:
            self._extra_artists.append(
                self.ax.axvspan(
                    self.onset,
                    max(self.epochs or [self.onset]) + 0.5,
                    color="#ff6b6b",
                    alpha=0.15,
                    lw=0,
                )
            )
        self.ax.relim()
        self.ax.autoscale_view()
        if self.epochs:
            self.ax.set_xlim(min(self.epochs) - 0.5, max(self.epochs) + 0.5)
        self.canvas.draw_idle()
