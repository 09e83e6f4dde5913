"""Train a crop classifier: images + class indices -> datasets -> ``fit``.

This is what ``napari-dlcb train classification`` (an ImageFolder) and the
cell classifier (:mod:`~napari_dlcb.tasks.cells`) call. It turns a list of
images of any size and channel count into a fixed-size, normalised tensor
(statistics from the training images only), splits off a stratified
validation set, handles class imbalance, augments, and runs the shared
training engine in one of the two modes of :mod:`~napari_dlcb.training.frozen`:

``"full"``
    Fine-tune every layer of the (pretrained) :class:`~napari_dlcb.models.classifier.CellClassifier`.
``"quick"`` (earlier name ``"linear"``)
    Use the pretrained network as a frozen feature extractor and train only
    its linear head on cached features of the 8 dihedral copies of every
    crop: seconds on a CPU.

The options are one :class:`ClassificationConfig`, built alike by the CLI and
by Python callers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dlcb.data.crops import (
    CropDataset,
    common_side,
    dihedral_views,
    most_common_channels,
    prepare_images,
    stratified_split,
)
from napari_dlcb.data.normalize import Normalizer
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.classify import predict_crops
from napari_dlcb.models.classifier import load_base
from napari_dlcb.tasks.base import LiveBudget, Task
from napari_dlcb.tasks.classification_config import ClassificationConfig
from napari_dlcb.training.engine import fit
from napari_dlcb.training.events import Finished, TrainEvent
from napari_dlcb.training.frozen import QUICK, cached_features, frozen_except
from napari_dlcb.training.metrics import classification_metrics, confusion_matrix

__all__ = ["ClassificationConfig", "ClassificationTrainer", "with_extra"]


def with_extra(
    preview: Callable[[nn.Module], dict[str, Any]] | None,
    extra: Callable[[], dict[str, Any] | None] | None,
) -> Callable[[nn.Module], dict[str, Any] | None] | None:
    """An engine preview that adds ``extra()``'s items to ``preview``'s (None: neither)."""
    if extra is None:
        return preview

    def combined(net: nn.Module) -> dict[str, Any] | None:
        out = dict((preview(net) if preview is not None else None) or {})
        out.update(extra() or {})
        return out or None

    return combined


#: the live confusion matrix takes at most this share of the training thread's time
#: (it predicts the whole validation set: unbudgeted, a third of a BloodMNIST epoch)
CONFUSION_SHARE = 0.2


def budgeted(
    view: Callable[[nn.Module], dict[str, Any]], share: float = CONFUSION_SHARE
) -> Callable[[nn.Module], dict[str, Any] | None]:
    """``view`` run only when its :class:`~napari_dlcb.tasks.base.LiveBudget` allows (else None)."""
    budget = LiveBudget(share)

    def run(net: nn.Module) -> dict[str, Any] | None:
        if not budget.due():
            return None
        with budget.spend():
            return view(net)

    return run


def _check_labels(labels: np.ndarray, classes: list[str], n_images: int) -> None:
    if n_images != len(labels):
        raise DlcbError(f"{n_images} images but {len(labels)} labels")
    if len(classes) < 2:
        raise DlcbError(
            f"a classifier needs at least 2 classes, got {len(classes)}"
            + (f" ({classes[0]!r})" if classes else "")
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DlcbError("a label is outside the class list")
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DlcbError(f"class {empty[0]!r} has no images; every class needs at least one")


class ClassificationTrainer(Task):
    """Fine-tune a crop classifier; the one call behind the CLI and the cell classifier.

    Parameters
    ----------
    images : sequence of ndarray
        Training crops (any size/channels; see :func:`~napari_dlcb.data.crops.prepare_images`).
    labels : sequence of int
        Class index of each image.
    classes : sequence of str
        Class names; index = output channel. Every class needs an image.
    config : ClassificationConfig, optional
        The options (default :class:`ClassificationConfig`).
    val_images, val_labels : optional
        An explicit validation set instead of ``config.val_fraction``.
    channel_axis : int, optional
        Channel axis of 3-D images.
    **options
        Fields of :class:`ClassificationConfig` that replace ``config``'s.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ims = [rng.random((16, 16)) + (i % 2) for i in range(20)]
    >>> tr = ClassificationTrainer(ims, [i % 2 for i in range(20)], ["a", "b"], base="none",
    ...                            device="cpu")
    >>> fin = tr.run(epochs=2)
    >>> tr.predict(ims[:3]).shape
    (3, 2)
    """

    kind: ClassVar[str] = "classification"

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        classes: Sequence[str],
        *,
        config: ClassificationConfig | None = None,
        val_images: Sequence[np.ndarray] | None = None,
        val_labels: Sequence[int] | None = None,
        channel_axis: int | None = None,
        **options: Any,
    ) -> None:
        cfg = config if config is not None else ClassificationConfig()
        self.config = cfg.replace(**options)
        self.classes = [str(c) for c in classes]
        labels = np.asarray(labels, np.int64)
        _check_labels(labels, self.classes, len(images))
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.channel_axis = channel_axis
        in_ch = most_common_channels(images, channel_axis)
        self.model, self.parent, info = self._build_model(in_ch)
        self.encoder_only_base = bool(info.get("encoder_only"))
        size = cfg.input_size
        if size is None:
            size = common_side(images, channel_axis, info.get("input_size"))
        prep = prepare_images(images, size=size, channels=in_ch, channel_axis=channel_axis)
        self.notes = list(prep.notes)
        self.input_size = int(prep.data.shape[-1])
        self._split(prep.data, labels, val_images, val_labels, in_ch)
        self.history: list[dict[str, float]] = []
        self.finished: Finished | None = None
        # the list ``record_run`` appends to (``meta`` is rebuilt from the current state)
        self._runs: list[dict[str, Any]] = []

    def _build_model(self, in_channels: int) -> tuple[nn.Module, str | None, dict[str, Any]]:
        """The network to train, what to record as its parent, and the base's info."""
        cfg = self.config
        return load_base(
            cfg.base,
            in_channels=in_channels,
            n_classes=len(self.classes),
            width=cfg.width,
            blocks=cfg.blocks,
            seed=cfg.seed,
        )

    def _split(
        self,
        x: np.ndarray,
        y: np.ndarray,
        val_images: Sequence[np.ndarray] | None,
        val_labels: Sequence[int] | None,
        in_ch: int,
    ) -> None:
        """Hold out validation crops, fit the normaliser on the training crops only."""
        cfg = self.config
        if val_images is not None:
            vprep = prepare_images(
                val_images, size=self.input_size, channels=in_ch, channel_axis=self.channel_axis
            )
            self.notes += [f"validation: {n}" for n in vprep.notes]
            xt, yt, xv, yv = x, y, vprep.data, np.asarray(val_labels, np.int64)
        elif cfg.val_fraction > 0:
            mask = stratified_split(
                y, len(self.classes), cfg.val_fraction, np.random.default_rng(cfg.seed)
            )
            xt, yt, xv, yv = x[~mask], y[~mask], x[mask], y[mask]
        else:
            xt, yt, xv, yv = x, y, x[:0], y[:0]
        self.normalizer = Normalizer.fit(list(xt), mode="zscore", channel_axis=0)
        self.x_train, self.y_train = self.normalise(xt), yt
        self.x_val, self.y_val = self.normalise(xv), yv

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Crops (N, C, S, S) normalised with the training statistics."""
        if not len(x):
            return x
        return np.stack([self.normalizer(im, channel_axis=0) for im in x])

    # -- training -------------------------------------------------------------------------
    def _class_weights(self) -> torch.Tensor:
        counts = np.bincount(self.y_train, minlength=len(self.classes)).astype(np.float64)
        w = counts.sum() / (len(self.classes) * np.maximum(counts, 1))
        return torch.tensor(w, dtype=torch.float32)

    def _loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        weights = self._class_weights() if self.config.balance == "loss" else None

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            w = weights.to(logits.device) if weights is not None else None
            return F.cross_entropy(logits, target, weight=w, label_smoothing=0.05)

        return loss_fn

    def _sampler(self, y: np.ndarray) -> torch.utils.data.Sampler | None:
        if self.config.balance != "sampler":
            return None
        cw = self._class_weights().numpy()
        return torch.utils.data.WeightedRandomSampler(
            torch.tensor(cw[y], dtype=torch.double),
            num_samples=len(y),
            replacement=True,
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def _confusion(self, model: nn.Module) -> dict[str, Any]:
        probs = predict_crops(model, self.x_val, device=self.device)
        cm = confusion_matrix(self.y_val, probs.argmax(1), len(self.classes))
        return {"confusion": cm, "classes": list(self.classes)}

    def fit(
        self,
        *,
        stop: Any = None,
        epochs: int | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
        weight_decay: float | None = None,
        preview_interval: float = 1.0,
        max_time: float | None = None,
        preview_extra: Callable[[], dict[str, Any] | None] | None = None,
        **engine_options: Any,
    ) -> Iterator[TrainEvent]:
        """Train and yield engine events.

        ``Preview.data`` is ``{"confusion": (K, K) int array on the validation
        set, "classes": [...]}``, at most every ``preview_interval`` seconds.

        Parameters
        ----------
        stop, max_time
            As in :func:`napari_dlcb.training.engine.fit`.
        epochs, lr, batch_size, weight_decay : optional
            Override the config's for this run.
        preview_interval : float
            Seconds between confusion-matrix previews.
        preview_extra : callable, optional
            ``preview_extra() -> dict or None``, called in the training thread
            with every preview, while :attr:`model` holds the current weights (in
            quick mode: the frozen extractor and the current head) in eval
            mode under ``torch.inference_mode``; its items are added to
            ``Preview.data``. Without a validation set the previews carry only
            these items, and a preview without any is not yielded.
        **engine_options
            Passed on to the engine (e.g. ``early_stopping=None`` disables it).

        Yields
        ------
        TrainEvent
        """
        runs = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
        cfg = self.config.replace(**{k: v for k, v in runs.items() if v is not None})
        quick = cfg.mode == QUICK
        has_val = len(self.y_val) > 0
        if cfg.early_stopping is not None:
            engine_options.setdefault("early_stopping", cfg.early_stopping or None)
        common = {
            "loss": self._loss(),
            "metrics": classification_metrics,
            "monitor": "accuracy" if has_val else "val_loss",
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "optimizer": "adamw",
            "lr": cfg.lr or (1e-2 if quick else 2e-3),
            "weight_decay": cfg.weight_decay,
            "device": self.device,
            "seed": cfg.seed,
            "preview_interval": preview_interval,
            "stop": stop,
            "max_time": max_time,
            **engine_options,
        }
        warmup = 0 if quick else self.head_warmup_epochs(cfg)
        events = (
            self._fit_quick(common, preview_extra)
            if quick
            else self._fit_full(common, preview_extra, warmup)
        )
        t0 = time.perf_counter()
        extra = {"head_warmup": warmup} if warmup else {}
        for ev in events:
            if isinstance(ev, Finished):
                self.finished = ev
                self.record_run(ev, seconds=time.perf_counter() - t0, mode=cfg.mode, **extra)
            yield ev

    def head_warmup_epochs(self, cfg: ClassificationConfig | None = None) -> int:
        """Epochs of head-only training before full fine-tuning (``config.head_warmup``).

        None means 30 for an encoder pretrained without labels (its head is
        new and random), else 0.
        """
        cfg = cfg if cfg is not None else self.config
        if cfg.head_warmup is not None:
            return int(cfg.head_warmup)
        has_head = hasattr(self.model, "head") and hasattr(self.model, "features")
        return min(30, int(cfg.epochs)) if self.encoder_only_base and has_head else 0

    def _fit_full(
        self, common: dict[str, Any], preview_extra: Callable[[], Any] | None, warmup: int = 0
    ) -> Iterator[TrainEvent]:
        from napari_dlcb.data.augment import Augment

        if warmup > 0:
            self._warm_up_head(common, warmup)

        aug = (
            Augment(flips=True, rot90=True, scale=(0.85, 1.15), intensity=0.15, noise=0.02)
            if self.config.augment
            else None
        )
        seed = self.config.seed
        train = CropDataset(self.x_train, self.y_train, aug, seed)
        has_val = len(self.y_val) > 0
        val = CropDataset(self.x_val, self.y_val, None, seed) if has_val else None
        for p in self.model.parameters():
            p.requires_grad_(True)
        common.setdefault("early_stopping", max(5, common["epochs"] // 3))
        common.setdefault("lr_patience", 2)
        yield from fit(
            self.model,
            train,
            val,
            sampler=self._sampler(self.y_train),
            preview=with_extra(budgeted(self._confusion) if has_val else None, preview_extra),
            **common,
        )

    def _warm_up_head(self, common: dict[str, Any], epochs: int) -> None:
        """LP-FT's first step: fit the linear head on the frozen backbone's features.

        Quick mode's recipe (cached features of the dihedral views, lr 1e-2),
        run silently: the full fine-tuning that follows reports the progress.
        ``stop`` and ``max_time`` are honoured.
        """
        if not (hasattr(self.model, "head") and hasattr(self.model, "features")):
            raise DlcbError("this model has no linear head to warm up; use head warm-up 0")
        keep = ("loss", "metrics", "monitor", "batch_size", "weight_decay", "device", "seed")
        warm = {k: common[k] for k in keep if k in common}
        warm.update(epochs=epochs, lr=1e-2, early_stopping=None, optimizer="adamw")
        warm.update(stop=common.get("stop"), max_time=common.get("max_time"))
        first = next(self.model.parameters(), None)
        home = first.device if first is not None else None
        t0 = time.perf_counter()
        for _ in self._fit_quick(warm, None):
            pass
        if home is not None:  # the full stage hands the model back where it was
            self.model.to(home)
        if common.get("max_time") is not None:  # one budget for both stages
            common["max_time"] = max(common["max_time"] - (time.perf_counter() - t0), 1.0)

    def _fit_quick(
        self, common: dict[str, Any], preview_extra: Callable[[], Any] | None
    ) -> Iterator[TrainEvent]:
        """Frozen extractor: cache features once, train the linear head on them."""
        model = self.model.to(self.device)

        def features(x: np.ndarray, views: bool) -> torch.Tensor:
            def encode(xb: torch.Tensor) -> torch.Tensor:
                return torch.stack(
                    [model.features(v) for v in (dihedral_views(xb) if views else [xb])], 1
                )

            batches = (
                torch.from_numpy(x[i : i + 256]).to(self.device) for i in range(0, len(x), 256)
            )
            out = cached_features(encode, batches, module=model)
            return torch.cat(out) if out else torch.zeros(0, 8 if views else 1, model.n_features)

        ft = features(self.x_train, self.config.augment)
        yt = np.repeat(self.y_train, ft.shape[1])
        train = torch.utils.data.TensorDataset(
            ft.reshape(-1, model.n_features), torch.from_numpy(yt)
        )
        val = fv = None
        if len(self.y_val):
            fv = features(self.x_val, False)[:, 0]
            val = torch.utils.data.TensorDataset(fv, torch.from_numpy(self.y_val))

        def head_preview(h: nn.Module) -> dict[str, Any]:
            with torch.no_grad():
                pred = h(fv.to(next(h.parameters()).device)).argmax(1).cpu().numpy()
            return {
                "confusion": confusion_matrix(self.y_val, pred, len(self.classes)),
                "classes": list(self.classes),
            }

        common.setdefault("early_stopping", 15)
        with frozen_except(model, model.head):
            # the engine trains (and previews) the head, which is ``model.head``:
            # ``preview_extra`` sees the whole model with the current head
            yield from fit(
                model.head,
                train,
                val,
                sampler=self._sampler(yt),
                preview=with_extra(head_preview if fv is not None else None, preview_extra),
                **common,
            )

    # -- prediction and saving ---------------------------------------------------------------
    def predict(self, images: Sequence[np.ndarray], *, tta: bool = False) -> np.ndarray:
        """Class probabilities (N, K) for new images, preprocessed like the training data."""
        prep = prepare_images(
            images,
            size=self.input_size,
            channels=self.model.in_channels,
            channel_axis=self.channel_axis,
        )
        return predict_crops(self.model, self.normalise(prep.data), device=self.device, tta=tta)

    @property
    def meta(self) -> Any:
        """The :class:`~napari_dlcb.models.saved.ModelMeta` describing the trained model."""
        from napari_dlcb.models.saved import ModelMeta

        counts = np.bincount(self.y_train, minlength=len(self.classes)).tolist()
        return ModelMeta(
            task="classification",
            architecture=self.model.architecture(),
            classes=list(self.classes),
            label_kind="classes",
            normalization=self.normalizer.to_dict(),
            input_axes="bcyx",
            in_channels=int(self.model.in_channels),
            output_activation="softmax",
            parent=self.parent,
            extra={
                "input_size": self.input_size,
                "mode": self.config.mode,
                "train_counts": counts,
                "n_val": int(len(self.y_val)),
                "notes": list(self.notes),
                "history": self.history,
                "best_epoch": self.finished.best_epoch if self.finished else None,
                "training_runs": self._runs,
            },
        )

    def save(self, path: str | Path) -> Path:
        """Write the model directory (metadata, safetensors, TorchScript ``model.pt``)."""
        from napari_dlcb.models.saved import save_model

        self.model.eval()
        example = torch.zeros(1, self.model.in_channels, self.input_size, self.input_size)
        return save_model(self.model.cpu(), path, self.meta, example_input=example)
