"""One trial of a hyper-parameter study: train the task, report its curve, tell optuna.

:func:`run_trial` is what :func:`~napari_dlcb.tuning.study.tune` runs for each
trial, in this process or on a dask worker
(:func:`~napari_dlcb.tuning.cluster.run_trial_on_worker`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.tuning.objective import Objective
from napari_dlcb.tuning.records import save_trial_model
from napari_dlcb.tuning.space import SearchSpace

__all__ = ["TrialEpoch", "TrialFinished", "run_trial"]


@dataclass(frozen=True)
class TrialEpoch:
    """A trial finished an epoch; ``value`` is its validation metric."""

    number: int
    epoch: int
    value: float
    train_loss: float
    val_loss: float


@dataclass(frozen=True)
class TrialFinished:
    """A trial ended: ``state`` is "complete", "pruned" or "fail"."""

    number: int
    state: str
    value: float
    params: dict[str, Any]
    seconds: float
    worker: str = "local"
    message: str = ""
    curve: list[dict[str, float]] = field(default_factory=list, repr=False)


def run_trial(
    objective: Objective,
    space: SearchSpace,
    trial: Any,
    out: Path,
    seed: int,
    deadline: float | None,
    stop: threading.Event | None = None,
    worker: str = "local",
) -> Iterator[Any]:
    """Train one trial's task, report its curve, tell optuna; return a TrialFinished.

    A generator: it yields :class:`TrialEpoch` events and returns the
    :class:`TrialFinished` (``result = yield from run_trial(...)``).
    ``deadline`` is a ``time.time()`` stamp.
    """
    stop = stop or threading.Event()
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    params = dict(trial.params)
    trial_stop = threading.Event()
    curve: list[dict[str, float]] = []
    try:
        config = objective.configure({**space.fixed, **params, "seed": seed + trial.number})
        task = objective.make_task(config)
        options = objective.fit_options(config)
        if deadline is not None:
            options["max_time"] = max(deadline - time.time(), 1.0)
        events = task.fit(stop=trial_stop, **options)
        finished, pruned = yield from _follow(objective, trial, events, stop, trial_stop, curve)
        value = objective.trial_value(task, finished)
        trial.set_user_attr("curve", curve)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("config", config.to_dict())
        state, value = _tell(trial, task, out, value, pruned)
        message = ""
    except DlcbError as err:  # a configuration that cannot train: the study goes on
        trial.study.tell(trial, state=TrialState.FAIL)
        state, value, message = "fail", math.nan, str(err).splitlines()[0]
    return TrialFinished(
        trial.number, state, value, params, time.perf_counter() - t0, worker, message, curve
    )


def _follow(
    objective: Objective,
    trial: Any,
    events: Iterable[Any],
    stop: threading.Event,
    trial_stop: threading.Event,
    curve: list[dict[str, float]],
) -> Generator[TrialEpoch, None, tuple[Any, bool]]:
    """Follow the trial's training: yield its epochs, report them to optuna, prune it.

    Parameters
    ----------
    objective : Objective
        Scores each epoch (``epoch_value``).
    trial : optuna.trial.Trial
        Told every finite epoch value; asked whether to prune.
    events : iterable of TrainEvent
        The task's ``fit`` generator, stopped by ``trial_stop``.
    stop, trial_stop : threading.Event
        The study's stop, passed on to the trial's.
    curve : list of dict
        Gets one ``{"epoch", "value", "train_loss", "val_loss"}`` per whole epoch.

    Returns
    -------
    finished : Finished or None
        The last event (with the starting weights' scores as epoch -1 when
        fine-tuning did not beat them).
    pruned : bool
        Whether optuna pruned the trial.
    """
    from napari_dlcb.training.events import EpochEnd, Finished, Started

    finished, baseline, pruned = None, None, False
    for ev in events:
        if stop.is_set():
            trial_stop.set()
        if isinstance(ev, EpochEnd) and not ev.partial:
            value = objective.epoch_value(ev)
            curve.append(
                {
                    "epoch": ev.epoch,
                    "value": value,
                    "train_loss": ev.train_loss,
                    "val_loss": ev.val_loss,
                }
            )
            yield TrialEpoch(trial.number, ev.epoch, value, ev.train_loss, ev.val_loss)
            if math.isfinite(value):
                trial.report(value, ev.epoch)
                if trial.should_prune():
                    pruned = True
                    trial_stop.set()
        elif isinstance(ev, Started):
            baseline = ev.baseline
        elif isinstance(ev, Finished):
            finished = ev
            if ev.best_epoch == -1 and baseline:
                # fine-tuning did not beat the starting weights, which the task kept:
                # the trial is worth what they score (epoch -1 in the history)
                finished = dataclasses.replace(ev, history=[{"epoch": -1, **baseline}, *ev.history])
    return finished, pruned


def _tell(trial: Any, task: Any, out: Path, value: float, pruned: bool) -> tuple[str, float]:
    """Tell optuna how the trial ended; save its model when it completed.

    Parameters
    ----------
    trial : optuna.trial.Trial
        The trial.
    task : Task
        Its trained task.
    out : pathlib.Path
        The study folder (the model goes to its trial folder).
    value : float
        The trial's value (non-finite: the trial failed).
    pruned : bool
        Whether it was pruned.

    Returns
    -------
    state : {"pruned", "fail", "complete"}
        The trial's state.
    value : float
        ``value``, NaN for a failed trial.
    """
    from optuna.trial import TrialState

    if pruned:
        trial.study.tell(trial, state=TrialState.PRUNED)
        return "pruned", value
    if not math.isfinite(value):
        trial.study.tell(trial, state=TrialState.FAIL)
        return "fail", math.nan
    save_trial_model(task, out, trial.number)
    trial.study.tell(trial, value)
    return "complete", value
