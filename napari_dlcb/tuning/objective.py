"""What a study optimises: an :class:`Objective` wraps one task's data and base config.

The tuner never sees images or sequences. It asks the objective for a task
built with a trial's config (:meth:`Objective.make_task`), drains its
``fit`` events, reads the validation metric of each epoch (for pruning) and
of the kept weights (the trial's value), saves the trial's model, and at the
very end asks for the test metrics of the best model, once.

An objective can be rebuilt from a plain dict (:meth:`Objective.spec`,
:func:`objective_from_spec`), so trials can run on dask workers that load the
data themselves.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import Task, TaskConfig
from napari_dlcb.tuning.space import SearchSpace

__all__ = ["Objective", "objective_from_spec"]


class Objective(ABC):
    """One task's data and base config, as a study sees them.

    Attributes
    ----------
    kind : str
        "segmentation", "classification" or "sequence".
    metric : str
        The validation metric the study optimises (an ``EpochEnd.metrics``
        key, or "val_loss").
    direction : {"maximize", "minimize"}
        Whether a larger metric is better.
    base : TaskConfig
        The defaults every trial starts from (the search overrides some fields).
    factory : str or None
        ``module:function`` that rebuilds the objective from files on a worker.
    source : dict or None
        That function's arguments (None for in-memory data).
    fit_defaults : dict
        Keyword arguments every trial's ``task.fit`` gets: by default no live
        previews (nobody watches a trial; they would only slow it down).
    """

    kind: str = ""
    metric: str = "val_loss"
    direction: str = "minimize"
    factory: str | None = None
    source: dict[str, Any] | None = None
    fit_defaults: ClassVar[dict[str, Any]] = {"preview_interval": math.inf}

    def __init__(self, base: TaskConfig) -> None:
        self.base = base.validate()

    @abstractmethod
    def default_space(self) -> SearchSpace:
        """The task's search space (the paper's Table 2 plus architecture knobs)."""

    def known(self) -> list[str]:
        """Names a search space may use: the config's fields (subclasses add more)."""
        return list(self.base.to_dict())

    def configure(self, params: dict[str, Any]) -> TaskConfig:
        """The validated config of a trial with these hyper-parameters."""
        return self.base.replace(**params)

    @abstractmethod
    def make_task(self, config: TaskConfig) -> Task:
        """A task on this objective's training/validation data with ``config``."""

    def fit_options(self, config: TaskConfig) -> dict[str, Any]:
        """Extra keyword arguments for ``task.fit`` (:attr:`fit_defaults`)."""
        return dict(self.fit_defaults)

    def epoch_value(self, event: Any) -> float:
        """The metric of one ``EpochEnd`` (NaN if absent)."""
        if self.metric == "val_loss":
            return float(event.val_loss)
        return float(event.metrics.get(self.metric, math.nan))

    def trial_value(self, task: Task, finished: Any) -> float:
        """The trial's value: the metric of the weights the task kept.

        Default: the best epoch value in the run's history (the engine keeps
        the best-scored weights, scored on the same metric when the task's
        monitor is this metric).
        """
        values = [
            h.get(self.metric, math.nan) if self.metric != "val_loss" else h.get("val_loss")
            for h in finished.history
        ]
        values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not values:
            return math.nan
        return max(values) if self.direction == "maximize" else min(values)

    def test_metrics(self, model_dir: Any) -> dict[str, float] | None:
        """Metrics of a saved model folder on the held-out test data, or None without any.

        Called once, at the end of a study, for the best trial only.
        """
        return None

    def spec(self) -> dict[str, Any]:
        """A plain dict from which :func:`objective_from_spec` rebuilds this objective."""
        if self.factory is not None and self.source is not None:
            return {
                "factory": self.factory,
                "arguments": {**self.source, "base": self.base.to_dict()},
            }
        raise DlcbError(
            f"this {self.kind or 'task'} objective holds in-memory data and cannot run on "
            "other machines; use the CLI (which reads files) for distributed studies"
        )


def objective_from_spec(spec: dict[str, Any]) -> Objective:
    """Rebuild an objective on a worker (``spec["factory"]`` is ``module:function``)."""
    factory = spec.get("factory", "")
    module, _, name = factory.partition(":")
    if not module.startswith("napari_dlcb.") or not name:
        raise DlcbError(f"unknown objective factory {factory!r}")
    return getattr(importlib.import_module(module), name)(**spec.get("arguments", {}))
