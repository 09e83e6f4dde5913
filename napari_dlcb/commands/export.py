"""``napari-dlcb export bioimageio`` and ``napari-dlcb export onnx``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_dlcb.commands._report import say
from napari_dlcb.errors import DlcbError


def register(train, predict, top) -> None:
    """Add the ``export`` verbs to the top-level parser."""
    del train, predict
    verbs = top.add_parser(
        "export", help="write a model for other tools (BioImage.IO package, ONNX)"
    ).add_subparsers(dest="format", metavar="FORMAT", required=True)
    b = verbs.add_parser(
        "bioimageio",
        help="a BioImage Model Zoo package (.zip) of a segmentation or classification model",
        description="Writes a BioImage.IO package (format 0.5): TorchScript and ONNX weights, "
        "test tensors, a cover and a README made from the model's metadata, then runs "
        "bioimageio.core's test_model on it (offline).",
    )
    _model_args(b, "package (.zip) to write")
    b.add_argument(
        "--test-image",
        type=Path,
        default=None,
        help="image the test tensors and the cover are cut from (default: a synthetic one)",
    )
    b.add_argument("--channel-axis", type=int, default=None, help="channel axis of --test-image")
    b.add_argument("--name", default=None, help="model name shown by the zoo")
    b.add_argument("--description", default=None, help="one-sentence description")
    b.add_argument("--author", action="append", default=None, help="author name (repeatable)")
    b.add_argument("--license", default=None, help="SPDX licence identifier, e.g. CC-BY-4.0")
    b.add_argument("--tag", action="append", default=None, help="extra tag (repeatable)")
    b.add_argument("--no-onnx", action="store_true", help="TorchScript weights only")
    b.add_argument("--no-test", action="store_true", help="skip bioimageio.core's test_model")
    b.set_defaults(func=run_bioimageio)
    o = verbs.add_parser(
        "onnx",
        help="an ONNX file of any model (segmentation, classification, sequence)",
        description="Writes the network (normalised input -> logits) as ONNX and checks it "
        "against onnxruntime within --atol.",
    )
    _model_args(o, ".onnx file to write")
    o.add_argument("--atol", type=float, default=1e-4, help="largest accepted |ONNX - PyTorch|")
    o.set_defaults(func=run_onnx)


def _model_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="saved model folder, builtin:<name> or a BioImage.IO package",
    )
    p.add_argument("--out", required=True, type=Path, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _check_out(out: Path, suffix: str, overwrite: bool) -> None:
    if out.suffix.lower() != suffix:
        raise DlcbError(f"--out must be a {suffix} file, not {out.name!r}")
    if out.is_dir():
        raise DlcbError(f"--out {out} is a folder")
    if out.exists() and not overwrite:
        raise DlcbError(f"{out} exists; pass --overwrite to replace it")


def run_bioimageio(args: argparse.Namespace) -> int:
    """Handle ``export bioimageio``."""
    _check_out(args.out, ".zip", args.overwrite)
    from napari_dlcb.models.bioimageio_export import export_bioimageio

    report = export_bioimageio(
        args.model,
        args.out,
        test_image=args.test_image,
        channel_axis=args.channel_axis,
        name=args.name,
        description=args.description,
        authors=args.author,
        license=args.license,
        tags=args.tag,
        onnx=not args.no_onnx,
        test=not args.no_test,
    )
    weights = ", ".join(report.weights)
    if report.onnx_max_abs_diff is not None:
        weights += f" (max |ONNX - PyTorch| {report.onnx_max_abs_diff:.1e})"
    say(f"wrote {report.path}: weights {weights}")
    if report.onnx_error:
        say(f"no ONNX weights: {report.onnx_error}")
    if report.test_passed is None:
        return 0
    if not report.test_passed:
        print(
            f"napari-dlcb: error: the package fails bioimageio test_model: {report.test_summary}",
            file=sys.stderr,
        )
        return 1
    say("bioimageio.core test_model: passed")
    return 0


def run_onnx(args: argparse.Namespace) -> int:
    """Handle ``export onnx``."""
    _check_out(args.out, ".onnx", args.overwrite)
    from napari_dlcb.models.onnx_export import export_onnx

    report = export_onnx(args.model, args.out, atol=args.atol)
    axes = ", ".join(report.dynamic_axes.values()) or "none"
    say(
        f"wrote {report.path}: input {report.input_shape}, free axes {axes}; "
        f"max |ONNX - PyTorch| {report.max_abs_diff:.1e} on {len(report.checked_shapes)} input(s)"
    )
    return 0
