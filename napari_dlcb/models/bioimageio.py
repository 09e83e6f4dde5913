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
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.meta import ModelMeta, one_line

__all__ = ["load_bioimageio", "find_bioimageio_yaml", "is_bioimageio_package"]

_YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")
_AXIS_TYPES = {"batch": "b", "channel": "c", "index": "i", "time": "t"}
_IGNORED_POST = ("ensure_dtype", "binarize", "clip")


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


def _version(rdf: Mapping[str, Any]) -> tuple[int, int]:
    try:
        major, minor = str(rdf.get("format_version", "0.4.0")).split(".")[:2]
        return int(major), int(minor)
    except ValueError as err:
        raise DlcbError(f"bad format_version {rdf.get('format_version')!r}") from err


def _axes(tensor: Mapping[str, Any], v05: bool) -> tuple[str, list[dict]]:
    """Return axis letters (e.g. 'bcyx') and per-axis dicts (0.5 style)."""
    axes = tensor.get("axes")
    if not v05:
        if not isinstance(axes, str):
            raise DlcbError("tensor 'axes' must be a string such as 'bcyx' (format 0.4)")
        return axes, [{} for _ in axes]
    if not isinstance(axes, list):
        raise DlcbError("tensor 'axes' must be a list (format 0.5)")
    letters = []
    for ax in axes:
        kind = ax.get("type")
        if kind in _AXIS_TYPES:
            letters.append(_AXIS_TYPES[kind])
        elif kind == "space":
            letters.append(str(ax.get("id", "x")))
        else:
            raise DlcbError(f"unknown axis type {kind!r}")
    return "".join(letters), list(axes)


def _check_bcyx(letters: str, what: str) -> None:
    if letters != "bcyx":
        raise DlcbError(
            f"{what} axes are {letters!r}; napari-dlcb imports 2-D models with 'bcyx' tensors only"
        )


def _input_spec(tensor: Mapping[str, Any], v05: bool) -> tuple[int, dict]:
    """Return (in_channels, {"min": [y, x], "step": [y, x]})."""
    letters, axes = _axes(tensor, v05)
    _check_bcyx(letters, "input")
    if v05:
        names = axes[1].get("channel_names") or []
        n_in = len(names) if names else int(axes[1].get("size", 1))
        mins, steps = [], []
        for ax in axes[2:]:
            size = ax.get("size")
            if isinstance(size, int):
                mins.append(size)
                steps.append(0)
            elif isinstance(size, Mapping) and "min" in size:
                mins.append(int(size["min"]))
                steps.append(int(size.get("step", 0)))
            else:
                mins.append(0)
                steps.append(0)
        return n_in, {"min": mins, "step": steps}
    shape = tensor.get("shape")
    if isinstance(shape, list):
        return int(shape[1]), {"min": [int(s) for s in shape[2:]], "step": [0, 0]}
    if isinstance(shape, Mapping) and "min" in shape:
        mins, steps = list(shape["min"]), list(shape.get("step", [0] * 4))
        return int(mins[1]), {
            "min": [int(s) for s in mins[2:]],
            "step": [int(s) for s in steps[2:]],
        }
    raise DlcbError("input 'shape' is missing or not understood")


def _output_spec(tensor: Mapping[str, Any], v05: bool) -> tuple[list[str], int]:
    """Return (channel names, halo) and check that the output is on the input grid."""
    letters, axes = _axes(tensor, v05)
    _check_bcyx(letters, "output")
    if v05:
        names = [str(n) for n in axes[1].get("channel_names") or []]
        halo = max(int(ax.get("halo", 0) or 0) for ax in axes[2:])
        for ax in axes[2:]:
            if float(ax.get("scale", 1.0)) != 1.0:
                raise DlcbError("the model output is not on the input's grid (axis scale != 1)")
        return names, halo
    halo_list = tensor.get("halo") or [0] * len(letters)
    halo = max(int(h) for h in halo_list[2:]) if len(halo_list) >= 4 else 0
    shape = tensor.get("shape")
    if isinstance(shape, Mapping):
        scale = shape.get("scale", [1, 1, 1, 1])
        offset = shape.get("offset", [0, 0, 0, 0])
        if any(float(s) != 1.0 for s in scale[2:]) or any(float(o) != 0 for o in offset[2:]):
            raise DlcbError("the model output is not on the input's grid (shape scale/offset)")
    return [], halo


def _op(step: Mapping[str, Any]) -> tuple[str, dict]:
    name = step.get("id", step.get("name"))
    if not isinstance(name, str):
        raise DlcbError("a pre/postprocessing step has no 'id'/'name'")
    return name, dict(step.get("kwargs") or {})


def _axes_list(axes: Any) -> list[str]:
    if isinstance(axes, str):
        return list(axes)
    return [str(a) for a in (axes or [])]


def _map_preprocessing(steps: Sequence[Mapping[str, Any]] | None, input_id: str) -> dict:
    norm: dict[str, Any] = {"mode": "none"}
    used: list[str] = []
    for step in steps or []:
        op, kw = _op(step)
        if op == "ensure_dtype":
            if not str(kw.get("dtype", "float32")).startswith("float"):
                raise DlcbError(f"unsupported input dtype {kw.get('dtype')!r} (float only)")
            continue
        used.append(op)
        eps = float(kw.get("eps", 1e-6))
        per_channel = "c" not in _axes_list(kw.get("axes")) and "channel" not in _axes_list(
            kw.get("axes")
        )
        if op == "zero_mean_unit_variance":
            mode = kw.get("mode", "per_sample")
            if mode == "fixed":
                norm = {"mode": "zscore", "mean": kw.get("mean"), "std": kw.get("std"), "eps": eps}
            elif mode == "per_dataset":
                norm = {"mode": "zscore", "eps": eps}
            else:
                norm = {"mode": "per_image_zscore", "eps": eps, "per_channel": per_channel}
        elif op == "fixed_zero_mean_unit_variance":
            norm = {"mode": "zscore", "mean": kw.get("mean"), "std": kw.get("std"), "eps": eps}
        elif op == "scale_range":
            ref = kw.get("reference_tensor")
            if ref not in (None, input_id):
                raise DlcbError("scale_range with another reference tensor is not supported")
            p_low = float(kw.get("min_percentile", 0.0))
            p_high = float(kw.get("max_percentile", 100.0))
            if kw.get("mode") == "per_dataset":
                norm = {"mode": "percentile", "p_low": p_low, "p_high": p_high}
            else:
                norm = {
                    "mode": "per_image_percentile",
                    "p_low": p_low,
                    "p_high": p_high,
                    "eps": eps,
                    "per_channel": per_channel,
                }
        else:
            raise DlcbError(
                f"unsupported preprocessing {op!r} (supported: zero_mean_unit_variance, "
                "fixed_zero_mean_unit_variance, scale_range)"
            )
    if len(used) > 1:
        raise DlcbError(
            f"the model chains several preprocessing steps {used}; only one is supported"
        )
    return norm


def _map_postprocessing(steps: Sequence[Mapping[str, Any]] | None) -> str:
    activation = "none"
    for step in steps or []:
        op, _ = _op(step)
        if op in ("sigmoid", "softmax"):
            activation = op
        elif op not in _IGNORED_POST:
            raise DlcbError(
                f"unsupported postprocessing {op!r}: napari-dlcb imports segmentation models "
                "whose outputs are logits or probabilities"
            )
    return activation


def _weights(rdf: Mapping[str, Any]) -> Mapping[str, Any]:
    weights = rdf.get("weights") or {}
    entry = weights.get("torchscript") or weights.get("pytorch_script")
    if not isinstance(entry, Mapping) or "source" not in entry:
        have = ", ".join(sorted(weights)) or "none"
        raise DlcbError(
            f"the package has no TorchScript weights (has: {have}); napari-dlcb needs "
            "'torchscript' weights"
        )
    return entry


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
    v05 = _version(rdf) >= (0, 5)
    inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise DlcbError(
            f"the model has {len(inputs)} inputs and {len(outputs)} outputs; "
            "napari-dlcb supports one of each"
        )
    inp, out = inputs[0], outputs[0]
    input_id = str(inp.get("id", inp.get("name", "input")))
    in_channels, size = _input_spec(inp, v05)
    channel_names, halo = _output_spec(out, v05)
    normalization = _map_preprocessing(inp.get("preprocessing"), input_id)
    activation = _map_postprocessing(out.get("postprocessing"))

    entry = _weights(rdf)
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
    model.eval()
    multiple, n_out = _probe(model, in_channels, size)

    if n_out == 1 and activation in ("sigmoid", "none"):
        classes, class_values = ["background", "foreground"], [0, 1]
    else:
        if len(channel_names) == n_out:
            classes = channel_names
        else:
            classes = [f"class_{i}" for i in range(n_out)]
        class_values = list(range(n_out)) if activation == "softmax" else None

    authors = [
        a.get("name", "") if isinstance(a, Mapping) else str(a) for a in rdf.get("authors") or []
    ]
    cite = [
        {k: c[k] for k in ("text", "doi", "url") if k in c}
        for c in rdf.get("cite") or []
        if isinstance(c, Mapping)
    ]
    extra = {
        "halo": halo,
        "size_multiple": multiple,
        "min_size": [mn if st > 0 else 0 for mn, st in zip(size["min"], size["step"])],
        "bioimageio": {
            "name": rdf.get("name"),
            "id": rdf.get("id"),
            "version": rdf.get("version"),
            "format_version": str(rdf.get("format_version")),
            "description": rdf.get("description"),
            "license": rdf.get("license"),
            "authors": authors,
            "cite": cite,
            "weights": str(entry["source"]),
            "weights_sha256": digest,
            "output_channel_names": channel_names,
            "input_size": size,
        },
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
