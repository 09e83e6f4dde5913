r"""DNA models from elsewhere: TorchScript (``.pt``) and ONNX (``.onnx``) files with a small sidecar.

A model exported by another tool (tangermeme, gReLU, bpnet-lite, Keras via
tf2onnx...) opens wherever a napari-dlcb DNA model does (the Genome view, the
CLI's ``--model``) when a sidecar next to it says how to feed it and read it:
``model.json`` / ``model.yaml`` (same stem) or ``model.onnx.json``::

    {"input_length": 1000,          # bp the model takes; null = any length
     "alphabet": "ACGT",            # order of its input channels (any order of A, C, G, T)
     "layout": "NCL",               # "NCL" = (N, 4, L) as here, "NLC" = (N, L, 4) as Keras
     "tasks": ["CTCF", "GATA3"],    # one name per output
     "output": "profile",           # "binary" (logits), "regression", or "profile" (N, T, L)
     "output_index": 0,             # which output of a model that returns several
     "activation": "none",          # binary: "logits" | "probabilities";
                                    # profile: "none" | "exp" | "softplus" | "softmax"
     "rc_average": false,           # average both strands in predictions (default false)
     "window": 1000,                # window for tracks of an any-length model
     "description": "..."}          # shown in status lines

A profile output ``(N, T, L)`` becomes ``(N, T)`` by summing its positions
``START:END`` (the *profile window*, default the whole profile; 0-based
half-open, in the profile's own positions), so predicted tracks, mutation maps
and variant effects all work on it. The loaded model is a
:class:`ExternalDNAModel`, an ``nn.Module`` taking one-hot ``(N, 4, L)`` in
A, C, G, T order like every DNA model here.

.. warning::
   A TorchScript file can run arbitrary code when it is loaded and run (it is
   a program, not just weights). :func:`load_external_model` refuses one
   (:class:`~napari_dlcb.models.trust.UntrustedModelError`) unless the user
   agreed: ``trust=True``, the CLI's ``--trust-model``, or its sha256 already
   in the allow-list of :mod:`napari_dlcb.models.trust`. ONNX files
   run no Python code (onnxruntime executes a fixed operator graph); their
   inputs and outputs are still checked.

ISM runs exact, batched naive mutagenesis on these models (their layers
cannot be analysed for the fast path); gradient attributions work on
TorchScript and are refused, in one line, on ONNX.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.meta import ModelMeta

__all__ = [
    "EXTERNAL_SUFFIXES",
    "ExternalDNAModel",
    "ExternalSpec",
    "is_external_model",
    "load_external_model",
    "parse_profile_window",
    "read_sidecar",
    "with_profile_window",
]

#: model file endings -> format
EXTERNAL_SUFFIXES = {".pt": "torchscript", ".pts": "torchscript", ".onnx": "onnx"}
OUTPUT_KINDS = ("binary", "regression", "profile")
ACTIVATIONS = {
    "binary": ("logits", "probabilities"),
    "regression": ("none",),
    "profile": ("none", "exp", "softplus", "softmax"),
}


# --------------------------------------------------------------------------- sidecar
@dataclass(frozen=True)
class ExternalSpec:
    """What a sidecar says about an external DNA model (see the module docs)."""

    tasks: tuple[str, ...]
    output: str = "binary"
    input_length: int | None = None
    alphabet: str = "ACGT"
    layout: str = "NCL"
    output_index: int = 0
    activation: str = ""
    rc_average: bool = False
    window: int | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def channels(self) -> list[int]:
        """For each input channel of the model, the index of its base in A, C, G, T."""
        return ["ACGT".index(b) for b in self.alphabet]


def _sidecar_path(path: Path) -> Path | None:
    for cand in (
        path.with_suffix(".json"),
        path.with_suffix(".yaml"),
        path.with_suffix(".yml"),
        path.with_name(path.name + ".json"),
        path.with_name(path.name + ".yaml"),
    ):
        if cand.is_file():
            return cand
    return None


def read_sidecar(path: str | os.PathLike) -> ExternalSpec:
    """Read and check the sidecar of model file ``path`` (one-line errors naming the field).

    Examples
    --------
    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "m.json").write_text(json.dumps({"tasks": ["a"], "output": "profile", "alphabet": "TGCA"}))
    >>> s = read_sidecar(d / "m.onnx")
    >>> s.output, s.activation, s.channels
    ('profile', 'none', [3, 2, 1, 0])
    """
    p = Path(path)
    side = _sidecar_path(p)
    if side is None:
        folder_model = p.parent / "metadata.json"
        hint = (
            f"; {p.name} is the export of a napari-dlcb model folder: pass the folder {p.parent}"
            if folder_model.is_file()
            else f" ({p.stem}.json or {p.stem}.yaml: input_length, alphabet, tasks, output)"
        )
        raise DlcbError(f"{p.name} has no sidecar next to it{hint}")
    import yaml

    try:
        text = side.read_text()
        raw = json.loads(text) if side.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:  # json errors are ValueErrors
        raise DlcbError(f"{side.name}: cannot read the sidecar ({err})") from err
    if not isinstance(raw, dict):
        raise DlcbError(f"{side.name}: the sidecar must be a mapping of fields")
    return _spec(raw, side.name)


def _spec(raw: dict, name: str) -> ExternalSpec:
    known = {f for f in ExternalSpec.__dataclass_fields__ if f != "extra"}
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise DlcbError(f"{name}: 'tasks' must be a non-empty list of output names")
    output = str(raw.get("output", "binary"))
    if output not in OUTPUT_KINDS:
        raise DlcbError(
            f"{name}: 'output' must be one of {', '.join(OUTPUT_KINDS)}, not {output!r}"
        )
    alphabet = str(raw.get("alphabet", "ACGT")).upper()
    if sorted(alphabet) != list("ACGT"):
        raise DlcbError(
            f"{name}: 'alphabet' must be an order of the 4 bases A, C, G, T, not {alphabet!r}"
        )
    layout = str(raw.get("layout", "NCL")).upper()
    if layout not in ("NCL", "NLC"):
        raise DlcbError(f"{name}: 'layout' must be NCL (N, 4, L) or NLC (N, L, 4), not {layout!r}")
    activation = str(raw.get("activation", ACTIVATIONS[output][0]))
    if activation not in ACTIVATIONS[output]:
        raise DlcbError(
            f"{name}: 'activation' of a {output} model must be one of "
            f"{', '.join(ACTIVATIONS[output])}, not {activation!r}"
        )
    length = raw.get("input_length")
    window = raw.get("window")
    for key, value in (("input_length", length), ("window", window)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise DlcbError(f"{name}: '{key}' must be a positive number of bp or null")
    index = raw.get("output_index", 0)
    if not isinstance(index, int) or index < 0:
        raise DlcbError(f"{name}: 'output_index' must be a non-negative integer")
    return ExternalSpec(
        tasks=tuple(str(t) for t in tasks),
        output=output,
        input_length=length,
        alphabet=alphabet,
        layout=layout,
        output_index=index,
        activation=activation,
        rc_average=bool(raw.get("rc_average", False)),
        window=window,
        description=str(raw.get("description", "")),
        extra={k: v for k, v in raw.items() if k not in known},
    )


# --------------------------------------------------------------------------- the model
class _OnnxRunner:
    """Runs an onnxruntime session on torch tensors (no gradients)."""

    def __init__(self, path: Path, device: torch.device):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise DlcbError(
                "ONNX models need the onnxruntime package (pip install onnxruntime)"
            ) from err
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
            raise DlcbError(
                f"{path.name}: cannot load the ONNX model ({err})".splitlines()[0]
            ) from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DlcbError(
                f"{path.name}: the ONNX model takes {len(inputs)} inputs; one is needed"
            )
        self.input = inputs[0]
        if len(self.input.shape) != 3:
            raise DlcbError(
                f"{path.name}: the ONNX input has shape {self.input.shape}; (N, 4, L) is needed"
            )
        batch = self.input.shape[0]
        self.batch = batch if isinstance(batch, int) and batch > 0 else None
        self.name = path.name

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if torch.is_grad_enabled() and x.requires_grad:
            raise DlcbError(
                f"{self.name}: an ONNX model gives no gradients: use the mutation map (ISM), "
                "or a TorchScript export, for attributions"
            )
        arr = x.detach().float().cpu().numpy()
        step = self.batch or max(1, len(arr))
        parts: list[list[np.ndarray]] = []
        try:
            for i in range(0, len(arr), step):
                parts.append(self.session.run(None, {self.input.name: arr[i : i + step]}))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
            msg = str(err).splitlines()[0][:200]
            raise DlcbError(
                f"{self.name}: the ONNX model refused input {tuple(arr.shape)} ({msg})"
            ) from err
        return [
            torch.as_tensor(np.concatenate([p[k] for p in parts])).to(x.device)
            for k in range(len(parts[0]))
        ]


class ExternalDNAModel(nn.Module):
    """An external TorchScript or ONNX DNA model as a napari-dlcb one: one-hot ``(N, 4, L)`` in, ``(N, T)`` out.

    Built by :func:`load_external_model`. Channels are reordered to the
    model's alphabet and layout; a profile output ``(N, T, L')`` is summed
    over :attr:`profile_window`; a binary model that outputs probabilities
    is given back as logits (``log(p / (1 - p))``), like our own models.

    Attributes
    ----------
    spec : ExternalSpec
    fmt : {"torchscript", "onnx"}
    profile_window : tuple of int, or None
        ``(start, end)`` of the profile positions summed (None: all).
    """

    def __init__(self, runner: Any, spec: ExternalSpec, fmt: str, name: str):
        super().__init__()
        self.spec, self.fmt, self.name = spec, fmt, name
        self.profile_window: tuple[int, int] | None = None
        if isinstance(runner, nn.Module):
            self.net = runner  # TorchScript: a submodule (device, mode, gradients follow)
            self._onnx = None
        else:
            self._onnx = runner

    def extra_repr(self) -> str:
        """File, format, output kind and profile window (in ``repr``)."""
        return f"{self.name!r}, {self.fmt}, output={self.spec.output}, window={self.profile_window}"

    def windowed(self, window: tuple[int, int] | None) -> ExternalDNAModel:
        """The same model (shared weights or session) summing profile positions ``window``."""
        if window is not None and self.spec.output != "profile":
            raise DlcbError(
                f"a profile window applies to profile models; {self.name} is {self.spec.output}"
            )
        out = copy.copy(self)
        out.__dict__ = dict(self.__dict__)
        out.profile_window = None if window is None else (int(window[0]), int(window[1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 4, L)`` one-hot (A, C, G, T) -> ``(N, T)``."""
        spec = self.spec
        if x.ndim != 3 or x.shape[1] != 4:
            raise DlcbError(f"{self.name} takes one-hot DNA (N, 4, L), got {tuple(x.shape)}")
        if spec.input_length is not None and x.shape[2] != spec.input_length:
            raise DlcbError(
                f"{self.name} takes {spec.input_length} bp windows, got {x.shape[2]} bp"
            )
        xin = x[:, spec.channels] if spec.alphabet != "ACGT" else x
        if spec.layout == "NLC":
            xin = xin.transpose(1, 2)
        outs = (
            self._onnx(xin.contiguous()) if self._onnx is not None else self.net(xin.contiguous())
        )
        if isinstance(outs, (tuple, list)):
            if spec.output_index >= len(outs):
                raise DlcbError(
                    f"{self.name} returns {len(outs)} outputs; output_index is {spec.output_index}"
                )
            y = outs[spec.output_index]
        else:
            y = outs
        return self._reduce(y, len(x))

    def _reduce(self, y: torch.Tensor, n: int) -> torch.Tensor:
        spec, T = self.spec, len(self.spec.tasks)
        if spec.output != "profile":
            y = y.reshape(n, -1) if y.ndim == 1 else y
            if y.ndim != 2 or y.shape[1] != T:
                raise DlcbError(
                    f"{self.name}: expected {spec.output} outputs (N, {T}), got {tuple(y.shape)}"
                )
            if spec.activation == "probabilities":
                p = y.clamp(1e-7, 1 - 1e-7)
                y = torch.log(p) - torch.log1p(-p)
            return y
        if y.ndim == 2 and T == 1:
            y = y[:, None]
        if y.ndim != 3 or y.shape[1] != T:
            raise DlcbError(
                f"{self.name}: expected profile outputs (N, {T}, L), got {tuple(y.shape)}"
            )
        if spec.activation == "exp":
            y = torch.exp(y)
        elif spec.activation == "softplus":
            y = torch.nn.functional.softplus(y)
        elif spec.activation == "softmax":
            y = torch.softmax(y, dim=-1)
        start, end = self.profile_window or (0, y.shape[2])
        if not 0 <= start < end <= y.shape[2]:
            raise DlcbError(
                f"profile window {start}:{end} does not fit the profile of {y.shape[2]} positions"
            )
        return y[..., start:end].sum(-1)


# --------------------------------------------------------------------------- loading
def is_external_model(path: Any) -> bool:
    """Whether ``path`` names a TorchScript or ONNX file (not a napari-dlcb model folder)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = Path(path)
    return p.suffix.lower() in EXTERNAL_SUFFIXES and p.is_file()


def load_external_model(
    path: str | os.PathLike, *, trust: bool = False, device: Any = "auto"
) -> tuple[ExternalDNAModel, ModelMeta]:
    """Load a TorchScript (``.pt``) or ONNX (``.onnx``) DNA model with its sidecar.

    Parameters
    ----------
    path : path-like
        The model file; its sidecar lies next to it (see the module docs).
    trust : bool
        Consent to run a TorchScript file (recorded by its sha256 through
        :mod:`napari_dlcb.models.trust`). TorchScript can execute arbitrary
        code: load only files you trust (ONNX needs no trust).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``...

    Returns
    -------
    model : ExternalDNAModel
    meta : ModelMeta
        Task ``"sequence"``, the sidecar's tasks as classes; ``extra`` holds
        ``length`` (the input length, else the sidecar's window or 200),
        ``task_type``, ``rc_average``, ``sha256``, ``source`` and ``external``
        (the sidecar).
    """
    from napari_dlcb.device import resolve_device
    from napari_dlcb.models.trust import file_sha256, require_trust

    p = Path(path)
    fmt = EXTERNAL_SUFFIXES.get(p.suffix.lower())
    if fmt is None or not p.is_file():
        raise DlcbError(f"not a TorchScript (.pt) or ONNX (.onnx) model file: {p}")
    spec = read_sidecar(p)
    dev = resolve_device(device)
    if fmt == "torchscript":
        require_trust(p, trusted=trust, what="the TorchScript DNA model")
        try:
            runner: Any = torch.jit.load(str(p), map_location=dev).eval()
        except (RuntimeError, ValueError) as err:
            raise DlcbError(
                f"{p.name}: cannot load TorchScript ({str(err).splitlines()[0]})"
            ) from err
    else:
        runner = _OnnxRunner(p, dev)
    model = ExternalDNAModel(runner, spec, fmt, p.name)
    _probe(model, spec)
    digest = file_sha256(p)
    regression = spec.output != "binary"
    T = len(spec.tasks)
    extra = {
        "length": spec.input_length or spec.window or 200,
        "task_type": "regression" if regression else "binary",
        "rc_average": spec.rc_average,
        "sha256": digest,
        "source": str(p),
        "external": {"format": fmt, **{k: v for k, v in spec.__dict__.items() if k != "extra"}},
    }
    if regression:  # values as the model gives them (no label standardisation to undo)
        extra.update(target_mean=[0.0] * T, target_std=[1.0] * T)
    if spec.description:
        extra["trained_on"] = spec.description
    meta = ModelMeta(
        "sequence",
        {"name": "external", "format": fmt, "output": spec.output, "length": spec.input_length},
        list(spec.tasks),
        input_axes="bcl",
        in_channels=4,
        output_activation="sigmoid" if not regression else "none",
        extra=extra,
    )
    return model, meta


def _probe(model: ExternalDNAModel, spec: ExternalSpec) -> None:
    """Run two all-N sequences through the model: shapes and task count are checked at load."""
    length = spec.input_length or spec.window or 200
    with torch.no_grad():
        dev = next((t.device for t in model.parameters()), torch.device("cpu"))
        y = model(torch.full((2, 4, length), 0.25, device=dev))
    if not torch.isfinite(y).all():
        raise DlcbError(f"{model.name}: the model gives NaN or infinite outputs on a test input")


def parse_profile_window(text: str | None) -> tuple[int, int] | None:
    """``"START:END"`` (0-based, half-open profile positions) as a tuple; empty -> None.

    Examples
    --------
    >>> parse_profile_window("400:600"), parse_profile_window("")
    ((400, 600), None)
    """
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace(",", "").split(":")
    try:
        start, end = (int(v) for v in parts)
    except ValueError:
        raise DlcbError(f"profile window {text!r}: expected START:END, e.g. 400:600") from None
    if not 0 <= start < end:
        raise DlcbError(f"profile window {text!r}: START must be >= 0 and END greater than START")
    return start, end


def with_profile_window(model: nn.Module, window: tuple[int, int] | str | None) -> nn.Module:
    """``model`` summing profile positions ``window`` (an external profile model), else ``model``.

    A window given for a model without profile outputs is a one-line error.
    """
    if isinstance(window, str) or window is None:
        window = parse_profile_window(window)
    if window is None:
        return model
    if not isinstance(model, ExternalDNAModel):
        raise DlcbError("a profile window applies to external profile models (.pt/.onnx + sidecar)")
    return model.windowed(window)
