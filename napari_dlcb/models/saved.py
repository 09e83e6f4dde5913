"""The napari-dlcb saved-model format and the architecture registry.

A saved model is a folder::

    MODEL_DIR/metadata.json        ModelMeta as JSON (plus "format_version")
    MODEL_DIR/weights.safetensors  the state dict (no pickle)
    MODEL_DIR/model.pt             TorchScript: (B, C, Y, X) normalised float -> logits

:func:`load_model` rebuilds the eager network from ``metadata.json`` with
:func:`build_model` and loads ``weights.safetensors`` into it, so a loaded model
is ordinary, trainable PyTorch. ``model.pt`` is the portable export for other
tools (Fiji/deepImageJ, bioimage.io, plain ``torch.jit.load``). For models whose
architecture is ``{"name": "torchscript"}`` (for example an imported BioImage
Model Zoo network being fine-tuned) there is no Python class to rebuild:
``model.pt`` *is* the network and the safetensors state dict is loaded into it.

Other modules plug their own networks in with one line::

    register_architecture("deepbind", "napari_dlcb.models.dna:DeepBind")

after which ``build_model({"name": "deepbind", **kwargs})`` and
:func:`load_model` work for them. Builders may be callables or lazy
``"module:attribute"`` strings (imported on first use, keeping imports cheap).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import io
import json
import os
import stat
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError

__all__ = [
    "ModelMeta",
    "save_model",
    "load_model",
    "load_meta",
    "save_weights",
    "load_weights",
    "register_architecture",
    "build_model",
    "ARCHITECTURES",
    "METADATA_FILE",
    "WEIGHTS_FILE",
    "TORCHSCRIPT_FILE",
]

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
TORCHSCRIPT_FILE = "model.pt"
FORMAT_VERSION = 1

_ACTIVATIONS = ("softmax", "sigmoid", "none")

#: Architecture name -> builder (a callable taking the architecture's keyword
#: arguments, or a lazy ``"module:attribute"`` string). Append one entry for a new
#: network, or call :func:`register_architecture`.
ARCHITECTURES: dict[str, Callable[..., nn.Module] | str] = {
    "unet2d": "napari_dlcb.models.unet:UNet2D",
    "deepbind": "napari_dlcb.models.dna:DeepBind",
    "basset": "napari_dlcb.models.dna:Basset",
    "cellclf": "napari_dlcb.models.classifier:CellClassifier",
}
_RESOLVED: dict[str, Callable[..., nn.Module]] = {}  # "module:attribute" -> object


# ----------------------------------------------------------------------------- metadata
@dataclass
class ModelMeta:
    """Everything needed to use a trained model besides its weights.

    Parameters
    ----------
    task : str
        ``"segmentation"``, ``"classification"`` or ``"sequence"``.
    architecture : dict
        ``{"name": <registered architecture>, **init kwargs}`` or
        ``{"name": "torchscript"}``.
    classes : list of str
        Output class names; index = output channel. A single-channel sigmoid
        model lists ``["background", "foreground"]``: its one logit channel is
        the foreground.
    label_kind : str, optional
        ``"scribbles"``, ``"classes"``, ``"instances"`` or None.
    class_values : list of int, optional
        Label value written for each output class.
    normalization : dict
        Input normalisation (``Normalizer.to_dict()`` of
        :mod:`napari_dlcb.data.normalize`), e.g. ``{"mode": "per_image_zscore"}``.
    input_axes : str
        ``"bcyx"`` for images, ``"bcl"`` for one-hot DNA.
    in_channels : int
        Number of input channels.
    output_activation : str
        ``"softmax"``, ``"sigmoid"`` or ``"none"`` (outputs are already
        probabilities/values), applied to the logits of ``model.pt``.
    parent : str, optional
        What this model was fine-tuned from: ``"builtin:unet2d-nuclei"``, a
        path, or None.
    extra : dict
        Task-specific, JSON-serialisable information (halo, window length,
        training log, provenance...).

    Examples
    --------
    >>> meta = ModelMeta("segmentation", {"name": "unet2d"}, ["bg", "fg"])
    >>> ModelMeta.from_dict(meta.to_dict()) == meta
    True
    """

    task: str
    architecture: dict
    classes: list[str]
    label_kind: str | None = None
    class_values: list[int] | None = None
    normalization: dict = field(default_factory=dict)
    input_axes: str = "bcyx"
    in_channels: int = 1
    output_activation: str = "softmax"
    parent: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary of all fields.

        Returns
        -------
        dict
        """
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        """Create and validate a ModelMeta from :meth:`to_dict` output.

        Parameters
        ----------
        d : mapping
            The dictionary (``metadata.json`` content). ``format_version`` is
            accepted and dropped; other unknown keys are ignored with a warning.

        Returns
        -------
        ModelMeta

        Raises
        ------
        DlcbError
            If a required field is missing or has the wrong type.
        """
        if not isinstance(d, Mapping):
            raise DlcbError("model metadata must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"format_version"})
        if unknown:
            warnings.warn(f"ignoring unknown model metadata keys: {unknown}", stacklevel=2)
        missing = [k for k in ("task", "architecture", "classes") if k not in d]
        if missing:
            raise DlcbError(f"model metadata is missing {', '.join(missing)}")
        kwargs = {k: copy.deepcopy(v) for k, v in d.items() if k in names}
        meta = cls(**kwargs)
        meta.validate()
        return meta

    def validate(self) -> None:
        """Check field types and values.

        Raises
        ------
        DlcbError
            With a one-line description of the first problem found.
        """
        if not isinstance(self.task, str) or not self.task:
            raise DlcbError("model metadata: 'task' must be a non-empty string")
        arch = self.architecture
        if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
            raise DlcbError("model metadata: 'architecture' must be a dict with a 'name'")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise DlcbError("model metadata: 'classes' must be a list of strings")
        if self.class_values is not None and (
            not isinstance(self.class_values, list)
            or len(self.class_values) != len(self.classes)
            or not all(isinstance(v, int) for v in self.class_values)
        ):
            raise DlcbError("model metadata: 'class_values' must be one integer per class")
        if not isinstance(self.normalization, dict) or not isinstance(self.extra, dict):
            raise DlcbError("model metadata: 'normalization' and 'extra' must be dicts")
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise DlcbError("model metadata: 'in_channels' must be a positive integer")
        if not isinstance(self.input_axes, str) or not self.input_axes:
            raise DlcbError("model metadata: 'input_axes' must be a string such as 'bcyx'")
        if self.output_activation not in _ACTIVATIONS:
            raise DlcbError(
                f"model metadata: 'output_activation' must be one of {_ACTIVATIONS}, "
                f"not {self.output_activation!r}"
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def load_meta(path: str | os.PathLike) -> ModelMeta:
    """Read ``metadata.json`` of a saved model without loading any weights.

    Parameters
    ----------
    path : str or path-like
        The model folder or its ``metadata.json``.

    Returns
    -------
    ModelMeta

    Raises
    ------
    DlcbError
        If the folder or file is missing or not valid metadata.
    """
    folder = _model_dir(path)
    file = folder / METADATA_FILE
    if not file.is_file():
        raise DlcbError(f"not a napari-dlcb model folder (no {METADATA_FILE}): {folder}")
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DlcbError(f"cannot read {file}: {_one_line(err)}") from err
    version = d.get("format_version", FORMAT_VERSION) if isinstance(d, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DlcbError(
            f"{file} has format version {version}; this napari-dlcb reads up to "
            f"{FORMAT_VERSION}, please upgrade"
        )
    return ModelMeta.from_dict(d)


# ------------------------------------------------------------------------ architectures
def register_architecture(
    name: str, builder: Callable[..., nn.Module] | str, *, overwrite: bool = False
) -> None:
    """Make an architecture buildable by name (and loadable by :func:`load_model`).

    Parameters
    ----------
    name : str
        The ``architecture["name"]`` stored in model metadata.
    builder : callable or str
        Called with the architecture's other keys as keyword arguments; or a
        ``"package.module:attribute"`` string resolved lazily on first use.
    overwrite : bool
        Allow replacing an existing registration with a different builder.

    Raises
    ------
    ValueError
        If ``name`` is reserved or already registered to another builder.

    Examples
    --------
    >>> register_architecture("unet2d", "napari_dlcb.models.unet:UNet2D")  # already there
    """
    if name == "torchscript":
        raise ValueError("'torchscript' is reserved for TorchScript-only models")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise ValueError("builder must be a callable or a 'module:attribute' string")
    old = ARCHITECTURES.get(name)
    if old is not None and not overwrite and _builder_key(old) != _builder_key(builder):
        raise ValueError(f"architecture {name!r} is already registered to {old!r}")
    ARCHITECTURES[name] = builder


def _builder_key(builder: Callable[..., nn.Module] | str) -> str:
    if isinstance(builder, str):
        return builder
    return f"{getattr(builder, '__module__', '')}:{getattr(builder, '__qualname__', repr(builder))}"


def _resolve_builder(name: str) -> Callable[..., nn.Module]:
    builder = ARCHITECTURES.get(name)
    if builder is None:
        known = ", ".join(sorted(ARCHITECTURES)) or "none"
        raise DlcbError(f"unknown model architecture {name!r} (known: {known}, torchscript)")
    if isinstance(builder, str):
        if builder not in _RESOLVED:
            module_name, _, attr = builder.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as err:
                raise DlcbError(f"architecture {name!r} is unavailable: {_one_line(err)}") from err
            _RESOLVED[builder] = obj
        return _RESOLVED[builder]
    return builder


def build_model(architecture: Mapping[str, Any]) -> nn.Module:
    """Build an untrained network from an architecture dictionary.

    Parameters
    ----------
    architecture : mapping
        ``{"name": <registered name>, **keyword arguments of its builder}``.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    DlcbError
        If the name is unknown, or ``"torchscript"`` (which has no builder),
        or the keyword arguments are rejected.

    Examples
    --------
    >>> net = build_model({"name": "unet2d", "in_channels": 1, "n_classes": 2})
    >>> type(net).__name__
    'UNet2D'
    """
    kwargs = dict(architecture)
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise DlcbError("architecture has no 'name'")
    if name == "torchscript":
        raise DlcbError("a 'torchscript' architecture has no builder: load its model.pt")
    builder = _resolve_builder(name)
    try:
        return builder(**kwargs)
    except (TypeError, ValueError) as err:
        raise DlcbError(f"cannot build architecture {name!r}: {_one_line(err)}") from err


# ----------------------------------------------------------------------------- weights
def save_weights(
    model: nn.Module | Mapping[str, torch.Tensor],
    file: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a model's state dict to a safetensors file, atomically.

    Parameters
    ----------
    model : torch.nn.Module or mapping of str to torch.Tensor
        The model (its ``state_dict()`` is saved) or a state dict.
    file : str or path-like
        Destination ``.safetensors`` file.
    dtype : torch.dtype, optional
        Store floating-point tensors in this dtype (e.g. ``torch.float16`` to
        halve the file); :func:`load_weights` casts back to the model's dtype.
    metadata : mapping of str to str, optional
        Free-form text stored in the safetensors header.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors = {}
    for k, v in state.items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous().clone()  # clone: no shared storage in safetensors
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": "pt", **({k: str(v) for k, v in (metadata or {}).items()})}
    _atomic_write(file, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return file


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not file.is_file():
        raise DlcbError(f"model weights not found: {file}")
    try:
        return load_file(str(file), device="cpu")
    except Exception as err:  # safetensors raises its own Rust-side error types
        raise DlcbError(
            f"cannot read weights {file} (corrupt or truncated?): {_one_line(err)}"
        ) from err


def load_weights(model: nn.Module, file: str | os.PathLike) -> nn.Module:
    """Load a safetensors state dict into ``model`` (in place), strictly.

    Floating-point tensors are cast to the dtype of the model's own tensors,
    so weights stored in float16 load into a float32 model.

    Parameters
    ----------
    model : torch.nn.Module
        The network to fill (eager or TorchScript).
    file : str or path-like
        A ``.safetensors`` file.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    DlcbError
        If the file is missing, unreadable, has non-finite values, or its
        tensor names or shapes do not match the model.
    """
    file = Path(file)
    state = _read_safetensors(file)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with another shape (e.g. {k}: {tuple(state[k].shape)} in the "
                f"file, {tuple(expected[k].shape)} expected)"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise DlcbError(f"weights {file.name} do not match the model: {'; '.join(parts)}")
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise DlcbError(f"weights {file.name} contain NaN or infinite values ({k})")
        target = expected[k]
        if v.dtype != target.dtype and v.is_floating_point() and target.is_floating_point():
            state[k] = v.to(target.dtype)
    model.load_state_dict(state, strict=True)
    return model


# -------------------------------------------------------------------------- save/load
def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    meta: ModelMeta,
    *,
    example_input: torch.Tensor | None = None,
) -> Path:
    """Save a model folder: ``metadata.json``, ``weights.safetensors``, ``model.pt``.

    The model is handed back unchanged (mode, device, parameters). ``model.pt``
    is made with ``torch.jit.script`` (shape-generic); if the network cannot be
    scripted it is traced with ``example_input``. When ``example_input`` is
    given, the exported module is checked against the eager model on it.

    Parameters
    ----------
    model : torch.nn.Module
        A network of a registered architecture, or a TorchScript module when
        ``meta.architecture == {"name": "torchscript"}``.
    path : str or path-like
        The model folder (created if needed; the three files are replaced).
    meta : ModelMeta
        Its metadata. For registered architectures, ``meta.architecture`` must
        build a network with the same tensor names and shapes.
    example_input : torch.Tensor, optional
        A typical normalised input, e.g. shape (1, C, 64, 64).

    Returns
    -------
    pathlib.Path
        The model folder.

    Raises
    ------
    DlcbError
        If the metadata does not describe the model or the export fails.

    Examples
    --------
    >>> import tempfile
    >>> from napari_dlcb.models.unet import UNet2D
    >>> net = UNet2D(1, 2, base=4, depth=2)
    >>> meta = ModelMeta("segmentation", net.architecture(), ["background", "nuclei"])
    >>> folder = save_model(net, tempfile.mkdtemp(), meta)
    >>> sorted(p.name for p in folder.iterdir())
    ['metadata.json', 'model.pt', 'weights.safetensors']
    """
    meta.validate()
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise DlcbError(f"cannot save a model to {folder}: it is a file")
    name = meta.architecture["name"]
    if name != "torchscript":
        _check_architecture(model, meta.architecture)
    exported = _export_torchscript(model, example_input)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS_FILE)
    _atomic_write(folder / TORCHSCRIPT_FILE, lambda tmp: torch.jit.save(exported, str(tmp)))
    text = json.dumps(
        {"format_version": FORMAT_VERSION, **meta.to_dict()}, indent=2, default=_json_default
    )
    _atomic_write(folder / METADATA_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return folder


def _check_architecture(model: nn.Module, architecture: Mapping[str, Any]) -> None:
    fresh = build_model(architecture)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise DlcbError(
            f"meta.architecture {dict(architecture)} does not describe this model "
            f"({len(diff)} tensor names/shapes differ, e.g. {diff[0][0]})"
        )


def _export_torchscript(model: nn.Module, example_input: torch.Tensor | None) -> nn.Module:
    """Return a CPU, eval-mode TorchScript copy of ``model``; ``model`` is untouched."""
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        exported = torch.jit.load(buf, map_location="cpu")
        exported.eval()
        eager = exported
    else:
        eager = copy.deepcopy(model).to("cpu").eval()
        try:
            exported = torch.jit.script(eager)
        except Exception as err:  # TorchScript frontend errors have many types
            if example_input is None:
                raise DlcbError(
                    f"{type(model).__name__} cannot be scripted ({_one_line(err)}); "
                    "pass example_input to export it by tracing"
                ) from err
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                exported = torch.jit.trace(eager, example_input.detach().to("cpu"))
    if example_input is not None:
        x = example_input.detach().to("cpu")
        with torch.no_grad():
            want, got = eager(x), exported(x)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
            raise DlcbError(
                f"the TorchScript export of {type(model).__name__} does not reproduce "
                "the model on example_input"
            )
    return exported


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Load a saved model folder.

    Parameters
    ----------
    path : str or path-like
        The model folder (or its ``metadata.json``).
    device : str or torch.device
        Where to put the model; ``"auto"`` picks CUDA, then MPS, then CPU.

    Returns
    -------
    model : torch.nn.Module
        The network in eval mode: the eager class for registered
        architectures, a ``torch.jit.ScriptModule`` for ``"torchscript"``.
        Its parameters require gradients, so it can be fine-tuned.
    meta : ModelMeta
        Its metadata.

    Raises
    ------
    DlcbError
        If the folder or a file is missing, corrupt or truncated, or the
        weights do not match the architecture.

    Examples
    --------
    >>> import tempfile, torch
    >>> from napari_dlcb.models.unet import UNet2D
    >>> net = UNet2D(1, 2, base=4, depth=2).eval()
    >>> folder = save_model(net, tempfile.mkdtemp(),
    ...                     ModelMeta("segmentation", net.architecture(), ["bg", "fg"]))
    >>> loaded, meta = load_model(folder)
    >>> x = torch.rand(1, 1, 20, 30)
    >>> bool(torch.equal(loaded(x), net(x)))
    True
    """
    folder = _model_dir(path)
    meta = load_meta(folder)
    dev = resolve_device(device)
    if meta.architecture["name"] == "torchscript":
        ts = folder / TORCHSCRIPT_FILE
        if not ts.is_file():
            raise DlcbError(f"TorchScript model not found: {ts}")
        try:
            model = torch.jit.load(str(ts), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError or zip errors for bad files
            raise DlcbError(f"cannot read {ts} (corrupt or truncated?): {_one_line(err)}") from err
    else:
        model = build_model(meta.architecture)
    load_weights(model, folder / WEIGHTS_FILE)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(dev).eval(), meta


# ---------------------------------------------------------------------------- helpers
def _model_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_file() and p.name in (METADATA_FILE, WEIGHTS_FILE, TORCHSCRIPT_FILE):
        p = p.parent
    if not p.exists():
        raise DlcbError(f"model folder not found: {p}")
    if not p.is_dir():
        raise DlcbError(f"not a napari-dlcb model folder: {p}")
    return p


def _atomic_write(file: Path, write: Callable[[Path], Any]) -> None:
    """Write via a temporary file in the same folder, then rename over ``file``.

    The result gets the permissions a plain ``open()`` gives under the current
    umask (safetensors itself writes owner-only files), and a crash never
    leaves a half-written ``file``.
    """
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb"):
            pass
        mode = stat.S_IMODE(tmp.stat().st_mode)
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, file)
    finally:
        if tmp.exists():
            tmp.unlink()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else type(err).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."
