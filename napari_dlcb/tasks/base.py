"""The one task interface that segmentation, cells and sequence implement.

A *task* is what a biologist trains: a segmentation U-Net on painted images, a
cell classifier on clicked cells, a DNA model on sequence windows. The CLI,
the widgets, the tuner and the exporters all talk to a task the same way:

1. build a **config** (a dataclass of plain values with :meth:`TaskConfig.validate`,
   shared by the CLI's options and the dock's fields, so a bad value gets the
   same one-line error everywhere);
2. make the task from data and the config (``Task(data..., config=cfg)``);
3. drain :meth:`Task.fit`, a generator of
   :mod:`~napari_dlcb.training.events` (``stop=`` ends it cleanly, keeping
   what was learnt);
4. :meth:`Task.predict` and :meth:`Task.save` (a model folder).

Live views while training (a prediction overlay, a saliency map) run in the
training thread inside the engine's ``preview`` and share its time through a
:class:`LiveBudget`, so they never take more than their share however slow the
machine or the method.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from napari_dlcb.errors import DlcbError

__all__ = [
    "LiveBudget",
    "Task",
    "TaskConfig",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_positive",
]


# ----------------------------------------------------------------------------- validation
def check_int(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else a one-line :class:`DlcbError`.

    Examples
    --------
    >>> check_int("epochs", 3)
    3
    """
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise DlcbError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and not float(value).is_integer():
        raise DlcbError(f"{name} must be a whole number, got {value!r}")
    if out < low or (high is not None and out > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise DlcbError(f"{name} must be {span}, got {value!r}")
    return out


def check_positive(
    name: str, value: Any, *, high: float | None = None, allow_zero: bool = False
) -> float:
    """``value`` as a finite float > 0 (or >= 0), at most ``high``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DlcbError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(out) and (out >= 0 if allow_zero else out > 0)
    if not ok or (high is not None and out > high):
        lower = ">= 0" if allow_zero else "> 0"
        upper = f" and <= {high:g}" if high is not None else ""
        raise DlcbError(f"{name} must be a finite number {lower}{upper}, got {value!r}")
    return out


def check_fraction(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """``value`` as a fraction in ``[0, 1)`` (or ``(0, 1)``)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DlcbError(f"{name} must be a number, got {value!r}") from None
    low_ok = out >= 0 if allow_zero else out > 0
    if not (math.isfinite(out) and low_ok and out < 1):
        span = "[0, 1)" if allow_zero else "(0, 1)"
        raise DlcbError(f"{name} must be a fraction in {span}, got {value!r}")
    return out


def check_choice(name: str, value: Any, choices: tuple[Any, ...] | list[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a one-line error listing them."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise DlcbError(f"unknown {name} {value!r}; choose one of {options}")
    return value


@dataclasses.dataclass
class TaskConfig:
    """Base of the task configs: plain values, validated in one place.

    Subclasses are dataclasses whose fields are the task's options (with the
    defaults users get). :meth:`validate` checks every field and raises a
    one-line :class:`DlcbError` naming the option and the allowed range;
    :meth:`replace` returns a validated copy with some fields changed.
    """

    #: options a hyper-parameter search may vary (name -> description), per task
    tunable: ClassVar[dict[str, str]] = {}

    def validate(self) -> TaskConfig:
        """Check every field; return self (subclasses extend this)."""
        return self

    def replace(self, **changes: Any) -> TaskConfig:
        """A validated copy with ``changes`` applied (unknown names are an error)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise DlcbError(
                f"unknown option {unknown[0]!r} for {type(self).__name__}; "
                f"known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        """Fields as a JSON-friendly dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TaskConfig:
        """Build and validate from a dict (e.g. a study's trial or a saved model's metadata)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise DlcbError(f"unknown option {unknown[0]!r} for {cls.__name__}")
        return cls(**values).validate()


# ----------------------------------------------------------------------------- live budget
class LiveBudget:
    """Give a live view at most ``share`` of the training thread's time.

    After a view that took ``t`` seconds, :meth:`due` is False for the next
    ``t * (1 / share - 1)`` seconds, so training keeps at least ``1 - share``
    of the time whatever the method, image size or machine load.

    Parameters
    ----------
    share : float
        Largest fraction of the time the view may take, in (0, 1].
    min_interval : float
        Never more often than this (seconds), even if the view is cheap.

    Examples
    --------
    >>> budget = LiveBudget(0.5)
    >>> budget.due()
    True
    >>> with budget.spend():
    ...     pass
    >>> budget.n_runs
    1
    """

    def __init__(self, share: float, *, min_interval: float = 0.0) -> None:
        if not 0 < share <= 1:
            raise DlcbError(f"a live view's share of the time must be in (0, 1], got {share}")
        self.share = float(share)
        self.min_interval = float(min_interval)
        self.next_at = -math.inf
        self.n_runs = 0
        self.seconds = 0.0
        self.disabled: str | None = None

    def due(self, now: float | None = None) -> bool:
        """Whether the view may run now."""
        if self.disabled is not None:
            return False
        return (time.perf_counter() if now is None else now) >= self.next_at

    def record(self, spent: float) -> None:
        """Account for a view that took ``spent`` seconds."""
        self.n_runs += 1
        self.seconds += spent
        wait = max(spent * (1 / self.share - 1), self.min_interval)
        self.next_at = time.perf_counter() + wait

    def spend(self) -> _Timer:
        """Context manager timing one run of the view (calls :meth:`record`)."""
        return _Timer(self)

    def disable(self, reason: str) -> None:
        """Never run again (e.g. the method cannot explain this model)."""
        self.disabled = reason


class _Timer:
    def __init__(self, budget: LiveBudget) -> None:
        self.budget = budget
        self.t0 = 0.0

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.budget.record(time.perf_counter() - self.t0)


# ----------------------------------------------------------------------------- task
class Task(ABC):
    """What segmentation, cells and sequence implement (see the module docstring).

    Attributes
    ----------
    config : TaskConfig
        The validated options this task was made with.
    model : torch.nn.Module
        The network being trained (handed back unchanged by every reader).
    meta : napari_dlcb.models.saved.ModelMeta
        What :meth:`save` writes; ``meta.extra["training"]`` records each run.
    history : list of dict
        One record per epoch over all :meth:`fit` calls.
    """

    #: "segmentation", "classification" or "sequence" (the CLI verb's object)
    kind: ClassVar[str] = ""

    config: TaskConfig
    model: Any
    meta: Any
    history: list[dict[str, float]]

    @abstractmethod
    def fit(self, *, stop: Any = None, **options: Any) -> Iterator[Any]:
        """Train; yield engine events ending with ``Finished``.

        ``stop`` (a ``threading.Event``) ends training cleanly at the next
        step, keeping what was learnt if it validates better (see
        :mod:`napari_dlcb.training.engine`).
        """

    @abstractmethod
    def predict(self, data: Any, **options: Any) -> Any:
        """Predict with the current weights (the task's one result type)."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write a model folder that ``predict`` and ``--base`` accept."""

    def run(self, **options: Any) -> Any:
        """Train to the end headlessly; return the ``Finished`` event."""
        from napari_dlcb.training.engine import fit_to_end

        return fit_to_end(self.fit(**options))

    def record_run(self, finished: Any, *, seconds: float, **extra: Any) -> None:
        """Append a finished run to ``history`` and to ``meta.extra["training"]``."""
        self.history.extend(finished.history)
        runs = self.meta.extra.setdefault("training_runs", [])
        runs.append(
            {
                "reason": finished.reason,
                "best_epoch": finished.best_epoch,
                "best_score": finished.best_score,
                "epochs_run": finished.epochs_run,
                "kept": finished.kept,
                "seconds": round(seconds, 2),
                **extra,
            }
        )
