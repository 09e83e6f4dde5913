"""``pretrain classification``: a denoising autoencoder on unlabelled crops or images.

Registered from :func:`napari_dlcb.commands.classification.register`. Torch is
imported inside the handler only, so building the parser is cheap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_dlcb.commands._args import add_crop_training_options
from napari_dlcb.commands._report import say
from napari_dlcb.errors import DlcbError

__all__ = ["pretrain_config", "register_pretrain", "run_pretrain"]


def register_pretrain(top: Any) -> None:
    """Add ``pretrain`` (with its ``classification`` sub-command) to the top-level verbs."""
    verbs = top.add_parser("pretrain", help="pretrain a model without labels").add_subparsers(
        dest="task", metavar="TASK", required=True
    )
    p = verbs.add_parser(
        "classification",
        help="pretrain the cell classifier's encoder as a denoising autoencoder",
        description="Trains the crop classifier's encoder to reconstruct unlabelled crops from "
        "corrupted copies (hidden patches and noise). DIR may be flat or an ImageFolder (labels "
        "are ignored). Writes an encoder-only model folder; fine-tune it with "
        "'train classification --base MODEL_DIR'.",
    )
    p.add_argument("--images", required=True, type=Path, help="folder of PNG/TIFF crops or images")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument("--base", default="none", help="none (new encoder), builtin or a model folder")
    p.add_argument("--width", type=int, default=32, help="encoder width for --base none")
    p.add_argument("--blocks", default="2,2,2", help="residual blocks per stage for --base none")
    p.add_argument("--input-size", type=int, default=None, help="crop side (default: the images')")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--noise", type=float, default=0.2, help="Gaussian noise (normalised units)")
    p.add_argument("--mask-fraction", type=float, default=0.4, help="share of patches hidden")
    p.add_argument("--mask-patch", type=int, default=4, help="side of a hidden patch (px)")
    p.add_argument(
        "--decoder",
        default="pooled",
        choices=["pooled", "maps"],
        help="reconstruct from the pooled features (default; crops centred on their object) "
        "or from the last feature maps (off-centre content)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    add_crop_training_options(p, cpu_help="CPU-time budget; stops cleanly")
    p.set_defaults(func=run_pretrain)


def pretrain_config(args: argparse.Namespace) -> Any:
    """The :class:`~napari_dlcb.tasks.classification_config.PretrainConfig` of the options."""
    from napari_dlcb.commands.classification import crop_config_fields
    from napari_dlcb.tasks.classification_config import PretrainConfig

    return PretrainConfig(
        noise=args.noise,
        mask_fraction=args.mask_fraction,
        mask_patch=args.mask_patch,
        decoder=getattr(args, "decoder", "pooled"),
        batch_size=args.batch_size,
        **crop_config_fields(args),
    ).validate()


def run_pretrain(args: argparse.Namespace) -> int:
    """Handle ``pretrain classification``."""
    from napari_dlcb.commands.classification import check_model_out, drive_training
    from napari_dlcb.io.imagefolder import list_images, read_images

    check_model_out(args)
    folder = Path(args.images)
    if not folder.is_dir():
        raise DlcbError(f"not a folder: {folder}")
    config = pretrain_config(args)  # bad options fail before any image is read
    files = list_images(folder)
    if not files:
        raise DlcbError(f"no PNG or TIFF images in {folder} (sub-folders included)")
    say(f"napari-dlcb: {len(files)} unlabelled images, base {args.base}")
    from napari_dlcb.tasks.pretrain import AutoencoderPretrainer

    task = AutoencoderPretrainer(read_images(files), config=config)
    for note in task.notes:
        say(f"note: {note}")
    side = f"{task.input_size}x{task.input_size}"
    fin = drive_training(task, args, what=f"images ({side})")
    out = task.save(args.out)
    err = task.reconstruction_error()
    say(
        f"saved the pretrained encoder to {out} (reconstruction error {err:.4f} on "
        f"{'held-out' if len(task.x_val) else 'training'} images; the model holds {fin.kept}); "
        f"fine-tune it with: napari-dlcb train classification --base {out} ..."
    )
    return 0
