"""K-fold training of the sequence task: K members, each validated on its own fold, averaged.

Angermueller et al. (2016) advise k-fold cross-validation when data is small.
:class:`~napari_dlcb.tasks.sequence.SequenceTask` splits the rows into K folds
(:func:`fold_splits`, seeded); member ``i`` trains on the other K-1 folds with
early stopping on fold ``i`` (seed ``seed + i``); the saved model is an
:class:`~napari_dlcb.models.ensemble.Ensemble` of the members (mean of their
probabilities for binary tasks, mean of their outputs for regression), and the K
validation scores at the kept epochs are the cross-validated estimate
(``meta.extra["cross_validation"]``).

How many folds (:func:`resolve_folds`): ``SequenceConfig.folds`` if given
(1 = one model on a random validation split); by default
:data:`AUTO_FOLDS` folds when there are fewer than :data:`AUTO_FOLDS_BELOW`
training rows (and at least 20, four validation rows per fold) and no explicit
validation rows, else one model. On the
``bench_dna_small.py`` protocol (800 training rows) five members beat one model
(``benchmarks/RESULTS.md``); at 5,000 rows and more a single model has the data it
needs and K times the training time is rarely worth it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlcb.data.splits import kfold
from napari_dlcb.errors import DlcbError
from napari_dlcb.training.events import EpochEnd, Finished, TrainEvent, Warning

if TYPE_CHECKING:  # pragma: no cover
    from napari_dlcb.tasks.sequence import SequenceTask

__all__ = ["AUTO_FOLDS", "AUTO_FOLDS_BELOW", "fit_folds", "fold_splits", "resolve_folds"]

#: folds of the default rule
AUTO_FOLDS = 5
#: the default rule trains :data:`AUTO_FOLDS` members below this many training rows
AUTO_FOLDS_BELOW = 5_000


def resolve_folds(
    folds: int | None, n_rows: int, explicit_val: bool, *, distributed: bool = False
) -> int:
    """The number of members to train (1 = a single model).

    Parameters
    ----------
    folds : int or None
        ``SequenceConfig.folds``; None = the default rule.
    n_rows : int
        Training rows (sequences, negatives included).
    explicit_val : bool
        Whether validation rows were given (e.g. a held-out chromosome).
    distributed : bool
        Whether this is a ``torchrun`` data-parallel job, which trains one model
        (the default rule then gives 1; more folds are refused).

    Returns
    -------
    int

    Examples
    --------
    >>> resolve_folds(None, 800, False), resolve_folds(None, 5000, False), resolve_folds(3, 800, False)
    (5, 1, 3)
    >>> resolve_folds(None, 800, True), resolve_folds(None, 12, False)
    (1, 1)
    """
    if folds is None:  # at least 4 validation rows per fold
        small = 4 * AUTO_FOLDS <= n_rows < AUTO_FOLDS_BELOW
        return AUTO_FOLDS if small and not explicit_val and not distributed else 1
    if folds > 1 and distributed:
        raise DlcbError(f"folds={folds}: k-fold training does not run under torchrun; use folds=1")
    if folds > 1 and explicit_val:
        raise DlcbError(
            f"folds={folds} cannot be combined with explicit validation rows (e.g. "
            "--val-chroms): k-fold training validates on every row; use folds=1"
        )
    if folds > n_rows // 2:
        raise DlcbError(f"{folds} folds need at least {2 * folds} rows, got {n_rows}")
    return folds


def fold_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, val)`` row indices of each fold (:func:`napari_dlcb.data.splits.kfold`).

    Examples
    --------
    >>> splits = fold_splits(10, 3, seed=0)
    >>> sorted(np.concatenate([v for _, v in splits]).tolist()) == list(range(10))
    True
    >>> [len(v) for _, v in splits]
    [4, 3, 3]
    """
    return list(kfold(n, folds, seed=seed))


def fit_folds(task: SequenceTask, *, stop: Any = None, **options: Any) -> Iterator[TrainEvent]:
    """Train ``task``'s K members one after another and make the ensemble; yield the events.

    Before each fold a ``Warning(kind="fold")`` says which one starts; each
    member's own ``Finished`` becomes a ``Warning(kind="fold")`` too, and one
    ``Finished`` ends the run. Stop ends the whole run: the members of the folds
    finished so far are kept (the stopped one only if none finished), so the
    task always holds a model.

    Parameters
    ----------
    task : SequenceTask
        A task with ``task.folds > 1``.
    stop : threading.Event, optional
        Ends training cleanly.
    **options
        As for :meth:`SequenceTask.fit`.

    Yields
    ------
    TrainEvent
    """
    t0 = time.perf_counter()
    kept: list[Any] = []
    records: list[dict] = []
    try:
        last = yield from _train_folds(task, stop, options, kept, records)
    except GeneratorExit:  # closed mid-run (e.g. its dock closed): keep the finished folds
        if kept:
            task.set_members(kept)
        raise
    yield _finish(task, kept, records, last, time.perf_counter() - t0)


def _train_folds(
    task: SequenceTask, stop: Any, options: dict, kept: list, records: list[dict]
) -> Generator[TrainEvent, None, Finished | None]:
    """Train the members fold by fold, appending to ``kept`` and ``records``.

    Returns the last fold's ``Finished`` (None if no fold finished).
    """
    K, t0 = task.folds, time.perf_counter()
    budget = options.get("max_time", task.config.max_time)  # for the whole run, not per fold
    last: Finished | None = None

    def share(i: int) -> float:  # an equal share of what is left to each remaining fold
        return max((budget - (time.perf_counter() - t0)) / (K - i), 1.0)

    for i, (train_idx, val_idx) in enumerate(task.fold_index):
        yield Warning(
            "fold",
            f"fold {i + 1}/{K}: member {i + 1} trains on {len(train_idx)} rows, "
            f"validates on {len(val_idx)}",
        )
        member = task.members[i]
        train, val = task.fold_data(train_idx, val_idx)
        record: dict = {}
        history: list[dict] = []
        events = task.fit_one(
            member,
            train,
            val,
            seed=task.seed + i,
            stop=stop,
            options=options if budget is None else {**options, "max_time": share(i)},
            record=record,
            history=history,
        )
        for ev in events:
            if isinstance(ev, EpochEnd):
                task.history.append({"fold": i, **history[-1]} if history else {"fold": i})
            if isinstance(ev, Finished):
                last = ev
                break
            yield ev
        stopped = last is not None and last.reason == "cancelled"
        if not stopped or not kept:
            kept.append(member)
        rec = {"fold": i, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
        rec |= record.get("training", {}) | {"val_score": _score_at_best(last)}
        if "pos_weight" in record:  # each member's own (its training folds' balance)
            rec["pos_weight"] = record["pos_weight"]
        records.append(rec | {"kept": len(kept) == len(records) + 1})
        if stopped:
            yield Warning("fold", f"stopped in fold {i + 1}/{K}: keeping {len(kept)} member(s)")
            break
        yield Warning("fold", f"fold {i + 1}/{K} finished: {_fold_line(rec)}")
    return last


def _score_at_best(finished: Finished | None) -> float | None:
    """The validation metric (AUROC or Pearson r) at the kept epoch, or None."""
    if finished is None:
        return None
    for h in reversed(finished.history):
        if h.get("epoch") == finished.best_epoch:
            for key in ("auroc", "pearson", "r"):
                if key in h and np.isfinite(h[key]):
                    return round(float(h[key]), 4)
    return None


def _fold_line(rec: dict) -> str:
    score = rec.get("val_score")
    what = f"validation score {score:.4f}" if score is not None else "no validation score"
    return f"{what} at epoch {rec['best_epoch'] + 1} of {rec['epochs_run']}"


def _finish(
    task: SequenceTask, kept: list, records: list[dict], last: Finished | None, seconds: float
) -> Finished:
    """Put the kept members into ``task`` (model, metadata) and make the run's ``Finished``."""
    task.set_members(kept)
    scores = [r["val_score"] for r in records if r["kept"] and r["val_score"] is not None]
    cv = {
        "folds": task.folds,
        "members": len(kept),
        "metric": "auroc" if task.task_type == "binary" else "pearson",
        "scores": scores,
        "mean": round(float(np.mean(scores)), 4) if scores else None,
        "sd": round(float(np.std(scores, ddof=1)), 4) if len(scores) > 1 else None,
    }
    task.meta.extra["cross_validation"] = cv
    weights = [r["pos_weight"] for r in records if r["kept"] and "pos_weight" in r]
    if weights:  # the members' mean; each member's own is in training.folds
        task.meta.extra["pos_weight"] = [round(float(w), 3) for w in np.mean(weights, axis=0)]
    task.meta.extra["training"] = {
        "reason": last.reason if last else "none",
        "folds": records,
        "seconds": round(seconds, 2),
    }
    return Finished(
        reason=last.reason if last else "none",
        best_epoch=last.best_epoch if last else -1,
        best_score=float(np.mean([r["best_score"] for r in records if r["kept"]] or [np.nan])),
        epochs_run=sum(r["epochs_run"] for r in records),
        history=list(task.history),
        kept=describe_cv(cv),
    )


def describe_cv(cv: dict) -> str:
    """One line on an ensemble and its cross-validated estimate.

    Examples
    --------
    >>> describe_cv({"folds": 5, "members": 5, "metric": "auroc", "scores": [0.9, 0.92],
    ...              "mean": 0.91, "sd": 0.0141})
    'the mean of 5 members (one per fold of 5); cross-validated auroc 0.910 ± 0.014 (mean ± sd of 2 folds)'
    """
    text = f"the mean of {cv['members']} members (one per fold of {cv['folds']})"
    if cv.get("mean") is not None:
        sd = f" ± {cv['sd']:.3f}" if cv.get("sd") is not None else ""
        text += (
            f"; cross-validated {cv['metric']} {cv['mean']:.3f}{sd} "
            f"(mean ± sd of {len(cv['scores'])} folds)"
        )
    return text
