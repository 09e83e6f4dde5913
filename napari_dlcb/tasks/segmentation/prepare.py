"""From images and annotation to what training needs: checks, outputs, split, metadata.

- :func:`checked_images`: every image as (C, Y, X), checked against its labels;
- :func:`output_classes`: what the model will output, from the labels and the
  base model (scribbles on an instance model keep its 3-class head);
- :func:`split_targets`: hold out whole images (3 or more), else whole
  painted strokes (scribbles), else 64-px blocks of annotation;
- :func:`make_meta`: the trained model's metadata (one class name and value
  per output channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_dlcb.data.images import to_cyx
from napari_dlcb.data.labels import IGNORE, class_names_for
from napari_dlcb.data.normalize import check_image
from napari_dlcb.data.splits import block_mask, stroke_mask, train_val_split
from napari_dlcb.errors import DlcbError
from napari_dlcb.tasks.segmentation.start import n_outputs

__all__ = [
    "Outputs",
    "checked_images",
    "make_meta",
    "output_classes",
    "rechoose_fg_threshold",
    "split_targets",
]


def checked_images(
    images: Sequence[Any], labels: Sequence[Any], channel_axis: int | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images as (C, Y, X) and labels as arrays, with one-line errors for bad input."""
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
        check_image(im, name, channel_axis=0)
    if len({im.shape[0] for im in imgs}) > 1:
        raise DlcbError("images have different numbers of channels")
    return imgs, labs


@dataclass(frozen=True)
class Outputs:
    """What the trained model outputs."""

    n_classes: int
    #: one-logit (sigmoid) model
    binary: bool
    #: scribbles (1 background, 2 objects) on a background/interior/boundary model
    scribble_instances: bool
    #: scribbles on a one-channel foreground model (instances by watershed)
    binary_instances: bool


def output_classes(config: Any, base_meta: Any, n_values: int) -> Outputs:
    """Decide the output classes from the labels (``n_values`` classes) and the base model."""
    binary = n_outputs(base_meta) == 1
    n_classes = n_values
    scribbles = config.label_kind == "scribbles" and config.scribble_instances
    # Scribbles with one object class on an instance model (background / interior /
    # boundary) keep the pretrained head: "object" strokes teach "interior or
    # boundary" (a partial-label loss), so the result stays instances, as a
    # cellpose user expects from painting a few nuclei.
    scribble_instances = bool(
        scribbles
        and n_classes == 2
        and not binary
        and getattr(base_meta, "label_kind", None) == "instances"
        and len(base_meta.classes) == 3
    )
    if scribble_instances:
        n_classes = 3
    # the same for one-channel foreground models (e.g. BioImage.IO nuclei U-Nets)
    binary_instances = bool(scribbles and n_classes == 2 and binary)
    if config.label_kind == "instances" and binary:
        n_classes = 2
    if binary and n_classes > 2:
        raise DlcbError(
            f"the base model predicts one channel (foreground) and cannot learn {n_classes} "
            "classes; use the built-in U-Net"
        )
    return Outputs(n_classes, binary, scribble_instances, binary_instances)


def split_targets(
    targets: list[np.ndarray], config: Any
) -> tuple[list[int], dict[int, np.ndarray], dict[int, np.ndarray]]:
    """(training image indices, training targets, validation targets) by image index.

    Whole images are held out when there are 3 or more; otherwise whole
    strokes of scribbles (:func:`~napari_dlcb.data.splits.stroke_mask`), or
    64-px blocks of annotation (dense labels, or too few strokes).
    """
    n, frac, seed = len(targets), config.val_fraction, config.seed
    if n >= 3 and frac > 0:
        tr, va = train_val_split(n, val_fraction=frac, seed=seed)
        return (
            [int(i) for i in tr],
            {int(i): targets[i] for i in tr},
            {int(i): targets[i] for i in va},
        )
    train_t, val_t = {}, {}
    for i, t in enumerate(targets):
        if frac <= 0:
            train_t[i] = t
            continue
        m = None
        if config.label_kind == "scribbles":
            m = stroke_mask(t, val_fraction=frac, seed=seed + i)
        if m is None:
            m = block_mask(t.shape, val_fraction=frac, seed=seed + i, labelled=t >= 0)
        tr_t, va_t = t.copy(), t.copy()
        tr_t[m], va_t[~m] = IGNORE, IGNORE
        train_t[i] = tr_t
        if (va_t >= 0).any():
            val_t[i] = va_t
    if not any((t >= 0).any() for t in train_t.values()):
        raise DlcbError("no annotated pixels are left for training")
    return list(range(n)), train_t, val_t


def make_meta(
    model: Any,
    base_meta: Any,
    out: Outputs,
    *,
    label_kind: str,
    class_values: list[int],
    normalizer: Any,
    parent: str,
    in_channels: int,
) -> Any:
    """The trained model's metadata: one class name and one value per output channel."""
    from napari_dlcb.models.saved import ModelMeta

    instances = out.scribble_instances or out.binary_instances
    out_kind = "instances" if instances else label_kind
    if out_kind != "instances":
        classes, values = class_names_for(out_kind, class_values), list(class_values)
    elif out.binary:
        classes, values = ["background", "foreground"], [0, 1]
    else:  # scribbles on an instance model: 3 outputs, not the 2 painted values
        classes = ["background", "interior", "boundary"][: out.n_classes]
        values = list(range(out.n_classes))
    arch = model.architecture() if hasattr(model, "architecture") else {"name": "torchscript"}
    meta = ModelMeta(
        task="segmentation",
        architecture=arch,
        classes=classes,
        label_kind=out_kind,
        class_values=values,
        normalization=normalizer.to_dict(),
        input_axes="bcyx",
        in_channels=in_channels,
        output_activation="sigmoid" if out.binary else "softmax",
        parent=parent,
        extra={
            k: v
            for k, v in (base_meta.extra or {}).items()
            if k in ("halo", "size_multiple", "postprocess")
        },
    )
    if instances:
        meta.extra["trained_from"] = "scribbles (1 = background, 2 = objects)"
    return meta


def rechoose_fg_threshold(
    model: Any,
    meta: Any,
    images: list[np.ndarray],
    train_t: dict[int, np.ndarray],
    val_t: dict[int, np.ndarray],
    *,
    label_kind: str,
    device: str,
) -> None:
    """Re-choose ``meta``'s instance threshold on every annotated image (in place).

    Only for dense instance labels on a (background, interior, boundary) model with a
    held-out part: scribbles are too sparse and too easy to judge it on, so they keep
    the base's. Training and validation targets are used together (one number is
    calibrated; a single validation image is too noisy for it); the base's threshold
    is kept unless another is clearly better (:mod:`napari_dlcb.inference.calibrate`).
    """
    if label_kind != "instances" or not val_t:
        return
    if meta.classes != ["background", "interior", "boundary"]:
        return
    from napari_dlcb.inference.calibrate import threshold_on_annotation

    post = dict(meta.extra.get("postprocess") or {})
    annotated = {**train_t, **val_t}
    if len(annotated) < len(train_t) + len(val_t):  # held-out blocks of the same images
        annotated = {i: np.maximum(train_t[i], val_t.get(i, -1)) for i in train_t}
    chosen = threshold_on_annotation(
        model,
        [images[i] for i in annotated],
        list(annotated.values()),
        prefer=post.get("fg_threshold", 0.5),  # 0.5: the post-processing default
        device=device,
    )
    if chosen is not None:
        meta.extra["training"]["fg_threshold"] = {
            "base": post.get("fg_threshold"),
            "chosen": chosen,
        }
        meta.extra["postprocess"] = {**post, "fg_threshold": chosen}
