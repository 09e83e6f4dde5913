"""Events yielded by the training engine.

Small, immutable dataclasses. The GUI turns them into layer and plot updates on
the main thread; the CLI prints them; tests assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TrainEvent",
    "Started",
    "Progress",
    "EpochEnd",
    "Checkpoint",
    "Preview",
    "Warning",
    "Finished",
    "JobProgress",
]


@dataclass(frozen=True)
class TrainEvent:
    """Base class of every training event."""


@dataclass(frozen=True)
class Started(TrainEvent):
    """Training started on ``device``."""

    device: str
    amp: bool
    n_train: int
    n_val: int
    n_params: int
    n_trainable: int
    start_epoch: int = 0
    #: validation loss and metrics of the starting weights (``fit(validate_start=True)``)
    baseline: dict[str, float] | None = None


@dataclass(frozen=True)
class Progress(TrainEvent):
    """One optimisation step finished."""

    epoch: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class EpochEnd(TrainEvent):
    """An epoch finished; ``val_loss`` is NaN without validation data."""

    epoch: int
    train_loss: float
    val_loss: float
    metrics: dict[str, float]
    lr: float
    seconds: float
    samples_per_s: float
    is_best: bool
    #: the epoch was cut short by Stop or the time limit (and validated then)
    partial: bool = False


@dataclass(frozen=True)
class Checkpoint(TrainEvent):
    """Weights were written to ``path`` (``kind`` is ``"best"`` or ``"last"``)."""

    path: str
    kind: str
    epoch: int


@dataclass(frozen=True)
class Preview(TrainEvent):
    """Whatever the ``preview`` callable returned, e.g. a viewport prediction."""

    epoch: int
    step: int
    data: Any = field(repr=False)


@dataclass(frozen=True)
class Warning(TrainEvent):  # noqa: A001 - a training warning, not the builtin
    """Something the user should know: overfitting, divergence, LR decay."""

    kind: str
    message: str
    epoch: int = -1


@dataclass(frozen=True)
class Finished(TrainEvent):
    """Training ended; the model holds the weights of ``best_epoch``.

    ``best_epoch`` is -1 when the model holds its starting weights (nothing
    was scored, or fine-tuning did not beat them on validation). ``kept`` says
    in one sentence which weights the model now holds, for the status line.
    """

    reason: str
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list, repr=False)
    kept: str = ""


@dataclass(frozen=True)
class JobProgress(TrainEvent):
    """Progress of a long job that is not an epoch loop (prediction, ISM, a search).

    ``total`` is None when unknown. GUIs show it in napari's activity dock.
    """

    done: int
    total: int | None = None
    message: str = ""
