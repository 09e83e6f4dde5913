"""Export a napari-dlcb model as a BioImage Model Zoo package (format 0.5).

:func:`export_bioimageio` writes a ``.zip`` that ``bioimageio.core``,
deepImageJ, ilastik and the other zoo consumers run: the description is built
with ``bioimageio.spec``'s own classes (never hand-written YAML) and the
package is checked by ``bioimageio.spec`` when it is written (and, with
``test=True``, by ``bioimageio.core``'s ``test_model``). It holds:

- ``weights.pt`` (TorchScript) and, where the network exports, ``weights.onnx``
  (checked against onnxruntime within 1e-4), each with its sha256;
- ``test_input.npy`` / ``test_output.npy``: a raw image crop and the model's
  output on it (preprocessing, network and activation, as the zoo runs them);
- ``cover.png``: the test input and the prediction side by side;
- ``README.md``: a model card made from the metadata (see
  :mod:`napari_dlcb.models.bioimageio_card`).

How the metadata becomes the description:

=====================================  =========================================
napari-dlcb                            BioImage.IO 0.5
=====================================  =========================================
input (C channels)                     axes batch, channel, y, x; y, x sizes
                                       ``min + n * step`` with step = the
                                       network's size multiple and min the
                                       smallest multiple above twice the halo
normalisation                          preprocessing (see
                                       :func:`~napari_dlcb.models.bioimageio_rdf.preprocessing_for`)
``output_activation``                  postprocessing ``sigmoid`` / ``softmax``
                                       over the channel axis (none: the output
                                       is the logits, as the README says)
``classes``                            output channel names
halo (:class:`InferenceSpec`)          output ``halo`` on y and x
crop classifier                        fixed input size, output axes batch,
                                       channel (class scores)
``parent`` from a zoo package          ``parent`` (its id) and its citations
labels, instance post-processing       ``config["napari-dlcb"]`` (read back on
                                       import, so predictions stay the same)
=====================================  =========================================

Sequence (DNA) models have no BioImage.IO form; export them with
:func:`~napari_dlcb.models.onnx_export.export_onnx`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_card import (
    cover_image,
    lineage,
    readme_text,
)
from napari_dlcb.models.bioimageio_descr import Geometry, build_description, sha256_of
from napari_dlcb.models.bioimageio_rdf import spec_v05
from napari_dlcb.models.meta import ModelMeta, one_line
from napari_dlcb.models.spec import InferenceSpec

__all__ = ["BioimageioExport", "export_bioimageio", "check_package"]

_TEST_SIDE = 256


@dataclass(frozen=True)
class BioimageioExport:
    """What :func:`export_bioimageio` wrote."""

    path: Path
    """The package (``.zip``)."""
    weights: tuple[str, ...]
    """Weight formats in the package, e.g. ``("torchscript", "onnx")``."""
    onnx_max_abs_diff: float | None = None
    """ONNX vs PyTorch on the check inputs (None without ONNX weights)."""
    onnx_error: str | None = None
    """Why there are no ONNX weights, if there are none."""
    test_passed: bool | None = None
    """``bioimageio.core.test_model`` verdict (None: not run)."""
    test_summary: str = ""
    """One line: the test's status, or its first failure."""


def export_bioimageio(
    model: Any,
    out: str | os.PathLike,
    *,
    meta: ModelMeta | None = None,
    test_image: Any = None,
    channel_axis: int | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    onnx: bool = True,
    test: bool = False,
) -> BioimageioExport:
    """Write a model as a BioImage.IO package (``.zip``, format 0.5).

    Parameters
    ----------
    model : torch.nn.Module, str or path-like
        A network (then pass ``meta``), or what
        :func:`~napari_dlcb.models.registry.resolve_base` loads: a model
        folder, ``"builtin:<name>"``, a BioImage.IO package.
    out : str or path-like
        The ``.zip`` to write (atomically; an existing file is replaced).
    meta : ModelMeta, optional
        The network's metadata, with a network.
    test_image : array-like or path, optional
        The image the test tensors and the cover are made from (a crop of it);
        default a synthetic nuclei image (segmentation) or crop (classifier).
    channel_axis : int, optional
        Channel axis of a multichannel ``test_image``.
    name, description : str, optional
        Shown by the zoo; default made from the metadata.
    authors : list of str, optional
        Who made the model; default ``["napari-dlcb user"]``.
    license : str, optional
        SPDX identifier; default the parent package's, else ``"BSD-3-Clause"``.
    tags : list of str, optional
        Added to the tags made from the metadata.
    onnx : bool
        Add ONNX weights when the network exports (checked within 1e-4).
    test : bool
        Run ``bioimageio.core``'s ``test_model`` on the written package.

    Returns
    -------
    BioimageioExport

    Raises
    ------
    DlcbError
        For a sequence model, a missing ``bioimageio.spec``, a bad licence,
        name or image, or a description ``bioimageio.spec`` refuses (one line).

    Examples
    --------
    >>> export_bioimageio("my_model/", "my_model.zip", test=True)  # doctest: +SKIP
    BioimageioExport(path=PosixPath('my_model.zip'), weights=('torchscript', 'onnx'), ...)
    """
    v05 = spec_v05()
    model, meta = _resolve(model, meta)
    out = _package_path(out)
    from napari_dlcb.models.saved import export_torchscript

    ts = export_torchscript(model, _example(meta))
    geometry = _geometry(ts, meta)
    x_raw = _test_input(meta, geometry, test_image, channel_axis)
    texts = {"description": description, "authors": authors, "license": license, "tags": tags}
    digest, onnx_diff, onnx_error = _write_package(
        out, v05, model, meta, ts, geometry, x_raw, onnx=onnx, name=name or out.stem, texts=texts
    )
    from napari_dlcb.models.trust import trust

    # our own TorchScript, as save_model's: loading the package back needs no consent
    trust(out, sha256=digest, note="BioImage.IO package written by napari-dlcb")
    weights = ("torchscript", "onnx") if onnx_diff is not None else ("torchscript",)
    passed, summary = check_package(out) if test else (None, "")
    return BioimageioExport(out, weights, onnx_diff, onnx_error, passed, summary)


def _package_path(out: str | os.PathLike) -> Path:
    """``out`` as a path (``~`` expanded), checked to name a ``.zip`` file, not a folder."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".zip":
        raise DlcbError(f"a BioImage.IO package is a .zip file, not {out.name!r}")
    if out.is_dir():
        raise DlcbError(f"cannot write the package to {out}: it is a folder")
    return out


def _write_package(
    out: Path,
    v05: Any,
    model: Any,
    meta: ModelMeta,
    ts: Any,
    geometry: Geometry,
    x_raw: np.ndarray,
    *,
    onnx: bool,
    name: str,
    texts: dict[str, Any],
) -> tuple[str, float | None, str | None]:
    """Write the package in a temporary folder next to ``out``, then move it to ``out``.

    Parameters
    ----------
    out : pathlib.Path
        The ``.zip`` to write (replaced atomically).
    v05 : module
        ``bioimageio.spec.model.v0_5``.
    model, meta, ts, geometry, x_raw
        The network, its metadata, its TorchScript export, its input geometry
        and the raw test input.
    onnx, name
        As for :func:`export_bioimageio` (``name`` already defaulted).
    texts : dict
        ``description``, ``authors``, ``license`` and ``tags`` for the description.

    Returns
    -------
    digest : str
        The sha256 of the TorchScript weights.
    onnx_diff, onnx_error : float or None, str or None
        As :class:`BioimageioExport` ``onnx_max_abs_diff`` and ``onnx_error``.
    """
    y = _predict(ts, meta, x_raw)
    parent = lineage(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bioimageio-export-", dir=out.parent))
    try:
        files = _write_files(work, ts, meta, x_raw, y, parent)
        onnx_diff, onnx_error = None, None
        if onnx:
            onnx_diff, onnx_error = _write_onnx(model, meta, work / "weights.onnx")
        with_onnx = onnx_diff is not None
        descr = build_description(v05, meta, geometry, files, parent, with_onnx, name=name, **texts)
        package = _save(descr, work / "package.zip")
        digest = sha256_of(files["weights"])
        os.replace(package, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return digest, onnx_diff, onnx_error


# -------------------------------------------------------------------------- the model
def _resolve(model: Any, meta: ModelMeta | None) -> tuple[Any, ModelMeta]:
    if meta is None:
        if not isinstance(model, (str, os.PathLike)):
            raise DlcbError("pass meta= with a network (or a model folder instead)")
        from napari_dlcb.models.registry import resolve_base

        model, meta = resolve_base(model)
    if meta.task == "sequence" or meta.input_axes != "bcyx":
        raise DlcbError(
            f"BioImage.IO packages describe image models; this is a {meta.task} model: "
            "export it with 'napari-dlcb export onnx'"
        )
    if meta.task not in ("segmentation", "classification"):
        raise DlcbError(f"cannot export a {meta.task!r} model to BioImage.IO")
    return model, meta


def _example(meta: ModelMeta) -> torch.Tensor:
    side = int(meta.extra.get("input_size") or 64)
    return torch.zeros(1, int(meta.in_channels), side, side)


def _geometry(net: Any, meta: ModelMeta) -> Geometry:
    """Input size rule, halo and test size of the network."""
    if meta.task == "classification":
        side = int(meta.extra.get("input_size") or 32)
        return Geometry(0, side, 0, (side, side))
    fixed = meta.extra.get("fixed_size")
    spec = InferenceSpec.from_meta(meta)
    if fixed:
        size = (int(fixed[0]), int(fixed[1]))
        return Geometry(0, min(size), min(spec.halo, (min(size) - 1) // 2), size)
    step = spec.size_multiple or int(getattr(net, "multiple", 0) or 0)
    if not step:
        from napari_dlcb.models.bioimageio import probe_size_multiple

        step = probe_size_multiple(net, meta.in_channels, {"min": [0, 0], "step": [0, 0]})[0] or 1
    min_size = step * (2 * spec.halo // step + 1)  # the smallest multiple above twice the halo
    side = max(min_size, min_size + (_TEST_SIDE - min_size) // step * step)
    return Geometry(step, min_size, spec.halo, (side, side))


def _test_input(meta: ModelMeta, geo: Geometry, image: Any, channel_axis: int | None) -> np.ndarray:
    """The raw (1, C, Y, X) float32 test input: a centred crop of the image (padded if small)."""
    from napari_dlcb.data.images import to_cyx

    if image is None:
        from napari_dlcb.data.synthetic import synthetic_nuclei

        side = max(geo.test_size) if meta.task == "segmentation" else 3 * geo.min_size
        image, _ = synthetic_nuclei((side, side), seed=0, n_nuclei=None if side > 64 else 1)
        channel_axis = None
    elif isinstance(image, (str, os.PathLike)):
        from napari_dlcb.io.images import read_image

        image = read_image(image)
    cyx = to_cyx(np.asarray(image), channel_axis).astype(np.float32)
    c = int(meta.in_channels)
    if cyx.shape[0] == 1 and c > 1:
        cyx = np.repeat(cyx, c, axis=0)
    if cyx.shape[0] != c:
        raise DlcbError(f"the test image has {cyx.shape[0]} channel(s), the model expects {c}")
    if meta.task == "classification":
        from napari_dlcb.data.crops import prepare_images

        cyx = prepare_images([cyx], size=geo.test_size[0], channels=c, channel_axis=0).data[0]
    ty, tx = geo.test_size
    if geo.step:  # the largest valid size that fits the image, if it is smaller than the test size
        fit = [
            max(geo.min_size, geo.min_size + (s - geo.min_size) // geo.step * geo.step)
            for s in cyx.shape[1:]
        ]
        ty, tx = min(ty, fit[0]), min(tx, fit[1])
    pad = [(0, 0)] + [
        (max(0, (t - s + 1) // 2), max(0, t - s - (t - s + 1) // 2))
        for t, s in zip((ty, tx), cyx.shape[1:])
    ]
    if any(p != (0, 0) for p in pad):
        cyx = np.pad(cyx, pad, mode="reflect" if min(cyx.shape[1:]) > max(ty, tx) // 2 else "edge")
    top, left = (cyx.shape[1] - ty) // 2, (cyx.shape[2] - tx) // 2
    crop = cyx[:, top : top + ty, left : left + tx]
    if np.ptp(crop) == 0:
        raise DlcbError("the test image is constant where it is cropped; choose another image")
    return np.ascontiguousarray(crop[None], dtype=np.float32)


def _predict(net: Any, meta: ModelMeta, x_raw: np.ndarray) -> np.ndarray:
    """Preprocessing, the network on the whole tensor, then the activation (float32)."""
    from napari_dlcb.data.normalize import Normalizer

    x = Normalizer.from_dict(meta.normalization)(x_raw[0], channel_axis=0)
    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(x[None])))
    if meta.output_activation == "sigmoid":
        logits = torch.sigmoid(logits)
    elif meta.output_activation == "softmax":
        logits = torch.softmax(logits, dim=1)
    return logits.numpy().astype(np.float32)


# ------------------------------------------------------------------------------ files
def _write_files(
    work: Path, ts: Any, meta: ModelMeta, x: np.ndarray, y: np.ndarray, parent: dict
) -> dict[str, Path]:
    files = {
        "weights": work / "weights.pt",
        "test_input": work / "test_input.npy",
        "test_output": work / "test_output.npy",
        "cover": work / "cover.png",
        "readme": work / "README.md",
    }
    torch.jit.save(ts, str(files["weights"]))
    np.save(files["test_input"], x)
    np.save(files["test_output"], y)
    cover_image(x, y, meta).save(files["cover"])
    files["readme"].write_text(readme_text(meta, x.shape, y.shape, parent), encoding="utf-8")
    return files


def _write_onnx(model: Any, meta: ModelMeta, file: Path) -> tuple[float | None, str | None]:
    from napari_dlcb.models.onnx_export import export_onnx

    try:
        return export_onnx(model, file, meta=meta).max_abs_diff, None
    except DlcbError as err:
        return None, str(err)


def _save(descr: Any, file: Path) -> Path:
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    try:
        with ValidationContext(file_name="bioimageio.yaml"), warnings.catch_warnings():
            # bioimageio.spec's own re-reading of the zip it wrote warns about its file entries
            warnings.filterwarnings("ignore", message="Found mapping with 'source'")
            return Path(save_bioimageio_package(descr, output_path=file))
    except ValueError as err:
        raise DlcbError(f"bioimageio.spec refused the package: {one_line(err)}") from err


# ------------------------------------------------------------------------------ check
def check_package(path: str | os.PathLike) -> tuple[bool, str]:
    """Run ``bioimageio.core``'s ``test_model`` on a package, offline.

    Parameters
    ----------
    path : str or path-like
        The package (``.zip``, folder or description file).

    Returns
    -------
    passed : bool
    summary : str
        ``"passed"``, or the first failure in one line.
    """
    try:
        from bioimageio.core import test_model
    except ImportError as err:
        raise DlcbError(
            "testing a package needs 'bioimageio.core': pip install 'napari-dlcb[bioimageio]'"
        ) from err
    from napari_dlcb.models.bioimageio_rdf import first_error

    summary = test_model(Path(path), devices=["cpu"])
    passed = summary.status in ("passed", "valid-format")
    return passed, "passed" if passed else first_error(summary)
