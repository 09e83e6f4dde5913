"""Where a study keeps what it learns: the optuna storage, trial models, ``trials.tsv``.

- :func:`open_storage`: a journal file in the study folder by default (safe for
  several processes on one machine), or any optuna storage URL; a URL that
  cannot be reached is a one-line error before any work starts;
- :func:`release_stale_trials`: trials left RUNNING by a killed study become
  FAIL, so a resumed study never waits for them and loses no finished trial;
- :func:`save_trial_model`: each finished trial's model folder (atomically);
- :func:`finish_study`: ``best/`` (the best trial's model folder, with the
  study as provenance), ``trials.tsv``, ``study.json`` and the test metrics,
  computed once, for the best model only.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = [
    "finish_study",
    "open_storage",
    "release_stale_trials",
    "save_trial_model",
    "trial_dir",
    "trial_rows",
]

JOURNAL = "study.journal"


def open_storage(storage: str | None, out_dir: Path) -> Any:
    """An optuna storage for ``storage`` (URL or journal path; default in ``out_dir``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if storage is None or "://" not in storage:
        path = Path(storage) if storage else out_dir / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = JournalFileOpenLock(str(path))
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    try:
        return optuna.storages.RDBStorage(
            storage, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=60, grace_period=180
        )
    except Exception as err:  # noqa: BLE001 - any driver error: one line for the user
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DlcbError(f"cannot open the study storage {_redact(storage)}: {detail}") from None


def _redact(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def release_stale_trials(study: Any) -> int:
    """Mark trials left RUNNING by a killed run as FAIL; return how many."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        n += 1
    return n


def trial_dir(out_dir: Path, number: int) -> Path:
    """Model folder of trial ``number``."""
    return Path(out_dir) / "trials" / f"{number:04d}"


def save_trial_model(task: Any, out_dir: Path, number: int) -> Path:
    """Save a finished trial's model (the task writes atomically)."""
    dest = trial_dir(out_dir, number)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    return Path(task.save(dest))


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, seconds, worker, params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": "" if t.value is None else float(t.value),
                "seconds": t.user_attrs.get("seconds", ""),
                "worker": t.user_attrs.get("worker", ""),
                "epochs": len(t.user_attrs.get("curve", [])),
                **{f"param_{k}": v for k, v in t.params.items()},
            }
        )
    return rows


def _write_tsv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _copy_best(src: Path, dest: Path, provenance: dict[str, Any]) -> None:
    """Copy the best trial's model folder to ``dest`` atomically, with the study in its metadata."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    meta_file = tmp / "metadata.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        meta.setdefault("extra", {})["study"] = provenance
        meta_file.write_text(json.dumps(meta, indent=2, default=str))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)


def _write_plots(study: Any, path: Path) -> None:
    """study.png: history, parallel coordinates, importances, curves (never fails a study)."""
    from napari_dlcb.tuning.plots import save_study_png

    try:
        save_study_png(study, path)
    except (ValueError, RuntimeError, OSError) as err:  # a plot is a convenience
        logging.getLogger(__name__).warning("could not draw %s: %s", path.name, err)


def finish_study(study: Any, objective: Any, out: Path, reason: str, seconds: float) -> Any:
    """Write ``best/``, ``trials.tsv`` and ``study.json``; evaluate the best model once."""
    from optuna.trial import TrialState

    from napari_dlcb.tuning.study import StudyFinished

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    _write_tsv(trial_rows(study), out / "trials.tsv")
    best = None
    if complete:
        best = (max if objective.direction == "maximize" else min)(complete, key=lambda t: t.value)
    best_dir, test = None, None
    summary = {
        "study_name": study.study_name,
        "task": objective.kind,
        "metric": objective.metric,
        "direction": objective.direction,
        "reason": reason,
        "seconds": round(seconds, 1),
        "n_trials": len(trials),
        "host": socket.gethostname(),
    }
    if best is not None and trial_dir(out, best.number).exists():
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        _copy_best(trial_dir(out, best.number), out / "best", summary)
        best_dir = str(out / "best")
        test = objective.test_metrics(out / "best")
        if test is not None:
            summary["test"] = test  # evaluated once, on the chosen model only
            meta_file = out / "best" / "metadata.json"
            meta = json.loads(meta_file.read_text())
            meta["extra"]["study"]["test"] = test
            meta_file.write_text(json.dumps(meta, indent=2, default=str))
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    _write_plots(study, out / "study.png")
    # every trial's config, curve and value stay in the storage and trials.tsv; of the
    # models only the chosen one is kept (best/), so a long study does not fill the disk
    shutil.rmtree(out / "trials", ignore_errors=True)
    return StudyFinished(
        reason=reason,
        best_number=None if best is None else best.number,
        best_value=math.nan if best is None else float(best.value),
        best_params={} if best is None else dict(best.params),
        n_complete=len(complete),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        seconds=seconds,
        best_dir=best_dir,
        test=test,
    )
