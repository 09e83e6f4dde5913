"""``tune``: hyper-parameter studies over any task, as a generator of events (like ``fit``).

The paper's model-selection protocol (Fig 5C): train models with different
hyper-parameters, compare them on the validation set only, and evaluate the
chosen one once on the test set. Strategies:

``line-random``
    The paper's recipe: a line search over each important hyper-parameter in
    turn (learning rate on a log scale, batch size, filter length...), the
    others at their current best, then random sampling of the refined space.
``tpe``
    Bayesian optimisation with optuna's Tree-structured Parzen Estimator.
``random``
    Random sampling of the whole space.

Hopeless trials are pruned from their learning curves (optuna's median rule on
each epoch's validation metric). The budget is minutes and/or trials. Studies
live in an optuna storage: a journal file in the study folder by default, or
any optuna storage URL (e.g. ``postgresql://...``) for shared use; a study
that was killed resumes from its storage without losing finished trials.

Everything a study learns stays on disk in ``out_dir``: ``best/`` (a normal
model folder, with the study as provenance), ``trials.tsv`` (every trial's
parameters, value, state, seconds and worker) and ``study.json``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import check_int, check_positive
from napari_dlcb.tuning.objective import Objective
from napari_dlcb.tuning.records import (
    finish_study,
    open_storage,
    release_stale_trials,
)
from napari_dlcb.tuning.space import Param, SearchSpace
from napari_dlcb.tuning.trial import TrialEpoch, TrialFinished, run_trial

__all__ = [
    "STRATEGIES",
    "StudyFinished",
    "TrialEpoch",
    "TrialFinished",
    "TrialStarted",
    "run_trial",
    "tune",
]

STRATEGIES = ("line-random", "tpe", "random")
#: points per line search of one important hyper-parameter
LINE_POINTS = 4


@dataclass(frozen=True)
class TrialStarted:
    """A trial began with these hyper-parameters."""

    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class StudyFinished:
    """The study ended; ``best_dir`` is the best trial's model folder."""

    reason: str
    best_number: int | None
    best_value: float
    best_params: dict[str, Any]
    n_complete: int
    n_pruned: int
    n_failed: int
    seconds: float
    best_dir: str | None
    test: dict[str, float] | None = None


# ----------------------------------------------------------------------------- planning
class _Planner:
    """Which distributions (and enqueued points) the next trial uses, per strategy."""

    def __init__(self, study: Any, space: SearchSpace, objective: Objective, strategy: str):
        self.study, self.space, self.objective = study, space, objective
        self.strategy = strategy
        self.narrowed: dict[str, Param] = {}
        self.line_done = False

    def defaults(self) -> dict[str, Any]:
        """Base-config values of the searched parameters, clipped into their ranges."""
        base = self.objective.base.to_dict()
        out = {}
        for name, p in self.space.searched.items():
            v = base.get(name)
            if p.kind == "categorical":
                out[name] = v if v in p.choices else p.choices[0]
            elif v is None or isinstance(v, (bool, str)):
                out[name] = p.grid(3)[1] if not p.fixed else p.low
            else:
                out[name] = (
                    type(p.low)(min(max(v, p.low), p.high))
                    if p.kind == "int"
                    else float(min(max(v, p.low), p.high))
                )
        return out

    def enqueue_line_search(self) -> None:
        """Queue the line searches (one parameter at a time, the rest at defaults)."""
        if self.strategy != "line-random" or self.study.trials:
            return
        point = self.defaults()
        for p in self.space.important:
            for v in p.grid(LINE_POINTS):
                self.study.enqueue_trial({**point, p.name: v}, skip_if_exists=True)

    def distributions(self) -> dict[str, Any]:
        """Distributions for the next ``ask`` (refined after the line searches)."""
        if self.strategy == "line-random" and not self.line_done and not self._queue_left():
            self._refine()
        return self.space.distributions(self.narrowed)

    def _queue_left(self) -> bool:
        from optuna.trial import TrialState

        return any(t.state == TrialState.WAITING for t in self.study.get_trials(deepcopy=False))

    def _refine(self) -> None:
        """After the line searches: narrow each important range around its best value."""
        self.line_done = True
        done = [t for t in self.study.trials if t.value is not None and math.isfinite(t.value)]
        if not done:
            return
        best = (max if self.objective.direction == "maximize" else min)(done, key=lambda t: t.value)
        for p in self.space.important:
            if p.name in best.params and p.kind != "categorical":
                self.narrowed[p.name] = p.narrowed(best.params[p.name])


def _sampler(strategy: str, seed: int) -> Any:
    import optuna

    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    return optuna.samplers.RandomSampler(seed=seed)


def _check(strategy: str, budget_minutes: float | None, n_trials: int | None) -> None:
    if strategy not in STRATEGIES:
        raise DlcbError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if budget_minutes is None and n_trials is None:
        raise DlcbError("give a budget: --budget-minutes and/or --trials")
    if budget_minutes is not None:
        check_positive("budget in minutes", budget_minutes, high=60 * 24 * 30)
    if n_trials is not None:
        check_int("number of trials", n_trials, low=1, high=100_000)


# ----------------------------------------------------------------------------- the study
def tune(
    objective: Objective,
    *,
    out_dir: str | Path,
    space: SearchSpace | None = None,
    strategy: str = "line-random",
    budget_minutes: float | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    prune: bool = True,
    stop: threading.Event | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
) -> Iterator[Any]:
    """Run a hyper-parameter study; yield trial and study events.

    Parameters
    ----------
    objective : Objective
        The task's data and base config.
    out_dir : path
        Study folder: ``best/``, ``trials.tsv``, ``study.json``, the default
        journal storage and the trials' model folders.
    space : SearchSpace, optional
        Default: ``objective.default_space()``.
    strategy : {"line-random", "tpe", "random"}
        See the module docstring.
    budget_minutes : float, optional
        Wall-clock budget; a trial running at the deadline is told to stop
        and keeps what it learnt.
    n_trials : int, optional
        Trials to finish in this run (a resumed study counts new trials).
    storage : str, optional
        An optuna storage URL (``sqlite:///...``, ``postgresql://...``) or a
        journal file path; default ``out_dir/study.journal``.
    study_name : str, optional
        Default ``napari-dlcb-<kind>``.
    seed : int
        Seeds the sampler and each trial (trial ``n`` gets ``seed + n``).
    prune : bool
        Stop trials whose learning curve is worse than the median of earlier
        trials at the same epoch.
    stop : threading.Event, optional
        Ends the study cleanly after the running trial stops.
    scheduler : str, optional
        A dask scheduler address (``tcp://host:8786``): trials run in parallel
        on its workers (see :mod:`napari_dlcb.tuning.cluster`).
    n_workers : int, optional
        Start a local dask cluster of this many single-threaded workers.

    Yields
    ------
    TrialStarted, TrialEpoch, TrialFinished, then StudyFinished.
    """
    _check(strategy, budget_minutes, n_trials)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = (space if space is not None else objective.default_space()).check(objective.known())
    name = study_name or f"napari-dlcb-{objective.kind}"
    spec = objective.spec() if (scheduler or n_workers) else None
    study = open_study(name, storage, out, objective.direction, strategy, seed, prune)
    release_stale_trials(study)
    planner = _Planner(study, space, objective, strategy)
    planner.enqueue_line_search()
    t0 = time.perf_counter()
    deadline = None if budget_minutes is None else time.time() + 60 * float(budget_minutes)
    stop = stop or threading.Event()
    limits: dict[str, Any] = {"deadline": deadline, "n_trials": n_trials, "stop": stop}
    sampling: dict[str, Any] = {"seed": seed, "strategy": strategy, "prune": prune}
    if spec is not None:
        reason = yield from _tune_on_cluster(
            spec, study, planner, space, out, storage, scheduler, n_workers, **sampling, **limits
        )
    else:
        reason = yield from _tune_here(objective, study, planner, space, out, seed, **limits)
    yield finish_study(study, objective, out, reason, time.perf_counter() - t0)


def open_study(
    name: str,
    storage: str | None,
    out: Path,
    direction: str,
    strategy: str,
    seed: int,
    prune: bool,
) -> Any:
    """Create or load the study in its storage, with the strategy's sampler and the pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=open_storage(storage, out),
        study_name=name,
        direction=direction,
        sampler=_sampler(strategy, seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if prune
        else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def _tune_here(
    objective: Objective,
    study: Any,
    planner: _Planner,
    space: SearchSpace,
    out: Path,
    seed: int,
    deadline: float | None,
    n_trials: int | None,
    stop: threading.Event,
) -> Iterator[Any]:
    """Trials one after another in this process; returns why the study ended."""
    finished_here = 0
    while True:
        if stop.is_set():
            return "cancelled"
        if n_trials is not None and finished_here >= n_trials:
            return "completed"
        if deadline is not None and time.time() >= deadline - 5:
            return "budget"
        trial = study.ask(planner.distributions())
        yield TrialStarted(trial.number, dict(trial.params))
        result = yield from run_trial(objective, space, trial, out, seed, deadline, stop)
        finished_here += 1
        yield result


def _tune_on_cluster(
    spec: dict[str, Any],
    study: Any,
    planner: _Planner,
    space: SearchSpace,
    out: Path,
    storage: str | None,
    scheduler: str | None,
    n_workers: int | None,
    *,
    seed: int,
    strategy: str,
    prune: bool,
    deadline: float | None,
    n_trials: int | None,
    stop: threading.Event,
) -> Iterator[Any]:
    """Trials in parallel on dask workers, all in the study's storage."""
    from napari_dlcb.tuning.cluster import connect, dispatch

    client, cluster = connect(scheduler, n_workers)
    url = storage or str(out / "study.journal")
    try:
        for r in dispatch(
            client,
            spec,
            storage=url,
            study_name=study.study_name,
            out_dir=out,
            planner=planner,
            fixed=space.fixed,
            seed=seed,
            strategy=strategy,
            prune=prune,
            deadline=deadline,
            n_trials=n_trials,
            stop=stop,
        ):
            yield TrialFinished(
                r["number"],
                r["state"],
                r["value"],
                r["params"],
                r["seconds"],
                r["worker"],
                r["message"],
            )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if stop.is_set():
        return "cancelled"
    return "budget" if deadline is not None and time.time() >= deadline - 5 else "completed"
