"""Export any napari-dlcb model to ONNX, checked against onnxruntime.

:func:`export_onnx` writes one ``.onnx`` file (weights inside) whose input is
the model's normalised input and whose output is its raw output (logits; the
activation in ``meta.output_activation`` is not part of the graph), then runs
it with onnxruntime on a few inputs and compares with PyTorch:

==============  ===================  =====================================
task            input                dynamic axes
==============  ===================  =====================================
segmentation    (B, C, Y, X)         batch, y, x (any size; U-Nets pad
                                     internally to their size multiple)
classification  (B, C, S, S)         batch, and y, x when the network
                                     pools globally
sequence        (B, 4, L) one-hot    batch, and the length when the
                                     network allows it
==============  ===================  =====================================

A dynamic axis is kept only if onnxruntime reproduces PyTorch at other sizes
too; otherwise the export falls back to the fixed size of the metadata.
Needs the ``onnx`` and ``onnxruntime`` packages (``pip install
'napari-dlcb[onnx]'``).
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import atomic_write
from napari_dlcb.models.meta import ModelMeta, one_line

__all__ = ["OPSET", "OnnxExport", "check_onnx", "export_onnx", "onnx_network"]

#: ONNX opset of the exports (onnxruntime >= 1.17 runs it; BioImage.IO asks >= 7).
OPSET = 17


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it reproduces PyTorch."""

    path: Path
    """The ``.onnx`` file."""
    opset: int
    """Its ONNX opset version."""
    input_shape: tuple[int, ...]
    """The example input shape it was exported with."""
    dynamic_axes: dict[int, str] = field(default_factory=dict)
    """Input axis index -> name, for the axes of free size."""
    max_abs_diff: float = 0.0
    """Largest absolute difference from PyTorch over the checked inputs."""
    checked_shapes: tuple[tuple[int, ...], ...] = ()
    """The input shapes onnxruntime was checked on."""


class _PaddedUNet(nn.Module):
    """A :class:`~napari_dlcb.models.unet.UNet2D` forward the ONNX tracer records with free sizes.

    ``UNet2D.forward`` pads and crops with Python integers, which a trace
    freezes at the example's size; this does the same with traced sizes, so
    the graph takes any Y, X (at least half the size multiple).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.multiple = int(unet.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        top, left = ph // 2, pw // 2
        x = F.pad(x, [left, pw - left, top, ph - top], mode="reflect")
        feats = self.unet.encode(x)  # a multiple already: encode adds no padding
        # UNet2D.decode, without its crop to integer sizes
        n = len(feats) - 1
        y = self.unet.dropout(feats[n])
        for i, up in enumerate(self.unet.up):
            y = up(y, feats[n - 1 - i])
        y = self.unet.head(y)
        return y[:, :, top : top + h, left : left + w]


def onnx_network(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode copy of ``model`` ready for the ONNX tracer (the model is untouched).

    Parameters
    ----------
    model : torch.nn.Module
        Any network; a U-Net gets a wrapper that pads with traced sizes.

    Returns
    -------
    torch.nn.Module
    """
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        net = torch.jit.load(buf, map_location="cpu")
    else:
        net = copy.deepcopy(model).to("cpu")
    net.eval()
    from napari_dlcb.models.unet import UNet2D

    return _PaddedUNet(net).eval() if isinstance(net, UNet2D) else net


def _plans(meta: ModelMeta, model: nn.Module) -> tuple[tuple[int, ...], list[dict[int, str]]]:
    """The example input shape and the dynamic-axis choices to try, best first."""
    c = int(meta.in_channels)
    if meta.task == "sequence" or meta.input_axes == "bcl":
        length = int(meta.extra.get("length") or meta.extra.get("input_length") or 200)
        return (2, c, length), [{0: "batch", 2: "length"}, {0: "batch"}]
    if meta.task == "classification":
        side = int(meta.extra.get("input_size") or 32)
        return (2, c, side, side), [{0: "batch", 2: "y", 3: "x"}, {0: "batch"}]
    m = int(meta.extra.get("size_multiple") or getattr(model, "multiple", 16) or 16)
    fixed = meta.extra.get("fixed_size")
    if fixed:
        return (1, c, int(fixed[0]), int(fixed[1])), [{0: "batch"}]
    return (2, c, 4 * m, 5 * m), [{0: "batch", 2: "y", 3: "x"}, {0: "batch"}]


def _check_shapes(shape: tuple[int, ...], dynamic: dict[int, str], meta: ModelMeta, net: Any):
    """Input shapes that exercise every dynamic axis (other sizes than the example)."""
    shapes = [shape]
    other = list(shape)
    for axis in dynamic:
        if axis == 0:
            other[0] = 1 if shape[0] != 1 else 3
        elif meta.task == "segmentation":
            m = int(meta.extra.get("size_multiple") or getattr(net, "multiple", 16) or 16)
            other[axis] = shape[axis] + (m + 3 if isinstance(net, _PaddedUNet) else m)
        else:  # large enough to change what a fixed-size dense layer would see
            other[axis] = shape[axis] + max(8, shape[axis] // 2)
    if tuple(other) != shape:
        shapes.append(tuple(other))
    return shapes


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    meta: ModelMeta | None = None,
    opset: int = OPSET,
    atol: float = 1e-4,
) -> OnnxExport:
    """Write a model as ONNX and check it against PyTorch with onnxruntime.

    Parameters
    ----------
    model : torch.nn.Module, str or path-like
        A network (then pass ``meta``), or anything
        :func:`~napari_dlcb.models.registry.resolve_base` loads: a model
        folder, ``"builtin:<name>"``, a BioImage.IO package.
    path : str or path-like
        The ``.onnx`` file to write (atomically).
    meta : ModelMeta, optional
        The network's metadata (task, input channels, size, length).
    opset : int
        ONNX opset version.
    atol : float
        Largest absolute difference from PyTorch accepted on the check inputs.

    Returns
    -------
    OnnxExport
        The file, its dynamic axes and the measured difference.

    Raises
    ------
    DlcbError
        If onnx/onnxruntime are missing, the network cannot be exported, or
        onnxruntime does not reproduce it within ``atol``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_dlcb.models.dna import DeepBind
    >>> net = DeepBind(n_tasks=2, filters=8)
    >>> arch = {"name": "deepbind", "n_tasks": 2, "filters": 8}
    >>> meta = ModelMeta("sequence", arch, ["a", "b"], input_axes="bcl",
    ...                  in_channels=4, output_activation="sigmoid", extra={"length": 101})
    >>> out = export_onnx(net, tempfile.mkdtemp() + "/deepbind.onnx", meta=meta)
    >>> out.dynamic_axes, out.max_abs_diff < 1e-4
    ({0: 'batch', 2: 'length'}, True)
    """
    if not (isinstance(atol, (int, float)) and 0 < atol < float("inf")):
        raise DlcbError(f"atol must be a finite number > 0, got {atol!r}")
    _need_onnx()
    if meta is None:
        if not isinstance(model, (str, os.PathLike)):
            raise DlcbError("pass meta= with a network (or a model folder instead)")
        from napari_dlcb.models.registry import resolve_base

        model, meta = resolve_base(model)
    net = onnx_network(model)
    shape, plans = _plans(meta, net)
    last = ""
    for dynamic in plans:
        try:
            data = _export_bytes(net, shape, dynamic, opset)
        except DlcbError as err:
            last = str(err)
            continue
        shapes = _check_shapes(shape, dynamic, meta, net)
        try:
            diff = check_onnx(data, net, shapes)
        except DlcbError as err:
            last = str(err)
            continue
        if diff > atol:
            last = f"onnxruntime differs from PyTorch by {diff:.2e} (> {atol:g})"
            continue
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp, data=data: Path(tmp).write_bytes(data))
        return OnnxExport(out, opset, shape, dict(dynamic), diff, tuple(map(tuple, shapes)))
    raise DlcbError(f"cannot export this {meta.task} model to ONNX: {last}")


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise DlcbError(
            "ONNX export needs the 'onnx' and 'onnxruntime' packages: "
            "pip install 'napari-dlcb[onnx]'"
        ) from err


def _export_bytes(
    net: nn.Module, shape: Sequence[int], dynamic: dict[int, str], opset: int
) -> bytes:
    """The ONNX model (weights embedded) of ``net`` traced on a random input of ``shape``."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out_dynamic = {0: "batch"}
    if len(shape) == 4 and 2 in dynamic:  # outputs on the input grid follow it
        with torch.no_grad():
            y = net(x)
        if y.ndim == 4 and tuple(y.shape[-2:]) == tuple(shape[-2:]):
            out_dynamic = {0: "batch", 2: "y", 3: "x"}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (x,),
                buf,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": dynamic, "output": out_dynamic},
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as err:  # the exporter raises many error types  # noqa: BLE001
        raise DlcbError(f"the ONNX exporter failed: {one_line(err)}") from err
    return buf.getvalue()


def _check_input(shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """A typical input: random one-hot DNA for (N, 4, L), else standard normal (normalised)."""
    if len(shape) == 3 and shape[1] == 4:
        bases = torch.randint(0, 4, (shape[0], shape[2]), generator=gen)
        return F.one_hot(bases, 4).permute(0, 2, 1).float()
    return torch.randn(*shape, generator=gen)


def check_onnx(
    onnx_model: bytes | str | os.PathLike, net: Any, shapes: Sequence[Sequence[int]]
) -> float:
    """Largest absolute difference between onnxruntime and ``net`` on random inputs.

    Parameters
    ----------
    onnx_model : bytes, str or path-like
        The ONNX model (serialised) or its file.
    net : callable
        The PyTorch network (eval mode, CPU).
    shapes : sequence of shapes
        Input shapes to compare on (seeded random inputs: one-hot DNA for
        ``(N, 4, L)``, standard normal otherwise, as after normalisation).

    Returns
    -------
    float
        ``max |onnxruntime - PyTorch|`` over all shapes.

    Raises
    ------
    DlcbError
        If onnxruntime cannot load or run the model, or an output shape differs.
    """
    import onnxruntime as ort

    data = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types  # noqa: BLE001
        raise DlcbError(f"onnxruntime cannot load the export: {one_line(err)}") from err
    name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for shape in shapes:
        x = _check_input(shape, gen)
        try:
            with torch.no_grad():
                want = net(x).numpy()
        except RuntimeError as err:  # the network itself takes only some sizes
            raise DlcbError(f"PyTorch fails on input {tuple(shape)}: {one_line(err)}") from err
        try:
            got = session.run(None, {name: x.numpy()})[0]
        except Exception as err:  # noqa: BLE001
            raise DlcbError(f"onnxruntime fails on input {tuple(shape)}: {one_line(err)}") from err
        if got.shape != want.shape:
            raise DlcbError(
                f"onnxruntime gives shape {got.shape} for input {tuple(shape)}, "
                f"PyTorch {want.shape}"
            )
        worst = max(worst, float(np.abs(got.astype(np.float64) - want).max()))
    return worst
