"""The options of the crop, cell, multiple-instance and pretraining tasks, one dataclass each.

:class:`ClassificationConfig` is what ``napari-dlcb train classification``
builds from its options (and :class:`~napari_dlcb.tasks.classification.ClassificationTrainer`
takes); :class:`CellsConfig` is what the Cell classifier dock builds from its
fields (and :class:`~napari_dlcb.tasks.cells.CellClassificationTask` takes);
:class:`MILConfig` is ``train classification --mil``
(:class:`~napari_dlcb.tasks.mil.MILTrainer`); :class:`PretrainConfig` is
``pretrain classification`` and the dock's "Pretrain on all cells"
(:class:`~napari_dlcb.tasks.pretrain.AutoencoderPretrainer`).
``validate()`` gives the same one-line error, naming the option and its range,
in the CLI, the dock and Python.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, TypeVar

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import (
    TaskConfig,
    check_choice,
    check_fraction,
    check_int,
    check_positive,
)
from napari_dlcb.training.frozen import check_mode

__all__ = ["BALANCES", "CellsConfig", "ClassificationConfig", "MILConfig", "PretrainConfig"]

BALANCES = ("loss", "sampler", None)
#: what the pretraining autoencoder reconstructs from
DECODERS = ("pooled", "maps")


def _check_network(cfg: ClassificationConfig | PretrainConfig) -> None:
    """Check the from-scratch network's ``width`` and ``blocks`` (normalised in place).

    Parameters
    ----------
    cfg : ClassificationConfig or PretrainConfig
        The config being validated.
    """
    cfg.width = check_int("width", cfg.width, low=1, high=512)
    blocks = cfg.blocks.split(",") if isinstance(cfg.blocks, str) else cfg.blocks  # "2,2,2"
    cfg.blocks = tuple(check_int("blocks per stage", b, high=64) for b in blocks)
    if not cfg.blocks:
        raise DlcbError("blocks needs at least one stage, e.g. (2, 2, 2)")


_Config = TypeVar("_Config", "ClassificationConfig", "PretrainConfig")


def _check_run(cfg: _Config) -> _Config:
    """Check the options every training run shares, from ``batch_size`` to ``device``.

    Parameters
    ----------
    cfg : ClassificationConfig or PretrainConfig
        The config being validated (normalised in place).

    Returns
    -------
    ClassificationConfig or PretrainConfig
        ``cfg``.
    """
    cfg.batch_size = check_int("batch size", cfg.batch_size, high=65_536)
    cfg.weight_decay = check_positive("weight decay", cfg.weight_decay, allow_zero=True)
    if cfg.early_stopping is not None:
        cfg.early_stopping = check_int("early stopping", cfg.early_stopping, low=0)
    cfg.seed = check_int("seed", cfg.seed, low=0)
    cfg.device = str(cfg.device)
    return cfg


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
    head_warmup : int or None
        Full mode: first train the new linear head for this many epochs on
        the frozen backbone's features (as ``"quick"`` does), then fine-tune
        every layer (LP-FT, Kumar et al. 2022: a random head's gradients
        otherwise distort the pretrained features). None: 30 epochs (at most
        ``epochs``) when the base is an encoder pretrained without labels
        (``pretrain classification``) and the model has a linear head, else
        0; 0: off. Not with quick mode, which trains only the head anyway.
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
    head_warmup: int | None = None
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
        _check_network(self)
        self.epochs = check_int("epochs", self.epochs, high=100_000)
        if self.lr is not None:
            self.lr = check_positive("learning rate", self.lr, high=10.0)
        if self.head_warmup is not None:
            self.head_warmup = check_int("head warm-up", self.head_warmup, low=0, high=100_000)
            if self.head_warmup and self.mode == "quick":
                raise DlcbError("quick mode trains only the head already; use head warm-up 0")
        return _check_run(self)


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


@dataclasses.dataclass
class MILConfig(ClassificationConfig):
    """Options of a multiple-instance image classifier (``train classification --mil``).

    The fields of :class:`ClassificationConfig` (images are whole images, not
    crops; ``input_size`` is the side they are brought to), plus:

    Attributes
    ----------
    pooling : {"attention", "noisy-and"}
        Gated attention (Ilse et al. 2018) or noisy-AND (Kraus et al. 2016)
        over the locations of the last feature map.
    attention_dim : int
        Channels of the instance embedding (and of the attention network).

    Only ``mode="full"`` exists: every layer trains.

    Examples
    --------
    >>> MILConfig(pooling="noisy-and").validate().pooling
    'noisy-and'
    >>> MILConfig(pooling="max").validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: unknown MIL pooling 'max'; choose one of 'attention', 'noisy-and'
    """

    pooling: str = "attention"
    attention_dim: int = 64
    batch_size: int = 16

    tunable: ClassVar[dict[str, str]] = {
        **{k: v for k, v in ClassificationConfig.tunable.items() if k != "mode"},
        "pooling": "attention or noisy-and",
    }

    def validate(self) -> MILConfig:
        """Check and normalise every field; one-line :class:`DlcbError` naming the option."""
        super().validate()
        if self.mode != "full":
            raise DlcbError(
                "a MIL classifier trains every layer (mode 'full'); quick mode needs crops of cells"
            )
        if self.head_warmup:
            raise DlcbError("a MIL classifier has no linear head to warm up; use head warm-up 0")
        self.pooling = str(self.pooling).strip().lower().replace("_", "-")
        check_choice("MIL pooling", self.pooling, ("attention", "noisy-and"))
        self.attention_dim = check_int("attention dim", self.attention_dim, low=2, high=1024)
        return self


@dataclasses.dataclass
class PretrainConfig(TaskConfig):
    """Options of denoising-autoencoder pretraining on unlabelled crops or images.

    Attributes
    ----------
    base : str
        The encoder to start from: ``"none"`` (a new one), ``"builtin"`` or a
        saved classifier folder.
    input_size : int or None
        Crop side; None: the images' common side, else the base's.
    width, blocks
        Size of a new encoder (``base="none"``).
    noise : float
        Standard deviation of the Gaussian noise added to the normalised input.
    mask_fraction : float
        Share of ``mask_patch`` x ``mask_patch`` squares hidden (set to 0).
    mask_patch : int
        Side of the hidden squares in pixels.
    decoder : {"pooled", "maps"}
        Reconstruct from the globally pooled features (the vector the
        classifier's head reads, so pretraining makes *it* summarise the
        crop; for crops centred on their object) or from the last feature
        maps (keeps positions; for off-centre content). See
        :class:`~napari_dlcb.models.autoencoder.CellAutoencoder`.
    augment : bool
        A random rotation/flip of every crop each time it is seen.
    val_fraction : float
        Share of the images held out to score the reconstruction (0: none).
    epochs, lr, batch_size, weight_decay, early_stopping, seed, device
        As in :class:`ClassificationConfig` (``early_stopping`` None: 5 epochs).

    Examples
    --------
    >>> PretrainConfig(noise=0.1).validate().noise
    0.1
    >>> PretrainConfig(mask_fraction=1.0).validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: mask fraction must be a fraction in [0, 1), got 1.0
    """

    base: str = "none"
    input_size: int | None = None
    width: int = 32
    blocks: tuple[int, ...] = (2, 2, 2)
    noise: float = 0.2
    mask_fraction: float = 0.4
    mask_patch: int = 4
    decoder: str = "pooled"
    augment: bool = True
    val_fraction: float = 0.1
    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    early_stopping: int | None = None
    seed: int = 0
    device: str = "auto"

    tunable: ClassVar[dict[str, str]] = {
        "lr": "learning rate (log scale, 1e-4 to 1e-1)",
        "noise": "standard deviation of the input noise",
        "mask_fraction": "share of the input hidden",
        "batch_size": "crops per optimisation step",
    }

    def validate(self) -> PretrainConfig:
        """Check and normalise every field; one-line :class:`DlcbError` naming the option."""
        self.base = "none" if self.base is None else str(self.base)
        if self.input_size is not None:
            self.input_size = check_int("input size", self.input_size, low=8, high=1024)
        _check_network(self)
        self.noise = check_positive("noise", self.noise, high=10.0, allow_zero=True)
        self.mask_fraction = check_fraction("mask fraction", self.mask_fraction)
        self.mask_patch = check_int("mask patch", self.mask_patch, low=1, high=256)
        self.decoder = str(self.decoder).strip().lower()
        check_choice("autoencoder decoder", self.decoder, DECODERS)
        if self.noise == 0 and self.mask_fraction == 0:
            raise DlcbError("noise and mask fraction are both 0: a denoising autoencoder needs one")
        self.augment = bool(self.augment)
        self.val_fraction = check_fraction("validation fraction", self.val_fraction)
        self.epochs = check_int("epochs", self.epochs, high=100_000)
        self.lr = check_positive("learning rate", self.lr, high=10.0)
        return _check_run(self)
