"""Import BioImage Model Zoo (bioimage.io) 2-D segmentation models.

A package is a folder (or ``.zip``) holding ``bioimageio.yaml`` (or the older
``rdf.yaml``) and the files it names. napari-dlcb reads its TorchScript weights,
checks their sha256 against the yaml, and maps the description onto a
:class:`~napari_dlcb.models.saved.ModelMeta`, so that the network can be run,
fine-tuned and re-saved like any other model (``architecture`` is
``{"name": "torchscript"}``).

Supported: model descriptions of format 0.4 and 0.5 with one ``bcyx`` input and
one ``bcyx`` output on the input's grid; preprocessing ``zero_mean_unit_variance``,
``fixed_zero_mean_unit_variance``, ``scale_range`` (and ``ensure_dtype``);
postprocessing ``sigmoid``, ``softmax`` (and ``ensure_dtype``, ``binarize``,
``clip``, which act on probabilities and are left to the user's threshold).

The mapping into :class:`ModelMeta`:

=========================================  ===========================================
bioimage.io                                ModelMeta
=========================================  ===========================================
``zero_mean_unit_variance`` (per sample)   ``{"mode": "per_image_zscore", "eps": ...}``
``zero_mean_unit_variance`` (fixed)        ``{"mode": "zscore", "mean": ..., "std": ...}``
``scale_range`` (per sample)               ``{"mode": "per_image_percentile", "p_low": ...,
                                           "p_high": ..., "eps": ...}``
``scale_range`` (per dataset, 0.4)         ``{"mode": "percentile", "p_low": ..., "p_high": ...}``
                                           (statistics to be fitted on training images)
postprocessing ``sigmoid`` / ``softmax``   ``output_activation``
one output channel                         ``classes = ["background", "foreground"]``:
                                           the single logit channel is the foreground
output ``halo``                            ``extra["halo"]`` (pixels, largest axis)
=========================================  ===========================================

``extra["size_multiple"]`` is the smallest power of two that every input side
must be a multiple of (found by running the network on a few small inputs, as
descriptions often give only one fixed test size); ``extra["bioimageio"]`` keeps
the provenance (name, authors, licence, citations, weights sha256).

Nothing is downloaded: a package whose weights are only a URL is refused.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_rdf import format_version as rdf_format_version
from napari_dlcb.models.bioimageio_rdf import (
    input_spec,
    map_postprocessing,
    map_preprocessing,
    output_spec,
    provenance,
    torchscript_weights,
)
from napari_dlcb.models.meta import ModelMeta, one_line

__all__ = ["load_bioimageio", "find_bioimageio_yaml", "is_bioimageio_package"]

_YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")


# ------------------------------------------------------------------------------ package
class _Package:
    """Uniform read access to a package folder or zip file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as err:
                raise DlcbError(f"cannot open bioimage.io package {path}: {one_line(err)}") from err
            names = set(self._zip.namelist())
            cands = [n for n in _YAML_NAMES if n in names]
            cands += sorted(n for n in names if n.endswith(".bioimageio.yaml") and "/" not in n)
            if not cands:
                raise DlcbError(f"no bioimageio.yaml or rdf.yaml in {path}")
            self.yaml_name = cands[0]
            self.root = path
        else:
            yaml_file = find_bioimageio_yaml(path)
            if yaml_file is None:
                raise DlcbError(f"not a bioimage.io model package (no bioimageio.yaml): {path}")
            self.yaml_name = yaml_file.name
            self.root = yaml_file.parent

    def read(self, name: str) -> bytes:
        if "://" in name:
            raise DlcbError(
                f"the package refers to a remote file ({name}); napari-dlcb downloads "
                "nothing: use the complete package (.zip) from bioimage.io"
            )
        rel = str(PurePosixPath(name.replace("\\", "/")))
        try:
            if self._zip is not None:
                return self._zip.read(rel.removeprefix("./"))
            return (self.root / rel).read_bytes()
        except (KeyError, OSError) as err:
            raise DlcbError(
                f"file {name!r} named in the package is missing from {self.path}"
            ) from err

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def find_bioimageio_yaml(path: str | os.PathLike) -> Path | None:
    """Return the model description file of a package folder (or the file itself).

    Parameters
    ----------
    path : str or path-like
        A package folder, or a ``*.yaml`` file.

    Returns
    -------
    pathlib.Path or None
        ``bioimageio.yaml``, ``rdf.yaml`` or ``*.bioimageio.yaml``; None if
        there is none.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p if p.suffix.lower() in (".yaml", ".yml") else None
    if not p.is_dir():
        return None
    for name in _YAML_NAMES:
        if (p / name).is_file():
            return p / name
    cands = sorted(p.glob("*.bioimageio.yaml"))
    return cands[0] if cands else None


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Return True if ``path`` looks like a bioimage.io package (folder, yaml or zip).

    Parameters
    ----------
    path : str or path-like
        Candidate path.

    Returns
    -------
    bool
    """
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
        return any(n in _YAML_NAMES or n.endswith(".bioimageio.yaml") for n in names)
    return find_bioimageio_yaml(p) is not None


# ------------------------------------------------------------------------------- public
def load_bioimageio(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    validate: bool | None = None,
) -> tuple[torch.jit.ScriptModule, ModelMeta]:
    """Load a bioimage.io model package with TorchScript weights.

    Parameters
    ----------
    path : str or path-like
        The package folder, its ``bioimageio.yaml`` / ``rdf.yaml``, or a ``.zip``.
    device : str or torch.device
        Where to put the model (``"auto"``: CUDA, then MPS, then CPU).
    validate : bool, optional
        Validate the description with ``bioimageio.spec`` (without network
        access). None (default): validate when ``bioimageio.spec`` is
        installed. True: require it.

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
    DlcbError
        If the package is missing or invalid, has no TorchScript weights, the
        weights' sha256 differs from the description, or it uses features
        napari-dlcb does not support (3-D, several inputs, other pre-processing).

    Examples
    --------
    >>> model, meta = load_bioimageio("unet2d_nuclei_broad/")  # doctest: +SKIP
    >>> meta.normalization, meta.output_activation, meta.extra["halo"]  # doctest: +SKIP
    ({'mode': 'per_image_zscore', 'eps': 1e-06, 'per_channel': True}, 'sigmoid', 32)
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DlcbError(f"bioimage.io package not found: {p}")
    pkg = _Package(p)
    try:
        rdf = _parse_yaml(pkg)
        if validate or validate is None:
            _validate_with_spec(pkg, required=bool(validate))
        return _load(pkg, rdf, resolve_device(device))
    finally:
        pkg.close()


# ------------------------------------------------------------------------------ parsing
def _parse_yaml(pkg: _Package) -> dict:
    import yaml

    try:
        rdf = yaml.safe_load(pkg.read(pkg.yaml_name).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DlcbError(f"cannot parse {pkg.yaml_name}: {one_line(err)}") from err
    if not isinstance(rdf, dict):
        raise DlcbError(f"{pkg.yaml_name} is not a bioimage.io description")
    if rdf.get("type") != "model":
        raise DlcbError(f"{pkg.yaml_name} describes a {rdf.get('type')!r}, not a 'model'")
    return rdf


def _validate_with_spec(pkg: _Package, *, required: bool) -> None:
    try:
        from bioimageio.spec import load_model_description
    except ImportError as err:
        if required:
            raise DlcbError("validation needs the 'bioimageio.spec' package") from err
        return
    source = pkg.path if pkg.path.suffix.lower() == ".zip" else pkg.root / pkg.yaml_name
    try:
        load_model_description(source, perform_io_checks=False)
    except ValueError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "invalid")
        raise DlcbError(f"invalid bioimage.io description: {detail[:200]}") from err


def _probe(
    model: torch.jit.ScriptModule, in_channels: int, size: Mapping[str, list[int]]
) -> tuple[int | None, int]:
    """Find the size multiple the network needs and its number of output channels.

    Runs the network on a few small inputs of side ``m * odd`` for powers of two
    ``m``: the first that comes back on the input's grid gives the multiple.
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


def _load(pkg: _Package, rdf: dict, device: torch.device) -> tuple[Any, ModelMeta]:
    v05 = rdf_format_version(rdf) >= (0, 5)
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise DlcbError(
            f"the model has {len(inputs)} inputs and {len(outputs)} outputs; "
            "napari-dlcb supports one of each"
        )
    inp, out = inputs[0], outputs[0]
    input_id = str(inp.get("id", inp.get("name", "input")))
    in_channels, size = input_spec(inp, v05)
    channel_names, halo = output_spec(out, v05)
    normalization = map_preprocessing(inp.get("preprocessing"), input_id)
    activation = map_postprocessing(out.get("postprocessing"))
    entry = torchscript_weights(rdf)
    model, digest = _read_weights(pkg, entry)
    multiple, n_out = _probe(model, in_channels, size)
    if n_out == 1 and activation in ("sigmoid", "none"):
        classes, class_values = ["background", "foreground"], [0, 1]
    else:
        if len(channel_names) == n_out:
            classes = channel_names
        else:
            classes = [f"class_{i}" for i in range(n_out)]
        class_values = list(range(n_out)) if activation == "softmax" else None
    extra = {
        "halo": halo,
        "size_multiple": multiple,
        "min_size": [mn if st > 0 else 0 for mn, st in zip(size["min"], size["step"])],
        "bioimageio": provenance(rdf, entry, digest, channel_names, size),
    }
    if multiple is None:
        extra["fixed_size"] = size["min"]
    meta = ModelMeta(
        task="segmentation",
        architecture={"name": "torchscript"},
        classes=classes,
        label_kind=None,
        class_values=class_values,
        normalization=normalization,
        input_axes="bcyx",
        in_channels=in_channels,
        output_activation=activation,
        parent=str(pkg.path),
        extra=extra,
    )
    meta.validate()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(device).eval(), meta


def _read_weights(pkg: _Package, entry: Mapping[str, Any]) -> tuple[Any, str]:
    """The TorchScript network of a weights entry, in eval mode, and its sha256 (checked)."""
    data = pkg.read(str(entry["source"]))
    digest = hashlib.sha256(data).hexdigest()
    expected = str(entry.get("sha256", "") or "").lower()
    if expected and digest != expected:
        raise DlcbError(
            f"sha256 of {entry['source']} does not match the package description "
            f"({digest[:12]}... != {expected[:12]}...): the file is corrupt or was changed"
        )
    try:
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError or zip errors for bad archives
        raise DlcbError(
            f"cannot load TorchScript weights {entry['source']}: {one_line(err)}"
        ) from err
    return model.eval(), digest
