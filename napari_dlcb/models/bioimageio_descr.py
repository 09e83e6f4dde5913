"""The BioImage.IO 0.5 description of an exported package, built with ``bioimageio.spec``.

Used by :mod:`napari_dlcb.models.bioimageio_export` (see the mapping table
there): :func:`build_description` turns a model's metadata, the package's
input size rule (:class:`Geometry`) and its files into a validated
``bioimageio.spec.model.v0_5.ModelDescr``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_card import sanitize_name
from napari_dlcb.models.bioimageio_rdf import CONFIG_KEY, postprocessing_for, preprocessing_for
from napari_dlcb.models.meta import ModelMeta, one_line

__all__ = ["CITE_ARCH", "CITE_DLCB", "Geometry", "build_description", "sha256_of"]

#: The paper every package cites, and the network papers by architecture.
CITE_DLCB = (
    "Angermueller et al. 2016, Deep learning for computational biology, Mol Syst Biol",
    "10.15252/msb.20156651",
)
CITE_ARCH = {
    "unet2d": (
        "Ronneberger et al. 2015, U-Net: convolutional networks for biomedical image segmentation, MICCAI",
        "10.1007/978-3-319-24574-4_28",
    ),
    "cellclf": (
        "He et al. 2016, Deep residual learning for image recognition, CVPR",
        "10.1109/CVPR.2016.90",
    ),
}


@dataclass(frozen=True)
class Geometry:
    """Input size rule of an exported package."""

    step: int  # 0: fixed size
    min_size: int
    halo: int
    test_size: tuple[int, int]


def sha256_of(file: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------ description
def build_description(
    v05: Any,
    meta: ModelMeta,
    geo: Geometry,
    files: dict[str, Path],
    parent: dict,
    with_onnx: bool,
    **info: Any,
) -> Any:
    """The 0.5 ``ModelDescr`` (validated by ``bioimageio.spec`` as it is built)."""
    from bioimageio.spec import ValidationContext
    from torch import __version__ as torch_version

    def file(key: str) -> Any:
        return v05.FileDescr(source=files[key], sha256=sha256_of(files[key]))

    arch = str(meta.architecture.get("name"))
    cites = [v05.CiteEntry(text=CITE_DLCB[0], doi=v05.Doi(CITE_DLCB[1]))]
    if arch in CITE_ARCH:
        cites.append(v05.CiteEntry(text=CITE_ARCH[arch][0], doi=v05.Doi(CITE_ARCH[arch][1])))
    for c in parent.get("cite", []):
        if c.get("doi") and all(str(e.doi) != c["doi"] for e in cites):
            cites.append(v05.CiteEntry(text=c.get("text") or c["doi"], doi=v05.Doi(c["doi"])))
    weights = {
        "torchscript": v05.TorchscriptWeightsDescr(
            source=files["weights"],
            sha256=sha256_of(files["weights"]),
            pytorch_version=v05.Version(torch_version.split("+")[0]),
        )
    }
    if with_onnx:
        onnx_file = files["weights"].with_name("weights.onnx")
        from napari_dlcb.models.onnx_export import OPSET

        weights["onnx"] = v05.OnnxWeightsDescr(
            source=onnx_file,
            sha256=sha256_of(onnx_file),
            opset_version=OPSET,
            parent="torchscript",
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
                parent=v05.LinkedModel(id=parent["id"], version=parent.get("version"))
                if parent.get("id")
                else None,
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


def _input(v05: Any, meta: ModelMeta, geo: Geometry, test_tensor: Any) -> Any:
    c = int(meta.in_channels)
    names = (
        ["grey"]
        if c == 1
        else (["red", "green", "blue"] if c == 3 else [f"channel{i}" for i in range(c)])
    )
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


def _output(v05: Any, meta: ModelMeta, geo: Geometry, test_tensor: Any) -> Any:
    n_out = (
        1 if meta.output_activation == "sigmoid" and len(meta.classes) == 2 else len(meta.classes)
    )
    names = [meta.classes[-1]] if n_out == 1 else list(meta.classes)
    channel = v05.ChannelAxis(channel_names=[_identifier(n) for n in names])
    what = {"sigmoid": "probability", "softmax": "class probabilities"}.get(
        meta.output_activation, "logits"
    )
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
            k: v
            for k, v in meta.to_dict()["extra"]["training"].items()
            if not isinstance(v, (list, dict))
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
