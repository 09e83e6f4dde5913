"""Every option of the segmentation task, validated in one place.

The CLI (``napari-dlcb train segmentation``) and the Segmentation dock both
build a :class:`SegmentationConfig`; a bad value gets the same one-line
:class:`~napari_dlcb.errors.DlcbError` in both. Importing this module is cheap
(no torch), so the dock can build a config on the GUI thread.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar

from napari_dlcb.data.labels import LABEL_KINDS
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import (
    TaskConfig,
    check_choice,
    check_fraction,
    check_int,
    check_positive,
)
from napari_dlcb.tasks.segmentation.live import LIVE_SALIENCY, PREVIEW_SHARE

__all__ = [
    "FULL_LR_FACTOR",
    "FULL_PATCH",
    "QUICK_EPOCH_SECONDS",
    "QUICK_LR_FACTOR",
    "QUICK_PATCH",
    "SegmentationConfig",
    "config_and_start",
]

#: quick mode: an epoch ends after this many seconds (at least one step), so the
#: learning curve gets a point every few seconds on any CPU
QUICK_EPOCH_SECONDS = 3.0
#: default patch side: small in quick mode (one decoder step ~0.2-0.8 s on 2 CPU
#: cores, so Stop and the live overlay stay prompt), larger when every layer trains
QUICK_PATCH = 128
FULL_PATCH = 256
#: default learning-rate factor of pretrained layers: slow when a few strokes train the
#: decoder (quick), none when dense labels train every layer (full; benchmarks/RESULTS.md)
QUICK_LR_FACTOR = 0.1
FULL_LR_FACTOR = 1.0
#: the built-in U-Net halves the resolution four times
PATCH_MULTIPLE = 16
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _optional(name: str, value: Any, check: Any, **kw: Any) -> Any:
    return None if value is None else check(name, value, **kw)


@dataclasses.dataclass
class SegmentationConfig(TaskConfig):
    """Options of :class:`~napari_dlcb.tasks.segmentation.SegmentationTask`.

    Parameters
    ----------
    label_kind : {"scribbles", "classes", "instances"}
        How the label images are read (see :mod:`napari_dlcb.data.labels`).
    base : str
        "builtin", "builtin:<name>", "scratch", a saved model folder or a
        BioImage.IO package.
    mode : {"quick", "full"}
        Train the decoder on cached encoder features, or every layer
        ("linear" is accepted for "quick").
    channel_axis : int, optional
        Channel axis of multichannel images.
    val_fraction : float
        Share held out for validation: whole images (3 or more images), else
        whole painted strokes (scribbles) or 64-px blocks of annotation.
    patch_size : int, optional
        Training patch side, 32-2048, a multiple of 16 (default 128 in quick
        mode, 256 in full mode).
    augment : bool
        Flips, rotations, scale and intensity jitter (full mode).
    seed : int
        Makes the split, the patches and the weights reproducible.
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    scribble_instances : bool
        Scribbles with one object class on an instance model keep its
        background / interior / boundary head (the result stays instances).
    epochs : int
        Most epochs to train.
    lr : float
        Learning rate of new layers (and of every layer of a scratch model).
    pretrained_lr_factor : float, optional
        Pretrained layers train at ``lr`` times this, in (0, 1]. Default (None):
        0.1 in quick mode, so a few strokes adjust what the model knew rather
        than overwrite it; 1 in full mode, where dense labels retrain every layer
        (ISBI 2012, 15 minutes: pixel error 0.081 with 1, 0.090 with 0.1).
    batch_size : int
        Patches per optimisation step.
    samples_per_epoch : int, optional
        Patches per epoch (default 16 x batch size quick, 8 x full).
    epoch_seconds : float, optional
        End each epoch after this many seconds (default 3 s in quick mode,
        whole epochs in full mode).
    early_stopping : int, optional
        Stop after this many epochs without a better validation score.
    max_time : float, optional
        Wall-clock budget in seconds.
    distill : float
        Weight of keeping the starting model's predictions where nothing is
        painted (quick mode, pretrained head; 0 turns it off). On the StarDist
        nuclei with 18 correct strokes, 40 steps: weight 3 kept foreground IoU
        at 0.855-0.856 (untouched: 0.857) and AP50 at 0.73-0.74 for three stroke
        seeds; weight 1 gave 0.849-0.855, weight 0 lost 0.1 AP50.
    preview_interval : float
        Fewest seconds between two live overlays; ``math.inf``: none at all.
    preview_share : float
        Largest share of the training thread's time the live overlay takes.
    live_saliency : str, optional
        A method of ``LIVE_SALIENCY`` to explain the viewport live, or None.

    Examples
    --------
    >>> cfg = SegmentationConfig(mode="linear").validate()
    >>> cfg.mode, cfg.patch, cfg.epoch_limit
    ('quick', 128, 3.0)
    >>> SegmentationConfig(epochs=0).validate()
    Traceback (most recent call last):
    ...
    napari_dlcb.errors.DlcbError: epochs must be from 1 to 100000, got 0
    """

    label_kind: str = "scribbles"
    base: str = "builtin"
    mode: str = "quick"
    channel_axis: int | None = None
    val_fraction: float = 0.2
    patch_size: int | None = None
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    scribble_instances: bool = True
    epochs: int = 30
    lr: float = 1e-3
    pretrained_lr_factor: float | None = None
    batch_size: int = 4
    samples_per_epoch: int | None = None
    epoch_seconds: float | None = None
    early_stopping: int | None = 15
    max_time: float | None = None
    distill: float = 3.0
    preview_interval: float = 1.0
    preview_share: float = PREVIEW_SHARE
    live_saliency: str | None = None

    tunable: ClassVar[dict[str, str]] = {
        "lr": "learning rate of new layers (log scale, 1e-5 to 1e-2)",
        "pretrained_lr_factor": "learning-rate factor of pretrained layers (0.01 to 1)",
        "batch_size": "patches per step (1 to 16)",
        "patch_size": "patch side (64 to 512, multiple of 16)",
        "distill": "weight of keeping the base model's predictions (0 to 10)",
        "augment": "augmentation on/off",
    }

    #: the options of ``fit`` (the rest describe the data and the model)
    FIT_FIELDS: ClassVar[tuple[str, ...]] = (
        "epochs",
        "lr",
        "pretrained_lr_factor",
        "batch_size",
        "samples_per_epoch",
        "epoch_seconds",
        "early_stopping",
        "max_time",
        "distill",
        "preview_interval",
        "preview_share",
        "live_saliency",
    )

    def validate(self) -> SegmentationConfig:
        """Check and normalise every field; one-line :class:`DlcbError` otherwise."""
        from napari_dlcb.training.frozen import check_mode

        self.label_kind = check_choice("label kind", self.label_kind, LABEL_KINDS)
        if not isinstance(self.base, str) or not self.base.strip():
            raise DlcbError("base must be 'builtin', 'scratch', a model folder or a package")
        self.mode = check_mode(self.mode)
        if self.channel_axis is not None:
            self.channel_axis = check_int("channel_axis", self.channel_axis, low=-4, high=3)
        self.val_fraction = check_fraction("val_fraction", self.val_fraction)
        self._check_patch()
        self.augment, self.scribble_instances = bool(self.augment), bool(self.scribble_instances)
        self.seed = check_int("seed", self.seed, low=0)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device.strip()):
            raise DlcbError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        self._check_fit()
        return self

    def _check_patch(self) -> None:
        if self.patch_size is None:
            return
        p = check_int("patch_size", self.patch_size, low=32, high=2048)
        if p % PATCH_MULTIPLE:
            raise DlcbError(f"patch_size must be a multiple of {PATCH_MULTIPLE}, got {p}")
        self.patch_size = p

    def _check_fit(self) -> None:
        self.epochs = check_int("epochs", self.epochs, low=1, high=100_000)
        self.lr = check_positive("lr", self.lr, high=10.0)
        self.pretrained_lr_factor = _optional(
            "pretrained_lr_factor", self.pretrained_lr_factor, check_positive, high=1.0
        )
        self.batch_size = check_int("batch_size", self.batch_size, low=1, high=4096)
        self.samples_per_epoch = _optional("samples_per_epoch", self.samples_per_epoch, check_int)
        self.epoch_seconds = _optional("epoch_seconds", self.epoch_seconds, check_positive)
        self.early_stopping = _optional("early_stopping", self.early_stopping, check_int)
        self.max_time = _optional("max_time", self.max_time, check_positive)
        self.distill = check_positive("distill", self.distill, allow_zero=True, high=100.0)
        if self.preview_interval != math.inf:  # inf: no live previews (CLI, tuning trials)
            self.preview_interval = check_positive(
                "preview_interval", self.preview_interval, allow_zero=True
            )
        self.preview_share = check_positive("preview_share", self.preview_share, high=1.0)
        if self.live_saliency in ("", "off", "none"):
            self.live_saliency = None
        if self.live_saliency is not None and self.live_saliency not in LIVE_SALIENCY:
            raise DlcbError(
                f"unknown live saliency method {self.live_saliency!r}; choose one of "
                + ", ".join(LIVE_SALIENCY)
            )

    # ------------------------------------------------------------------ resolved values
    @property
    def quick(self) -> bool:
        """Whether the encoder is frozen (quick mode)."""
        return self.mode == "quick"

    @property
    def patch(self) -> int:
        """The patch side in use (``patch_size`` or the mode's default)."""
        if self.patch_size is not None:
            return int(self.patch_size)
        return QUICK_PATCH if self.quick else FULL_PATCH

    @property
    def lr_factor(self) -> float:
        """Learning-rate factor of pretrained layers in use (``pretrained_lr_factor`` or the mode's)."""
        if self.pretrained_lr_factor is not None:
            return float(self.pretrained_lr_factor)
        return QUICK_LR_FACTOR if self.quick else FULL_LR_FACTOR

    @property
    def epoch_limit(self) -> float | None:
        """Seconds per epoch in use (``epoch_seconds`` or the mode's default)."""
        if self.epoch_seconds is not None:
            return float(self.epoch_seconds)
        return QUICK_EPOCH_SECONDS if self.quick else None

    @property
    def samples(self) -> int:
        """Patches per epoch in use."""
        if self.samples_per_epoch is not None:
            return int(self.samples_per_epoch)
        return self.batch_size * (16 if self.quick else 8)

    def fit_options(self) -> dict[str, Any]:
        """The fields that ``fit`` may override, as a dict."""
        return {k: getattr(self, k) for k in self.FIT_FIELDS}


def config_and_start(
    config: SegmentationConfig | None, options: dict[str, Any]
) -> tuple[SegmentationConfig, Any]:
    """The validated config and an in-memory ``(model, meta)`` start, if given.

    Parameters
    ----------
    config : SegmentationConfig or None
        The base config (defaults when None).
    options : dict
        Field overrides; a ``base`` given as a ``(model, meta)`` tuple is
        popped and returned as the start, and recorded by its parent name.

    Returns
    -------
    tuple
        ``(config, start)``; ``start`` is None unless an in-memory model was given.
    """
    start = None
    if isinstance(options.get("base"), tuple):
        start = options.pop("base")
        options["base"] = getattr(start[1], "parent", None) or "in-memory"
    cfg = config if config is not None else SegmentationConfig()
    return cfg.replace(**options), start  # a validated copy
