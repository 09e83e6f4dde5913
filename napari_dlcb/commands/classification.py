"""``train classification``, ``predict classification``, ``saliency`` (and ``pretrain``) verbs.

Torch is imported inside the handlers only, so building the parser is cheap.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlcb.commands._args import add_crop_training_options, add_device
from napari_dlcb.commands._outputs import check_out, check_out_file, write_out_file, write_tsv
from napari_dlcb.commands._report import say
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.imagefolder import check_real, find_image_folder, list_images, read_images

__all__ = [
    "check_model_out",
    "crop_config_fields",
    "drive_training",
    "parse_blocks",
    "register",
    "run_predict",
    "run_saliency",
    "run_train",
    "train_config",
]

SALIENCY_METHODS = ("integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion")


def register(train, predict, top) -> None:
    """Add the classification verbs to the ``train``/``predict`` sub-parsers and ``saliency``."""
    _add_train(train)
    _add_predict(predict)
    _add_saliency(top)
    from napari_dlcb.commands.pretrain import register_pretrain

    register_pretrain(top)


def _add_train(train: Any) -> None:
    """Add ``train classification`` to the ``train`` sub-parsers."""
    p = train.add_parser(
        "classification",
        help="fine-tune a cell classifier on an ImageFolder (one sub-folder per class)",
        description="Fine-tune the crop classifier. DIR holds one sub-folder per class with "
        "PNG or TIFF images; images of other sizes or channel counts are resized/padded.",
    )
    p.add_argument("--images", required=True, type=Path, help="ImageFolder: DIR/<class>/*.png|tif")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument(
        "--base", default="builtin", help="builtin, none (random init) or a model folder"
    )
    p.add_argument(
        "--mode",
        default="full",
        choices=["full", "quick", "linear"],
        help="full: fine-tune all layers; quick: frozen features + linear head (fast; "
        "'linear' is its earlier name)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 (full) / 1e-2 (quick)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (16 with --mil)")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the images')")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--val", type=Path, default=None, help="explicit validation ImageFolder")
    p.add_argument("--balance", default="loss", choices=["loss", "sampler", "none"])
    p.add_argument("--width", type=int, default=32, help="network width for --base none")
    p.add_argument(
        "--blocks", default="2,2,2", help="residual blocks per stage for --base none, e.g. 1,1,1"
    )
    p.add_argument(
        "--head-warmup",
        type=int,
        default=None,
        help="full mode: epochs training only the new head on frozen features first "
        "(default: min(30, epochs) for a 'pretrain classification' encoder, else 0)",
    )
    add_crop_training_options(
        p, cpu_help="CPU-time budget of this process (fair on a shared machine); stops cleanly"
    )
    p.add_argument(
        "--mil",
        action="store_true",
        help="multiple-instance learning: DIR holds whole images labelled per image; the model "
        "pools per-location scores and can localise (predict --heatmaps)",
    )
    p.add_argument(
        "--pooling",
        default="attention",
        choices=["attention", "noisy-and"],
        help="MIL pooling: gated attention (Ilse et al. 2018) or noisy-AND (Kraus et al. 2016)",
    )
    p.add_argument("--attention-dim", type=int, default=64, help="MIL instance embedding size")
    p.set_defaults(func=run_train)


def _add_predict(predict: Any) -> None:
    """Add ``predict classification`` to the ``predict`` sub-parsers."""
    q = predict.add_parser(
        "classification",
        help="classify every image in a folder (sub-folders included)",
        description="Writes a TSV: path relative to DIR, predicted class, one probability "
        "column per class (prob_<class>).",
    )
    q.add_argument("--model", required=True, type=Path, help="saved model folder")
    q.add_argument("--images", required=True, type=Path, help="folder of images")
    q.add_argument("--out", required=True, type=Path, help="output .tsv file")
    q.add_argument("--tta", action="store_true", help="average the 8 rotations/flips")
    q.add_argument(
        "--heatmaps",
        type=Path,
        default=None,
        metavar="DIR",
        help="MIL models: write each image's localisation map as a float32 TIFF on its grid "
        "(DIR/<relative path>.tif)",
    )
    add_device(q)
    q.set_defaults(func=run_predict)


def _add_saliency(top: Any) -> None:
    """Add the top-level ``saliency`` verb."""
    s = top.add_parser(
        "saliency",
        help="write a saliency/attribution map of a saved model for one image",
        description="Writes a float32 TIFF on the image's grid. Works for classifiers and "
        "segmentation models (for those the class logit is summed over the image).",
    )
    s.add_argument("--model", required=True, type=Path, help="saved model folder")
    s.add_argument("--image", required=True, type=Path, help="PNG or TIFF image")
    s.add_argument("--method", default="integrated-gradients", choices=SALIENCY_METHODS)
    s.add_argument("--out", required=True, type=Path, help="output .tif")
    s.add_argument("--target", default=None, help="class name or index (default: predicted)")
    s.add_argument("--window", type=int, default=None, help="occlusion window (px)")
    s.add_argument("--stride", type=int, default=None, help="occlusion stride (px)")
    s.add_argument("--n-samples", type=int, default=16, help="SmoothGrad samples")
    s.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps")
    s.add_argument("--layer", default=None, help="Grad-CAM layer name")
    add_device(s)
    s.set_defaults(func=run_saliency)


def run_train(args: argparse.Namespace) -> int:
    """Handle ``train classification``."""
    check_model_out(args)
    try:
        classes, files, labels = find_image_folder(args.images)
    except DlcbError as err:
        if not args.mil or "no class sub-folders" not in str(err):
            raise
        raise DlcbError(
            f"{err}: --mil learns from image-level labels, so put each whole image in its "
            "class's folder"
        ) from None
    counts = np.bincount(labels, minlength=len(classes))
    say(
        f"napari-dlcb: {len(files)} images in {len(classes)} classes ("
        + ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
        + f"), base {args.base}, mode {args.mode}"
        + (f", multiple-instance ({args.pooling} pooling)" if args.mil else "")
    )
    images = read_images(files)
    val_images = val_labels = None
    if args.val is not None:
        vclasses, vfiles, vlabels = find_image_folder(args.val)
        if vclasses != classes:
            raise DlcbError(f"validation classes {vclasses} differ from training classes {classes}")
        val_images, val_labels = read_images(vfiles), vlabels

    if args.mil:
        from napari_dlcb.tasks.mil import MILTrainer as Trainer
    else:
        from napari_dlcb.tasks.classification import ClassificationTrainer as Trainer

    trainer = Trainer(
        images,
        labels,
        classes,
        config=train_config(args),
        val_images=val_images,
        val_labels=val_labels,
    )
    for note in trainer.notes:
        say(f"note: {note}")
    side = f"{trainer.input_size}x{trainer.input_size}"
    drive_training(trainer, args, what=f"images ({side})")
    out = trainer.save(args.out)
    say(f"saved model to {out}")
    return 0


def check_model_out(args: argparse.Namespace) -> None:
    """Check the ``--out`` model folder of a crop-classifier verb before any work.

    ``train classification`` and ``pretrain classification`` refuse an
    ``--out`` that is an input (``--images``, ``--base``), a file, a device or
    a folder of others' files.
    """
    check_out(
        args.out,
        kind="model",
        inputs=[args.images, getattr(args, "base", None)],
        overwrite=args.overwrite,
    )


def drive_training(task: Any, args: argparse.Namespace, *, what: str = "images") -> Any:
    """Train ``task`` to the end, printing one line per epoch; honour the time budgets.

    ``args.max_minutes`` (wall clock) and ``args.max_cpu_minutes`` (CPU time
    of this process, fair on a shared machine) stop training cleanly, keeping
    the best weights. Returns the ``Finished`` event.
    """
    from napari_dlcb.commands._report import describe_event
    from napari_dlcb.training.events import Finished, Started

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    stop = threading.Event()
    events = task.fit(  # no live previews: nobody sees them here
        max_time=None if args.max_minutes is None else args.max_minutes * 60,
        stop=stop,
        preview_interval=math.inf,
    )
    cpu_budget = None if args.max_cpu_minutes is None else args.max_cpu_minutes * 60
    finished = None
    for ev in events:
        if cpu_budget is not None and not stop.is_set() and time.process_time() - cpu0 > cpu_budget:
            say(f"CPU budget of {args.max_cpu_minutes:g} min reached: stopping (best weights kept)")
            stop.set()
        if isinstance(ev, Started):
            say(
                f"training on {ev.device}: {ev.n_train} train / {ev.n_val} validation {what}, "
                f"{ev.n_trainable:,} of {ev.n_params:,} parameters trainable"
            )
            continue
        finished = ev if isinstance(ev, Finished) else finished
        line = describe_event(ev, epochs=args.epochs, t0=t0, cpu0=cpu0)
        if line is not None:
            say(line)
    return finished


def train_config(args: argparse.Namespace) -> Any:
    """The :class:`~napari_dlcb.tasks.classification.ClassificationConfig` of ``train classification``."""
    from napari_dlcb.tasks.classification_config import ClassificationConfig, MILConfig

    extra: dict[str, Any] = {} if args.batch_size is None else {"batch_size": args.batch_size}
    config_class: Any = ClassificationConfig
    if getattr(args, "mil", False):
        config_class = MILConfig
        extra.update(pooling=args.pooling, attention_dim=args.attention_dim)
    return config_class(
        mode=args.mode,
        balance=args.balance,
        head_warmup=getattr(args, "head_warmup", None),
        **crop_config_fields(args),
        **extra,
    ).validate()


def crop_config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields of the options every crop-classifier verb has.

    The encoder (``--base``, ``--input-size``, ``--width``, ``--blocks``), the
    data (``--val-fraction``, ``--no-augment``) and the run (``--epochs``,
    ``--lr``, ``--early-stopping``, ``--seed``, ``--device``) of ``train
    classification`` and ``pretrain classification``.
    """
    return {
        "base": args.base,
        "input_size": args.input_size,
        "width": args.width,
        "blocks": parse_blocks(args.blocks),
        "val_fraction": args.val_fraction,
        "augment": not args.no_augment,
        "epochs": args.epochs,
        "lr": args.lr,
        "early_stopping": args.early_stopping,
        "seed": args.seed,
        "device": args.device,
    }


def parse_blocks(text: str) -> tuple[int, ...]:
    """``"2,2,2"`` -> ``(2, 2, 2)``; one-line error for anything else."""
    try:
        blocks = tuple(int(b) for b in str(text).split(",") if b.strip())
    except ValueError:
        raise DlcbError(f"--blocks must be comma-separated integers, got {text!r}") from None
    if not blocks or min(blocks) < 1:
        raise DlcbError(f"--blocks needs at least one stage of at least 1 block, got {text!r}")
    return blocks


def run_predict(args: argparse.Namespace) -> int:
    """Handle ``predict classification``."""
    import pandas as pd

    from napari_dlcb.inference.classify import predict_proba
    from napari_dlcb.models import classifier as _classifier  # registers "cellclf"
    from napari_dlcb.models.saved import load_model

    del _classifier
    out = check_out_file(args.out, inputs=[args.images, args.model, args.heatmaps])
    if args.heatmaps:
        check_out(args.heatmaps, inputs=[args.images, args.model], overwrite=True)
    folder = Path(args.images)
    if not folder.is_dir():
        raise DlcbError(f"not a folder: {folder}")
    files = list_images(folder)
    if not files:
        raise DlcbError(f"no PNG or TIFF images in {folder}")
    model, meta = load_model(args.model, device="cpu")
    if meta.task != "classification":
        raise DlcbError(f"{args.model} is a {meta.task} model, not a classifier")
    images = read_images(files)
    if args.heatmaps is not None:
        probs, notes = _write_heatmaps(model, meta, images, files, folder, args)
    else:
        probs, notes = predict_proba(model, meta, images, tta=args.tta, device=args.device)
    for note in notes:
        say(f"note: {note}")
    table = pd.DataFrame(
        {
            "path": [f.relative_to(folder).as_posix() for f in files],
            "predicted": [meta.classes[i] for i in probs.argmax(1)],
        }
    )
    for k, name in enumerate(meta.classes):
        table[f"prob_{name}"] = probs[:, k]
    write_tsv(out, table)
    say(f"wrote {len(table)} predictions to {out}")
    return 0


def _write_heatmaps(
    model: Any, meta: Any, images: list[np.ndarray], files: list[Path], folder: Path, args: Any
) -> tuple[np.ndarray, list[str]]:
    """Probabilities and notes; each image's MIL localisation map written as a float32 TIFF."""
    import tifffile

    from napari_dlcb.inference.classify import check_classifier, predict_heatmaps, predict_proba

    check_classifier(meta, mil=True)
    out_dir = Path(args.heatmaps)
    probs, maps, notes = predict_heatmaps(model, meta, images, device=args.device)
    if args.tta:  # the probabilities averaged over the 8 views; the maps of the image itself
        probs, notes = predict_proba(model, meta, images, tta=True, device=args.device)
    for f, m in zip(files, maps):
        target = out_dir / f.relative_to(folder).with_suffix(".tif")
        target.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(target, m.astype(np.float32))
    what = meta.extra.get("heatmap", "localisation map")
    say(f"wrote {len(maps)} heatmaps ({what}) to {out_dir}")
    return probs, notes


def _resolve_target(target: str | None, classes: list[str]) -> int | str | None:
    if target is None:
        return None
    if target in classes:
        return target
    try:
        return int(target)
    except ValueError:
        raise DlcbError(
            f"target class {target!r} does not exist; classes are: {', '.join(classes)}"
        ) from None


def run_saliency(args: argparse.Namespace) -> int:
    """Handle ``saliency``."""
    import tifffile

    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.interpret.saliency import saliency
    from napari_dlcb.io.images import read_image
    from napari_dlcb.models import classifier as _classifier  # registers "cellclf"
    from napari_dlcb.models.saved import load_model

    del _classifier
    out = check_out_file(args.out, inputs=[args.image, args.model])
    model, meta = load_model(args.model, device="cpu")
    image = np.asarray(read_image(args.image))
    if image.ndim not in (2, 3):
        raise DlcbError(f"{args.image.name} is not a 2-D grey or RGB image (shape {image.shape})")
    check_real(image, args.image.name)
    target = _resolve_target(args.target, list(meta.classes))
    if meta.task == "classification":
        from napari_dlcb.data.crops import prepare_images

        size = int(meta.extra.get("input_size") or 32)
        prep = prepare_images([image], size=size, channels=int(meta.in_channels))
        x = Normalizer.from_dict(meta.normalization)(prep.data[0], channel_axis=0)
        for note in prep.notes:
            say(f"note: {note}; the map is resampled back to the image grid")
    else:
        from napari_dlcb.data.images import to_cyx

        cyx = to_cyx(image)
        if cyx.shape[0] != meta.in_channels:
            raise DlcbError(
                f"{args.image.name} has {cyx.shape[0]} channel(s); the model needs {meta.in_channels}"
            )
        x = Normalizer.from_dict(meta.normalization)(cyx, channel_axis=0)
        prep = None
    window = args.window if args.window is not None else max(1, min(x.shape[-2:]) // 8)
    res = saliency(
        model,
        x,
        method=args.method,
        target=target,
        classes=list(meta.classes),
        channel_axis=0,
        layer=args.layer,
        window=window,
        stride=args.stride,
        n_samples=args.n_samples,
        n_steps=args.n_steps,
        device=args.device,
    )
    smap = res.map
    if prep is not None:
        from napari_dlcb.data.crops import unprepare_map

        smap = unprepare_map(smap, image.shape[:2])
    write_out_file(out, lambda tmp: tifffile.imwrite(tmp, smap.astype(np.float32)))
    cls = meta.classes[res.target] if res.target < len(meta.classes) else str(res.target)
    extra = ""
    if "completeness_error" in res.extra:
        extra = (
            f"; completeness error {res.extra['completeness_error']:.3g} "
            f"({100 * res.extra['relative_completeness_error']:.2f} % of the output change)"
        )
    say(f"wrote {args.method} map for class '{cls}' to {out}{extra}")
    return 0
