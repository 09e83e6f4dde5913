"""Fine-tune a segmentation network on painted annotation: the segmentation task.

:class:`SegmentationTask` (alias :data:`SegmentationTrainer`) is what the
Segmentation dock and ``napari-dlcb train segmentation`` call, with the same
:class:`~napari_dlcb.tasks.segmentation.config.SegmentationConfig`. It checks
the images and labels, turns the annotation into targets, holds out whole
strokes (or images, or blocks) for validation, adapts the base model, and runs
the shared :func:`~napari_dlcb.training.engine.fit` generator in one of two
modes (see :mod:`napari_dlcb.training.frozen`):

``quick``
    The pretrained encoder is frozen and its features cached; only the decoder
    trains, in epochs of a few seconds, with the starting model's predictions
    kept where nothing is painted. The first overlay appears within seconds on
    a CPU.
``full``
    Every layer is fine-tuned on augmented patches. A GPU is recommended.

Fine-tuning a pretrained model never hands back one that validates worse on
the held-out annotation than the base (``validate_start``), and Stop keeps
what was learnt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.augment import Augment
from napari_dlcb.data.labels import (
    FOREGROUND,
    class_values_for,
    make_target,
)
from napari_dlcb.data.normalize import Normalizer
from napari_dlcb.data.patches import PatchDataset, TileDataset
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import Task
from napari_dlcb.tasks.segmentation.config import SegmentationConfig, config_and_start
from napari_dlcb.tasks.segmentation.live import LivePreview
from napari_dlcb.tasks.segmentation.prepare import (
    checked_images,
    make_meta,
    output_classes,
    rechoose_fg_threshold,
    split_targets,
)
from napari_dlcb.tasks.segmentation.quick import (
    QuickHead,
    QuickView,
    encode_regions,
    quick_datasets,
    teacher,
)
from napari_dlcb.tasks.segmentation.start import (
    SCRATCH,
    TrainNet,
    adapt_model,
    param_groups,
    resolve_start,
)
from napari_dlcb.training.engine import fit
from napari_dlcb.training.events import Finished, Preview, Started, TrainEvent
from napari_dlcb.training.frozen import frozen_except
from napari_dlcb.training.losses import masked_loss, partial_label_loss, with_distillation
from napari_dlcb.training.metrics import segmentation_metrics

__all__ = ["SegmentationTask", "SegmentationTrainer"]

Region = tuple[slice, slice]
#: keyword arguments of ``fit`` that are not config fields (live view, checkpoints)
_OLD_NAMES = {"preview_saliency": "live_saliency"}


class SegmentationTask(Task):
    """Fine-tune a pretrained segmentation model on annotated images.

    Parameters
    ----------
    images : sequence of ndarray
        2-D grey (Y, X) or multichannel images (see ``channel_axis``).
    labels : sequence of ndarray
        One integer label image per image, same (Y, X) shape.
    config : SegmentationConfig, optional
        Every option (defaults: scribbles on the built-in U-Net, quick mode).
    **options
        Config fields to change (``label_kind="instances"``, ``mode="full"``...);
        ``base`` may also be a ``(model, meta)`` pair (continue from a model in
        memory).

    Examples
    --------
    >>> from napari_dlcb.data.synthetic import synthetic_nuclei
    >>> img, lab = synthetic_nuclei((128, 128), seed=3)
    >>> task = SegmentationTask([img], [lab], label_kind="instances", base="scratch")
    >>> task.meta.classes
    ['background', 'interior', 'boundary']
    """

    kind = "segmentation"

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[Any],
        *,
        config: SegmentationConfig | None = None,
        **options: Any,
    ) -> None:
        cfg, start = config_and_start(config, dict(options))
        self.config = cfg
        imgs, labs = checked_images(images, labels, cfg.channel_axis)
        self._images = [np.asarray(im) for im in images]  # references: to recognise a preview
        self.class_values = class_values_for(labs, cfg.label_kind)
        self.device = str(resolve_device(cfg.device))
        self.augment = Augment() if cfg.augment else None
        model, base_meta, parent = resolve_start(start if start is not None else cfg.base)
        self.pretrained = parent != SCRATCH
        out = output_classes(cfg, base_meta, len(self.class_values))
        self.binary, self.scribble_instances = out.binary, out.scribble_instances
        self.binary_instances, n_classes = out.binary_instances, out.n_classes
        self.model, self._new_params = adapt_model(model, base_meta, n_classes, imgs[0].shape[0])
        # split before normalisation so only training pixels shape the statistics
        targets = [
            make_target(lab, cfg.label_kind, self.class_values, n_classes=n_classes) for lab in labs
        ]
        if self.scribble_instances:  # object strokes -> FOREGROUND (interior or boundary)
            targets = [np.where(t == 1, FOREGROUND, t) for t in targets]
        self._train_images, self._train_t, self._val_t = split_targets(targets, cfg)
        norm_mode = (base_meta.normalization or {}).get("mode", "percentile")
        if norm_mode in ("percentile", "zscore") or parent == SCRATCH:
            norm_mode = "zscore" if norm_mode == "zscore" else "percentile"
            self.normalizer = Normalizer.fit(
                [imgs[i] for i in self._train_images], mode=norm_mode, channel_axis=0
            )
        else:
            self.normalizer = Normalizer.from_dict(base_meta.normalization)
        self._norm = [self.normalizer(im, channel_axis=0) for im in imgs]
        self.meta = make_meta(
            self.model,
            base_meta,
            out,
            label_kind=cfg.label_kind,
            class_values=self.class_values,
            normalizer=self.normalizer,
            parent=parent,
            in_channels=imgs[0].shape[0],
        )
        self.history: list[dict[str, float]] = []
        self._regions: dict | None = None
        self._teachers: dict | None = None
        self._start_shown = False  # preview() showed the starting weights already

    # -- convenient names of config values (read by the CLI, the dock, benchmarks) --------
    @property
    def label_kind(self) -> str:
        """How the labels were read."""
        return self.config.label_kind

    @property
    def mode(self) -> str:
        """The training mode, quick or full."""
        return self.config.mode

    @property
    def channel_axis(self) -> int | None:
        """Channel axis of the images."""
        return self.config.channel_axis

    @property
    def seed(self) -> int:
        """The seed of the split, the patches and the weights."""
        return self.config.seed

    @property
    def patch_size(self) -> int:
        """The training patch side in use."""
        return self.config.patch

    # -- set-up ---------------------------------------------------------------------------
    # -- datasets -------------------------------------------------------------------------
    @property
    def quick(self) -> bool:
        """Whether this task trains the decoder on cached features (quick mode on a U-Net)."""
        return self.config.quick and hasattr(self.model, "encode")

    @property
    def distilled(self) -> bool:
        """Whether training keeps the starting predictions where nothing is painted.

        Quick mode only (the starting decoder's output on the cached features
        is computed once), and only with the pretrained head: a new head's
        starting predictions mean nothing.
        """
        new = {id(p) for p in self._new_params}
        head = getattr(self.model, "head", None)
        head_kept = head is None or not any(id(p) in new for p in head.parameters())
        return self.quick and self.pretrained and self.config.distill > 0 and head_kept

    def _quick_data(self) -> tuple[Any, Any]:
        cfg = self.config
        m = int(getattr(self.model, "multiple", 16))
        patch = max(cfg.patch // m * m, m)
        if self._regions is None:
            self._regions = encode_regions(
                self.model, self._norm, self._train_t, self._val_t, patch=patch, device=self.device
            )
        if self.distilled and self._teachers is None:
            self._teachers = {
                i: teacher(self.model, r, binary=self.binary, device=self.device)
                for i, r in self._regions.items()
            }
        return quick_datasets(
            self._regions,
            self._train_images,
            patch=patch,
            n=cfg.samples,
            seed=cfg.seed,
            binary=self.binary,
            teachers=self._teachers if self.distilled else None,
        )

    def _datasets(self) -> tuple[Any, Any, nn.Module, list[Any]]:
        """Training and validation datasets, the network the engine trains, its groups."""
        cfg = self.config
        frozen_stats = self.pretrained and (cfg.quick or cfg.label_kind == "scribbles")
        if self.quick:
            train, val = self._quick_data()
            net: nn.Module = QuickHead(self.model, frozen_stats=frozen_stats)
            params = list(self.model.decoder_parameters())
        else:
            tr_idx = [i for i, t in self._train_t.items() if (t >= 0).any()]
            train = PatchDataset(
                [self._norm[i] for i in tr_idx],
                [self._train_t[i] for i in tr_idx],
                patch=cfg.patch,
                n=cfg.samples,
                augment=self.augment,
                seed=cfg.seed,
                binary=self.binary,
            )
            val = None
            if self._val_t:
                val = TileDataset(
                    [self._norm[i] for i in self._val_t],
                    list(self._val_t.values()),
                    patch=cfg.patch,
                    binary=self.binary,
                )
            net = TrainNet(self.model) if frozen_stats else self.model
            params = list(self.model.parameters())
        groups = param_groups(
            params,
            new=self._new_params,
            lr=cfg.lr,
            pretrained_factor=cfg.lr_factor,
            pretrained=self.pretrained,
        )
        return train, val, net, groups

    def _loss(self) -> Callable[..., torch.Tensor] | str:
        if self.binary:
            base: Any = masked_loss("bce")
        elif self.scribble_instances:
            base = partial_label_loss
        else:
            base = masked_loss("cross_entropy")
        return with_distillation(base, self.config.distill) if self.distilled else base

    # -- training -------------------------------------------------------------------------
    def fit(
        self,
        *,
        stop: Any = None,
        preview_image: Any = None,
        preview_region: Callable[[], Region | None] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        **options: Any,
    ) -> Iterator[TrainEvent]:
        """Train and yield events (see :func:`napari_dlcb.training.engine.fit`).

        Parameters
        ----------
        stop : threading.Event, optional
            Set it to end training cleanly (what was learnt is kept if it
            validates better).
        preview_image : ndarray, optional
            Image whose viewport is predicted live (``Preview`` events carry
            ``{"probabilities", "labels", "offset"}``, see
            :class:`~napari_dlcb.tasks.segmentation.live.LivePreview`); the
            first one, of the starting weights, comes right after ``Started``.
        preview_region : callable, optional
            Returns the (row, col) slices of the current viewport, or None.
        checkpoint_dir : path, optional
            Where best/last checkpoints go.
        resume : bool
            Continue the run checkpointed in ``checkpoint_dir`` (same images,
            labels and config) until ``epochs`` epochs in all; the data set-up
            is rebuilt exactly as the first time, then the checkpoint's
            weights, optimiser and best weights are loaded.
        **options
            Config fields to change for this and later runs (``epochs``, ``lr``,
            ``batch_size``, ``live_saliency`` (alias ``preview_saliency``)...),
            and any other keyword of :func:`~napari_dlcb.training.engine.fit`.
        """
        cfg, engine_kw = self._fit_options(options)
        train, val, net, groups = self._datasets()
        preview = None
        if preview_image is not None and cfg.preview_interval != math.inf:
            preview = self._live_preview(preview_image, preview_region, stop=stop)
        engine_kw.setdefault("early_stopping", cfg.early_stopping)
        # channels-last is ~1.4x faster for the U-Net on CPU (benchmarks/RESULTS.md)
        engine_kw.setdefault(
            "channels_last",
            getattr(self.model, "architecture", lambda: {})().get("name") == "unet2d",
        )
        engine_kw.setdefault("validate_start", self.pretrained and val is not None)
        if resume:
            from napari_dlcb.training.checkpoint import checkpoint_epochs

            done = checkpoint_epochs(checkpoint_dir)
            if done == 0:
                raise DlcbError(f"nothing to resume: no checkpoint in {checkpoint_dir}")
            engine_kw.update(resume=True, epochs=max(cfg.epochs - done, 0))
        yield from self._run(net, train, val, groups, preview, stop, checkpoint_dir, engine_kw)

    def prepare(self) -> None:
        """Do the one-time set-up of training now (quick mode: the feature cache).

        Encodes the annotated part of each image once and, with distillation,
        the starting model's predictions there. ``fit`` does it when needed;
        calling it first lets a caller show :meth:`preview` before training.
        """
        if self.quick:
            self._quick_data()

    def preview(self, image: Any, region: Callable[[], Region | None] | None = None) -> Any:
        """The live view of ``image``'s viewport with the current weights, now.

        The dict of a :class:`~napari_dlcb.tasks.segmentation.live.LivePreview`
        run (``"probabilities"``, ``"labels"``, ``"offset"``), or None when the
        viewport is empty. After :meth:`prepare`, the starting weights' view
        costs nothing in quick mode (it is cut from the cached predictions).
        """
        data = self._live_preview(image, region).run()
        self._start_shown = data is not None and not self.history
        return data

    def _live_preview(
        self, image: Any, region: Callable[[], Region | None] | None, *, stop: Any = None
    ) -> LivePreview:
        cfg = self.config
        return LivePreview(
            self.model,
            self.meta,
            self.normalizer,
            image,
            channel_axis=cfg.channel_axis,
            device=self.device,
            region=region,
            interval=cfg.preview_interval,
            share=cfg.preview_share,
            saliency=cfg.live_saliency,
            window=self._quick_view(image),
            stop=stop,
        )

    def _quick_view(self, image: Any) -> QuickView | None:
        """Quick mode: the decoder on cached features predicts the viewport of ``image``."""
        if not self.quick or not self._regions:
            return None
        for i, raw in enumerate(self._images):
            same = raw is image or (
                raw.shape == np.shape(image) and np.array_equal(raw, np.asarray(image))
            )
            if same and i in self._regions:
                return QuickView(
                    self.model,
                    self._regions[i],
                    activation=self.meta.output_activation,
                    device=self.device,
                    start=(self._teachers or {}).get(i) if not self.history else None,
                )
        return None

    def _fit_options(self, options: dict[str, Any]) -> tuple[SegmentationConfig, dict[str, Any]]:
        """Split ``fit`` keywords into config changes (kept) and engine options."""
        changes, engine_kw = {}, {}
        for key, value in options.items():
            key = _OLD_NAMES.get(key, key)
            if key in SegmentationConfig.FIT_FIELDS:
                changes[key] = value
            else:
                engine_kw[key] = value
        if changes:
            self.config = self.config.replace(**changes)
        return self.config, engine_kw

    def _run(
        self,
        net: nn.Module,
        train: Any,
        val: Any,
        groups: list[Any],
        preview: LivePreview | None,
        stop: Any,
        checkpoint_dir: Any,
        engine_kw: dict[str, Any],
    ) -> Iterator[TrainEvent]:
        cfg = self.config
        engine_kw = dict(engine_kw)
        epochs = engine_kw.pop("epochs", cfg.epochs)  # a resume runs what is left
        decoder = [p for g in groups for p in g["params"]]
        t0 = time.perf_counter()
        # quick mode: only the decoder trains; the encoder is frozen while it does
        guard = frozen_except(self.model, decoder) if self.quick else nullcontext()
        with guard:
            events = fit(
                net,
                train,
                val,
                loss=self._loss(),
                metrics=segmentation_metrics,
                epochs=epochs,
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                params=groups,
                device=self.device,
                seed=cfg.seed + len(self.history),
                stop=stop,
                preview=preview,
                preview_interval=0.0,  # the preview keeps its own time budget
                epoch_seconds=cfg.epoch_limit,
                max_time=cfg.max_time,
                checkpoint_dir=checkpoint_dir,
                **engine_kw,
            )
            try:
                for ev in events:
                    if isinstance(ev, Finished):  # before a caller that stops at it saves
                        self._record(ev, time.perf_counter() - t0)
                    yield ev
                    if isinstance(ev, Started) and preview is not None and not self._start_shown:
                        first = preview()  # the starting weights, before the first step
                        if first is not None:
                            yield Preview(epoch=ev.start_epoch, step=-1, data=first)
            finally:  # closed early (Stop): the engine scores and keeps what was learnt
                events.close()

    def _record(self, finished: Finished, seconds: float) -> None:
        self._start_shown = False
        annotated = int(sum((t >= 0).sum() for t in self._train_t.values()))
        self.record_run(finished, seconds=seconds, mode=self.mode, annotated_pixels=annotated)
        self.meta.extra["training"] = {
            "mode": self.mode,
            "epochs": len(self.history),
            "best_score": finished.best_score,
            "seconds": round(seconds, 2),
            "annotated_pixels": annotated,
            "kept": finished.kept,
        }
        kind, targets = self.config.label_kind, (self._train_t, self._val_t)
        rechoose_fg_threshold(
            self.model, self.meta, self._norm, *targets, label_kind=kind, device=self.device
        )

    # -- results --------------------------------------------------------------------------
    def predict(self, image: Any, **options: Any) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (C, Y, X) and labels for a whole image, tiled."""
        from napari_dlcb.inference.segment import segment

        model = (self.model, self.meta)
        return segment(model, image, channel_axis=self.channel_axis, device=self.device, **options)

    def save(self, path: str | Path) -> Path:
        """Write the model folder (metadata, safetensors, TorchScript)."""
        from napari_dlcb.models.saved import save_model

        example = torch.zeros(1, self.meta.in_channels, 64, 64)
        return save_model(self.model, path, self.meta, example_input=example)


#: the name the CLI, the dock, tests and benchmarks have always used
SegmentationTrainer = SegmentationTask
