"""``napari-dlcb train segmentation`` and ``napari-dlcb predict segmentation``.

Both check every option and the ``--out`` folder before any model is loaded or
image read (:mod:`napari_dlcb.commands._outputs`), refuse inputs no model
should see with one line (NaN pixels, booleans, 1-pixel images, decompression
bombs, pipes), and write atomically: a model folder appears complete or not at
all; prediction TIFFs are built in a temporary sibling folder renamed into
place when every image is done. ``train segmentation --resume`` continues an
interrupted run from ``OUT/checkpoints``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.commands._args import add_device, int_in
from napari_dlcb.commands._outputs import check_out, result_folder
from napari_dlcb.commands._report import say
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.imagefolder import image_label_pairs, read_image_pairs, stem_files

#: the most pixels (all training images together) ``train segmentation`` holds in memory
TRAIN_PIXELS = 2**26
#: images with more pixels are predicted block by block (bounded memory)
PREDICT_PIXELS = 2**25
#: the record of an interrupted run's options and data (``OUT/checkpoints/run.json``)
RUN_FILE = "run.json"
#: epochs without --epochs: a fixed count, or (with a --max-minutes budget) as many as the
#: budget holds. ISBI 2012 with the defaults stopped after 30 epochs in 5.8 of 15 minutes, still
#: improving, at pixel error 0.097 (benchmarks/RESULTS.md)
DEFAULT_EPOCHS = 30
BUDGETED_EPOCHS = 1000


def default_epochs(args: argparse.Namespace) -> int:
    """``--epochs``, or its default: more when a ``--max-minutes`` budget ends the run."""
    if args.epochs is not None:
        return int(args.epochs)
    return BUDGETED_EPOCHS if args.max_minutes is not None else DEFAULT_EPOCHS


#: options that may change when a run is resumed
_RESUMABLE = {"epochs", "max_time", "early_stopping", "device", "preview_interval"}


def register(train, predict, top) -> None:
    """Add the segmentation verbs to the ``train`` and ``predict`` sub-parsers."""
    _add_train(train)
    _add_predict(predict)


def _add_train(train: Any) -> None:
    """Add ``train segmentation`` to the ``train`` sub-parsers."""
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
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"most epochs (default {DEFAULT_EPOCHS}; with --max-minutes, {BUDGETED_EPOCHS}: "
        "the budget or early stopping ends the run)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate of new layers; pretrained ones train at lr x --pretrained-lr-factor",
    )
    p.add_argument(
        "--pretrained-lr-factor",
        type=float,
        default=None,
        help="learning-rate factor of pretrained layers (default: 0.1 quick, 1 full mode)",
    )
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
    add_device(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint (same options; "
        "--epochs counts all epochs)",
    )
    p.set_defaults(func=run_train)


def _add_predict(predict: Any) -> None:
    """Add ``predict segmentation`` to the ``predict`` sub-parsers."""
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
    q.add_argument(
        "--tile", type=int_in(32, 8192), default=512, help="tile side in pixels (32-8192)"
    )
    add_device(q)
    q.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    q.set_defaults(func=run_predict)


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
        epochs=default_epochs(args),
        lr=args.lr,
        pretrained_lr_factor=args.pretrained_lr_factor,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples_per_epoch,
        epoch_seconds=args.epoch_seconds,
        early_stopping=args.early_stopping,
        max_time=None if args.max_minutes is None else args.max_minutes * 60,
        distill=args.distill,
    ).validate()


def _model_input(base: str) -> list[Path]:
    """The base model's folder when it is one (an input that --out must not touch)."""
    p = Path(base)
    return [p] if base not in ("builtin", "scratch") and not base.startswith("builtin:") else []


def read_training_data(
    images: Path, labels: Path, config: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read the image/label pairs and check them as training will see them.

    One-line errors for pixels no model should see, for more pixels than
    :data:`TRAIN_PIXELS` and for a ``--patch-size`` larger than every image.
    """
    from napari_dlcb.data.normalize import check_pixels

    total = sum(_header_pixels(i) for i, _ in image_label_pairs(images, labels))
    if total <= TRAIN_PIXELS:  # from the headers, so that nothing big is decoded first
        imgs, labs = read_image_pairs(images, labels)
        total = sum(int(np.prod(im.shape[:2])) for im in imgs)
    names = sorted(stem_files(images))
    if total > TRAIN_PIXELS:
        raise DlcbError(
            f"the training images hold {total / 1e6:.0f} megapixels, more than the "
            f"{TRAIN_PIXELS / 1e6:.0f} that training holds in memory; crop them to the "
            "annotated regions"
        )
    for name, im in zip(names, imgs):
        check_pixels(im, f"image '{name}'", channel_axis=config.channel_axis)
    if config.patch_size is not None:
        largest = max(max(im.shape[:2]) for im in imgs)
        fit = max(-(-largest // 16) * 16, 32)
        if config.patch_size > fit:
            raise DlcbError(
                f"patch_size {config.patch_size} is larger than every image (the largest "
                f"side is {largest} pixels); use at most {fit}"
            )
    return imgs, labs


def _header_pixels(path: Path) -> int:
    """Y x X of an image from its header: the product of its two longest axes."""
    from napari_dlcb.io.images import image_shape

    sides = sorted((int(n) for n in image_shape(path)), reverse=True)
    return int(np.prod([*sides, 1, 1][:2], dtype=np.int64))


def _fingerprint(config: Any, images: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    digest = hashlib.blake2b(digest_size=16)
    for arr in (*images, *labels):
        a = np.ascontiguousarray(arr)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(a.data)
    options = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE}
    return {"options": options, "data": digest.hexdigest()}


def _prepare_checkpoints(ckdir: Path, run: dict, resume: bool) -> bool:
    """Check (resume) or start (fresh run) the checkpoint folder; return whether to resume."""
    from napari_dlcb.io.atomic import atomic_write
    from napari_dlcb.training.checkpoint import checkpoint_epochs

    if resume and checkpoint_epochs(ckdir) > 0:
        try:
            before = json.loads((ckdir / RUN_FILE).read_text())
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict) or before.get("data") != run["data"]:
            raise DlcbError(
                f"--resume: the images or labels differ from those of the run in {ckdir.parent} "
                "(or its record is missing); resume with the same data or start again with "
                "--overwrite"
            )
        for key, value in run["options"].items():
            if before.get("options", {}).get(key) != value:
                was = before.get("options", {}).get(key)
                raise DlcbError(
                    f"--resume: option {key} was {was!r} in the interrupted run, now {value!r}; "
                    "resume with the same options (only --epochs, --max-minutes, "
                    "--early-stopping and --device may change) or start again with --overwrite"
                )
        return True
    if resume:
        say("napari-dlcb: no checkpoint to resume from yet; starting from the beginning")
    if ckdir.exists():  # checkpoints of the run being replaced (--overwrite)
        shutil.rmtree(ckdir)
    ckdir.mkdir(parents=True)
    atomic_write(ckdir / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(run, default=str)))
    return False


def run_train(args: argparse.Namespace) -> int:
    """Handle ``train segmentation``."""
    if args.resume and args.overwrite:
        raise DlcbError("--resume continues the run in --out, --overwrite replaces it: pick one")
    config = config_from_args(args)  # a bad option fails before any file is read
    out = check_out(
        args.out,
        kind="model",
        inputs=[args.images, args.labels, *_model_input(args.base)],
        overwrite=args.overwrite,
        resume=args.resume,
    )
    images, labels = read_training_data(args.images, args.labels, config)
    from napari_dlcb.commands._report import describe_event
    from napari_dlcb.tasks.segmentation import SegmentationTask
    from napari_dlcb.training.events import Started

    say(
        f"napari-dlcb: {len(images)} image pair(s), labels-kind {config.label_kind}, "
        f"base {config.base}, mode {config.mode}"
    )
    trainer = SegmentationTask(images, labels, config=config)
    ckdir = out / "checkpoints"
    resume = _prepare_checkpoints(ckdir, _fingerprint(config, images, labels), args.resume)
    t0 = time.perf_counter()
    events = trainer.fit(checkpoint_dir=ckdir, resume=resume)
    for ev in events:
        if isinstance(ev, Started):
            again = f", resuming after epoch {ev.start_epoch}" if resume else ""
            say(
                f"training on {ev.device} ({'AMP' if ev.amp else 'fp32'}), "
                f"{ev.n_trainable:,} of {ev.n_params:,} parameters trainable{again}"
            )
        else:
            line = describe_event(ev, epochs=config.epochs, t0=t0, rate_unit="patches")
            if line is not None:
                say(line)
    saved = trainer.save(out)
    say(f"saved model to {saved}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Handle ``predict segmentation``."""
    from napari_dlcb.inference.segment import load_for_inference

    out = check_out(
        args.out, kind="folder", inputs=[args.images, args.model], overwrite=args.overwrite
    )
    files = stem_files(args.images)
    model, meta = load_for_inference(str(args.model))  # a folder, builtin or BioImage.IO package
    with result_folder(out, command="predict segmentation", overwrite=args.overwrite) as tmp:
        for k, (stem, path) in enumerate(sorted(files.items()), start=1):
            t0 = time.perf_counter()
            n_objects = _predict_one(model, meta, path, tmp, stem, args)
            n_obj = f", {n_objects} objects" if meta.label_kind == "instances" else ""
            say(
                f"[{k}/{len(files)}] {path.name} -> {stem}.tif "
                f"({time.perf_counter() - t0:.1f}s{n_obj})"
            )
    return 0


def _predict_one(model: Any, meta: Any, path: Path, tmp: Path, stem: str, args: Any) -> int:
    """Segment one file into ``tmp``; return the number of objects (instances)."""
    import tifffile

    from napari_dlcb.data.normalize import check_pixels
    from napari_dlcb.inference.segment import segment
    from napari_dlcb.io.images import image_shape, read_image, write_labels_tiff

    shape = image_shape(path)  # from the header: nothing decoded yet
    if int(np.prod(shape[:2], dtype=np.float64)) > PREDICT_PIXELS:
        return _predict_blockwise(model, meta, path, tmp, stem, args)
    image = read_image(path)
    check_pixels(image, f"'{path.name}'")
    prob, labels = segment((model, meta), image, tile=args.tile, device=args.device)
    write_labels_tiff(tmp / f"{stem}.tif", labels)
    if args.probabilities:
        tifffile.imwrite(tmp / f"{stem}_prob.tif", prob.astype(np.float32), compression="zlib")
    return int(labels.max())


def _predict_blockwise(model: Any, meta: Any, path: Path, tmp: Path, stem: str, args: Any) -> int:
    """A big image, block by block: an OME-Zarr store, then a tiled label TIFF from it."""
    import dask.array as da

    from napari_dlcb.inference.segment import segment_zarr
    from napari_dlcb.io.images import read_image, write_labels_tiff

    image = read_image(path, lazy=path.suffix.lower() != ".png")
    store = tmp / f"{stem}_prob.ome.zarr"
    say(f"{path.name}: {image.shape} is large; predicting it block by block")
    for _ in segment_zarr((model, meta), image, store, tile=args.tile, device=args.device):
        pass
    labels = da.from_zarr(str(store / "labels" / "segmentation" / "0"))
    write_labels_tiff(tmp / f"{stem}.tif", labels)
    n = int(labels.max().compute())
    if not args.probabilities:
        shutil.rmtree(store)
    return n
