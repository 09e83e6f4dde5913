"""``napari-dlcb train segmentation`` and ``napari-dlcb predict segmentation``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from napari_dlcb.commands._report import say
from napari_dlcb.io.imagefolder import read_image_pairs, stem_files


def register(train, predict, top) -> None:
    """Add the segmentation verbs to the ``train`` and ``predict`` sub-parsers."""
    p = train.add_parser(
        "segmentation",
        help="fine-tune a U-Net on images + label images paired by file stem",
        description="Fine-tune a pretrained segmentation model. Images are PNG/TIFF, 2-D grey "
        "or RGB; labels are paired with images by file stem.",
    )
    p.add_argument("--images", required=True, type=Path, help="folder of images")
    p.add_argument("--labels", required=True, type=Path, help="folder of label images")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument(
        "--labels-kind", default="scribbles", choices=["scribbles", "classes", "instances"]
    )
    p.add_argument(
        "--base",
        default="builtin",
        help="builtin, scratch, a saved model folder or a BioImage.IO package",
    )
    p.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "quick", "full"],
        help="quick: frozen encoder, train decoder; full: all layers "
        "(auto: quick for scribbles, full otherwise)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate of new layers; pretrained ones train at lr x --pretrained-lr-factor",
    )
    p.add_argument("--pretrained-lr-factor", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--patch-size", type=int, default=None, help="default: 128 in quick mode, 256 in full mode"
    )
    p.add_argument("--samples-per-epoch", type=int, default=None)
    p.add_argument(
        "--epoch-seconds",
        type=float,
        default=None,
        help="end each epoch after this many seconds (default: 3 in quick mode)",
    )
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--early-stopping", type=int, default=15, help="patience in epochs")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument(
        "--distill",
        type=float,
        default=3.0,
        help="quick mode: weight of keeping the base model's predictions where "
        "nothing is painted (0: off)",
    )
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_train)

    q = predict.add_parser(
        "segmentation",
        help="segment every image in a folder with a saved model",
        description="Writes <stem>.tif label images with the training label convention "
        "(instance ids, or the original class values).",
    )
    q.add_argument(
        "--model", required=True, type=Path, help="saved model folder or BioImage.IO package"
    )
    q.add_argument("--images", required=True, type=Path, help="folder of images")
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument(
        "--probabilities", action="store_true", help="also write <stem>_prob.tif (C, Y, X float32)"
    )
    q.add_argument("--tile", type=int, default=512)
    q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    q.set_defaults(func=run_predict)


def _say(msg: str) -> None:
    say(msg)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~napari_dlcb.tasks.segmentation.SegmentationConfig` of the options."""
    from napari_dlcb.tasks.segmentation import SegmentationConfig

    mode = args.mode
    if mode == "auto":
        mode = "quick" if args.labels_kind == "scribbles" else "full"
    return SegmentationConfig(
        label_kind=args.labels_kind,
        base=args.base,
        mode=mode,
        val_fraction=args.val_fraction,
        patch_size=args.patch_size,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
        epochs=args.epochs,
        lr=args.lr,
        pretrained_lr_factor=args.pretrained_lr_factor,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples_per_epoch,
        epoch_seconds=args.epoch_seconds,
        early_stopping=args.early_stopping,
        max_time=None if args.max_minutes is None else args.max_minutes * 60,
        distill=args.distill,
    ).validate()


def run_train(args: argparse.Namespace) -> int:
    """Handle ``train segmentation``."""
    config = config_from_args(args)  # a bad option fails before any file is read
    images, labels = read_image_pairs(args.images, args.labels)
    from napari_dlcb.commands._report import describe_event
    from napari_dlcb.tasks.segmentation import SegmentationTask
    from napari_dlcb.training.events import Started

    _say(
        f"napari-dlcb: {len(images)} image pair(s), labels-kind {config.label_kind}, "
        f"base {config.base}, mode {config.mode}"
    )
    trainer = SegmentationTask(images, labels, config=config)
    t0 = time.perf_counter()
    events = trainer.fit(checkpoint_dir=args.out / "checkpoints")
    for ev in events:
        if isinstance(ev, Started):
            _say(
                f"training on {ev.device} ({'AMP' if ev.amp else 'fp32'}), "
                f"{ev.n_trainable:,} of {ev.n_params:,} parameters trainable"
            )
        else:
            line = describe_event(ev, epochs=args.epochs, t0=t0, rate_unit="patches")
            if line is not None:
                _say(line)
    out = trainer.save(args.out)
    _say(f"saved model to {out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Handle ``predict segmentation``."""
    import numpy as np
    import tifffile

    from napari_dlcb.inference.segment import load_for_inference, segment
    from napari_dlcb.io.images import read_image

    model, meta = load_for_inference(str(args.model))  # a folder, builtin or BioImage.IO package
    files = stem_files(args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    for k, (stem, path) in enumerate(sorted(files.items()), start=1):
        image = read_image(path)
        t0 = time.perf_counter()
        prob, labels = segment((model, meta), image, tile=args.tile, device=args.device)
        tifffile.imwrite(args.out / f"{stem}.tif", labels, compression="zlib")
        if args.probabilities:
            tifffile.imwrite(
                args.out / f"{stem}_prob.tif", prob.astype(np.float32), compression="zlib"
            )
        n_obj = f", {int(labels.max())} objects" if meta.label_kind == "instances" else ""
        _say(
            f"[{k}/{len(files)}] {path.name} -> {stem}.tif ({time.perf_counter() - t0:.1f}s{n_obj})"
        )
    return 0
