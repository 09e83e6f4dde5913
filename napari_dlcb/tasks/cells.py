"""Train a crop classifier: images + class indices -> datasets -> ``fit``.

This is what the classification CLI and the cell-classifier widget call. It
turns a list of images of any size and channel count into a fixed-size,
normalised tensor (statistics from the training images only), splits off a
stratified validation set, handles class imbalance, augments, and runs the
shared training engine in one of two modes:

``"full"``
    Fine-tune every layer of the (pretrained) :class:`CellClassifier`.
``"linear"``
    Use the pretrained network as a frozen feature extractor and train only a
    linear head on cached features of the 8 dihedral copies of every crop:
    seconds on a CPU, the "instant" mode of the cell-classifier widget.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dlcb.data.normalize import Normalizer, to_cyx
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.classifier import CellClassifier, adapt_in_channels
from napari_dlcb.training.engine import fit
from napari_dlcb.training.events import Finished, Preview, TrainEvent

__all__ = [
    "CellClassificationTask",
    "ClassificationTrainer",
    "LIVE_SALIENCY_SHARE",
    "LiveCellSaliency",
    "PreparedImages",
    "confusion_matrix",
    "load_base",
    "predict_proba",
    "prepare_images",
]

BUILTIN_WEIGHTS = (
    Path(__file__).resolve().parents[1] / "models" / "weights" / "cellclf_nuclei.safetensors"
)


#: Largest share of the training thread's time that live per-cell saliency may take
#: (``CellClassificationTask.fit(preview_saliency=...)``). A map that took ``t`` seconds
#: is followed by previews without a map for the next ``t * (1 / share - 1)`` seconds
#: (2 t for 1/3), so training keeps at least two thirds of the time whatever the method,
#: crop size or device; as in :data:`napari_dlcb.tasks.segmentation.LIVE_SALIENCY_SHARE`.
LIVE_SALIENCY_SHARE = 1 / 3


@dataclass(frozen=True)
class LiveCellSaliency:
    """Which cell to explain live while training (``fit(preview_saliency=...)``).

    Parameters
    ----------
    object_id : int
        Label of the object whose crop is explained.
    method : str
        A method of :data:`napari_dlcb.interpret.saliency.METHODS`.
    target : int or str, optional
        Class index or name to explain; None explains the class the current
        weights predict for that cell.
    """

    object_id: int
    method: str = "integrated-gradients"
    target: int | str | None = None


@dataclass
class PreparedImages:
    """Images brought to one size and channel count, shape (N, C, S, S) float32."""

    data: np.ndarray
    notes: list[str] = field(default_factory=list)


def _fit_square(im: np.ndarray, size: int) -> np.ndarray:
    """Scale (C, Y, X) so its longer side is ``size``, then edge-pad to square."""
    from skimage.transform import resize

    c, h, w = im.shape
    if h == size and w == size:
        return im
    f = size / max(h, w)
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if (nh, nw) != (h, w):
        im = resize(im, (c, nh, nw), order=1, anti_aliasing=f < 1, preserve_range=True)
    ph, pw = size - nh, size - nw
    if ph or pw:
        im = np.pad(im, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="edge")
    return im


def prepare_images(
    images: Sequence[np.ndarray],
    *,
    size: int | None = None,
    channels: int | None = None,
    channel_axis: int | None = None,
) -> PreparedImages:
    """Bring images of any size and channel count to one (N, C, S, S) array.

    Parameters
    ----------
    images : sequence of ndarray
        2-D grey images, or RGB(A)/multichannel images (see ``channel_axis``).
    size : int, optional
        Output side length; default the most common longer side.
    channels : int, optional
        Output channel count; default the most common channel count. Grey
        images are repeated to fill extra channels; surplus channels are dropped.
    channel_axis : int, optional
        Channel axis of 3-D images; None guesses (last axis of 3/4 = RGB(A)).

    Returns
    -------
    PreparedImages
        ``data`` (float32, not yet normalised) and ``notes``: one line per
        kind of change made (resizing, padding, channel conversion), for the user.

    Examples
    --------
    >>> import numpy as np
    >>> p = prepare_images([np.zeros((20, 20)), np.zeros((10, 20))], size=20)
    >>> p.data.shape, len(p.notes)
    ((2, 1, 20, 20), 1)
    """
    if len(images) == 0:
        raise DlcbError("there are no images")
    cyx = [to_cyx(im, channel_axis) for im in images]
    counts = Counter(im.shape[0] for im in cyx)
    c_out = int(channels) if channels is not None else counts.most_common(1)[0][0]
    sides = Counter(max(im.shape[1:]) for im in cyx)
    s_out = int(size) if size is not None else sides.most_common(1)[0][0]
    notes: list[str] = []
    n_resized = sum(1 for im in cyx if im.shape[1:] != (s_out, s_out))
    if n_resized:
        notes.append(
            f"{n_resized} of {len(cyx)} images were not {s_out}x{s_out}: resized to a longer "
            f"side of {s_out} px and edge-padded to square"
        )
    n_chan = sum(1 for im in cyx if im.shape[0] != c_out)
    if n_chan:
        notes.append(
            f"{n_chan} of {len(cyx)} images did not have {c_out} channel(s): grey images were "
            "repeated into every channel, extra channels dropped"
        )
    out = np.empty((len(cyx), c_out, s_out, s_out), np.float32)
    for i, im in enumerate(cyx):
        im = im.astype(np.float32, copy=False)
        if im.shape[0] < c_out:
            im = np.concatenate([im] + [im[:1]] * (c_out - im.shape[0]), axis=0)
        out[i] = _fit_square(im[:c_out], s_out)
    return PreparedImages(out, notes)


def load_base(
    base: str | Path | None,
    *,
    in_channels: int,
    n_classes: int,
    width: int = 32,
    blocks: Sequence[int] = (2, 2, 2),
    seed: int = 0,
) -> tuple[CellClassifier, str | None, dict]:
    """Create the network to fine-tune.

    Parameters
    ----------
    base : {"builtin", "none"} or path or None
        ``"builtin"``: the shipped pretrained weights; a path: a saved
        classification model directory; ``"none"``/None: random initialisation.
    in_channels, n_classes : int
        What the new task needs; the first convolution and the head are adapted.
    width : int
        Width of a newly initialised network.
    blocks : sequence of int
        Residual blocks per stage of a newly initialised network.
    seed : int
        Seed of the random initialisation (new networks and new heads), so
        runs are reproducible whatever the global RNG state.

    Returns
    -------
    model : CellClassifier
    parent : str or None
        What to record as ``ModelMeta.parent``.
    info : dict
        ``input_size`` and ``classes`` of the base, where known.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _load_base(
            base, in_channels=in_channels, n_classes=n_classes, width=width, blocks=blocks
        )


def _load_base(
    base: str | Path | None, *, in_channels: int, n_classes: int, width: int, blocks: Sequence[int]
) -> tuple[CellClassifier, str | None, dict]:
    if base is None or str(base).lower() in ("none", "scratch", ""):
        return CellClassifier(in_channels, n_classes, width=width, blocks=tuple(blocks)), None, {}
    if str(base) == "builtin" or str(base).startswith("builtin:"):
        from napari_dlcb.models.registry import load_builtin

        name = str(base).partition(":")[2] or "cellclf-nuclei"
        model, m = load_builtin(name)
        if not isinstance(model, CellClassifier):
            raise DlcbError(f"built-in model {name!r} is not a cell classifier")
        info = {"input_size": m.extra.get("input_size"), "classes": list(m.classes)}
        parent = f"builtin:{name}"
    else:
        from napari_dlcb.models.saved import load_model

        model, m = load_model(base)
        if not isinstance(model, CellClassifier):
            raise DlcbError(f"{base} is not a napari-dlcb cell classifier (task {m.task!r})")
        info = {"input_size": m.extra.get("input_size"), "classes": list(m.classes)}
        parent = str(base)
    adapt_in_channels(model, in_channels)
    if model.n_classes != n_classes:
        model.reset_head(n_classes)
    return model, parent, info


class _CropDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, augment: Any | None, seed: int) -> None:
        self.x, self.y = x, y
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self._dummy = np.zeros(x.shape[-2:], np.int64)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im = self.x[i]
        if self.augment is not None:
            im, _ = self.augment(im, self._dummy, self.rng)
        return torch.from_numpy(np.ascontiguousarray(im, np.float32)), torch.tensor(int(self.y[i]))


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j``.

    Examples
    --------
    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def _metrics(outs: Sequence[torch.Tensor], tgts: Sequence[torch.Tensor]) -> dict[str, float]:
    pred = torch.cat([o.argmax(1) for o in outs]).numpy()
    true = torch.cat(list(tgts)).numpy()
    k = int(outs[0].shape[1])
    cm = confusion_matrix(true, pred, k)
    per_class = np.diag(cm) / np.maximum(cm.sum(1), 1)
    present = cm.sum(1) > 0
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "balanced_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
    }


class ClassificationTrainer:
    """Fine-tune a crop classifier; the one call behind the CLI and the widget.

    Parameters
    ----------
    images : sequence of ndarray
        Training crops (any size/channels; see :func:`prepare_images`).
    labels : sequence of int
        Class index of each image.
    classes : sequence of str
        Class names; index = output channel. Every class needs an image.
    base : str or path or None
        ``"builtin"`` (default), a saved model directory, or ``"none"``.
    mode : {"full", "linear"}
        Fine-tune everything, or train a linear head on frozen features.
    input_size : int, optional
        Crop side length; default the images' most common size.
    val_fraction : float
        Stratified share held out for validation (at least one per class
        where a class has 2+ images); 0 disables.
    val_images, val_labels : optional
        An explicit validation set instead of ``val_fraction``.
    augment : bool
        Random flips, 90-degree rotations, zoom and intensity jitter.
    balance : {"loss", "sampler", None}
        Class-imbalance handling: inverse-frequency loss weights, a weighted
        random sampler, or nothing.
    channel_axis : int, optional
        Channel axis of 3-D images.
    width, blocks
        Size of a newly initialised network (``base="none"``).
    seed : int
        Seeds the split, the augmentation and the engine.
    device : str
        "auto", "cpu" or "cuda".

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ims = [rng.random((16, 16)) + (i % 2) for i in range(20)]
    >>> tr = ClassificationTrainer(ims, [i % 2 for i in range(20)], ["a", "b"], base="none",
    ...                            device="cpu")
    >>> fin = tr.run(epochs=2)
    >>> tr.predict(ims[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        classes: Sequence[str],
        *,
        base: str | Path | None = "builtin",
        mode: str = "full",
        input_size: int | None = None,
        val_fraction: float = 0.15,
        val_images: Sequence[np.ndarray] | None = None,
        val_labels: Sequence[int] | None = None,
        augment: bool = True,
        balance: str | None = "loss",
        channel_axis: int | None = None,
        width: int = 32,
        blocks: Sequence[int] = (2, 2, 2),
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        if mode not in ("full", "linear"):
            raise DlcbError(f"unknown training mode {mode!r}; use 'full' or 'linear'")
        if balance not in ("loss", "sampler", None):
            raise DlcbError(f"unknown class balancing {balance!r}; use 'loss', 'sampler' or None")
        classes = [str(c) for c in classes]
        labels = np.asarray(labels, np.int64)
        if len(images) != len(labels):
            raise DlcbError(f"{len(images)} images but {len(labels)} labels")
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
        self.classes = classes
        self.mode = mode
        self.balance = balance
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.channel_axis = channel_axis
        cyx_ch = Counter(to_cyx(im, channel_axis).shape[0] for im in images)
        in_ch = cyx_ch.most_common(1)[0][0]
        self.model, self.parent, info = load_base(
            base,
            in_channels=in_ch,
            n_classes=len(classes),
            width=width,
            blocks=blocks,
            seed=self.seed,
        )
        if input_size is None:
            sides = Counter(max(to_cyx(im, channel_axis).shape[1:]) for im in images)
            input_size = sides.most_common(1)[0][0] if len(sides) == 1 else info.get("input_size")
        prep = prepare_images(images, size=input_size, channels=in_ch, channel_axis=channel_axis)
        self.notes = list(prep.notes)
        self.input_size = int(prep.data.shape[-1])
        x, y = prep.data, labels
        rng = np.random.default_rng(self.seed)
        if val_images is not None:
            vprep = prepare_images(
                val_images, size=self.input_size, channels=in_ch, channel_axis=channel_axis
            )
            self.notes += [f"validation: {n}" for n in vprep.notes]
            xv, yv = vprep.data, np.asarray(val_labels, np.int64)
            xt, yt = x, y
        elif val_fraction > 0:
            val_idx = []
            for k in range(len(classes)):
                idx = np.flatnonzero(y == k)
                n_val = int(round(val_fraction * len(idx)))
                if len(idx) >= 2:
                    n_val = min(max(n_val, 1), len(idx) - 1)
                else:
                    n_val = 0
                val_idx += list(rng.permutation(idx)[:n_val])
            mask = np.zeros(len(y), bool)
            mask[np.asarray(val_idx, int)] = True
            xt, yt, xv, yv = x[~mask], y[~mask], x[mask], y[mask]
        else:
            xt, yt, xv, yv = x, y, x[:0], y[:0]
        self.normalizer = Normalizer.fit(list(xt), mode="zscore", channel_axis=0)
        self._norm = lambda a: (
            np.stack([self.normalizer(im, channel_axis=0) for im in a]) if len(a) else a
        )
        self.x_train, self.y_train = self._norm(xt), yt
        self.x_val, self.y_val = self._norm(xv), yv
        self.augment = augment
        self.history: list[dict[str, float]] = []
        self.finished: Finished | None = None

    # -- training -------------------------------------------------------------------------
    def _class_weights(self) -> torch.Tensor:
        counts = np.bincount(self.y_train, minlength=len(self.classes)).astype(np.float64)
        w = counts.sum() / (len(self.classes) * np.maximum(counts, 1))
        return torch.tensor(w, dtype=torch.float32)

    def _confusion(self, model: nn.Module) -> dict[str, Any]:
        probs = (
            self._predict_normalised(model, self.x_val)
            if len(self.x_val)
            else np.zeros((0, len(self.classes)))
        )
        cm = confusion_matrix(self.y_val, probs.argmax(1) if len(probs) else [], len(self.classes))
        return {"confusion": cm, "classes": list(self.classes)}

    def fit(
        self,
        *,
        epochs: int = 30,
        lr: float | None = None,
        batch_size: int = 64,
        weight_decay: float = 1e-4,
        stop: Any = None,
        preview_interval: float = 1.0,
        max_time: float | None = None,
        preview_extra: Callable[[], dict[str, Any] | None] | None = None,
        **fit_kwargs: Any,
    ) -> Iterator[TrainEvent]:
        """Train and yield engine events.

        ``Preview.data`` is ``{"confusion": (K, K) int array on the validation
        set, "classes": [...]}``, at most every ``preview_interval`` seconds.

        Parameters
        ----------
        epochs, lr, batch_size, weight_decay, stop, max_time
            As in :func:`napari_dlcb.training.engine.fit`; ``lr`` defaults to
            1e-3 (full) or 1e-2 (linear).
        preview_interval : float
            Seconds between confusion-matrix previews.
        preview_extra : callable, optional
            ``preview_extra() -> dict or None``, called in the training thread
            with every preview, while :attr:`model` holds the current weights (in
            "linear" mode: the frozen extractor and the current head) in eval
            mode under ``torch.inference_mode``; its items are added to
            ``Preview.data``. Without a validation set the previews carry only
            these items, and a preview without any is not yielded.
        **fit_kwargs
            Passed on to the engine.

        Yields
        ------
        TrainEvent
        """
        weights = self._class_weights() if self.balance == "loss" else None

        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            w = weights.to(logits.device) if weights is not None else None
            return F.cross_entropy(logits, target, weight=w, label_smoothing=0.05)

        sampler = None
        if self.balance == "sampler":
            cw = self._class_weights().numpy()
            sampler = torch.utils.data.WeightedRandomSampler(
                torch.tensor(cw[self.y_train], dtype=torch.double),
                num_samples=len(self.y_train),
                replacement=True,
                generator=torch.Generator().manual_seed(self.seed),
            )
        has_val = len(self.y_val) > 0
        monitor = "accuracy" if has_val else "val_loss"
        preview = _with_extra(self._confusion if has_val else None, preview_extra)
        if self.mode == "linear":
            yield from self._fit_linear(
                loss_fn,
                sampler,
                monitor,
                preview_extra,
                epochs=epochs,
                lr=lr or 1e-2,
                batch_size=batch_size,
                weight_decay=weight_decay,
                stop=stop,
                preview_interval=preview_interval,
                max_time=max_time,
                **fit_kwargs,
            )
            return
        from napari_dlcb.data.augment import Augment

        aug = (
            Augment(flips=True, rot90=True, scale=(0.85, 1.15), intensity=0.15, noise=0.02)
            if self.augment
            else None
        )
        train = _CropDataset(self.x_train, self.y_train, aug, self.seed)
        val = _CropDataset(self.x_val, self.y_val, None, self.seed) if has_val else None
        for p in self.model.parameters():
            p.requires_grad_(True)
        fit_kwargs.setdefault("early_stopping", max(5, epochs // 3))
        fit_kwargs.setdefault("lr_patience", 2)
        for ev in fit(
            self.model,
            train,
            val,
            loss=loss_fn,
            metrics=_metrics,
            monitor=monitor,
            epochs=epochs,
            batch_size=batch_size,
            optimizer="adamw",
            lr=lr or 2e-3,
            weight_decay=weight_decay,
            device=self.device,
            seed=self.seed,
            sampler=sampler,
            preview=preview,
            preview_interval=preview_interval,
            stop=stop,
            max_time=max_time,
            **fit_kwargs,
        ):
            self._record(ev)
            yield ev

    def _fit_linear(self, loss_fn, sampler, monitor, preview_extra, **kw) -> Iterator[TrainEvent]:
        model = self.model.to(self.device).eval()
        with torch.no_grad():

            def feats(x: np.ndarray, tta: bool) -> torch.Tensor:
                out = []
                for i in range(0, len(x), 256):
                    xb = torch.from_numpy(x[i : i + 256]).to(self.device)
                    views = _dihedral(xb) if tta else [xb]
                    out.append(torch.stack([model.features(v) for v in views], 1).cpu())
                return torch.cat(out) if out else torch.zeros(0, 8 if tta else 1, model.n_features)

            ft = feats(self.x_train, self.augment)
            n_views = ft.shape[1]
            ft = ft.reshape(-1, model.n_features)
            yt = torch.from_numpy(np.repeat(self.y_train, n_views))
            fv = feats(self.x_val, False)[:, 0] if len(self.y_val) else None
        if sampler is not None:
            cw = self._class_weights().numpy()
            sampler = torch.utils.data.WeightedRandomSampler(
                torch.tensor(cw[yt.numpy()], dtype=torch.double),
                num_samples=len(yt),
                replacement=True,
                generator=torch.Generator().manual_seed(self.seed),
            )
        head = model.head
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        train = torch.utils.data.TensorDataset(ft, yt)
        val = (
            torch.utils.data.TensorDataset(fv, torch.from_numpy(self.y_val))
            if fv is not None
            else None
        )

        def head_preview(h: nn.Module) -> dict[str, Any]:
            with torch.no_grad():
                pred = h(fv.to(next(h.parameters()).device)).argmax(1).cpu().numpy()
            return {
                "confusion": confusion_matrix(self.y_val, pred, len(self.classes)),
                "classes": list(self.classes),
            }

        kw.setdefault("early_stopping", 15)
        try:
            for ev in fit(
                head,
                train,
                val,
                loss=loss_fn,
                metrics=_metrics,
                monitor=monitor,
                optimizer="adamw",
                device=self.device,
                seed=self.seed,
                sampler=sampler,
                # the engine trains (and previews) the head, which is ``model.head``:
                # ``preview_extra`` sees the whole model with the current head
                preview=_with_extra(head_preview if fv is not None else None, preview_extra),
                **kw,
            ):
                self._record(ev)
                yield ev
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    def _record(self, ev: TrainEvent) -> None:
        from napari_dlcb.training.events import EpochEnd

        if isinstance(ev, EpochEnd):
            self.history.append(
                {
                    "epoch": ev.epoch,
                    "train_loss": ev.train_loss,
                    "val_loss": ev.val_loss,
                    **ev.metrics,
                }
            )
        elif isinstance(ev, Finished):
            self.finished = ev

    def run(self, **kwargs: Any) -> Finished:
        """Train to the end without a GUI; returns the ``Finished`` event."""
        from napari_dlcb.training.engine import fit_to_end

        return fit_to_end(self.fit(**kwargs))

    # -- prediction and saving ---------------------------------------------------------------
    def _predict_normalised(
        self, model: nn.Module, x: np.ndarray, *, tta: bool = False
    ) -> np.ndarray:
        return _predict(model, x, device=self.device, tta=tta)

    def predict(self, images: Sequence[np.ndarray], *, tta: bool = False) -> np.ndarray:
        """Class probabilities (N, K) for new images, preprocessed like the training data."""
        prep = prepare_images(
            images,
            size=self.input_size,
            channels=self.model.in_channels,
            channel_axis=self.channel_axis,
        )
        return _predict(self.model, self._norm(prep.data), device=self.device, tta=tta)

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
                "mode": self.mode,
                "train_counts": counts,
                "n_val": int(len(self.y_val)),
                "notes": list(self.notes),
                "history": self.history,
                "best_epoch": self.finished.best_epoch if self.finished else None,
            },
        )

    def save(self, path: str | Path) -> Path:
        """Write the model directory (metadata, safetensors, TorchScript ``model.pt``)."""
        from napari_dlcb.models.saved import save_model

        self.model.eval()
        example = torch.zeros(1, self.model.in_channels, self.input_size, self.input_size)
        return save_model(self.model.cpu(), path, self.meta, example_input=example)


def _with_extra(
    preview: Callable[[nn.Module], dict[str, Any]] | None,
    extra: Callable[[], dict[str, Any] | None] | None,
) -> Callable[[nn.Module], dict[str, Any] | None] | None:
    """An engine preview that adds ``extra()``'s items to ``preview``'s (None: neither)."""
    if extra is None:
        return preview

    def combined(net: nn.Module) -> dict[str, Any] | None:
        out = dict(preview(net)) if preview is not None else {}
        out.update(extra() or {})
        return out or None

    return combined


def _predict(
    model: nn.Module,
    x: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    tta: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """Softmax probabilities of normalised (N, C, S, S) crops; ``tta`` averages 8 dihedral views."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    was_training = model.training
    try:
        orig = next(model.parameters()).device
    except StopIteration:
        orig = torch.device("cpu")
    model.to(dev).eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(dev)
                views = _dihedral(xb) if tta else [xb]
                p = torch.stack([torch.softmax(model(v), 1) for v in views]).mean(0)
                out.append(p.cpu().numpy())
    finally:
        model.to(orig).train(was_training)
    k = getattr(model, "n_classes", None)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, k or 0), np.float32)


def predict_proba(
    model: nn.Module,
    meta: Any,
    images: Sequence[np.ndarray],
    *,
    channel_axis: int | None = None,
    tta: bool = False,
    device: str = "auto",
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of a saved classifier for raw images.

    Parameters
    ----------
    model : torch.nn.Module
        From :func:`napari_dlcb.models.saved.load_model`.
    meta : ModelMeta
        Its metadata (input size, channels, normalisation).
    images : sequence of ndarray
        Raw images of any size/channel count.
    channel_axis : int, optional
        Channel axis of 3-D images.
    tta : bool
        Average over the 8 rotations/flips (test-time augmentation).
    device : str
        "auto", "cpu" or "cuda".

    Returns
    -------
    probabilities : ndarray (N, K)
    notes : list of str
        What was resized or converted.
    """
    if meta.task != "classification":
        raise DlcbError(f"this is a {meta.task} model, not a classifier")
    size = int(meta.extra.get("input_size") or 32)
    prep = prepare_images(
        images, size=size, channels=int(meta.in_channels), channel_axis=channel_axis
    )
    norm = Normalizer.from_dict(meta.normalization)
    x = np.stack([norm(im, channel_axis=0) for im in prep.data])
    return _predict(model, x, device=resolve_device(device), tta=tta), prep.notes


class CellClassificationTask:
    """Classify the objects of an instance-labels image from a few labelled cells.

    The one core object behind the cell-classifier widget: crops centred on
    every object are cut once; the annotated ones train a
    :class:`ClassificationTrainer`; predictions, per-object features, the
    export table and per-cell saliency all come from here.

    Parameters
    ----------
    image : ndarray, shape (Y, X) or with a channel axis
        Intensity image.
    labels : ndarray of int, shape (Y, X)
        Instance labels (0 = background).
    annotations : mapping of int to str
        Object id -> class name for the cells labelled by clicking.
    classes : sequence of str, optional
        Class names in output order; default the sorted annotated names.
    crop_size : int
        Side of the crops centred on objects.
    base, mode, balance, augment, seed, device
        As in :class:`ClassificationTrainer` (``mode="linear"`` by default:
        instant on a CPU).
    channel_axis : int, optional
        Channel axis of a multichannel image.
    mask_neighbours : bool
        Blank other objects inside each crop.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((64, 64)); lab = np.zeros((64, 64), int)
    >>> for k, (r, c) in enumerate([(8, 8), (8, 40), (40, 8), (40, 40)], 1):
    ...     lab[r:r + 10, c:c + 10] = k; img[r:r + 10, c:c + 10] = 1 + k % 2
    >>> task = CellClassificationTask(img, lab, {1: "a", 2: "b"}, base="none", device="cpu")
    >>> _ = task.run(epochs=2)
    >>> ids, probs = task.predict()
    >>> ids.tolist(), probs.shape
    ([1, 2, 3, 4], (4, 2))
    """

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        annotations: dict[int, str],
        *,
        classes: Sequence[str] | None = None,
        crop_size: int = 32,
        base: str | Path | None = "builtin",
        mode: str = "linear",
        balance: str | None = "loss",
        augment: bool = True,
        channel_axis: int | None = None,
        mask_neighbours: bool = False,
        val_fraction: float = 0.0,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        from napari_dlcb.data.cells import object_crops

        self.image = np.asarray(image)
        self.labels = np.asarray(labels)
        self.channel_axis = channel_axis
        self.crops = object_crops(
            self.image,
            self.labels,
            size=crop_size,
            channel_axis=channel_axis,
            mask_neighbours=mask_neighbours,
        )
        if not annotations:
            raise DlcbError("label some cells first: click cells to assign them a class")
        names = sorted({str(v) for v in annotations.values()})
        self.classes = [str(c) for c in classes] if classes is not None else names
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise DlcbError(f"class {unknown[0]!r} is not in the class list")
        if len(names) < 2:
            raise DlcbError(
                f"only one class ({names[0]!r}) has labelled cells; label cells of at least 2 classes"
            )
        index = {int(i): k for k, i in enumerate(self.crops.ids)}
        missing = [i for i in annotations if int(i) not in index]
        if missing:
            raise DlcbError(f"annotated object {missing[0]} is not in the labels layer")
        self.annotated_ids = np.array(sorted(int(i) for i in annotations), np.int64)
        rows = [index[i] for i in self.annotated_ids]
        y = [self.classes.index(str(annotations[i])) for i in self.annotated_ids]
        used = sorted(set(y))
        classes_used = [self.classes[k] for k in used]
        remap = {k: j for j, k in enumerate(used)}
        self.trainer = ClassificationTrainer(
            list(self.crops.crops[rows]),
            [remap[k] for k in y],
            classes_used,
            base=base,
            mode=mode,
            input_size=crop_size,
            val_fraction=val_fraction,
            augment=augment,
            balance=balance,
            channel_axis=0,
            seed=seed,
            device=device,
        )
        self.classes = classes_used
        self.notes = list(self.crops.notes) + list(self.trainer.notes)
        self._x_all = self.trainer._norm(self.crops.crops.astype(np.float32))

    # training ------------------------------------------------------------------------
    def fit(
        self,
        *,
        preview_saliency: LiveCellSaliency
        | int
        | Callable[[], LiveCellSaliency | int | None]
        | None = None,
        **kwargs: Any,
    ) -> Iterator[TrainEvent]:
        """Train; yields engine events (see :meth:`ClassificationTrainer.fit`).

        Without a validation split, ``Preview.data["confusion"]`` is the
        confusion matrix on the labelled cells themselves (training fit).

        Parameters
        ----------
        preview_saliency : LiveCellSaliency or int or callable, optional
            A cell to explain live (an int is its object id, explained with
            integrated gradients), or a callable returning one (or None for no
            map), asked in the training thread at every preview so the cell can
            change while training runs. The map is :meth:`cell_saliency` of the
            current weights (in "linear" mode the frozen extractor with the
            current head), computed in the training thread inside the engine's
            preview. Previews that carry one add the items of
            :meth:`saliency_preview`; maps take at most
            :data:`LIVE_SALIENCY_SHARE` of the training time. If a request
            cannot be explained (unknown cell or class, a method that fails on
            this model), one preview carries ``"saliency_error"`` (one line)
            and that request is not tried again; training goes on.
        **kwargs
            Passed on to :meth:`ClassificationTrainer.fit`.

        Raises
        ------
        DlcbError
            If a fixed ``preview_saliency`` names an unknown cell, method or class.
        """
        if preview_saliency is not None:
            if not callable(preview_saliency):
                self._live_request(preview_saliency)  # bad input fails before training
            kwargs["preview_extra"] = self._make_live_saliency(preview_saliency)
        if not len(self.trainer.y_val):
            kwargs.setdefault("preview_interval", 0.5)
            for ev in self.trainer.fit(**kwargs):
                yield ev
                from napari_dlcb.training.events import EpochEnd

                if isinstance(ev, EpochEnd):
                    yield Preview(epoch=ev.epoch, step=-1, data=self.training_confusion())
            return
        yield from self.trainer.fit(**kwargs)

    def run(self, **kwargs: Any) -> Finished:
        """Train to the end headlessly."""
        from napari_dlcb.training.engine import fit_to_end

        return fit_to_end(self.fit(**kwargs))

    def _live_request(self, request: LiveCellSaliency | int) -> LiveCellSaliency:
        """Check a live-saliency request against this task; DlcbError if it cannot work."""
        from napari_dlcb.interpret.saliency import METHODS

        if not isinstance(request, LiveCellSaliency):
            if isinstance(request, (bool, np.bool_)) or not isinstance(request, (int, np.integer)):
                raise DlcbError(
                    f"preview_saliency must be a LiveCellSaliency or an object id, not {request!r}"
                )
            request = LiveCellSaliency(int(request))
        if not np.any(self.crops.ids == int(request.object_id)):
            raise DlcbError(f"object {request.object_id} is not in the labels layer")
        if request.method not in METHODS:
            raise DlcbError(
                f"unknown saliency method {request.method!r}; choose one of {', '.join(METHODS)}"
            )
        t = request.target
        if isinstance(t, str) and t not in self.classes:
            raise DlcbError(
                f"target class {t!r} does not exist; classes are: {', '.join(self.classes)}"
            )
        if t is not None and not isinstance(t, str) and not 0 <= int(t) < len(self.classes):
            raise DlcbError(
                f"target class {t} does not exist: the model has {len(self.classes)} classes"
            )
        return request

    def _make_live_saliency(
        self, request: LiveCellSaliency | int | Callable[[], LiveCellSaliency | int | None]
    ) -> Callable[[], dict[str, Any]]:
        """``f() -> dict``: a map of the requested cell within the time budget, or nothing.

        Runs in the training thread between two optimiser steps (the engine's
        preview), on ``self.trainer.model`` with its current weights;
        ``saliency`` hands the model back unchanged (mode, ``requires_grad``,
        ``.grad``, hooks) and works inside ``torch.inference_mode``.
        """
        get = request if callable(request) else (lambda: request)
        state: dict[str, Any] = {"next": -np.inf, "failed": set()}

        def live() -> dict[str, Any]:
            req = get()
            start = time.perf_counter()
            if req is None or start < state["next"]:
                return {}
            key = repr(req)  # a request that failed is not tried again
            if key in state["failed"]:
                return {}
            try:
                out = self.saliency_preview(req)
            except (DlcbError, RuntimeError) as err:  # e.g. a method this model can't take
                # an optional view must not end the training: say so once per request
                state["failed"].add(key)
                msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                what = getattr(req, "method", "integrated-gradients")
                oid = getattr(req, "object_id", req)
                return {
                    "saliency_error": f"live {what} saliency of cell {oid} is unavailable: {msg}"
                }
            spent = time.perf_counter() - start
            state["next"] = time.perf_counter() + spent * (1 / LIVE_SALIENCY_SHARE - 1)
            return out

        return live

    def saliency_preview(self, request: LiveCellSaliency | int) -> dict[str, Any]:
        """The saliency map of one cell with the current weights, as preview items.

        Parameters
        ----------
        request : LiveCellSaliency or int
            The cell (and method and target class) to explain.

        Returns
        -------
        dict
            ``"saliency"`` ((S, S) float32 on the crop grid),
            ``"saliency_object"`` (object id), ``"saliency_origin"`` ((row, col)
            of the crop's top-left pixel in the image), ``"saliency_method"``,
            ``"saliency_target"`` (class index), ``"saliency_class"`` (its name)
            and ``"saliency_extra"`` (the method's numbers, e.g.
            ``completeness_error``).

        Raises
        ------
        DlcbError
            If the request names an unknown cell, method or class.
        """
        req = self._live_request(request)
        smap, origin, res = self.cell_saliency(req.object_id, method=req.method, target=req.target)
        return {
            "saliency": smap,
            "saliency_object": int(req.object_id),
            "saliency_origin": (int(origin[0]), int(origin[1])),
            "saliency_method": req.method,
            "saliency_target": int(res.target),
            "saliency_class": self.classes[int(res.target)],
            "saliency_extra": dict(res.extra),
        }

    def training_confusion(self) -> dict[str, Any]:
        """Confusion matrix of the current model on the labelled cells."""
        probs = _predict(self.trainer.model, self.trainer.x_train, device=self.trainer.device)
        cm = confusion_matrix(self.trainer.y_train, probs.argmax(1), len(self.classes))
        return {"confusion": cm, "classes": list(self.classes)}

    # results -------------------------------------------------------------------------
    def predict(self, *, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Object ids (N,) and class probabilities (N, K) for every object."""
        return self.crops.ids, _predict(
            self.trainer.model, self._x_all, device=self.trainer.device, tta=tta
        )

    def class_image(self, probs: np.ndarray | None = None) -> np.ndarray:
        """Labels image with every object painted with ``1 + predicted class index``."""
        if probs is None:
            _, probs = self.predict()
        lut = np.zeros(
            int(self.labels.max()) + 1, np.uint8 if len(self.classes) < 255 else np.int32
        )
        lut[self.crops.ids] = probs.argmax(1) + 1
        return lut[self.labels]

    def table(self, probs: np.ndarray | None = None) -> Any:
        """Export table: object id, predicted class, probabilities, annotation, morphology."""
        from napari_dlcb.data.cells import regionprops_table

        if probs is None:
            _, probs = self.predict()
        morph = regionprops_table(self.labels, self.image, channel_axis=self.channel_axis)
        import pandas as pd

        df = pd.DataFrame(
            {
                "object_id": self.crops.ids,
                "class": [self.classes[k] for k in probs.argmax(1)],
            }
        )
        for k, name in enumerate(self.classes):
            df[f"prob_{name}"] = probs[:, k]
        ann = dict(zip(self.annotated_ids.tolist(), self.trainer.y_train.tolist()))
        df["annotated"] = [
            self.classes[ann[i]] if i in ann else "" for i in self.crops.ids.tolist()
        ]
        return df.merge(morph, on="object_id", how="left")

    def features(self) -> np.ndarray:
        """Pooled network features (N, F) of every object's crop."""
        model = self.trainer.model
        dev = self.trainer.device
        was = model.training
        model.to(dev).eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(self._x_all), 256):
                    xb = torch.from_numpy(np.ascontiguousarray(self._x_all[i : i + 256]))
                    out.append(model.features(xb.to(dev)).cpu().numpy())
        finally:
            model.train(was)
        return np.concatenate(out).astype(np.float32)

    def cell_saliency(
        self,
        object_id: int,
        *,
        method: str = "integrated-gradients",
        target: int | str | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """Saliency map of one object's crop.

        Returns
        -------
        map : ndarray (S, S)
            On the crop grid.
        origin : ndarray (2,)
            Image coordinates (row, col) of the crop's top-left pixel, so the
            map can be shown with ``translate=origin``.
        result : SaliencyResult
        """
        from napari_dlcb.interpret.saliency import saliency

        hit = np.flatnonzero(self.crops.ids == int(object_id))
        if hit.size == 0:
            raise DlcbError(f"object {object_id} is not in the labels layer")
        i = int(hit[0])
        res = saliency(
            self.trainer.model,
            self._x_all[i],
            method=method,
            target=target,
            classes=self.classes,
            channel_axis=0,
            device=str(self.trainer.device),
            **kwargs,
        )
        return res.map, self.crops.origins[i], res
