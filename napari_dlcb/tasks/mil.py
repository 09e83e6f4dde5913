"""Classify whole images from image-level labels, and localise what made the call.

Kraus et al. (2016)'s convolutional multiple-instance learning, behind
``napari-dlcb train classification --mil`` and the Cell classifier dock's
"Image classifier (MIL)" section: whole images (an ImageFolder, one
sub-folder per class) train a :class:`~napari_dlcb.models.mil.MILClassifier`,
whose pooling (gated attention or noisy-AND) over the last feature map makes
one prediction per image; :meth:`MILTrainer.heatmaps` gives the per-location
map (attention, or the class's instance probability) on every image's grid.

Everything else is the crop classifier's
(:class:`~napari_dlcb.tasks.classification.ClassificationTrainer`): images
of any size and channel count brought to one square size, statistics from
the training images only, a stratified validation split, class balancing,
augmentation, the shared engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from napari_dlcb.tasks.classification import ClassificationTrainer
from napari_dlcb.tasks.classification_config import MILConfig

__all__ = ["MILConfig", "MILPrediction", "MILTrainer", "classify_image"]


class MILTrainer(ClassificationTrainer):
    """Train a multiple-instance image classifier (see the module docstring).

    Parameters
    ----------
    images : sequence of ndarray
        Whole images (any size/channels; brought to ``config.input_size`` or
        their common side).
    labels : sequence of int
        Class index of each image.
    classes : sequence of str
        Class names.
    config : MILConfig, optional
        The options (default :class:`MILConfig`).
    val_images, val_labels, channel_axis, **options
        As in :class:`~napari_dlcb.tasks.classification.ClassificationTrainer`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ims = [rng.random((32, 32)) for _ in range(8)]
    >>> for im in ims[1::2]:
    ...     im[8:14, 8:14] += 3
    >>> tr = MILTrainer(ims, [0, 1] * 4, ["plain", "spot"], base="none", width=4,
    ...                 blocks=(1, 1), attention_dim=8, device="cpu", val_fraction=0)
    >>> _ = tr.run(epochs=1)
    >>> probs, maps = tr.heatmaps(ims[:2])
    >>> probs.shape, maps[0].shape
    ((2, 2), (32, 32))
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        classes: Sequence[str],
        *,
        config: MILConfig | None = None,
        val_images: Sequence[np.ndarray] | None = None,
        val_labels: Sequence[int] | None = None,
        channel_axis: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            images,
            labels,
            classes,
            config=config if config is not None else MILConfig(),
            val_images=val_images,
            val_labels=val_labels,
            channel_axis=channel_axis,
            **options,
        )

    def _build_model(self, in_channels: int) -> tuple[nn.Module, str | None, dict[str, Any]]:
        from napari_dlcb.models.mil import load_mil_base

        cfg = self.config
        return load_mil_base(
            cfg.base,
            in_channels=in_channels,
            n_classes=len(self.classes),
            width=cfg.width,
            blocks=cfg.blocks,
            pooling=cfg.pooling,
            attention_dim=cfg.attention_dim,
            seed=cfg.seed,
        )

    def heatmaps(
        self, images: Sequence[np.ndarray], *, target: int | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Class probabilities (N, K) and one localisation map per image, on its own grid.

        See :func:`napari_dlcb.inference.classify.predict_heatmaps`.
        """
        from napari_dlcb.inference.classify import predict_heatmaps

        probs, maps, _ = predict_heatmaps(
            self.model, self.meta, images, channel_axis=self.channel_axis,
            target=target, device=self.device,
        )  # fmt: skip
        return probs, maps

    @property
    def meta(self) -> Any:
        """The crop classifier's metadata, marked as a MIL model with its pooling."""
        meta = super().meta
        meta.label_kind = "images"
        meta.extra["mil"] = True
        meta.extra["pooling"] = self.config.pooling
        meta.extra["heatmap"] = (
            "relative attention (1 = uniform)"
            if self.config.pooling == "attention"
            else "instance probability of the class"
        )
        return meta


@dataclass
class MILPrediction:
    """One image classified by a saved MIL model, with its localisation map."""

    classes: list[str]
    probs: np.ndarray  # (K,)
    heatmap: np.ndarray  # (Y, X) float32 on the image's grid
    heatmap_kind: str
    notes: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> str:
        """The most probable class."""
        return self.classes[int(np.argmax(self.probs))]


def classify_image(
    model: str | Path,
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    device: Any = "auto",
) -> MILPrediction:
    """Classify one whole image with a saved MIL model and localise the evidence.

    Parameters
    ----------
    model : path
        A model folder written by ``train classification --mil``.
    image : ndarray
        (Y, X) or with a channel axis.
    channel_axis : int, optional
        Channel axis of a multichannel image.
    device : str
        "auto", "cpu", "cuda" or "mps".

    Returns
    -------
    MILPrediction
    """
    from napari_dlcb.inference.classify import check_classifier, predict_heatmaps
    from napari_dlcb.models import classifier as _classifier  # registers the architectures
    from napari_dlcb.models.saved import load_model

    del _classifier
    net, meta = load_model(model, device="cpu")
    check_classifier(meta, mil=True)
    probs, maps, notes = predict_heatmaps(
        net, meta, [np.asarray(image)], channel_axis=channel_axis, device=device
    )
    kind = str(meta.extra.get("heatmap", "localisation map"))
    return MILPrediction(list(meta.classes), probs[0], maps[0], kind, notes)
