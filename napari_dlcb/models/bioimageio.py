"""Import BioImage Model Zoo (bioimage.io) 2-D segmentation and classification models.

A package is a folder (or ``.zip``) holding ``bioimageio.yaml`` (or the older
``rdf.yaml``) and the files it names. ``bioimageio.spec`` parses and validates
the description (format 0.4 is converted to 0.5), without network access;
napari-dlcb then reads the TorchScript weights, checks their sha256 against
the description, and maps the description onto a
:class:`~napari_dlcb.models.meta.ModelMeta`, so that the network can be run,
fine-tuned and re-saved like any other model (``architecture`` is
``{"name": "torchscript"}``).

Supported: one ``bcyx`` input and one output, either ``bcyx`` on the input's
grid (segmentation) or ``bc`` (class scores of a crop classifier);
preprocessing ``zero_mean_unit_variance``, ``fixed_zero_mean_unit_variance``,
``scale_range``, ``scale_linear`` (and ``ensure_dtype``); postprocessing
``sigmoid``, ``softmax`` (and ``ensure_dtype``, ``binarize``, ``clip``, which
act on probabilities and are left to the user's threshold).

The mapping into :class:`ModelMeta`:

=========================================  ===========================================
bioimage.io                                ModelMeta
=========================================  ===========================================
``zero_mean_unit_variance``                ``{"mode": "per_image_zscore", "eps": ...}``
``fixed_zero_mean_unit_variance``          ``{"mode": "zscore", "mean": ..., "std": ...}``
``scale_linear`` (gain, offset)            ``{"mode": "zscore", "mean": -offset / gain,
                                           "std": 1 / gain}``
``scale_range``                            ``{"mode": "per_image_percentile", "p_low": ...,
                                           "p_high": ..., "eps": ...}``
postprocessing ``sigmoid`` / ``softmax``   ``output_activation``
one output channel                         ``classes = ["background", "foreground"]``:
                                           the single logit channel is the foreground
output ``halo``                            ``extra["halo"]`` (pixels, largest axis)
``config["napari-dlcb"]``                  classes, label convention and instance
                                           post-processing of a package napari-dlcb wrote
=========================================  ===========================================

``extra["size_multiple"]`` is the smallest power of two that every input side
must be a multiple of (found by running the network on a few small inputs, as
descriptions often give only one fixed test size); ``extra["bioimageio"]`` keeps
the provenance (name, id, authors, licence, citations, weights sha256).

Safety: nothing is downloaded (a package whose weights are only a URL is
refused); a file the description names must lie inside the package (no
``..``, no absolute path, no device or link out of it) and is read only up to
its declared size (:data:`~napari_dlcb.models.bioimageio_package.MAX_FILE_BYTES` at most). TorchScript weights are
code: loading a package runs it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_package import (
    MAX_FILE_BYTES,
    Package,
    describe_package,
    find_bioimageio_yaml,
    is_bioimageio_package,
    open_package,
    read_description,
)
from napari_dlcb.models.bioimageio_rdf import (
    CONFIG_KEY,
    input_spec,
    map_postprocessing,
    map_preprocessing,
    output_spec,
    preprocessing_for,
    provenance,
)
from napari_dlcb.models.meta import ModelMeta, one_line

__all__ = [
    "MAX_FILE_BYTES",
    "find_bioimageio_yaml",
    "is_bioimageio_package",
    "load_bioimageio",
    "open_package",
    "probe_size_multiple",
    "read_description",
]


# ------------------------------------------------------------------------------- public
def load_bioimageio(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    validate: bool | None = None,
    trusted: bool = False,
) -> tuple[torch.jit.ScriptModule, ModelMeta]:
    """Load a bioimage.io model package with TorchScript weights.

    Parameters
    ----------
    path : str or path-like
        The package folder, its ``bioimageio.yaml`` / ``rdf.yaml``, or a ``.zip``.
    device : str or torch.device
        Where to put the model (``"auto"``: CUDA, then MPS, then CPU).
    validate : bool, optional
        Ignored, kept for old callers: ``bioimageio.spec`` always validates
        the description now.
    trusted : bool
        The user agrees to run the package's TorchScript weights (code: see
        :mod:`~napari_dlcb.models.trust`); remembered by their sha256.
        Without it, weights not agreed to before (or written by napari-dlcb's
        export, or allowed by the CLI's ``--trust-model``) are refused.

    Returns
    -------
    model : torch.jit.ScriptModule
        The network in eval mode; takes a normalised ``(B, C, Y, X)`` float
        tensor and returns the raw outputs (logits when
        ``meta.output_activation`` is ``"sigmoid"`` or ``"softmax"``). Its
        parameters require gradients, so it can be fine-tuned.
    meta : ModelMeta
        ``architecture={"name": "torchscript"}``, normalisation, activation,
        classes, ``parent`` (the package path) and ``extra`` (``halo``,
        ``size_multiple``, ``bioimageio`` provenance). See the module docstring.

    Raises
    ------
    UntrustedModelError
        If the user has not agreed to run the weights (a one-line DlcbError).
    DlcbError
        If ``bioimageio.spec`` is not installed, the package is missing or
        invalid, has no TorchScript weights, names a file outside itself, the
        weights' sha256 differs from the description, or it uses features
        napari-dlcb does not support (3-D, several inputs, other pre-processing).

    Examples
    --------
    >>> model, meta = load_bioimageio("unet2d_nuclei_broad/")  # doctest: +SKIP
    >>> meta.normalization, meta.output_activation, meta.extra["halo"]  # doctest: +SKIP
    ({'mode': 'per_image_zscore', 'eps': 1e-06, 'per_channel': True}, 'sigmoid', 32)
    """
    del validate
    with open_package(path) as pkg:
        descr = describe_package(pkg)
        return _load(pkg, descr, resolve_device(device), trusted)


# ------------------------------------------------------------------------------ mapping
def probe_size_multiple(
    model: Any, in_channels: int, size: Mapping[str, list[int]]
) -> tuple[int | None, int]:
    """Find the size multiple a network needs and its number of output channels.

    Runs the network on a few small inputs of side ``m * odd`` for powers of two
    ``m``: the first that comes back on the input's grid gives the multiple.

    Parameters
    ----------
    model : callable
        ``(1, C, Y, X)`` tensor -> ``(1, K, Y, X)`` tensor.
    in_channels : int
        Input channels.
    size : mapping
        ``{"min": [y, x], "step": [y, x]}`` declared by the description.

    Returns
    -------
    multiple : int or None
        None if only the declared fixed size works.
    n_out : int
        Output channels.
    """
    # a fixed size in the description is usually just the test size: probe small inputs
    min_side = max([64, *(mn for mn, st in zip(size["min"], size["step"]) if st > 0)])
    gen = torch.Generator().manual_seed(0)
    last = "no output"
    with torch.no_grad():
        for m in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            k = math.ceil(min_side / m)
            side = m * (k + 1 if k % 2 == 0 else k)  # odd multiple: not a multiple of 2m
            x = torch.randn(1, in_channels, side, side, generator=gen)
            try:
                y = model(x)
            except RuntimeError as err:
                last = one_line(err)
                continue
            if isinstance(y, torch.Tensor) and y.ndim == 4 and tuple(y.shape[-2:]) == (side, side):
                return m, int(y.shape[1])
            last = f"output shape {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y)}"
        fixed = size["min"]
        if all(size["step"][i] == 0 and fixed[i] > 0 for i in range(2)):
            x = torch.randn(1, in_channels, fixed[0], fixed[1], generator=gen)
            try:
                y = model(x)
                if y.ndim == 4 and tuple(y.shape[-2:]) == tuple(fixed):
                    return None, int(y.shape[1])
            except RuntimeError as err:
                last = one_line(err)
    raise DlcbError(f"the model does not return outputs on the input's grid ({last})")


def _own_config(descr: Any) -> dict:
    """What a package napari-dlcb wrote says about itself (``config["napari-dlcb"]``)."""
    config = getattr(descr.config, "model_extra", None) or {}
    own = config.get(CONFIG_KEY)
    return dict(own) if isinstance(own, Mapping) else {}


def _load(pkg: Package, descr: Any, device: torch.device, trusted: bool) -> tuple[Any, ModelMeta]:
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise DlcbError(
            f"the model has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
            "napari-dlcb supports one of each"
        )
    inp, out = descr.inputs[0], descr.outputs[0]
    in_channels, size = input_spec(inp)
    kind, channel_names, halo = output_spec(out, str(inp.id))
    normalization = map_preprocessing(inp.preprocessing, str(inp.id))
    activation = map_postprocessing(out.postprocessing)
    entry = descr.weights.torchscript
    if entry is None:
        have = ", ".join(name for name, e in descr.weights if e is not None) or "none"
        raise DlcbError(
            f"the package has no TorchScript weights (has: {have}); napari-dlcb needs "
            "'torchscript' weights"
        )
    model, digest = _read_weights(pkg, entry, trusted)
    own = _own_config(descr)
    if kind == "bc":
        meta = _classifier_meta(descr, own, in_channels, size, channel_names, activation)
        multiple = None
    else:
        multiple, n_out = probe_size_multiple(model, in_channels, size)
        meta = _segmentation_meta(own, n_out, channel_names, activation, in_channels)
    meta.normalization = _own_normalization(own, normalization, in_channels, inp.preprocessing)
    meta.parent = str(pkg.path)
    meta.extra.update(
        halo=halo,
        bioimageio=provenance(descr, str(entry.source), digest, channel_names, size),
    )
    if kind == "bcyx":
        meta.extra["size_multiple"] = multiple
        meta.extra["min_size"] = [mn if st > 0 else 0 for mn, st in zip(size["min"], size["step"])]
        if multiple is None:
            meta.extra["fixed_size"] = size["min"]
    meta.validate()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(device).eval(), meta


def _segmentation_meta(
    own: Mapping, n_out: int, channel_names: list[str], activation: str, in_channels: int
) -> ModelMeta:
    if n_out == 1 and activation in ("sigmoid", "none"):
        classes, class_values = ["background", "foreground"], [0, 1]
    else:
        classes = (
            channel_names if len(channel_names) == n_out else [f"class_{i}" for i in range(n_out)]
        )
        class_values = list(range(n_out)) if activation == "softmax" else None
    meta = ModelMeta(
        task="segmentation",
        architecture={"name": "torchscript"},
        classes=classes,
        label_kind=None,
        class_values=class_values,
        input_axes="bcyx",
        in_channels=in_channels,
        output_activation=activation,
    )
    _apply_own(meta, own)
    return meta


def _classifier_meta(
    descr: Any, own: Mapping, in_channels: int, size: Mapping, names: list[str], activation: str
) -> ModelMeta:
    n_out = len(names) or 1
    side = max(size["min"]) if size["min"] else 0
    meta = ModelMeta(
        task="classification",
        architecture={"name": "torchscript"},
        classes=names or [f"class_{i}" for i in range(n_out)],
        label_kind="classes",
        input_axes="bcyx",
        in_channels=in_channels,
        output_activation=activation,
        extra={"input_size": int(side) or 32},
    )
    _apply_own(meta, own)
    return meta


def _apply_own(meta: ModelMeta, own: Mapping) -> None:
    """Take the label convention a napari-dlcb package recorded, when it fits the network."""
    classes = own.get("classes")
    if own.get("task") != meta.task or not isinstance(classes, list):
        return
    if len(classes) != len(meta.classes) or not all(isinstance(c, str) for c in classes):
        return
    meta.classes = list(classes)
    if own.get("label_kind") in ("scribbles", "classes", "instances", None):
        meta.label_kind = own.get("label_kind")
    values = own.get("class_values")
    if values is None or (isinstance(values, list) and len(values) == len(classes)):
        meta.class_values = values
    extra = own.get("extra") if isinstance(own.get("extra"), Mapping) else {}
    for key in ("postprocess", "input_size"):
        if isinstance(extra.get(key), (Mapping, int)):
            meta.extra[key] = extra[key]


def _own_normalization(own: Mapping, mapped: dict, in_channels: int, steps: Any) -> dict:
    """The normaliser a napari-dlcb package recorded, if it describes the same steps."""
    recorded = own.get("normalization")
    if not isinstance(recorded, Mapping):
        return mapped

    def dumped(seq: Any) -> list:
        return [s.model_dump(mode="json") for s in seq if str(s.id) != "ensure_dtype"]

    try:
        same = dumped(preprocessing_for(recorded, in_channels)) == dumped(steps)
    except (DlcbError, ValueError, TypeError):
        return mapped
    return dict(recorded) if same else mapped


def _read_weights(pkg: Package, entry: Any, trusted: bool) -> tuple[Any, str]:
    """The TorchScript network of a weights entry, in eval mode, and its sha256 (checked).

    TorchScript is code: it runs only with the user's consent to these weights.
    """
    source = str(entry.source)
    data = pkg.read(entry.source)
    digest = hashlib.sha256(data).hexdigest()
    expected = str(entry.sha256 or "").lower()
    if expected and digest != expected:
        raise DlcbError(
            f"sha256 of {pkg.member(source)} does not match the package description: "
            "the file is corrupt or was changed"
        )
    from napari_dlcb.models.trust import require_trust

    where = pkg.path if pkg.zip is not None else pkg.root / pkg.member(source)
    require_trust(where, trusted=trusted, sha256=digest, what="the BioImage.IO package")
    try:
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError or zip errors for bad archives
        raise DlcbError(f"cannot load TorchScript weights {source}: {one_line(err)}") from err
    return model.eval(), digest
