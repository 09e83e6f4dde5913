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
its declared size (:data:`MAX_FILE_BYTES` at most). TorchScript weights are
code: loading a package runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.bioimageio_rdf import (
    CONFIG_KEY,
    first_error,
    input_spec,
    map_postprocessing,
    map_preprocessing,
    output_spec,
    preprocessing_for,
    provenance,
    spec_v05,
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

_YAML_NAMES = ("bioimageio.yaml", "rdf.yaml")
#: The largest file napari-dlcb reads from a package (weights included).
MAX_FILE_BYTES = 4 * 1024**3
_MAX_YAML_BYTES = 4 * 1024**2


# ------------------------------------------------------------------------------ package
class Package:
    """Read access to a package folder or zip file, confined to the package.

    Use :func:`open_package`. :meth:`read` returns the bytes of a file the
    description names, refusing URLs, absolute paths, ``..``, links out of the
    folder, non-regular files and files over their declared size.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self.zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as err:
                raise DlcbError(f"cannot open bioimage.io package {path}: {one_line(err)}") from err
            names = set(self.zip.namelist())
            cands = [n for n in _YAML_NAMES if n in names]
            cands += sorted(n for n in names if n.endswith(".bioimageio.yaml") and "/" not in n)
            if not cands:
                self.zip.close()
                raise DlcbError(f"no bioimageio.yaml or rdf.yaml in {path}")
            self.yaml_name = cands[0]
            self.root = path
            if self.zip.getinfo(self.yaml_name).file_size > _MAX_YAML_BYTES:
                self.zip.close()
                raise DlcbError(f"{self.yaml_name} in {path} is too large for a description")
        else:
            yaml_file = find_bioimageio_yaml(path)
            if yaml_file is None:
                raise DlcbError(f"not a bioimage.io model package (no bioimageio.yaml): {path}")
            self.yaml_name = yaml_file.name
            self.root = yaml_file.parent

    def member(self, source: Any) -> str:
        """The package-relative POSIX name of a description's file ``source``, checked."""
        text = str(source)
        if "://" in text:
            raise DlcbError(
                f"the package refers to a remote file ({text}); napari-dlcb downloads "
                "nothing: use the complete package (.zip) from bioimage.io"
            )
        rel = PurePosixPath(text.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
            raise DlcbError(f"the package names a file outside itself ({text!r}); refused")
        name = "/".join(p for p in rel.parts if p not in ("", "."))
        if not name:
            raise DlcbError(f"the package names an empty file path ({text!r})")
        return name

    def read(self, source: Any, *, limit: int | None = None) -> bytes:
        """The bytes of the file ``source`` of the description (see the class docstring)."""
        name = self.member(source)
        limit = MAX_FILE_BYTES if limit is None else limit
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError as err:
                raise DlcbError(f"file {name!r} named in the package is missing from {self.path}") from err
            if info.file_size > limit:
                raise DlcbError(f"{name} in {self.path} is larger than {limit:,} bytes; refused")
            try:  # zipfile reads at most the declared size and checks the CRC
                return self.zip.read(info)
            except (OSError, zipfile.BadZipFile, EOFError) as err:
                raise DlcbError(f"cannot read {name} from {self.path}: {one_line(err)}") from err
        return self._read_file(name, limit)

    def _read_file(self, name: str, limit: int) -> bytes:
        root = self.root.resolve()
        file = (root / name).resolve()
        if not file.is_relative_to(root):
            raise DlcbError(f"{name} in the package links outside it; refused")
        try:
            st = os.stat(file)
        except OSError as err:
            raise DlcbError(f"file {name!r} named in the package is missing from {self.path}") from err
        if not stat.S_ISREG(st.st_mode):
            raise DlcbError(f"{name} in the package is not a regular file; refused")
        if st.st_size > limit:
            raise DlcbError(f"{name} in {self.path} is larger than {limit:,} bytes; refused")
        with open(file, "rb") as f:
            data = f.read(st.st_size + 1)
        if len(data) != st.st_size:
            raise DlcbError(f"{name} in the package changed while it was read")
        return data

    def close(self) -> None:
        """Close the zip file, if any."""
        if self.zip is not None:
            self.zip.close()


@contextlib.contextmanager
def open_package(path: str | os.PathLike) -> Iterator[Package]:
    """Open a package folder, description file or ``.zip`` for confined reading.

    Parameters
    ----------
    path : str or path-like
        The package.

    Yields
    ------
    Package
        With ``read(source)`` and ``member(source)``; closed on exit.
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DlcbError(f"bioimage.io package not found: {p}")
    pkg = Package(p)
    try:
        yield pkg
    finally:
        pkg.close()


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


def _describe(pkg: Package) -> Any:
    """The validated 0.5 model description of an open package (nothing is fetched)."""
    spec_v05()
    from bioimageio.spec import load_description

    source: Any = pkg.zip if pkg.zip is not None else pkg.root / pkg.yaml_name
    if pkg.zip is None and (pkg.root / pkg.yaml_name).stat().st_size > _MAX_YAML_BYTES:
        raise DlcbError(f"{pkg.yaml_name} in {pkg.path} is too large for a description")
    try:
        descr = load_description(source, perform_io_checks=False, format_version="latest")
    except Exception as err:  # the yaml reader and bioimageio.spec raise many types
        raise DlcbError(f"cannot read {pkg.yaml_name}: {one_line(err)}") from err
    kind = getattr(descr, "type", None)
    if kind != "model":
        raise DlcbError(f"{pkg.yaml_name} describes a {kind!r}, not a 'model'")
    if type(descr).__name__ == "InvalidDescr":
        raise DlcbError(f"invalid bioimage.io description: {first_error(descr.validation_summary)}")
    return descr


def read_description(path: str | os.PathLike) -> Any:
    """The validated model description of a package, converted to format 0.5.

    Parameters
    ----------
    path : str or path-like
        Package folder, description file or ``.zip``.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr

    Raises
    ------
    DlcbError
        If it is missing, not a model, or invalid (one line).
    """
    with open_package(path) as pkg:
        return _describe(pkg)


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
        Ignored, kept for old callers: ``bioimageio.spec`` always validates
        the description now.

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
        descr = _describe(pkg)
        return _load(pkg, descr, resolve_device(device))


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


def _load(pkg: Package, descr: Any, device: torch.device) -> tuple[Any, ModelMeta]:
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
    model, digest = _read_weights(pkg, entry)
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
        classes = channel_names if len(channel_names) == n_out else [f"class_{i}" for i in range(n_out)]
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


def _read_weights(pkg: Package, entry: Any) -> tuple[Any, str]:
    """The TorchScript network of a weights entry, in eval mode, and its sha256 (checked)."""
    source = str(entry.source)
    data = pkg.read(entry.source)
    digest = hashlib.sha256(data).hexdigest()
    expected = str(entry.sha256 or "").lower()
    if expected and digest != expected:
        raise DlcbError(
            f"sha256 of {pkg.member(source)} does not match the package description: "
            "the file is corrupt or was changed"
        )
    try:
        model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as err:  # torch raises RuntimeError or zip errors for bad archives
        raise DlcbError(f"cannot load TorchScript weights {source}: {one_line(err)}") from err
    return model.eval(), digest
