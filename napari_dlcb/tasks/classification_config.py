"""The options of the crop classifier and of the cell classifier, one dataclass each.

:class:`ClassificationConfig` is what ``napari-dlcb train classification``
builds from its options (and :class:`~napari_dlcb.tasks.classification.ClassificationTrainer`
takes); :class:`CellsConfig` is what the Cell classifier dock builds from its
fields (and :class:`~napari_dlcb.tasks.cells.CellClassificationTask` takes).
``validate()`` gives the same one-line error, naming the option and its range,
in the CLI, the dock and Python.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import (
    TaskConfig,
    check_choice,
    check_fraction,
    check_int,
    check_positive,
)
from napari_dlcb.training.frozen import check_mode

__all__ = ["BALANCES", "CellsConfig", "ClassificationConfig"]

BALANCES = ("loss", "sampler", None)


@dataclasses.dataclass
class ClassificationConfig(TaskConfig):
    """Options of a crop classifier (``train classification`` and the cell classifier).

    Attributes
    ----------
    base : str
        ``"builtin"``, ``"builtin:<name>"``, a saved model folder, or ``"none"``.
    mode : {"full", "quick"}
        Fine-tune everything, or train the linear head on frozen features
        (``"linear"`` is accepted for ``"quick"``).
    input_size : int or None
        Crop side length; None: the images' most common size.
    val_fraction : float
        Stratified share held out for validation (at least one per class
        where a class has 2+ images); 0 disables.
    augment : bool
        Random flips, 90-degree rotations, zoom and intensity jitter (quick
        mode: the 8 dihedral copies of every crop).
    balance : {"loss", "sampler", None}
        Class-imbalance handling: inverse-frequency loss weights, a weighted
        random sampler, or nothing.
    width, blocks
        Size of a newly initialised network (``base="none"``).
    epochs, batch_size, weight_decay
        The usual.
    lr : float or None
        None: 2e-3 (full) or 1e-2 (quick).
    early_stopping : int or None
        Epochs without improvement before stopping; None: the mode's default
        (full: ``max(5, epochs // 3)``, quick: 15); 0: never.
    seed : int
        Seeds the split, the augmentation, new weights and the engine.
    device : str
        "auto", "cpu", "cuda" or "mps".

    Examples
    --------
    >>> ClassificationConfig(mode="linear").validate().mode
    'quick'
    >>> ClassificationConfig(epochs=0).validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: epochs must be from 1 to 100000, got 0
    """

    base: str = "builtin"
    mode: str = "full"
    input_size: int | None = None
    val_fraction: float = 0.15
    augment: bool = True
    balance: str | None = "loss"
    width: int = 32
    blocks: tuple[int, ...] = (2, 2, 2)
    epochs: int = 30
    lr: float | None = None
    batch_size: int = 64
    weight_decay: float = 1e-4
    early_stopping: int | None = None
    seed: int = 0
    device: str = "auto"

    tunable: ClassVar[dict[str, str]] = {
        "lr": "learning rate (log scale, 1e-4 to 1e-1)",
        "batch_size": "crops per optimisation step",
        "weight_decay": "AdamW weight decay",
        "mode": "quick (frozen features + linear head) or full fine-tuning",
        "augment": "augmentation on or off",
    }

    def validate(self) -> ClassificationConfig:
        """Check and normalise every field; one-line :class:`DlcbError` naming the option."""
        self.base = "none" if self.base is None else str(self.base)
        self.mode = check_mode(self.mode)
        if self.input_size is not None:
            self.input_size = check_int("input size", self.input_size, low=4, high=1024)
        self.val_fraction = check_fraction("validation fraction", self.val_fraction)
        self.balance = None if self.balance in ("none", "None") else self.balance
        check_choice("class balancing", self.balance, BALANCES)
        self.width = check_int("width", self.width, low=1, high=512)
        self.blocks = tuple(check_int("blocks per stage", b, high=64) for b in self.blocks)
        if not self.blocks:
            raise DlcbError("blocks needs at least one stage, e.g. (2, 2, 2)")
        self.epochs = check_int("epochs", self.epochs, high=100_000)
        if self.lr is not None:
            self.lr = check_positive("learning rate", self.lr, high=10.0)
        self.batch_size = check_int("batch size", self.batch_size, high=65_536)
        self.weight_decay = check_positive("weight decay", self.weight_decay, allow_zero=True)
        if self.early_stopping is not None:
            self.early_stopping = check_int("early stopping", self.early_stopping, low=0)
        self.seed = check_int("seed", self.seed, low=0)
        self.device = str(self.device)
        return self


@dataclasses.dataclass
class CellsConfig(TaskConfig):
    """Options of the cell classifier (the dock and Python callers build the same one).

    Attributes
    ----------
    crop_size : int or "auto"
        Side of the crops centred on objects; "auto" chooses it from the
        objects (:func:`~napari_dlcb.data.cells.auto_crop_size`: 1.5 x the
        90th-percentile bounding-box side, a multiple of 8, 32 to 128 px).
    mask_neighbours : bool
        Blank other objects inside each crop.
    base, mode, balance, augment, val_fraction, epochs, lr, batch_size, seed, device
        As in :class:`~napari_dlcb.tasks.classification.ClassificationConfig`;
        here ``mode="quick"`` (frozen features + linear head, instant on a
        CPU) and no validation split by default.

    Examples
    --------
    >>> CellsConfig(mode="linear", crop_size=40).validate().mode
    'quick'
    >>> CellsConfig(crop_size=4).validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: crop size must be from 8 to 256, got 4
    """

    crop_size: int | str = "auto"
    mask_neighbours: bool = False
    base: str = "builtin"
    mode: str = "quick"
    balance: str | None = "loss"
    augment: bool = True
    val_fraction: float = 0.0
    epochs: int = 30
    lr: float | None = None
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"

    tunable: ClassVar[dict[str, str]] = {
        **ClassificationConfig.tunable,
        "crop_size": "crop side in pixels (8 to 256)",
    }

    def validate(self) -> CellsConfig:
        """Check and normalise every field; one-line :class:`DlcbError` naming the option."""
        if not (isinstance(self.crop_size, str) and self.crop_size.strip().lower() == "auto"):
            self.crop_size = check_int("crop size", self.crop_size, low=8, high=256)
        else:
            self.crop_size = "auto"
        shared = self.classification_config(32)
        self.base, self.mode, self.balance = shared.base, shared.mode, shared.balance
        self.mask_neighbours = bool(self.mask_neighbours)
        return self

    def classification_config(self, crop_size: int) -> ClassificationConfig:
        """The validated options of the crop classifier that learns from the clicked cells."""
        shared = {f.name for f in dataclasses.fields(ClassificationConfig)}
        same = {k: v for k, v in dataclasses.asdict(self).items() if k in shared}
        return ClassificationConfig(**same, input_size=int(crop_size)).validate()
