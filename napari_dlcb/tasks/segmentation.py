"""Fine-tune a segmentation network on painted annotation.

:class:`SegmentationTrainer` is the one object the widget and the CLI talk to:
it checks the images and labels, turns the annotation into targets, picks a
validation split, adapts the base model (head, input channels), and runs the
shared :func:`~napari_dlcb.training.engine.fit` generator in one of two speeds:

``quick``
    The pretrained encoder is frozen and its features for the annotated part
    of each image are computed once and cached; only the decoder trains, on
    crops of the cached features. The first overlay appears within seconds on
    a CPU.
``full``
    Every layer is fine-tuned on augmented patches (flips, 90-degree
    rotations, scale-crop, intensity). A GPU is recommended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.augment import Augment, random_crop
from napari_dlcb.data.labels import IGNORE, class_names_for, class_values_for, make_target
from napari_dlcb.data.normalize import Normalizer, check_image, to_cyx
from napari_dlcb.data.splits import block_mask, train_val_split
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.training.engine import fit
from napari_dlcb.training.events import TrainEvent

__all__ = ["LIVE_SALIENCY", "LIVE_SALIENCY_SHARE", "SegmentationTrainer", "segmentation_metrics"]

Region = tuple[slice, slice]


#: target value meaning "any object class" (interior or boundary) in partial labels
FOREGROUND = 3

#: Live saliency while training (``fit(preview_saliency=...)``): for each method, the
#: largest side in pixels of the explained crop (the centre of the viewport) and the
#: method's settings. One map should cost no more than a few training steps on a CPU,
#: so the sampling methods get a smaller crop and fewer samples than the Interpret
#: dock uses. Measured with the built-in 2 M-parameter U-Net on 2 CPU cores, where a
#: training step on a 256-px patch takes ~0.1 s: gradients / Grad-CAM on 256 px
#: 0.1-0.15 s, SmoothGrad (8 samples) / integrated gradients (16 steps) on 192 px
#: 0.4-0.8 s, occlusion (64 windows of 16 px) on 128 px 0.5 s.
LIVE_SALIENCY: dict[str, tuple[int, dict[str, Any]]] = {
    "gradients": (256, {}),
    "gradcam": (256, {}),
    "smoothgrad": (192, {"n_samples": 8, "batch_size": 4}),
    "integrated-gradients": (192, {"n_steps": 16, "batch_size": 8}),
    "occlusion": (128, {"window": 16, "stride": 16, "batch_size": 8}),
}
#: Largest share of the training thread's time that live saliency may take. A map
#: that took ``t`` seconds is followed by previews without saliency for the next
#: ``t * (1 / share - 1)`` seconds (2 t for 1/3), so training keeps at least two
#: thirds of the time whatever the method, image or device; the prediction overlay
#: keeps its own pace.
LIVE_SALIENCY_SHARE = 1 / 3


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where ``FOREGROUND`` targets mean "interior or boundary".

    Ordinary targets ``0..C-1`` are scored as usual, ``-1`` is ignored, and a
    ``FOREGROUND`` pixel costs ``-log(p_interior + p_boundary)``.
    """
    t = target.long()
    logp = torch.log_softmax(logits, 1)
    known = (t >= 0) & (t < FOREGROUND)
    fg = t == FOREGROUND
    picked = logp.gather(1, t.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
    fg_logp = torch.logsumexp(logp[:, 1:], dim=1)
    total = -(picked * known).sum() - (fg_logp * fg).sum()
    return total / (known.sum() + fg.sum()).clamp_min(1)


def segmentation_metrics(outs: list[torch.Tensor], tgts: list[torch.Tensor]) -> dict[str, float]:
    """Pixel accuracy and mean IoU over labelled pixels (for ``fit(metrics=)``)."""
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    correct = n = 0
    for o, t in zip(outs, tgts):
        if o.shape[1] == 1:  # one-logit (sigmoid) model with float targets, NaN = ignore
            valid = ~torch.isnan(t)
            pred = (o > 0).long()[valid]
            tt = t[valid].long()
        else:
            valid = t >= 0
            pred = o.argmax(1)[valid]
            tt = t[valid]
            if (tt == FOREGROUND).any():  # partial labels: compare object vs background
                pred = torch.where(pred > 0, FOREGROUND, 0)
                tt = torch.where(tt > 0, FOREGROUND, 0)
        correct += int((pred == tt).sum())
        n += int(valid.sum())
        for c in torch.unique(torch.cat([pred, tt])).tolist():
            p, q = pred == c, tt == c
            inter[c] = inter.get(c, 0) + int((p & q).sum())
            union[c] = union.get(c, 0) + int((p | q).sum())
    ious = [inter[c] / union[c] for c in union if union[c]]
    return {"accuracy": correct / max(n, 1), "mean_iou": float(np.mean(ious)) if ious else 0.0}


class _PatchDataset(torch.utils.data.Dataset):
    """Random annotated patches with augmentation (full mode)."""

    def __init__(self, images, targets, *, patch, n, augment, seed, binary):
        self.images, self.targets, self.patch, self.n = images, targets, patch, n
        self.augment, self.binary = augment, binary
        self.rng = np.random.default_rng(seed)
        self.coords = [np.argwhere(t >= 0) for t in targets]
        w = np.array([len(c) for c in self.coords], float)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        rng = self.rng
        k = int(rng.choice(len(self.images), p=self.weights))
        coords = self.coords[k]
        centre = tuple(coords[rng.integers(len(coords))]) if rng.random() < 0.9 else None
        img, tgt = random_crop(self.images[k], self.targets[k], self.patch, rng, centre=centre)
        if self.augment is not None:
            img, tgt = self.augment(img, tgt, rng)
        return torch.from_numpy(np.ascontiguousarray(img)), _target_tensor(tgt, self.binary)


class _TileDataset(torch.utils.data.Dataset):
    """Deterministic tiles covering the validation annotation."""

    def __init__(self, images, targets, *, patch, binary):
        self.items = []
        for img, tgt in zip(images, targets):
            h, w = tgt.shape
            for r in range(0, max(h - patch, 0) + patch, patch):
                for c in range(0, max(w - patch, 0) + patch, patch):
                    r0, c0 = min(r, max(h - patch, 0)), min(c, max(w - patch, 0))
                    t = tgt[r0 : r0 + patch, c0 : c0 + patch]
                    if (t >= 0).any():
                        im = img[:, r0 : r0 + patch, c0 : c0 + patch]
                        im, t = random_crop(im, t, patch, np.random.default_rng(0))
                        self.items.append((im, t))
        self.binary = binary

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        im, t = self.items[i]
        return torch.from_numpy(np.ascontiguousarray(im)), _target_tensor(t, self.binary)


def _target_tensor(tgt: np.ndarray, binary: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(tgt))
    if binary:  # one-logit models: float target, NaN = unlabelled
        f = t.float()[None]
        f[t[None] < 0] = float("nan")
        return f
    return t.long()


class _QuickHead(nn.Module):
    """Trains a U-Net's decoder on cached encoder features."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        shape = [features[0].shape[-2], features[0].shape[-1]]
        return self.unet.decode(list(features), shape)


class _FeatureDataset(torch.utils.data.Dataset):
    """Aligned random crops of cached multi-scale features (quick mode)."""

    def __init__(self, feats, targets, *, patch, n, seed, binary):
        self.feats, self.targets, self.n, self.binary = feats, targets, n, binary
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        self.coords = [np.argwhere(t >= 0) for t in targets]
        w = np.array([len(c) for c in self.coords], float)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return self.n

    def crop(self, k: int, r0: int, c0: int):
        p = self.patch
        out = []
        for f in self.feats[k]:
            s = self.targets[k].shape[0] // f.shape[-2]
            out.append(f[:, r0 // s : (r0 + p) // s, c0 // s : (c0 + p) // s])
        return tuple(out), _target_tensor(self.targets[k][r0 : r0 + p, c0 : c0 + p], self.binary)

    def __getitem__(self, i: int):
        rng, p = self.rng, self.patch
        k = int(rng.choice(len(self.feats), p=self.weights))
        h, w = self.targets[k].shape
        cy, cx = self.coords[k][rng.integers(len(self.coords[k]))]
        r0 = int(np.clip(cy - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, h - p))
        c0 = int(np.clip(cx - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, w - p))
        step = self.targets[k].shape[0] // self.feats[k][-1].shape[-2]
        return self.crop(k, r0 // step * step, c0 // step * step)


class SegmentationTrainer:
    """Fine-tune a pretrained segmentation model on annotated images.

    Parameters
    ----------
    images : sequence of ndarray
        2-D grey (Y, X) or multichannel images (see ``channel_axis``).
    labels : sequence of ndarray
        One integer label image per image, same (Y, X) shape.
    label_kind : {"scribbles", "classes", "instances"}
        How the labels are to be read (see :mod:`napari_dlcb.data.labels`).
    base : str or tuple
        "builtin" (default U-Net), "builtin:<name>", "scratch" (a fresh
        U-Net), a saved model folder, a BioImage.IO package, or a
        ``(model, meta)`` pair.
    mode : {"quick", "full"}
        Train the decoder on cached encoder features, or every layer.
    channel_axis : int, optional
        Channel axis of multichannel images.
    val_fraction : float
        Share of images (3 or more images) or of annotated 64-px blocks
        (fewer images) held out for validation.
    patch_size : int
        Training patch edge in pixels.
    augment : bool
        Flips, 90-degree rotations, scale-crop and intensity jitter (full mode).
    seed : int
        Makes the split, the patches and the weights reproducible.
    device : str
        "auto", "cpu", "cuda" or "mps".
    scribble_instances : bool
        When the scribbles have one object class (1 = background, 2 = objects)
        and the base model segments instances (background / interior /
        boundary, like the built-in U-Net), keep its head and train "object"
        strokes as "interior or boundary", so prediction still returns
        instances. The saved model then has ``label_kind="instances"``.

    Examples
    --------
    >>> from napari_dlcb.data.synthetic import synthetic_nuclei
    >>> img, lab = synthetic_nuclei((128, 128), seed=3)
    >>> tr = SegmentationTrainer([img], [lab], label_kind="instances", base="scratch")
    >>> tr.meta.classes
    ['background', 'interior', 'boundary']
    """

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[Any],
        *,
        label_kind: str = "scribbles",
        base: str | tuple[nn.Module, Any] = "builtin",
        mode: str = "quick",
        channel_axis: int | None = None,
        val_fraction: float = 0.2,
        patch_size: int = 256,
        augment: bool = True,
        seed: int = 0,
        device: str = "auto",
        scribble_instances: bool = True,
    ) -> None:
        from napari_dlcb.models.saved import ModelMeta

        if mode not in ("quick", "full"):
            raise DlcbError(f"unknown speed {mode!r}; use 'quick' or 'full'")
        if len(images) == 0:
            raise DlcbError("no images given")
        if len(images) != len(labels):
            raise DlcbError(f"{len(images)} images but {len(labels)} label images")
        imgs = [to_cyx(np.asarray(im), channel_axis) for im in images]
        labs = [np.asarray(lab) for lab in labels]
        for i, (im, lab) in enumerate(zip(imgs, labs)):
            name = f"image {i}" if len(imgs) > 1 else "image"
            if lab.shape != im.shape[1:]:
                raise DlcbError(
                    f"labels of {name} have shape {lab.shape} but the image is {im.shape[1:]}"
                )
            check_image(im, name)
        if len({im.shape[0] for im in imgs}) > 1:
            raise DlcbError("images have different numbers of channels")
        self.label_kind, self.mode, self.seed = label_kind, mode, seed
        self.channel_axis = channel_axis
        self.class_values = class_values_for(labs, label_kind)
        self.device = str(resolve_device(device))
        self.augment = Augment() if augment else None
        model, base_meta, parent = _resolve_base(base)
        self.binary = _n_outputs(base_meta) == 1
        n_classes = len(self.class_values)
        # Scribbles with one object class on an instance model (background / interior /
        # boundary) keep the pretrained head: "object" strokes teach "interior or
        # boundary" (a partial-label loss), so the result stays instances, as a
        # cellpose user expects from painting a few nuclei.
        self.scribble_instances = bool(
            scribble_instances
            and label_kind == "scribbles"
            and n_classes == 2
            and not self.binary
            and getattr(base_meta, "label_kind", None) == "instances"
            and len(base_meta.classes) == 3
        )
        if self.scribble_instances:
            n_classes = 3
        # the same for one-channel foreground models (e.g. BioImage.IO nuclei U-Nets)
        self.binary_instances = bool(
            scribble_instances and label_kind == "scribbles" and n_classes == 2 and self.binary
        )
        if label_kind == "instances" and self.binary:
            n_classes = 2
        if self.binary and n_classes > 2:
            raise DlcbError(
                f"the base model predicts one channel (foreground) and cannot learn {n_classes} "
                "classes; use the built-in U-Net"
            )
        model = _adapt_model(model, base_meta, n_classes, imgs[0].shape[0])
        self.model = model
        # split before normalisation so only training pixels shape the statistics
        targets = [
            make_target(lab, label_kind, self.class_values, n_classes=n_classes) for lab in labs
        ]
        if self.scribble_instances:  # object strokes -> FOREGROUND (interior or boundary)
            targets = [np.where(t == 1, FOREGROUND, t) for t in targets]
        self._split(imgs, targets, val_fraction, seed)
        norm_mode = (base_meta.normalization or {}).get("mode", "percentile")
        if norm_mode in ("percentile", "zscore") or parent == "scratch":
            norm_mode = "percentile" if norm_mode not in ("zscore",) else norm_mode
            train = [imgs[i] for i in self._train_images]
            self.normalizer = Normalizer.fit(train, mode=norm_mode, channel_axis=0)
        else:
            self.normalizer = Normalizer.from_dict(base_meta.normalization)
        self._norm = [self.normalizer(im, channel_axis=0) for im in imgs]
        arch = model.architecture() if hasattr(model, "architecture") else {"name": "torchscript"}
        out_kind = "instances" if self.scribble_instances or self.binary_instances else label_kind
        self.meta = ModelMeta(
            task="segmentation",
            architecture=arch,
            classes=class_names_for(out_kind, self.class_values)
            if not (self.binary and out_kind == "instances")
            else ["background", "foreground"],
            label_kind=out_kind,
            class_values=list(self.class_values)
            if out_kind != "instances"
            else list(range(n_classes)),
            normalization=self.normalizer.to_dict(),
            input_axes="bcyx",
            in_channels=imgs[0].shape[0],
            output_activation="sigmoid" if self.binary else "softmax",
            parent=parent,
            extra={
                k: v
                for k, v in (base_meta.extra or {}).items()
                if k in ("halo", "size_multiple", "postprocess")
            },
        )
        if self.scribble_instances or self.binary_instances:
            self.meta.extra["trained_from"] = "scribbles (1 = background, 2 = objects)"
        self.patch_size = patch_size
        self.history: list[dict[str, float]] = []
        self._cache: dict[str, Any] | None = None

    # -- data ----------------------------------------------------------------------------
    def _split(self, imgs, targets, val_fraction, seed) -> None:
        n = len(imgs)
        if n >= 3 and val_fraction > 0:
            tr, va = train_val_split(n, val_fraction=val_fraction, seed=seed)
            self._train_images = [int(i) for i in tr]
            self._train_t = {int(i): targets[i] for i in tr}
            self._val_t = {int(i): targets[i] for i in va}
            return
        self._train_images = list(range(n))
        self._train_t, self._val_t = {}, {}
        for i, t in enumerate(targets):
            if val_fraction <= 0:
                self._train_t[i] = t
                continue
            m = block_mask(t.shape, val_fraction=val_fraction, seed=seed + i, labelled=t >= 0)
            tr_t, va_t = t.copy(), t.copy()
            tr_t[m], va_t[~m] = IGNORE, IGNORE
            self._train_t[i] = tr_t
            if (va_t >= 0).any():
                self._val_t[i] = va_t
        if not any((t >= 0).any() for t in self._train_t.values()):
            raise DlcbError("no annotated pixels are left for training")

    def _datasets(self, n_samples: int):
        patch = self.patch_size
        tr_idx = [i for i, t in self._train_t.items() if (t >= 0).any()]
        if self.mode == "quick" and hasattr(self.model, "encode"):
            train = self._quick_dataset(tr_idx, n_samples)
            val = self._quick_val()
            return train, val, _QuickHead(self.model), list(self.model.decoder_parameters())
        train = _PatchDataset(
            [self._norm[i] for i in tr_idx],
            [self._train_t[i] for i in tr_idx],
            patch=patch,
            n=n_samples,
            augment=self.augment,
            seed=self.seed,
            binary=self.binary,
        )
        val = (
            _TileDataset(
                [self._norm[i] for i in self._val_t],
                list(self._val_t.values()),
                patch=patch,
                binary=self.binary,
            )
            if self._val_t
            else None
        )
        return train, val, self.model, None

    def _encode_regions(self):
        """Cache encoder features of the annotated bounding box of each image."""
        if self._cache is not None:
            return self._cache
        unet = self.model
        m = int(getattr(unet, "multiple", 16))
        p = self.patch_size // m * m
        regions = {}
        was = unet.training
        unet.eval()
        dev = torch.device(self.device)
        unet.to(dev)
        try:
            for i in sorted(set(self._train_t) | set(self._val_t)):
                lab = np.zeros(self._norm[i].shape[1:], bool)
                for d in (self._train_t, self._val_t):
                    if i in d:
                        lab |= d[i] >= 0
                if not lab.any():
                    continue
                rows, cols = np.flatnonzero(lab.any(1)), np.flatnonzero(lab.any(0))
                h, w = lab.shape
                r0, r1 = max(rows[0] - p // 2, 0), min(rows[-1] + p // 2 + 1, h)
                c0, c1 = max(cols[0] - p // 2, 0), min(cols[-1] + p // 2 + 1, w)
                hh = max(-(-(r1 - r0) // m) * m, p)
                ww = max(-(-(c1 - c0) // m) * m, p)
                img = self._norm[i][:, r0 : r0 + hh, c0 : c0 + ww]
                pad = ((0, 0), (0, hh - img.shape[1]), (0, ww - img.shape[2]))
                mode = "reflect" if min(img.shape[1:]) > max(pad[1][1], pad[2][1]) else "edge"
                img = np.pad(img, pad, mode=mode)
                with torch.inference_mode():
                    feats = unet.encode(torch.from_numpy(img)[None].to(dev))
                feats = [f[0].detach().cpu().clone() for f in feats]

                def cut(t, r0=r0, c0=c0, hh=hh, ww=ww):
                    out = np.full((hh, ww), IGNORE, np.int64)
                    sub = t[r0 : r0 + hh, c0 : c0 + ww]
                    out[: sub.shape[0], : sub.shape[1]] = sub
                    return out

                regions[i] = (
                    feats,
                    cut(self._train_t[i]) if i in self._train_t else None,
                    cut(self._val_t[i]) if i in self._val_t else None,
                )
        finally:
            unet.train(was)
        self._cache = {"regions": regions, "patch": p}
        return self._cache

    def _quick_dataset(self, tr_idx, n_samples):
        cache = self._encode_regions()
        regs = [cache["regions"][i] for i in tr_idx if i in cache["regions"]]
        patch = min([cache["patch"]] + [min(r[1].shape) for r in regs])
        return _FeatureDataset(
            [r[0] for r in regs],
            [r[1] for r in regs],
            patch=patch,
            n=n_samples,
            seed=self.seed,
            binary=self.binary,
        )

    def _quick_val(self):
        cache = self._encode_regions()
        regs = [r for r in cache["regions"].values() if r[2] is not None and (r[2] >= 0).any()]
        if not regs:
            return None
        patch = min([cache["patch"]] + [min(r[2].shape) for r in regs])
        ds = _FeatureDataset(
            [r[0] for r in regs], [r[2] for r in regs], patch=patch, n=0, seed=0, binary=self.binary
        )
        items = []
        step = 2 ** (len(regs[0][0]) - 1)
        for k, (_, _, t) in enumerate(regs):
            h, w = t.shape
            rows = sorted({*range(0, h - patch + 1, patch), h - patch})
            cols = sorted({*range(0, w - patch + 1, patch), w - patch})
            for r in rows:
                for c in cols:
                    if (t[r : r + patch, c : c + patch] >= 0).any():
                        items.append(ds.crop(k, r // step * step, c // step * step))
        return _ListDataset(items) if items else None

    # -- training ------------------------------------------------------------------------
    def fit(
        self,
        *,
        epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 4,
        samples_per_epoch: int | None = None,
        stop: Any = None,
        preview_image: Any = None,
        preview_region: Callable[[], Region | None] | None = None,
        preview_interval: float = 1.0,
        preview_saliency: str | None = None,
        checkpoint_dir: str | Path | None = None,
        **fit_kwargs: Any,
    ) -> Iterator[TrainEvent]:
        """Train and yield events (see :func:`napari_dlcb.training.engine.fit`).

        Parameters
        ----------
        epochs, lr, batch_size : int, float, int
            Optimisation settings (Adam by default).
        samples_per_epoch : int, optional
            Patches drawn per epoch (default 16 x batch size in quick mode,
            8 x batch size in full mode).
        stop : threading.Event, optional
            Set it to end training cleanly.
        preview_image : ndarray, optional
            Image whose viewport is predicted live (``Preview`` events carry
            ``{"probabilities", "labels", "offset"}``).
        preview_region : callable, optional
            Returns the (row, col) slices of the current viewport, or None.
        preview_interval : float
            Minimum seconds between previews.
        preview_saliency : str, optional
            A saliency method (see :data:`LIVE_SALIENCY`) to explain the
            foreground class on the viewport with the current weights, in the
            training thread, alongside the preview. Previews that carry a map
            add ``"saliency"`` ((h, w) float32 on the image grid),
            ``"saliency_offset"`` ((row0, col0) in ``preview_image``),
            ``"saliency_method"`` and ``"saliency_target"`` (class index); if the
            method cannot explain this model, one preview carries
            ``"saliency_error"`` and no further map is attempted. The crop is at
            most ``LIVE_SALIENCY[method][0]`` pixels a side and maps take at
            most :data:`LIVE_SALIENCY_SHARE` of the training time.
        checkpoint_dir : path, optional
            Where best/last checkpoints go.
        **fit_kwargs
            Anything else :func:`~napari_dlcb.training.engine.fit` accepts.
        """
        if samples_per_epoch is None:
            samples_per_epoch = batch_size * (16 if self.mode == "quick" else 8)
        train, val, net, params = self._datasets(samples_per_epoch)
        if preview_saliency is not None and preview_saliency not in LIVE_SALIENCY:
            raise DlcbError(
                f"unknown live saliency method {preview_saliency!r}; choose one of "
                + ", ".join(LIVE_SALIENCY)
            )
        preview = None
        if preview_image is not None:
            preview = self._make_preview(preview_image, preview_region, preview_saliency)
        fit_kwargs.setdefault("early_stopping", 15)
        # channels-last is ~1.4x faster for the U-Net on CPU (benchmarks/RESULTS.md)
        fit_kwargs.setdefault(
            "channels_last",
            getattr(self.model, "architecture", lambda: {})().get("name") == "unet2d",
        )
        events = fit(
            net,
            train,
            val,
            loss="bce"
            if self.binary
            else (partial_label_loss if self.scribble_instances else "cross_entropy"),
            metrics=segmentation_metrics,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            params=params,
            device=self.device,
            seed=self.seed + len(self.history),
            stop=stop,
            preview=preview,
            preview_interval=preview_interval,
            checkpoint_dir=checkpoint_dir,
            **fit_kwargs,
        )
        t0 = time.perf_counter()
        for ev in events:
            yield ev
            if type(ev).__name__ == "Finished":
                self.history.extend(ev.history)
                self.meta.extra["training"] = {
                    "mode": self.mode,
                    "epochs": len(self.history),
                    "best_score": ev.best_score,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "annotated_pixels": int(sum((t >= 0).sum() for t in self._train_t.values())),
                }

    def _make_preview(
        self,
        image: Any,
        region_fn: Callable[[], Region | None] | None,
        saliency_method: str | None = None,
    ):
        from napari_dlcb.inference.postprocess import labels_from_probabilities
        from napari_dlcb.inference.tiled import predict_viewport

        arr = image
        live_saliency = self._make_live_saliency(arr, saliency_method) if saliency_method else None

        def preview(_net: nn.Module) -> dict | None:
            h, w = _yx_shape(arr, self.channel_axis)
            reg = region_fn() if region_fn is not None else None
            if reg is None:
                reg = (slice(0, min(h, 512)), slice(0, min(w, 512)))
            rs, cs = reg
            r0, r1 = max(rs.start or 0, 0), min(rs.stop or h, h)
            c0, c1 = max(cs.start or 0, 0), min(cs.stop or w, w)
            if r1 <= r0 or c1 <= c0:
                return None
            prob = predict_viewport(
                self.model,
                arr,
                (slice(r0, r1), slice(c0, c1)),
                normalizer=self.normalizer,
                channel_axis=self.channel_axis,
                activation=self.meta.output_activation,
                device=self.device,
            )
            out = {
                "probabilities": prob,
                "labels": labels_from_probabilities(prob, self.meta),
                "offset": (r0, c0),
            }
            if live_saliency is not None:
                out.update(live_saliency(r0, r1, c0, c1))
            return out

        return preview

    def _make_live_saliency(self, image: Any, method: str) -> Callable[..., dict[str, Any]]:
        """``f(r0, r1, c0, c1) -> dict``: a saliency map of the viewport, within budget.

        Runs in the training thread between two optimiser steps (the engine's
        preview), on ``self.model`` with its current weights; ``saliency`` hands
        the model back unchanged (mode, ``requires_grad``, ``.grad``, hooks).
        """
        from napari_dlcb.inference.tiled import freeze_normalizer
        from napari_dlcb.interpret.saliency import saliency

        side, settings = LIVE_SALIENCY[method]
        state: dict[str, Any] = {"next": -np.inf, "norm": None}

        def live(r0: int, r1: int, c0: int, c1: int) -> dict[str, Any]:
            start = time.perf_counter()
            if start < state["next"]:
                return {}
            if state["norm"] is None:  # per-image statistics come from the whole image
                state["norm"] = freeze_normalizer(
                    self.normalizer, image, channel_axis=self.channel_axis
                )
            multiple = int((self.meta.extra or {}).get("size_multiple") or 1)
            (a0, a1) = _centre_span(r0, r1, side, multiple)
            (b0, b1) = _centre_span(c0, c1, side, multiple)
            crop = to_cyx(np.asarray(image), self.channel_axis)[:, a0:a1, b0:b1]
            x = state["norm"](crop, channel_axis=0)
            try:
                res = saliency(
                    self.model,
                    x,
                    method=method,
                    channel_axis=0,
                    classes=list(self.meta.classes),
                    device=self.device,
                    **settings,
                )
            except (DlcbError, RuntimeError) as err:  # e.g. Grad-CAM without convolutions
                # an optional view must not end the training: say so once, then stop trying
                state["next"] = np.inf
                msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                return {"saliency_error": f"live {method} saliency is unavailable: {msg}"}
            spent = time.perf_counter() - start
            state["next"] = time.perf_counter() + spent * (1 / LIVE_SALIENCY_SHARE - 1)
            return {
                "saliency": res.map,
                "saliency_offset": (a0, b0),
                "saliency_method": method,
                "saliency_target": res.target,
            }

        return live

    # -- results -------------------------------------------------------------------------
    def predict(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (C, Y, X) and labels for a whole image, tiled."""
        from napari_dlcb.inference.segment import segment

        return segment(
            (self.model, self.meta), image, channel_axis=self.channel_axis, device=self.device
        )

    def save(self, path: str | Path) -> Path:
        """Write the model folder (metadata, safetensors, TorchScript)."""
        from napari_dlcb.models.saved import save_model

        example = torch.zeros(1, self.meta.in_channels, 64, 64)
        return save_model(self.model, path, self.meta, example_input=example)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _centre_span(start: int, stop: int, size: int, multiple: int = 1) -> tuple[int, int]:
    """The centred sub-range of ``[start, stop)`` at most ``size`` long.

    Its length is rounded down to a multiple of ``multiple`` (models that need
    input sizes divisible by it) unless the range is shorter than that.
    """
    n = min(stop - start, size)
    if n >= multiple > 1:
        n -= n % multiple
    lo = start + (stop - start - n) // 2
    return lo, lo + n


def _yx_shape(image: Any, channel_axis: int | None) -> tuple[int, int]:
    shape = tuple(image.shape)
    if len(shape) == 2:
        return shape[0], shape[1]
    if channel_axis is None:
        channel_axis = -1 if shape[-1] in (3, 4) else 0
    yx = [s for i, s in enumerate(shape) if i != channel_axis % len(shape)]
    return yx[0], yx[1]


def _resolve_base(base: Any) -> tuple[nn.Module, Any, str]:
    from napari_dlcb.models.saved import ModelMeta

    if isinstance(base, tuple):
        model, meta = base
        return model, meta, meta.parent or "in-memory"
    if base == "scratch":
        from napari_dlcb.models.unet import UNet2D

        model = UNet2D(1, 3)
        meta = ModelMeta(
            task="segmentation",
            architecture=model.architecture(),
            classes=["background", "interior", "boundary"],
            normalization={"mode": "percentile"},
        )
        return model, meta, "scratch"
    from napari_dlcb.models.registry import resolve_base

    model, meta = resolve_base(str(base))
    parent = str(base) if not str(base).startswith("builtin") else (meta.parent or str(base))
    if str(base) == "builtin":
        parent = "builtin:unet2d-nuclei"
    return model, meta, parent


def _n_outputs(meta: Any) -> int:
    if getattr(meta, "output_activation", "softmax") == "sigmoid":
        return 1
    return len(meta.classes)


def _adapt_model(model: nn.Module, meta: Any, n_classes: int, in_channels: int) -> nn.Module:
    """Give the model the right head and number of input channels (transfer learning)."""
    if getattr(meta, "task", "segmentation") != "segmentation":
        raise DlcbError(f"the base model is a {meta.task} model, not a segmentation model")
    if hasattr(model, "reset_head") and getattr(model, "n_classes", n_classes) != n_classes:
        model.reset_head(n_classes)
    have = int(getattr(meta, "in_channels", 1))
    if have != in_channels:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or not hasattr(model, "in_channels"):
            raise DlcbError(
                f"the base model expects {have} channel(s) but the images have {in_channels}"
            )
        new = nn.Conv2d(
            in_channels,
            first.out_channels,
            first.kernel_size,
            first.stride,
            first.padding,
            bias=first.bias is not None,
        )
        with torch.no_grad():
            new.weight.copy_(
                first.weight.mean(1, keepdim=True).expand_as(new.weight) * have / in_channels
            )
            if first.bias is not None:
                new.bias.copy_(first.bias)
        _replace_module(model, first, new)
        model.in_channels = in_channels
    return model


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for mod in root.modules():
        for child_name, child in mod.named_children():
            if child is old:
                setattr(mod, child_name, new)
                return
    raise RuntimeError("module to replace not found")  # pragma: no cover
