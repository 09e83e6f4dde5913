"""The objectives of the three tasks: their data, search spaces and metrics.

Search spaces follow the paper's Table 2 (learning rate on a log scale, batch
size, filter length and number, dropout, weight decay, ...) plus the
architecture knobs that matter. ``important`` parameters are line-searched
first by the ``line-random`` strategy.

Objectives built from files (:func:`sequence_objective`,
:func:`classification_objective`, :func:`segmentation_objective`) can be
rebuilt on dask workers from :meth:`Objective.spec`; objectives over arrays
already in memory (the GUI's layers) run in this process only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import Task, TaskConfig
from napari_dlcb.tuning.objective import Objective
from napari_dlcb.tuning.space import Param, SearchSpace

__all__ = [
    "ClassificationObjective",
    "SegmentationObjective",
    "SequenceObjective",
    "classification_objective",
    "segmentation_objective",
    "sequence_objective",
]


def _metric_at_best(finished: Any, metric: str) -> float:
    """The metric of the epoch whose weights the task kept (NaN if unknown)."""
    for h in reversed(finished.history if finished is not None else []):
        if h.get("epoch") == finished.best_epoch and metric in h:
            return float(h[metric])
    return float("nan")


# ----------------------------------------------------------------------------- sequence
#: model options of the DNA architectures that a study may vary (they go into model_kwargs)
DNA_MODEL_PARAMS = ("filters", "kernel_size", "dropout", "hidden")


class SequenceObjective(Objective):
    """A DNA model on one-hot sequences; value: validation AUROC (binary) or Pearson r.

    Parameters
    ----------
    x : ndarray (N, 4, L) or list of str
        Training sequences (the task holds out ``val_fraction`` of them, or
        ``val_index``, for selection).
    y : ndarray (N, T)
        Labels (NaN = unlabelled).
    task_names : list of str
        One per label column.
    base : SequenceConfig
        Defaults every trial starts from.
    val_index : array of int, optional
        Explicit validation rows (e.g. a held-out chromosome).
    test : tuple (x, y), optional
        Held-out test data, evaluated once on the chosen model.
    source : dict, optional
        How to reload the data on another machine (see :func:`sequence_objective`).
    """

    factory = "napari_dlcb.tuning.objectives:sequence_objective"

    kind = "sequence"
    direction = "maximize"

    def __init__(self, x, y, task_names, base, *, val_index=None, test=None, source=None):
        super().__init__(base)
        self.x, self.y, self.task_names = x, np.asarray(y, np.float32), list(task_names)
        self.val_index, self.test, self.source = val_index, test, source
        finite = self.y[np.isfinite(self.y)]
        binary = base.task_type == "binary" or (
            base.task_type == "auto" and np.isin(finite, (0.0, 1.0)).all()
        )
        self.metric = "auroc" if binary else "pearson"

    def default_space(self) -> SearchSpace:
        """Table 2's DNA knobs: learning rate, batch size, filter length and number, dropout."""
        return SearchSpace(
            [
                Param.float("lr", 1e-4, 1e-2, log=True, important=True),
                Param.categorical("batch_size", (32, 64, 128, 256), important=True),
                Param.int("kernel_size", 8, 32, important=True),
                Param.categorical("filters", (8, 16, 32, 64, 128)),
                Param.float("dropout", 0.0, 0.6),
                Param.float("weight_decay", 1e-7, 1e-3, log=True),
            ]
        )

    def known(self) -> list[str]:
        """Config fields and the architecture options (which go into ``model_kwargs``)."""
        return [*self.base.to_dict(), *DNA_MODEL_PARAMS]

    def configure(self, params: dict[str, Any]) -> TaskConfig:
        """The trial's config: architecture options move into ``model_kwargs``."""
        arch = {k: params.pop(k) for k in list(params) if k in DNA_MODEL_PARAMS}
        kwargs = {**self.base.model_kwargs, **arch}
        return self.base.replace(**params, model_kwargs=kwargs)

    def make_task(self, config: TaskConfig) -> Task:
        """The task for one trial (this objective's data, the trial's config)."""
        from napari_dlcb.tasks.sequence import SequenceTask

        return SequenceTask(  # one model per trial (k-fold would multiply the study's cost)
            self.x,
            self.y,
            task_names=self.task_names,
            config=config,
            val_index=self.val_index,
            folds=1,
        )

    def trial_value(self, task: Task, finished: Any) -> float:
        """The metric of the weights the task kept (its best-scored epoch)."""
        return _metric_at_best(finished, self.metric)

    def test_metrics(self, model_dir: Any) -> dict[str, float] | None:
        """Test metrics of the chosen model folder (once, at the end), or None."""
        if self.test is None:
            return None
        from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
        from napari_dlcb.training.metrics import auroc

        model, meta = load_sequence_model(model_dir)
        pred = predict_sequences(model, self.test[0], meta=meta)
        yt = np.asarray(self.test[1], np.float32).reshape(len(pred), -1)
        if self.metric == "auroc":
            scores = [auroc(pred[:, t], yt[:, t]) for t in range(yt.shape[1])]
        else:
            scores = [float(np.corrcoef(pred[:, t], yt[:, t])[0, 1]) for t in range(yt.shape[1])]
        return {f"test_{self.metric}": float(np.nanmean(scores)), "n_test": int(len(pred))}


def sequence_objective(
    *,
    table: str,
    base: dict[str, Any] | None = None,
    test_table: str | None = None,
    sequence_column: str = "seq",
    label_columns: list[str] | None = None,
    negatives: str = "none",
    seed: int = 0,
) -> SequenceObjective:
    """A sequence objective from a sequence table (``--table``), reloadable on workers."""
    from napari_dlcb.tasks.sequence import table_training_data
    from napari_dlcb.tasks.sequence_config import SequenceConfig

    seqs, y, tasks = table_training_data(
        table,
        sequence_column=sequence_column,
        label_columns=label_columns,
        negatives=negatives,
        seed=seed,
    )
    test = None
    if test_table:
        tseqs, ty, _ = table_training_data(
            test_table,
            sequence_column=sequence_column,
            label_columns=label_columns,
            negatives="none",
            seed=seed,
        )
        test = (tseqs, ty)
    source = {
        "table": table,
        "test_table": test_table,
        "sequence_column": sequence_column,
        "label_columns": label_columns,
        "negatives": negatives,
        "seed": seed,
    }
    cfg = SequenceConfig.from_dict(base or {})
    return SequenceObjective(seqs, y, tasks, cfg, test=test, source=source)


# ----------------------------------------------------------------------------- classification
class ClassificationObjective(Objective):
    """A crop classifier; value: validation accuracy.

    Parameters
    ----------
    images, labels, classes
        Training crops, their class indices and the class names.
    base : ClassificationConfig
        Defaults every trial starts from (``val_fraction`` holds out a
        stratified validation split unless ``val`` is given).
    val : tuple (images, labels), optional
        An explicit validation set.
    test : tuple (images, labels), optional
        Held-out test data, evaluated once on the chosen model.
    source : dict, optional
        How to reload the data on another machine.
    """

    factory = "napari_dlcb.tuning.objectives:classification_objective"

    kind = "classification"
    metric = "accuracy"
    direction = "maximize"

    def __init__(self, images, labels, classes, base, *, val=None, test=None, source=None):
        super().__init__(base)
        self.images, self.labels, self.classes = images, list(labels), list(classes)
        self.val, self.test, self.source = val, test, source

    def default_space(self) -> SearchSpace:
        """Learning rate, batch size, network width and depth, weight decay, augmentation."""
        return SearchSpace(
            [
                Param.float("lr", 3e-4, 3e-2, log=True, important=True),
                Param.categorical("batch_size", (32, 64, 128), important=True),
                Param.categorical("width", (16, 32, 48, 64)),
                Param.categorical("blocks", ("1,1,1", "2,2,2", "2,2,2,2")),
                Param.float("weight_decay", 1e-6, 1e-2, log=True),
            ]
        )

    def configure(self, params: dict[str, Any]) -> TaskConfig:
        """The trial's config (``blocks`` is written "2,2,2" in a space)."""
        if isinstance(params.get("blocks"), str):
            params["blocks"] = tuple(int(b) for b in params["blocks"].split(","))
        return self.base.replace(**params)

    def make_task(self, config: TaskConfig) -> Task:
        """The task for one trial (this objective's data, the trial's config)."""
        from napari_dlcb.tasks.classification import ClassificationTrainer

        val_images, val_labels = self.val if self.val is not None else (None, None)
        return ClassificationTrainer(
            self.images,
            self.labels,
            self.classes,
            config=config,
            val_images=val_images,
            val_labels=val_labels,
        )

    def trial_value(self, task: Task, finished: Any) -> float:
        """The metric of the weights the task kept (its best-scored epoch)."""
        return _metric_at_best(finished, self.metric)

    def test_metrics(self, model_dir: Any) -> dict[str, float] | None:
        """Test metrics of the chosen model folder (once, at the end), or None."""
        if self.test is None:
            return None
        from napari_dlcb.inference.classify import predict_proba
        from napari_dlcb.models.saved import load_model

        model, meta = load_model(model_dir, device="cpu")
        probs, _ = predict_proba(model, meta, list(self.test[0]))
        pred = np.asarray(probs).argmax(1)
        truth = np.asarray(self.test[1])
        return {"test_accuracy": float((pred == truth).mean()), "n_test": int(len(truth))}


def classification_objective(
    *,
    images: str,
    base: dict[str, Any] | None = None,
    val: str | None = None,
    test: str | None = None,
) -> ClassificationObjective:
    """A classification objective from ImageFolders (``DIR/<class>/*.png``), reloadable on workers."""
    from napari_dlcb.io.imagefolder import read_image_folder
    from napari_dlcb.tasks.classification_config import ClassificationConfig

    classes, imgs, labels = read_image_folder(images)
    val_set = test_set = None
    for name, folder in (("validation", val), ("test", test)):
        if folder is None:
            continue
        c2, i2, l2 = read_image_folder(folder)
        if c2 != classes:
            raise DlcbError(f"{name} classes {c2} differ from training classes {classes}")
        if name == "validation":
            val_set = (i2, l2)
        else:
            test_set = (i2, l2)
    cfg = ClassificationConfig.from_dict(
        {
            k: tuple(v) if k == "blocks" and not isinstance(v, str) else v
            for k, v in (base or {}).items()
        }
    )
    source = {"images": images, "val": val, "test": test}
    return ClassificationObjective(
        imgs, labels, classes, cfg, val=val_set, test=test_set, source=source
    )


# ----------------------------------------------------------------------------- segmentation
class SegmentationObjective(Objective):
    """A segmentation U-Net on images and label images; value: validation pixel accuracy.

    ``accuracy`` is 1 - pixel error over the labelled validation pixels
    (whole held-out images with 3 or more images, else held-out blocks or
    strokes, as the task splits them); ``mean_iou`` can be chosen instead.

    Parameters
    ----------
    images, labels : list of ndarray
        Training images and their label images.
    base : SegmentationConfig
        Defaults every trial starts from.
    test : tuple (images, labels), optional
        Held-out images with dense labels, scored once on the chosen model
        (pixel error and foreground IoU).
    metric : {"accuracy", "mean_iou"}
        The validation metric to maximise.
    source : dict, optional
        How to reload the data on another machine.
    """

    factory = "napari_dlcb.tuning.objectives:segmentation_objective"

    kind = "segmentation"
    direction = "maximize"

    def __init__(self, images, labels, base, *, test=None, metric="accuracy", source=None):
        super().__init__(base)
        if metric not in ("accuracy", "mean_iou"):
            raise DlcbError(f"unknown segmentation metric {metric!r}; use accuracy or mean_iou")
        self.images, self.labels, self.test = list(images), list(labels), test
        self.metric, self.source = metric, source

    def default_space(self) -> SearchSpace:
        """Learning rate, batch size, patch size, speed mode, how much pretrained layers move."""
        return SearchSpace(
            [
                Param.float("lr", 1e-4, 1e-2, log=True, important=True),
                Param.categorical("batch_size", (2, 4, 8), important=True),
                Param.categorical("patch_size", (128, 192, 256)),
                Param.float("pretrained_lr_factor", 0.01, 1.0, log=True),
                Param.categorical("augment", (True, False)),
            ]
        )

    def make_task(self, config: TaskConfig) -> Task:
        """The task for one trial (this objective's data, the trial's config)."""
        from napari_dlcb.tasks.segmentation import SegmentationTask

        return SegmentationTask(self.images, self.labels, config=config)

    def trial_value(self, task: Task, finished: Any) -> float:
        """The metric of the weights the task kept (its best-scored epoch)."""
        return _metric_at_best(finished, self.metric)

    def test_metrics(self, model_dir: Any) -> dict[str, float] | None:
        """Pixel error and foreground IoU of the chosen model on the test images (once)."""
        if self.test is None:
            return None
        from napari_dlcb.inference import foreground_iou, segment
        from napari_dlcb.models.meta import load_meta

        classes = load_meta(model_dir).label_kind == "classes"
        errors, ious = [], []
        for img, truth in zip(*self.test):
            _, labels = segment(str(model_dir), img)
            pred, truth = np.asarray(labels), np.asarray(truth)
            if classes:  # class values, e.g. ISBI membrane 0 / cell 255
                errors.append(float((pred != truth).mean()))
            else:  # instances: object vs background
                errors.append(float(((pred > 0) != (truth > 0)).mean()))
            ious.append(float(foreground_iou(pred, truth)))
        return {
            "test_pixel_error": float(np.mean(errors)),
            "test_foreground_iou": float(np.mean(ious)),
            "n_test": len(errors),
        }


def segmentation_objective(
    *,
    images: str,
    labels: str,
    base: dict[str, Any] | None = None,
    test_images: str | None = None,
    test_labels: str | None = None,
    metric: str = "accuracy",
) -> SegmentationObjective:
    """A segmentation objective from folders of images and label images (paired by stem)."""
    from napari_dlcb.io.imagefolder import read_image_pairs
    from napari_dlcb.tasks.segmentation import SegmentationConfig

    imgs, labs = read_image_pairs(Path(images), Path(labels))
    test = None
    if test_images or test_labels:
        if not (test_images and test_labels):
            raise DlcbError("--test-images and --test-labels go together")
        test = read_image_pairs(Path(test_images), Path(test_labels))
    source = {
        "images": images,
        "labels": labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "metric": metric,
    }
    return SegmentationObjective(
        imgs,
        labs,
        SegmentationConfig.from_dict(base or {}),
        test=test,
        metric=metric,
        source=source,
    )
