"""Classify the cells of an instance-labels image from a few clicked examples.

The task behind the Cell classifier dock: crops centred on every object are
cut once (:func:`~napari_dlcb.data.cells.object_crops`, crop side chosen from
the objects by default); the annotated ones train a
:class:`~napari_dlcb.tasks.classification.ClassificationTrainer`
(``mode="quick"`` by default: frozen pretrained features and a linear head,
seconds on a CPU); predictions, per-object features, the export table and
per-cell saliency all come from here. Options are one :class:`CellsConfig`.

Live per-cell saliency
----------------------
``fit(preview_saliency=...)`` explains one cell with the current weights while
training runs, in the training thread inside the engine's preview, within
:data:`LIVE_SALIENCY_SHARE` of the training time (a
:class:`~napari_dlcb.tasks.base.LiveBudget`). A request is a
:class:`LiveCellSaliency` (an int is short for ``LiveCellSaliency(object_id)``),
or a callable returning one (or None for no map), asked at every preview so the
explained cell can change while training runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from napari_dlcb.data.cells import auto_crop_size, object_crops
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.base import LiveBudget, Task
from napari_dlcb.tasks.classification import ClassificationTrainer
from napari_dlcb.tasks.classification_config import CellsConfig
from napari_dlcb.tasks.live_saliency import (
    LiveCellSaliency,
    SaliencyRequest,
    check_request,
    live_view,
)
from napari_dlcb.training.events import EpochEnd, JobProgress, Preview, TrainEvent

__all__ = [
    "LIVE_SALIENCY_SHARE",
    "CellClassificationTask",
    "CellEmbedding",
    "CellsConfig",
    "ClassificationTrainer",
    "LiveCellSaliency",
    "SaliencyRequest",
]

#: Largest share of the training thread's time that live per-cell saliency may take
#: (``CellClassificationTask.fit(preview_saliency=...)``). A map that took ``t`` seconds
#: is followed by previews without a map for the next ``t * (1 / share - 1)`` seconds
#: (2 t for 1/3), so training keeps at least two thirds of the time whatever the method,
#: crop size or device.
LIVE_SALIENCY_SHARE = 1 / 3


@dataclasses.dataclass
class CellEmbedding:
    """A 2-D map of the cells' network features and the table to colour it by."""

    method: str
    xy: np.ndarray  # (N, 2), rows in the order of ``table``
    table: Any  # pandas.DataFrame of :meth:`CellClassificationTask.table`


def embedding_steps(
    features: Callable[[], np.ndarray],
    table: Callable[[], Any],
    *,
    method: str = "pca",
    stop: Any = None,
    what: str = "network features",
) -> Generator[JobProgress, None, CellEmbedding | None]:
    """The steps of every object embedding: features, the 2-D embedding, the table.

    Yields a :class:`~napari_dlcb.training.events.JobProgress` before each step
    and returns a :class:`CellEmbedding`, or None if ``stop`` was set.

    Parameters
    ----------
    features : callable
        ``features()`` returns the (N, D) feature matrix.
    table : callable
        ``table()`` returns the pandas DataFrame of the N objects, in the same order.
    method : {"pca", "umap", "tsne"}
        See :func:`napari_dlcb.interpret.embedding.embed`.
    stop : threading.Event, optional
        Checked between the steps.
    what : str
        What the first step is called in the progress.
    """
    from napari_dlcb.interpret.embedding import embed

    note = " (first use compiles code: up to a minute)" if method == "umap" else ""
    yield JobProgress(0, 3, what)
    feats = features()
    if stop is not None and stop.is_set():
        return None
    yield JobProgress(1, 3, f"{method} embedding{note}")
    xy = embed(feats, method=method)
    if stop is not None and stop.is_set():
        return None
    yield JobProgress(2, 3, "measurements")
    rows = table()
    yield JobProgress(3, 3, "done")
    return CellEmbedding(method, xy, rows)


class CellClassificationTask(Task):
    """Classify the objects of an instance-labels image from a few labelled cells.

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
    config : CellsConfig, optional
        The options (default :class:`CellsConfig`).
    channel_axis : int, optional
        Channel axis of a multichannel image.
    **options
        Fields of :class:`CellsConfig` that replace ``config``'s.

    Examples
    --------
    >>> img = np.zeros((64, 64)); lab = np.zeros((64, 64), int)
    >>> for k, (r, c) in enumerate([(8, 8), (8, 40), (40, 8), (40, 40)], 1):
    ...     lab[r:r + 10, c:c + 10] = k; img[r:r + 10, c:c + 10] = 1 + k % 2
    >>> task = CellClassificationTask(img, lab, {1: "a", 2: "b"}, base="none", device="cpu")
    >>> _ = task.run(epochs=2)
    >>> ids, probs = task.predict()
    >>> ids.tolist(), probs.shape, task.crop_size
    ([1, 2, 3, 4], (4, 2), 32)
    """

    kind: ClassVar[str] = "classification"

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        annotations: dict[int, str],
        *,
        classes: Sequence[str] | None = None,
        config: CellsConfig | None = None,
        channel_axis: int | None = None,
        **options: Any,
    ) -> None:
        self.config = (config if config is not None else CellsConfig()).replace(**options)
        self.image = np.asarray(image)
        self.labels = np.asarray(labels)
        self.channel_axis = channel_axis
        auto = self.config.crop_size == "auto"
        self.crop_size = auto_crop_size(self.labels) if auto else int(self.config.crop_size)
        self.crops = object_crops(
            self.image,
            self.labels,
            size=self.crop_size,
            channel_axis=channel_axis,
            mask_neighbours=self.config.mask_neighbours,
        )
        rows, y, self.classes = self._annotated_rows(annotations, classes)
        self.trainer = ClassificationTrainer(
            list(self.crops.crops[rows]),
            y,
            self.classes,
            config=self.config.classification_config(self.crop_size),
            channel_axis=0,
        )
        auto_note = (
            [f"crop size {self.crop_size} px, chosen from the objects' sizes (auto)"]
            if auto
            else []
        )
        self.notes = auto_note + list(self.crops.notes) + list(self.trainer.notes)
        self._x_all = self.trainer.normalise(self.crops.crops.astype(np.float32))

    def _annotated_rows(
        self, annotations: dict[int, str], classes: Sequence[str] | None
    ) -> tuple[list[int], list[int], list[str]]:
        """Crop rows of the annotated cells, their class indices, the classes used."""
        if not annotations:
            raise DlcbError("label some cells first: click cells to assign them a class")
        names = sorted({str(v) for v in annotations.values()})
        order = [str(c) for c in classes] if classes is not None else names
        unknown = [n for n in names if n not in order]
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
        y = [order.index(str(annotations[i])) for i in self.annotated_ids]
        used = sorted(set(y))
        remap = {k: j for j, k in enumerate(used)}
        return (
            [index[i] for i in self.annotated_ids],
            [remap[k] for k in y],
            [order[k] for k in used],
        )

    # the Task attributes, held by the crop classifier --------------------------------------
    @property
    def model(self) -> Any:
        """The network being trained (a :class:`~napari_dlcb.models.classifier.CellClassifier`)."""
        return self.trainer.model

    @property
    def history(self) -> list[dict[str, float]]:
        """One record per epoch over all :meth:`fit` calls."""
        return self.trainer.history

    @property
    def meta(self) -> Any:
        """What :meth:`save` writes (the crop classifier's metadata, plus the crop rule)."""
        meta = self.trainer.meta
        meta.extra["crop_size"] = self.crop_size
        meta.extra["crop_size_rule"] = "auto" if self.config.crop_size == "auto" else "fixed"
        meta.extra["mask_neighbours"] = self.config.mask_neighbours
        return meta

    def save(self, path: str | Path) -> Path:
        """Write the model folder (metadata, safetensors, TorchScript ``model.pt``)."""
        import torch

        from napari_dlcb.models.saved import save_model

        self.model.eval()
        example = torch.zeros(1, self.model.in_channels, self.crop_size, self.crop_size)
        return save_model(self.model.cpu(), path, self.meta, example_input=example)

    # training ------------------------------------------------------------------------
    def fit(
        self,
        *,
        stop: Any = None,
        preview_saliency: SaliencyRequest | Callable[[], SaliencyRequest | None] | None = None,
        **options: Any,
    ) -> Iterator[TrainEvent]:
        """Train; yields engine events (see :meth:`ClassificationTrainer.fit`).

        Without a validation split, ``Preview.data["confusion"]`` is the
        confusion matrix on the labelled cells themselves (training fit),
        after every epoch.

        Parameters
        ----------
        stop : threading.Event, optional
            Ends training cleanly at the next step (what was learnt is kept).
        preview_saliency : LiveCellSaliency or int or callable, optional
            The cell to explain live (see the module docstring). Previews that
            carry a map add the items of :meth:`saliency_preview`. If a request
            cannot be explained (unknown cell or class, a method that fails on
            this model), one preview carries ``"saliency_error"`` (one line)
            and that request is not tried again; training goes on.
        **options
            Passed on to :meth:`ClassificationTrainer.fit` (``epochs``, ``lr``,
            ``preview_interval``, engine options...).

        Raises
        ------
        DlcbError
            If a fixed ``preview_saliency`` names an unknown cell, method or class.
        """
        if preview_saliency is not None:
            if not callable(preview_saliency):
                self._check_request(preview_saliency)  # bad input fails before training
            options["preview_extra"] = self._live_saliency(preview_saliency)
        if len(self.trainer.y_val):
            yield from self.trainer.fit(stop=stop, **options)
            return
        options.setdefault("preview_interval", 0.5)
        for ev in self.trainer.fit(stop=stop, **options):
            yield ev
            if isinstance(ev, EpochEnd):
                yield Preview(epoch=ev.epoch, step=-1, data=self.training_confusion())

    def _check_request(self, request: SaliencyRequest) -> LiveCellSaliency:
        """``request`` checked against this task; DlcbError if it cannot work."""
        return check_request(request, self.crops.ids, self.classes)

    def _live_saliency(
        self, request: SaliencyRequest | Callable[[], SaliencyRequest | None]
    ) -> Callable[[], dict[str, Any]]:
        """``f() -> dict``: a map of the requested cell when the budget allows, else nothing.

        Runs in the training thread between two optimiser steps (the engine's
        preview), on :attr:`model` with its current weights; the saliency
        methods hand the model back unchanged and work inside ``torch.inference_mode``.
        """
        get = request if callable(request) else (lambda: request)
        return live_view(self.saliency_preview, get, LiveBudget(LIVE_SALIENCY_SHARE))

    def saliency_preview(self, request: SaliencyRequest) -> dict[str, Any]:
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
        req = self._check_request(request)
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
        from napari_dlcb.inference.classify import predict_crops
        from napari_dlcb.training.metrics import confusion_matrix

        tr = self.trainer
        probs = predict_crops(tr.model, tr.x_train, device=tr.device)
        cm = confusion_matrix(tr.y_train, probs.argmax(1), len(self.classes))
        return {"confusion": cm, "classes": list(self.classes)}

    # results -------------------------------------------------------------------------
    def predict(self, data: Any = None, *, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Object ids (N,) and class probabilities (N, K).

        ``data`` None: every object of this task's image; else an ``(image,
        labels)`` pair, cropped and normalised like the training cells.
        """
        from napari_dlcb.inference.classify import predict_crops

        tr = self.trainer
        if data is None:
            return self.crops.ids, predict_crops(tr.model, self._x_all, device=tr.device, tta=tta)
        image, labels = data
        oc = object_crops(
            image,
            labels,
            size=self.crop_size,
            channel_axis=self.channel_axis,
            mask_neighbours=self.config.mask_neighbours,
        )
        x = tr.normalise(oc.crops.astype(np.float32))
        return oc.ids, predict_crops(tr.model, x, device=tr.device, tta=tta)

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
        import pandas as pd

        from napari_dlcb.data.cells import regionprops_table

        if probs is None:
            _, probs = self.predict()
        morph = regionprops_table(self.labels, self.image, channel_axis=self.channel_axis)
        df = pd.DataFrame(
            {"object_id": self.crops.ids, "class": [self.classes[k] for k in probs.argmax(1)]}
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
        import torch

        from napari_dlcb.models.state import inference_mode_on

        out = []
        with inference_mode_on(self.model, self.trainer.device) as model:
            for i in range(0, len(self._x_all), 256):
                xb = torch.from_numpy(np.ascontiguousarray(self._x_all[i : i + 256]))
                out.append(model.features(xb.to(self.trainer.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def iter_embedding(
        self, *, method: str = "pca", probs: np.ndarray | None = None, stop: Any = None
    ) -> Generator[JobProgress, None, CellEmbedding | None]:
        """2-D embedding of every cell's features, as a generator of progress events.

        Yields a :class:`~napari_dlcb.training.events.JobProgress` before each
        step (network features, the embedding, the measurements) and returns a
        :class:`CellEmbedding`, or None if ``stop`` was set.

        Parameters
        ----------
        method : {"pca", "umap", "tsne"}
            See :func:`napari_dlcb.interpret.embedding.embed` (UMAP's first use
            in a process compiles code: 10 s to a minute or more).
        probs : ndarray (N, K), optional
            Predicted probabilities for the table (default: predict now).
        stop : threading.Event, optional
            Checked between the steps.
        """
        return (
            yield from embedding_steps(
                self.features, lambda: self.table(probs), method=method, stop=stop
            )
        )

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
        result : Attribution
        """
        from napari_dlcb.interpret.saliency import saliency

        hit = np.flatnonzero(self.crops.ids == int(object_id))
        if hit.size == 0:
            raise DlcbError(f"object {object_id} is not in the labels layer")
        i = int(hit[0])
        res = saliency(
            self.model,
            self._x_all[i],
            method=method,
            target=target,
            classes=self.classes,
            channel_axis=0,
            device=self.trainer.device,
            **kwargs,
        )
        return res.map, self.crops.origins[i], res
