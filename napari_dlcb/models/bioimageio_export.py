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

import hashlib
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
    sanitize_name,
)
from napari_dlcb.models.bioimageio_rdf import (
    CONFIG_KEY,
    postprocessing_for,
    preprocessing_for,
    spec_v05,
)
from napari_dlcb.models.meta import ModelMeta, one_line
from napari_dlcb.models.spec import InferenceSpec

__all__ = ["BioimageioExport", "export_bioimageio", "check_package"]

#: The paper every package cites, and the network papers by architecture.
CITE_DLCB = ("Angermueller et al. 2016, Deep learning for computational biology, Mol Syst Biol", "10.15252/msb.20156651")
CITE_ARCH = {
    "unet2d": ("Ronneberger et al. 2015, U-Net: convolutional networks for biomedical image segmentation, MICCAI", "10.1007/978-3-319-24574-4_28"),
    "cellclf": ("He et al. 2016, Deep residual learning for image recognition, CVPR", "10.1109/CVPR.2016.90"),
}
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
    out = Path(out).expanduser()
    if out.suffix.lower() != ".zip":
        raise DlcbError(f"a BioImage.IO package is a .zip file, not {out.name!r}")
    if out.is_dir():
        raise DlcbError(f"cannot write the package to {out}: it is a folder")
    from napari_dlcb.models.saved import export_torchscript

    ts = export_torchscript(model, _example(meta))
    geometry = _geometry(ts, meta)
    x_raw = _test_input(meta, geometry, test_image, channel_axis)
    y = _predict(ts, meta, x_raw)
    parent = lineage(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bioimageio-export-", dir=out.parent))
    try:
        files = _write_files(work, ts, meta, x_raw, y, parent)
        onnx_diff, onnx_error = None, None
        if onnx:
            onnx_diff, onnx_error = _write_onnx(model, meta, work / "weights.onnx")
        descr = _describe(v05, meta, geometry, files, parent, onnx_diff is not None, name=name or out.stem, description=description, authors=authors, license=license, tags=tags)
        package = _save(descr, work / "package.zip")
        os.replace(package, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    weights = ("torchscript", "onnx") if onnx_diff is not None else ("torchscript",)
    passed, summary = check_package(out) if test else (None, "")
    return BioimageioExport(out, weights, onnx_diff, onnx_error, passed, summary)


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


@dataclass(frozen=True)
class _Geometry:
    step: int  # 0: fixed size
    min_size: int
    halo: int
    test_size: tuple[int, int]


def _geometry(net: Any, meta: ModelMeta) -> _Geometry:
    """Input size rule, halo and test size of the network."""
    if meta.task == "classification":
        side = int(meta.extra.get("input_size") or 32)
        return _Geometry(0, side, 0, (side, side))
    fixed = meta.extra.get("fixed_size")
    spec = InferenceSpec.from_meta(meta)
    if fixed:
        size = (int(fixed[0]), int(fixed[1]))
        return _Geometry(0, min(size), min(spec.halo, (min(size) - 1) // 2), size)
    step = spec.size_multiple or int(getattr(net, "multiple", 0) or 0)
    if not step:
        from napari_dlcb.models.bioimageio import probe_size_multiple

        step = probe_size_multiple(net, meta.in_channels, {"min": [0, 0], "step": [0, 0]})[0] or 1
    min_size = step * (2 * spec.halo // step + 1)  # the smallest multiple above twice the halo
    side = max(min_size, min_size + (_TEST_SIDE - min_size) // step * step)
    return _Geometry(step, min_size, spec.halo, (side, side))


def _test_input(meta: ModelMeta, geo: _Geometry, image: Any, channel_axis: int | None) -> np.ndarray:
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
        fit = [max(geo.min_size, geo.min_size + (s - geo.min_size) // geo.step * geo.step) for s in cyx.shape[1:]]
        ty, tx = min(ty, fit[0]), min(tx, fit[1])
    pad = [(0, 0)] + [(max(0, (t - s + 1) // 2), max(0, t - s - (t - s + 1) // 2)) for t, s in zip((ty, tx), cyx.shape[1:])]
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
def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_files(work: Path, ts: Any, meta: ModelMeta, x: np.ndarray, y: np.ndarray, parent: dict) -> dict[str, Path]:
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


# ------------------------------------------------------------------------ description
def _describe(v05: Any, meta: ModelMeta, geo: _Geometry, files: dict[str, Path], parent: dict, with_onnx: bool, **info: Any) -> Any:
    """The 0.5 ``ModelDescr`` (validated by ``bioimageio.spec`` as it is built)."""
    from bioimageio.spec import ValidationContext
    from torch import __version__ as torch_version

    def file(key: str) -> Any:
        return v05.FileDescr(source=files[key], sha256=_sha256(files[key]))

    arch = str(meta.architecture.get("name"))
    cites = [v05.CiteEntry(text=CITE_DLCB[0], doi=v05.Doi(CITE_DLCB[1]))]
    if arch in CITE_ARCH:
        cites.append(v05.CiteEntry(text=CITE_ARCH[arch][0], doi=v05.Doi(CITE_ARCH[arch][1])))
    for c in parent.get("cite", []):
        if c.get("doi") and all(str(e.doi) != c["doi"] for e in cites):
            cites.append(v05.CiteEntry(text=c.get("text") or c["doi"], doi=v05.Doi(c["doi"])))
    weights = {
        "torchscript": v05.TorchscriptWeightsDescr(
            source=files["weights"], sha256=_sha256(files["weights"]), pytorch_version=v05.Version(torch_version.split("+")[0])
        )
    }
    if with_onnx:
        onnx_file = files["weights"].with_name("weights.onnx")
        from napari_dlcb.models.onnx_export import OPSET

        weights["onnx"] = v05.OnnxWeightsDescr(
            source=onnx_file, sha256=_sha256(onnx_file), opset_version=OPSET, parent="torchscript",
            comment="exported by napari-dlcb with torch.onnx, checked against onnxruntime within 1e-4",
        )
    license_id = info["license"] or parent.get("license") or "BSD-3-Clause"
    try:
        with ValidationContext(perform_io_checks=False):
            return v05.ModelDescr(
                name=sanitize_name(info["name"], meta),
                description=info["description"] or _description(meta, parent),
                authors=[v05.Author(name=a) for a in (info["authors"] or ["napari-dlcb user"])],
                cite=cites,
                license=license_id,
                documentation=file("readme"),
                covers=[file("cover")],
                tags=_tags(meta, info["tags"]),
                inputs=[_input(v05, meta, geo, file("test_input"))],
                outputs=[_output(v05, meta, geo, file("test_output"))],
                weights=v05.WeightsDescr(**weights),
                parent=v05.LinkedModel(id=parent["id"], version=parent.get("version")) if parent.get("id") else None,
                version="0.1.0",
                config={CONFIG_KEY: _own_config(meta, parent)},
            )
    except ValueError as err:  # pydantic's ValidationError
        raise DlcbError(f"the description is not valid BioImage.IO: {_first(err)}") from err


def _first(err: ValueError) -> str:
    """``location: message`` of a pydantic validation error's first entry."""
    errors = getattr(err, "errors", None)
    if not callable(errors) or not errors():
        return one_line(err)
    first = errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg', '')}"[:200]


def _input(v05: Any, meta: ModelMeta, geo: _Geometry, test_tensor: Any) -> Any:
    c = int(meta.in_channels)
    names = ["grey"] if c == 1 else (["red", "green", "blue"] if c == 3 else [f"channel{i}" for i in range(c)])
    if geo.step:
        sizes = [v05.ParameterizedSize(min=geo.min_size, step=geo.step)] * 2
    else:
        sizes = list(geo.test_size)
    return v05.InputTensorDescr(
        id=v05.TensorId("raw"),
        description="raw image intensities (the preprocessing normalises them)",
        axes=[
            v05.BatchAxis(),
            v05.ChannelAxis(channel_names=names),
            v05.SpaceInputAxis(id=v05.AxisId("y"), size=sizes[0]),
            v05.SpaceInputAxis(id=v05.AxisId("x"), size=sizes[1]),
        ],
        test_tensor=test_tensor,
        data=v05.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing_for(meta.normalization, c),
    )


def _output(v05: Any, meta: ModelMeta, geo: _Geometry, test_tensor: Any) -> Any:
    n_out = 1 if meta.output_activation == "sigmoid" and len(meta.classes) == 2 else len(meta.classes)
    names = [meta.classes[-1]] if n_out == 1 else list(meta.classes)
    channel = v05.ChannelAxis(channel_names=[_identifier(n) for n in names])
    what = {"sigmoid": "probability", "softmax": "class probabilities"}.get(meta.output_activation, "logits")
    axes: list[Any] = [v05.BatchAxis(), channel]
    if meta.task == "segmentation":
        for a in ("y", "x"):
            size = v05.SizeReference(tensor_id=v05.TensorId("raw"), axis_id=v05.AxisId(a))
            if geo.halo:
                axes.append(v05.SpaceOutputAxisWithHalo(id=v05.AxisId(a), size=size, halo=geo.halo))
            else:
                axes.append(v05.SpaceOutputAxis(id=v05.AxisId(a), size=size))
    return v05.OutputTensorDescr(
        id=v05.TensorId("prediction"),
        description=f"{what} per {'pixel' if meta.task == 'segmentation' else 'image'}",
        axes=axes,
        test_tensor=test_tensor,
        data=v05.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=postprocessing_for(meta.output_activation),
    )


def _identifier(name: str) -> str:
    text = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name)) or "class"
    return text if not text[0].isdigit() else f"c{text}"


def _tags(meta: ModelMeta, extra: list[str] | None) -> list[str]:
    tags = ["napari-dlcb", "2d", "pytorch", "torchscript", meta.task]
    arch = str(meta.architecture.get("name"))
    tags += {"unet2d": ["unet", "u-net"], "cellclf": ["resnet", "classification"]}.get(arch, [])
    if meta.label_kind == "instances":
        tags.append("instance-segmentation")
    if meta.task == "segmentation" and meta.label_kind != "instances":
        tags.append("semantic-segmentation")
    for t in extra or []:
        if t and t.lower() not in tags:
            tags.append(t.lower())
    return list(dict.fromkeys(tags))


def _description(meta: ModelMeta, parent: dict) -> str:
    what = "pixel classifier" if meta.task == "segmentation" else "image classifier"
    base = f", fine-tuned from {parent['name']}" if parent.get("name") else ""
    return f"2-D {what} ({', '.join(meta.classes)}) made with napari-dlcb{base}."[:1000]


def _own_config(meta: ModelMeta, parent: dict) -> dict:
    from napari_dlcb import __version__

    keep = ("postprocess", "input_size", "halo", "size_multiple")
    extra = {k: meta.to_dict()["extra"][k] for k in keep if k in meta.extra}
    training = meta.extra.get("training")
    if isinstance(training, dict):  # the summary, not the step-by-step log
        extra["training"] = {
            k: v for k, v in meta.to_dict()["extra"]["training"].items() if not isinstance(v, (list, dict))
        }
    return {
        "version": __version__,
        "task": meta.task,
        "architecture": dict(meta.architecture),
        "classes": list(meta.classes),
        "label_kind": meta.label_kind,
        "class_values": meta.class_values,
        "normalization": dict(meta.normalization),
        "parent": parent.get("source"),
        "extra": extra,
    }


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
