"""Options of the sequence task, shared by ``train sequence`` and the Genome view (no torch here)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import (
    TaskConfig,
    check_choice,
    check_fraction,
    check_int,
    check_positive,
)

__all__ = ["ARCHITECTURES", "TASK_TYPES", "SequenceConfig"]

#: the DNA architectures (:data:`napari_dlcb.models.dna.ARCHITECTURES` without importing torch)
ARCHITECTURES = ("deepbind", "basset", "deepsea", "danq")
TASK_TYPES = ("auto", "binary", "regression")


@dataclasses.dataclass
class SequenceConfig(TaskConfig):
    """Options of a DNA model's training, shared by ``train sequence`` and the Genome view.

    Attributes
    ----------
    arch : {"deepbind", "basset", "deepsea", "danq"}
        Architecture when training from scratch (``danq``: CNN + bidirectional
        LSTM; Basset, DeepSEA and DanQ take one window length, set from the data).
    base : str, optional
        ``"builtin"``, ``"builtin:<name>"`` or a saved model folder to
        fine-tune; its read-out layer is replaced when the tasks differ.
    model_kwargs : dict
        Extra architecture arguments (e.g. ``{"filters": 64}``).
    val_fraction : float
        Random validation fraction in [0, 1) (ignored with an explicit
        ``val_index``).
    rc_augment : bool
        Reverse-complement augmentation during training.
    seed : int
        Seed of the split and of training.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    task_type : {"auto", "binary", "regression"}
        ``"auto"``: binary when every finite label is 0 or 1.
    epochs, lr, batch_size, weight_decay
        The usual optimisation options.
    early_stopping : int or None
        Stop after this many epochs without a better validation loss.
    lr_patience : int
        Halve the learning rate after this many epochs without improvement.
    max_time : float or None
        Stop after this many seconds (per member with k-fold training).
    folds : int or None
        K-fold training (Angermueller et al. 2016: k-fold cross-validation when
        data is small): K members, each with one fold as its validation split,
        saved as one model predicting their mean; their K validation scores are
        the cross-validated estimate. None (default): 5 folds when there are
        fewer than 5,000 training rows and no explicit validation rows, else a
        single model; 1: a single model on a ``val_fraction`` split (the tuner
        and the torchrun path always train one). See
        :mod:`napari_dlcb.tasks.sequence_kfold`.

    Examples
    --------
    >>> SequenceConfig(epochs=3).validate().epochs
    3
    >>> SequenceConfig(lr=0).validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: lr must be a finite number > 0, got 0
    """

    arch: str = "deepbind"
    base: str | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.1
    rc_augment: bool = True
    seed: int = 0
    device: str = "auto"
    task_type: str = "auto"
    # chosen by the study in benchmarks/bench_dna_small.py (small data: 800 sequences;
    # the old 20 epochs / patience 4 / lr 1e-3 / 16x24 filters + dense 32 scored AUROC ~0.55)
    epochs: int = 100
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-6
    early_stopping: int | None = 15
    lr_patience: int = 5
    max_time: float | None = None
    folds: int | None = None

    #: DeepBind options when training from scratch (``model_kwargs`` overrides them):
    #: many short filters and a linear read-out, from the same study
    DEEPBIND_DEFAULTS: ClassVar[dict[str, Any]] = {
        "filters": 256,
        "kernel_size": 8,
        "hidden": 0,
        "dropout": 0.2,
    }

    tunable: ClassVar[dict[str, str]] = {
        "lr": "learning rate (log scale)",
        "batch_size": "sequences per step",
        "weight_decay": "L2 penalty",
        "arch": "deepbind or basset",
    }

    def validate(self) -> SequenceConfig:
        """Check every option; raise a one-line :class:`DlcbError` naming the first bad one."""
        check_choice("architecture", self.arch, ARCHITECTURES)
        if self.task_type not in TASK_TYPES:
            raise DlcbError(f"task_type must be auto, binary or regression, not {self.task_type!r}")
        check_fraction("val_fraction", self.val_fraction)
        self.seed = check_int("seed", self.seed, low=0)
        self.epochs = check_int("epochs", self.epochs)
        self.batch_size = check_int("batch_size", self.batch_size)
        self.lr = check_positive("lr", self.lr)
        self.weight_decay = check_positive("weight_decay", self.weight_decay, allow_zero=True)
        self.lr_patience = check_int("lr_patience", self.lr_patience, low=0)
        if self.early_stopping is not None:
            self.early_stopping = check_int("early_stopping", self.early_stopping)
        if self.max_time is not None:
            self.max_time = check_positive("max_time", self.max_time)
        if self.folds is not None:
            self.folds = check_int("folds", self.folds, low=1, high=100)
        if not isinstance(self.model_kwargs, dict):
            raise DlcbError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}")
        for key in ("filters", "hidden", "lstm"):
            value = self.model_kwargs.get(key)
            for v in value if isinstance(value, (tuple, list)) else [value]:
                if v is not None:
                    check_int(key, v, low=0 if key == "hidden" else 1, high=100_000)
        if not isinstance(self.device, str) or not self.device.strip():
            raise DlcbError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {self.device!r}")
        return self

    def fit_options(self) -> dict[str, Any]:
        """The options :meth:`SequenceTask.fit` passes to the engine."""
        names = ("epochs", "lr", "batch_size", "weight_decay", "early_stopping", "lr_patience")
        return {n: getattr(self, n) for n in names} | {"max_time": self.max_time}
