"""Pretrain the cell classifier's encoder as a denoising autoencoder on unlabelled crops.

The paper's answer to "few labels, many images" (Angermueller et al. 2016):
learn features without labels first, then fine-tune them on the few labels.
:class:`AutoencoderPretrainer` trains
:class:`~napari_dlcb.models.autoencoder.CellAutoencoder` (the classifier's
backbone plus a light decoder) to reconstruct every crop from a corrupted
copy (hidden patches and noise; mean squared error against the clean crop),
through the shared engine (``stop=`` keeps what was learnt). :meth:`save`
writes the *encoder* as an ordinary classification model folder with no
classes (``extra["encoder_only"]``), which ``train classification --base``
fine-tunes and the Cell classifier dock can start from or embed with.

:func:`iter_object_embedding` embeds every object of an image with a saved
encoder's features, before any cell is labelled.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from napari_dlcb.data.crops import (
    DenoisingDataset,
    common_side,
    most_common_channels,
    prepare_images,
)
from napari_dlcb.data.normalize import Normalizer
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.autoencoder import CellAutoencoder
from napari_dlcb.models.classifier import load_base
from napari_dlcb.models.state import inference_mode_on
from napari_dlcb.tasks.base import Task
from napari_dlcb.tasks.classification_config import PretrainConfig
from napari_dlcb.training.engine import fit
from napari_dlcb.training.events import Finished, JobProgress, TrainEvent

__all__ = ["AutoencoderPretrainer", "PretrainConfig", "encoder_features", "iter_object_embedding"]

#: the fewest images worth pretraining on
MIN_IMAGES = 8


class AutoencoderPretrainer(Task):
    """Train a classifier's encoder as a denoising autoencoder on unlabelled images.

    Parameters
    ----------
    images : sequence of ndarray
        Unlabelled crops or small images (any size/channels; see
        :func:`~napari_dlcb.data.crops.prepare_images`).
    config : PretrainConfig, optional
        The options (default :class:`PretrainConfig`).
    channel_axis : int, optional
        Channel axis of 3-D images.
    **options
        Fields of :class:`PretrainConfig` that replace ``config``'s.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ims = [rng.random((16, 16)) for _ in range(12)]
    >>> pre = AutoencoderPretrainer(ims, width=4, blocks=(1, 1), device="cpu")
    >>> fin = pre.run(epochs=1)
    >>> pre.predict(ims[:2]).shape
    (2, 1, 16, 16)
    """

    kind: ClassVar[str] = "classification"

    def __init__(
        self,
        images: Sequence[np.ndarray],
        *,
        config: PretrainConfig | None = None,
        channel_axis: int | None = None,
        **options: Any,
    ) -> None:
        cfg = (config if config is not None else PretrainConfig()).replace(**options)
        self.config = cfg
        if len(images) < MIN_IMAGES:
            raise DlcbError(
                f"pretraining needs at least {MIN_IMAGES} unlabelled images, got {len(images)}"
            )
        self.device = resolve_device(cfg.device)
        self.channel_axis = channel_axis
        in_ch = most_common_channels(images, channel_axis)
        encoder, self.parent, info = load_base(
            cfg.base, in_channels=in_ch, n_classes=1, width=cfg.width, blocks=cfg.blocks,
            seed=cfg.seed,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.model = CellAutoencoder(encoder=encoder, pooled=cfg.decoder == "pooled")
        size = cfg.input_size or common_side(images, channel_axis, info.get("input_size"))
        prep = prepare_images(images, size=size, channels=in_ch, channel_axis=channel_axis)
        self.notes = list(prep.notes)
        self.input_size = int(prep.data.shape[-1])
        self.n_images = len(prep.data)
        order = np.random.default_rng(cfg.seed).permutation(len(prep.data))
        n_val = int(round(cfg.val_fraction * len(order))) if cfg.val_fraction > 0 else 0
        n_val = min(n_val, len(order) - 1)
        self.normalizer = Normalizer.fit(
            list(prep.data[order[n_val:]]), mode="zscore", channel_axis=0
        )
        self.x_train = self.normalise(prep.data[order[n_val:]])
        self.x_val = self.normalise(prep.data[order[:n_val]])
        self.history: list[dict[str, float]] = []
        self.finished: Finished | None = None
        self.baseline: float | None = None
        self._runs: list[dict[str, Any]] = []

    @classmethod
    def from_objects(
        cls,
        image: np.ndarray,
        labels: np.ndarray,
        *,
        crop_size: int | str = "auto",
        channel_axis: int | None = None,
        config: PretrainConfig | None = None,
        **options: Any,
    ) -> AutoencoderPretrainer:
        """Pretrain on a crop centred on every object of an instance-labels image.

        What the Cell classifier dock's "Pretrain on all cells of this image"
        runs. ``crop_size="auto"`` chooses the side as the cell classifier does
        (:func:`~napari_dlcb.data.cells.auto_crop_size`), so the encoder sees
        the crops that classification will use.
        """
        from napari_dlcb.data.cells import auto_crop_size, object_crops

        size = auto_crop_size(labels) if crop_size == "auto" else int(crop_size)
        oc = object_crops(image, labels, size=size, channel_axis=channel_axis)
        cfg = (config if config is not None else PretrainConfig()).replace(
            input_size=size, **options
        )
        task = cls(list(oc.crops.astype(np.float32)), config=cfg, channel_axis=0)
        task.notes = [f"{len(oc.ids)} cells, {size} x {size} px crops", *oc.notes, *task.notes]
        return task

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Crops (N, C, S, S) normalised with the training statistics."""
        if not len(x):
            return x.astype(np.float32)
        return np.stack([self.normalizer(im, channel_axis=0) for im in x]).astype(np.float32)

    @property
    def encoder(self) -> Any:
        """The encoder being pretrained (a :class:`~napari_dlcb.models.classifier.CellClassifier`)."""
        return self.model.encoder

    def _dataset(self, x: np.ndarray, fixed: bool) -> DenoisingDataset:
        cfg = self.config
        return DenoisingDataset(
            x,
            noise=cfg.noise,
            mask_fraction=cfg.mask_fraction,
            patch=cfg.mask_patch,
            augment=cfg.augment,
            seed=cfg.seed,
            fixed=fixed,
        )

    def fit(
        self,
        *,
        stop: Any = None,
        epochs: int | None = None,
        lr: float | None = None,
        max_time: float | None = None,
        **engine_options: Any,
    ) -> Iterator[TrainEvent]:
        """Train the autoencoder; yield engine events (losses are reconstruction MSE).

        Parameters
        ----------
        stop, max_time
            As in :func:`napari_dlcb.training.engine.fit` (Stop keeps what was learnt).
        epochs, lr : optional
            Override the config's for this run.
        **engine_options
            Passed on to the engine (``epoch_seconds``, ``early_stopping``...).
        """
        cfg = self.config.replace(
            **{k: v for k, v in {"epochs": epochs, "lr": lr}.items() if v is not None}
        )
        val = self._dataset(self.x_val, True) if len(self.x_val) else None
        if cfg.early_stopping is not None:
            engine_options.setdefault("early_stopping", cfg.early_stopping or None)
        engine_options.setdefault("early_stopping", 5)
        events = fit(
            self.model,
            self._dataset(self.x_train, False),
            val,
            loss="mse",
            monitor="val_loss",
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            optimizer="adamw",
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            device=self.device,
            seed=cfg.seed,
            stop=stop,
            max_time=max_time,
            **engine_options,
        )
        t0 = time.perf_counter()
        for ev in events:
            if isinstance(ev, Finished):
                self.finished = ev
                self.record_run(ev, seconds=time.perf_counter() - t0, kind="denoising autoencoder")
            yield ev

    def predict(self, data: Sequence[np.ndarray], **options: Any) -> np.ndarray:
        """Reconstructions (N, C, S, S) of uncorrupted images, in normalised units."""
        return self.predict_normalised(self._prepare(data))

    def reconstruction_error(self, data: Sequence[np.ndarray] | None = None) -> float:
        """Mean squared error of the reconstructions of (uncorrupted) images.

        ``data`` None: the held-out images (else the training images).
        """
        if data is None:
            x = self.x_val if len(self.x_val) else self.x_train
            rec = self.predict_normalised(x)
        else:
            x = self._prepare(data)
            rec = self.predict(data)
        return float(np.mean((rec - x) ** 2))

    def predict_normalised(self, x: np.ndarray) -> np.ndarray:
        """Reconstructions of crops already prepared and normalised (N, C, S, S)."""
        out = []
        with inference_mode_on(self.model, self.device) as model:
            for i in range(0, len(x), 256):
                out.append(model(torch.from_numpy(x[i : i + 256]).to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _prepare(self, data: Sequence[np.ndarray]) -> np.ndarray:
        prep = prepare_images(
            data,
            size=self.input_size,
            channels=self.model.in_channels,
            channel_axis=self.channel_axis,
        )
        return self.normalise(prep.data)

    @property
    def meta(self) -> Any:
        """What :meth:`save` writes: an encoder-only classification model (no classes)."""
        from napari_dlcb.models.saved import ModelMeta

        cfg = self.config
        return ModelMeta(
            task="classification",
            architecture=self.encoder.architecture(),
            classes=[],
            label_kind=None,
            normalization=self.normalizer.to_dict(),
            input_axes="bcyx",
            in_channels=int(self.model.in_channels),
            output_activation="none",
            parent=self.parent,
            extra={
                "encoder_only": True,
                "input_size": self.input_size,
                "pretraining": {
                    "method": "denoising autoencoder",
                    "noise": cfg.noise,
                    "mask_fraction": cfg.mask_fraction,
                    "mask_patch": cfg.mask_patch,
                    "decoder": cfg.decoder,
                    "n_images": self.n_images,
                    "n_val": int(len(self.x_val)),
                },
                "notes": list(self.notes),
                "history": self.history,
                "best_epoch": self.finished.best_epoch if self.finished else None,
                "training_runs": self._runs,
            },
        )

    def save(self, path: str | Path) -> Path:
        """Write the encoder as a model folder that ``train classification --base`` accepts."""
        from napari_dlcb.models.saved import save_model

        enc = self.encoder
        was = enc.training
        enc.eval()
        example = torch.zeros(1, enc.in_channels, self.input_size, self.input_size)
        try:
            return save_model(enc.cpu(), path, self.meta, example_input=example)
        finally:
            enc.train(was)


def encoder_features(
    model: Any,
    meta: Any,
    crops: Sequence[np.ndarray],
    *,
    channel_axis: int | None = 0,
    device: Any = "auto",
) -> np.ndarray:
    """Pooled features (N, F) of a saved classifier or encoder for raw crops.

    The crops are prepared and normalised as the model was trained
    (``meta.extra["input_size"]``, ``meta.normalization``).
    """
    size = int(meta.extra.get("input_size") or 32)
    prep = prepare_images(
        crops, size=size, channels=int(meta.in_channels), channel_axis=channel_axis
    )
    norm = Normalizer.from_dict(meta.normalization)
    x = np.stack([norm(im, channel_axis=0) for im in prep.data]).astype(np.float32)
    dev = resolve_device(device)
    out = []
    with inference_mode_on(model, dev) as net:
        for i in range(0, len(x), 256):
            out.append(net.features(torch.from_numpy(x[i : i + 256]).to(dev)).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def iter_object_embedding(
    image: np.ndarray,
    labels: np.ndarray,
    model_dir: str | Path,
    *,
    method: str = "pca",
    crop_size: int | None = None,
    channel_axis: int | None = None,
    annotations: dict[int, str] | None = None,
    stop: Any = None,
) -> Generator[JobProgress, None, Any]:
    """2-D embedding of every object by a saved encoder's features (no training needed).

    Yields :class:`~napari_dlcb.training.events.JobProgress` and returns a
    :class:`~napari_dlcb.tasks.cells.CellEmbedding` whose table has the
    object ids, the annotated class (``""`` where none) and the morphology;
    None if ``stop`` was set.
    """
    import pandas as pd

    from napari_dlcb.data.cells import object_crops, regionprops_table
    from napari_dlcb.models.saved import load_model
    from napari_dlcb.tasks.cells import embedding_steps

    model, meta = load_model(model_dir, device="cpu")
    size = int(crop_size or meta.extra.get("input_size") or 32)
    oc = object_crops(image, labels, size=size, channel_axis=channel_axis)
    ann = {int(k): str(v) for k, v in (annotations or {}).items()}

    def table() -> Any:
        rows = pd.DataFrame(
            {"object_id": oc.ids, "annotated": [ann.get(int(i), "") for i in oc.ids]}
        )
        morph = regionprops_table(labels, image, channel_axis=channel_axis)
        return rows.merge(morph, on="object_id", how="left")

    return (
        yield from embedding_steps(
            lambda: encoder_features(model, meta, list(oc.crops.astype(np.float32))),
            table,
            method=method,
            stop=stop,
            what="encoder features",
        )
    )
