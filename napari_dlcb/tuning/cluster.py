"""Trials in parallel on a dask.distributed cluster, all in one optuna storage.

Nothing here schedules work itself: dask places the trials on its workers and
optuna's storage (a journal file on a shared disk, or a database such as
PostgreSQL) is where every worker asks for its trial's parameters and tells
its result. Each trial records the worker that ran it
(``trial.user_attrs["worker"]``).

- ``scheduler="tcp://host:8786"``: an existing cluster (its workers need the
  data files at the same paths, and a storage they can all reach);
- ``n_workers=N``: a :class:`distributed.LocalCluster` of N single-threaded
  worker processes on this machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = ["connect", "dispatch", "run_trial_on_worker"]


def connect(scheduler: str | None, n_workers: int | None) -> tuple[Any, Any]:
    """A dask client (and the LocalCluster it owns, or None); one-line errors."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DlcbError(
            "distributed studies need dask.distributed: pip install 'napari-dlcb[distributed]'"
        ) from None
    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as err:
            raise DlcbError(f"cannot reach the dask scheduler {scheduler}: {err}") from None
    cluster = LocalCluster(
        n_workers=int(n_workers or 2),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    )
    return Client(cluster), cluster


def run_trial_on_worker(
    spec: dict[str, Any],
    storage: str,
    study_name: str,
    out_dir: str,
    distributions: dict[str, Any],
    fixed: dict[str, Any],
    seed: int,
    deadline: float | None,
    strategy: str = "random",
    prune: bool = True,
    slot: int = 0,
) -> dict[str, Any]:
    """Run one trial on a dask worker (a plain function so dask can ship it).

    The worker rebuilds the objective from ``spec`` (it reads the data files
    itself), asks the shared storage for a trial, trains, tells the result.
    """
    from napari_dlcb.tuning.objective import objective_from_spec
    from napari_dlcb.tuning.space import SearchSpace
    from napari_dlcb.tuning.study import open_study, run_trial

    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    objective = objective_from_spec(spec)
    # each submission samples with its own seed (the trial's own seed is seed + its number)
    study = open_study(
        study_name,
        storage,
        Path(out_dir),
        objective.direction,
        strategy,
        seed * 1000 + slot,
        prune,
    )
    trial = study.ask(distributions)
    space = SearchSpace([], fixed)
    events = run_trial(objective, space, trial, Path(out_dir), seed, deadline, worker=worker)
    while True:  # drain the epochs; the trial's result is the generator's return value
        try:
            next(events)
        except StopIteration as done:
            result = done.value
            break
    return {
        "number": result.number,
        "state": result.state,
        "value": result.value,
        "params": result.params,
        "seconds": result.seconds,
        "worker": result.worker,
        "message": result.message,
    }


def dispatch(
    client: Any,
    spec: dict[str, Any],
    *,
    storage: str,
    study_name: str,
    out_dir: Path,
    planner: Any,
    fixed: dict[str, Any],
    seed: int,
    strategy: str,
    prune: bool,
    deadline: float | None,
    n_trials: int | None,
    stop: Any,
) -> Iterator[dict[str, Any]]:
    """Keep one trial per worker running until the budget is spent; yield each result."""
    from distributed import as_completed

    n_slots = max(len(client.scheduler_info().get("workers", {})), 1)
    submitted = 0

    def more() -> bool:
        if stop.is_set() or (n_trials is not None and submitted >= n_trials):
            return False
        return deadline is None or time.time() < deadline - 5

    def submit() -> Any:
        nonlocal submitted
        submitted += 1
        return client.submit(
            run_trial_on_worker,
            spec,
            storage,
            study_name,
            str(out_dir),
            planner.distributions(),
            fixed,
            seed,
            deadline,
            strategy,
            prune,
            submitted,
            pure=False,
        )

    running = as_completed([submit() for _ in range(n_slots) if more()])
    for future in running:
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - a worker died: report it, go on
            result = {
                "number": -1,
                "state": "fail",
                "value": math.nan,
                "params": {},
                "seconds": 0.0,
                "worker": "?",
                "message": str(err).splitlines()[0],
            }
        yield result
        if more():
            running.add(submit())
