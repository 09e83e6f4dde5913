"""Attribution maps for DNA models, on the input's (N, 4, L) grid, each with its completeness error.

* :func:`gradient_x_input` - saliency times input, with the mean-gradient
  correction of Majdandzic et al. (2023): the per-position mean of the gradient
  over the 4 bases is removed first, which discards the off-simplex component
  that one-hot inputs cannot move along.
* :func:`dna_integrated_gradients` - captum's IntegratedGradients from a uniform
  (0.25) or zero baseline; the completeness error is captum's convergence
  delta (sum of attributions minus the output difference). (Images have
  their own :mod:`napari_dlcb.interpret.integrated_gradients`.)
* :func:`deeplift_shap` - captum's DeepLiftShap against dinucleotide-shuffled
  references. DeepLIFT's rules are only defined for the nonlinear modules
  captum knows; anything else (functional calls such as ``torch.amax`` inside
  a custom module) is treated as linear and the map can be silently wrong.
  We therefore always return the completeness error ``delta`` and warn, naming
  the modules, when the model contains layers captum does not handle. The
  shipped architectures are first rewritten by :func:`deeplift_equivalent`
  into the same function in a form captum handles exactly (DeepBind's global
  max+mean pool as an ``nn.MaxPool1d``; a fresh tensor between ReLU and max
  pool), which takes their completeness error from ~2 logits (built-in model)
  and ~3e-3 (Basset) to below 1e-6. Recurrent models (DanQ) are refused:
  captum's DeepLift has no rule for an LSTM's gates; gradient x input and
  integrated gradients work on them.

Every function is ``f(model, x, *, target, ..., batch_size, device="auto")``,
hands the model back unchanged and returns the one attribution result type,
:class:`~napari_dlcb.interpret.attribution.Attribution`, with ``map`` (N, 4, L)
float32 and ``completeness`` (N,) float32.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.attribution import Attribution
from napari_dlcb.models.state import preserve_model_state

__all__ = [
    "deeplift_equivalent",
    "deeplift_shap",
    "dna_integrated_gradients",
    "gradient_x_input",
    "unsupported_for_deeplift",
]


def _result(method: str, target: int, vals: list, deltas: list) -> Attribution:
    return Attribution(
        map=np.concatenate(vals).astype(np.float32),
        method=method,
        target=int(target),
        completeness=np.concatenate(deltas).astype(np.float32),
    )


def _prep(model: nn.Module, x, device) -> tuple[torch.Tensor, torch.device]:
    dev = resolve_device(device)
    t = torch.as_tensor(
        np.asarray(x, np.float32) if not isinstance(x, torch.Tensor) else x.detach().float()
    )
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[1] != 4:
        raise DlcbError(f"x must be one-hot DNA (N, 4, L), got {tuple(t.shape)}")
    return t.to(dev), dev


def _recurrent_layers(model: nn.Module) -> list[str]:
    return [
        f"{n} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, nn.RNNBase)
    ]


def _grad_context(model: nn.Module, dev: torch.device):
    """Disable cuDNN for recurrent models: its RNN backward works only in training mode."""
    if dev.type == "cuda" and _recurrent_layers(model):
        return torch.backends.cudnn.flags(enabled=False)
    return nullcontext()


def _forward_target(model: nn.Module, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        y = model(x)
        return y[:, target] if y.ndim == 2 else y

    return f


def gradient_x_input(
    model: nn.Module,
    x,
    *,
    target: int = 0,
    batch_size: int = 128,
    device: Any = "auto",
    correct: bool = True,
) -> Attribution:
    """Gradient times input with the mean-gradient correction.

    Parameters
    ----------
    model : torch.nn.Module
        ``(N, 4, L) -> (N, T)`` logits.
    x : array-like
        One-hot ``(N, 4, L)``.
    target : int
        Output to explain.
    batch_size : int
        Sequences per backward pass.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    correct : bool
        Subtract the per-position mean gradient over the 4 bases.

    Returns
    -------
    Attribution
        ``map`` (N, 4, L); ``completeness`` is the first-order error against
        a uniform reference: ``sum(attr_uniform) - (f(x) - f(0.25))`` where
        ``attr_uniform = grad * (x - 0.25)``.

    Examples
    --------
    >>> from napari_dlcb.data.onehot import one_hot
    >>> from napari_dlcb.models.dna import DeepBind
    >>> a = gradient_x_input(DeepBind(2, kernel_size=5), one_hot("ACGTACGTAC"), target=1)
    >>> a.map.shape, a.method, a.completeness.shape
    ((1, 4, 10), 'gradient-x-input', (1,))
    """
    xt, dev = _prep(model, x, device)
    vals, deltas = [], []
    with preserve_model_state(model), _grad_context(model, dev):
        model.eval().to(dev)
        torch.set_grad_enabled(True)
        for p in model.parameters():
            p.requires_grad_(False)
        f = _forward_target(model, target)
        for i in range(0, len(xt), batch_size):
            xb = xt[i : i + batch_size].clone().requires_grad_(True)
            out = f(xb)
            (g,) = torch.autograd.grad(out.sum(), xb)
            if correct:
                g = g - g.mean(1, keepdim=True)
            vals.append((g * xb).detach().cpu().numpy())
            with torch.no_grad():
                base = f(torch.full_like(xb, 0.25))
                lin = (g * (xb - 0.25)).sum((1, 2))
                deltas.append((lin - (out - base)).cpu().numpy())
    return _result("gradient-x-input", target, vals, deltas)


def dna_integrated_gradients(
    model: nn.Module,
    x,
    *,
    target: int = 0,
    baseline: str = "uniform",
    n_steps: int = 50,
    batch_size: int = 32,
    device: Any = "auto",
) -> Attribution:
    """Integrated gradients (captum) of one-hot DNA from a ``"uniform"`` (0.25) or ``"zeros"`` baseline.

    Parameters
    ----------
    model, x, target, device
        As for :func:`gradient_x_input`.
    baseline : {"uniform", "zeros"}
        Reference input.
    n_steps : int
        Riemann steps along the path.
    batch_size : int
        Sequences per captum call.

    Returns
    -------
    Attribution
        ``map`` (N, 4, L); ``completeness`` is captum's convergence delta per
        sequence.

    Examples
    --------
    >>> from napari_dlcb.data.onehot import one_hot
    >>> from napari_dlcb.models.dna import DeepBind
    >>> a = dna_integrated_gradients(DeepBind(1, kernel_size=5), one_hot("ACGTACGTAC"), n_steps=8)
    >>> a.map.shape, a.method
    ((1, 4, 10), 'integrated-gradients')
    """
    from captum.attr import IntegratedGradients

    xt, dev = _prep(model, x, device)
    if baseline not in ("uniform", "zeros"):
        raise DlcbError(f"baseline must be 'uniform' or 'zeros', not {baseline!r}")
    vals, deltas = [], []
    with preserve_model_state(model), _grad_context(model, dev):
        model.eval().to(dev)
        torch.set_grad_enabled(True)
        ig = IntegratedGradients(_forward_target(model, target))
        for i in range(0, len(xt), batch_size):
            xb = xt[i : i + batch_size]
            b = torch.full_like(xb, 0.25) if baseline == "uniform" else torch.zeros_like(xb)
            a, d = ig.attribute(xb, baselines=b, n_steps=n_steps, return_convergence_delta=True)
            vals.append(a.detach().cpu().numpy())
            deltas.append(d.detach().cpu().numpy())
    return _result("integrated-gradients", target, vals, deltas)


_CAPTUM_LINEAR = (
    nn.Conv1d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.Dropout,
    nn.Flatten,
    nn.Identity,
    nn.Sequential,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
)


def unsupported_for_deeplift(model: nn.Module) -> list[str]:
    """Names of modules whose nonlinearity DeepLIFT (captum) would silently treat as linear."""
    try:
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
    except ImportError:  # pragma: no cover - captum layout changed
        SUPPORTED_NON_LINEAR = {}
    supported = tuple(SUPPORTED_NON_LINEAR) + _CAPTUM_LINEAR + (_GlobalMaxAvgPoolDL, _Clone)
    bad = []
    for name, m in model.named_modules():
        if m is model and isinstance(m, nn.Sequential):
            continue
        if not isinstance(m, supported) and not list(m.children()):
            bad.append(f"{name or '<root>'} ({type(m).__name__})")
        elif (
            not isinstance(m, supported)
            and type(m).forward is not nn.Module.forward
            and not isinstance(m, nn.Sequential)
        ):
            # a container with its own forward may call functional nonlinearities
            if m is not model:
                bad.append(f"{name} ({type(m).__name__})")
    return bad


def _check_deeplift(model: nn.Module) -> None:
    """Refuse, in one line, models DeepLIFT/SHAP cannot attribute: recurrent ones, ensembles."""
    from napari_dlcb.models.ensemble import Ensemble

    rnn = _recurrent_layers(model)
    if rnn:
        raise DlcbError(
            f"DeepLIFT/SHAP does not support recurrent layers ({', '.join(rnn)}): "
            "use gradient x input or integrated gradients for this model"
        )
    if isinstance(model, Ensemble):  # its probability average is a nonlinearity captum misses
        raise DlcbError(
            "DeepLIFT/SHAP does not support ensemble models (k-fold training): use gradient x "
            "input or integrated gradients for this model"
        )


def deeplift_shap(
    model: nn.Module,
    x,
    *,
    target: int = 0,
    n_shuffles: int = 10,
    batch_size: int = 16,
    device: Any = "auto",
    seed: int = 0,
) -> Attribution:
    """DeepLIFT/SHAP (captum ``DeepLiftShap``) against dinucleotide-shuffled references.

    Parameters
    ----------
    model, x, target, device
        As for :func:`gradient_x_input`.
    n_shuffles : int
        References per sequence.
    batch_size : int
        Sequences per block.
    seed : int
        Seed of the shuffles.

    Returns
    -------
    Attribution
        ``map`` averaged over the references (hypothetical contributions
        projected on the input); ``completeness`` is the mean absolute
        completeness error. A ``RuntimeWarning`` names modules captum cannot
        handle.

    Raises
    ------
    DlcbError
        For recurrent models (e.g. DanQ): captum's DeepLift has no rule for
        an LSTM; use :func:`gradient_x_input` or :func:`dna_integrated_gradients`.
        Also for an :class:`~napari_dlcb.models.ensemble.Ensemble` (k-fold training).
    """
    from captum.attr import DeepLiftShap

    from napari_dlcb.data.onehot import decode, dinucleotide_shuffle, one_hot

    _check_deeplift(model)
    xt, dev = _prep(model, x, device)
    original, model = model, deeplift_equivalent(model, xt.shape[-1])
    bad = unsupported_for_deeplift(model)
    if bad:
        warnings.warn(
            "DeepLIFT treats these modules as linear, so the map may be wrong (check delta): "
            + ", ".join(bad),
            RuntimeWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    vals, deltas = [], []
    with preserve_model_state(original), preserve_model_state(model):
        model.eval().to(dev)
        torch.set_grad_enabled(True)
        wrapped = _TargetModel(model, target)
        dls = DeepLiftShap(wrapped)
        for i in range(0, len(xt), batch_size):
            xb = xt[i : i + batch_size]
            seqs = decode(xb.cpu().numpy())
            out_a, out_d = [], []
            for j, s in enumerate(seqs):
                refs = torch.as_tensor(
                    one_hot([dinucleotide_shuffle(s, rng=rng) for _ in range(n_shuffles)]),
                    device=dev,
                )
                a, d = dls.attribute(xb[j : j + 1], baselines=refs, return_convergence_delta=True)
                out_a.append(a.detach().cpu().numpy())
                out_d.append(float(d.detach().abs().mean()))
            vals.append(np.concatenate(out_a))
            deltas.append(np.array(out_d))
    return _result("deeplift-shap", target, vals, deltas)


class _Clone(nn.Module):
    """``x.clone()``: a fresh tensor between two nonlinear modules, for captum's DeepLIFT.

    captum hooks each nonlinear module's input and output tensors; when one
    module's output *is* the next one's input (ReLU then MaxPool), the two
    rules interfere and completeness breaks (measured with captum 0.9 and
    torch 2.13: error 0.04-0.25 on a conv-ReLU-maxpool toy, 0 with a clone in
    between).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.clone()


class _GlobalMaxAvgPoolDL(nn.Module):
    """``GlobalMaxAvgPool`` with its max as an ``nn.MaxPool1d`` over a fixed length.

    captum's DeepLIFT applies its max-pool rule only to ``nn.MaxPool*``
    modules; the functional ``amax`` would be treated as linear. Same values.
    """

    def __init__(self, length: int):
        super().__init__()
        self.max = nn.MaxPool1d(length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.cat([self.max(x.clone()).squeeze(2), x.mean(dim=2)], dim=1)


def deeplift_equivalent(model: nn.Module, length: int) -> nn.Module:
    """A copy of ``model`` computing the same function in a form captum's DeepLIFT handles exactly.

    Every :class:`~napari_dlcb.models.dna.GlobalMaxAvgPool` becomes an
    ``nn.MaxPool1d``-based equivalent, and in every ``nn.Sequential`` a
    ``_Clone`` is put between a nonlinear module and a max pool that directly
    follows it. Models that need neither are returned as they are; the
    caller's model is never modified.

    Parameters
    ----------
    model : torch.nn.Module
        DNA model.
    length : int
        Input length (fixes the global max pool's window).

    Returns
    -------
    torch.nn.Module
    """
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    from napari_dlcb.models.dna import GlobalMaxAvgPool

    nonlinear = tuple(SUPPORTED_NON_LINEAR)
    pools = (nn.MaxPool1d, nn.MaxPool2d, GlobalMaxAvgPool)

    def needs(seq: nn.Sequential) -> bool:
        mods = list(seq)
        return any(
            isinstance(a, nonlinear) and isinstance(b, pools) for a, b in zip(mods, mods[1:])
        )

    if not any(
        isinstance(m, GlobalMaxAvgPool) or (isinstance(m, nn.Sequential) and needs(m))
        for m in model.modules()
    ):
        return model
    clone = copy.deepcopy(model)
    sizes: dict[int, int] = {}  # input length of each GlobalMaxAvgPool, from a dry run
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp: sizes.__setitem__(id(mod), inp[0].shape[-1]))
        for m in clone.modules()
        if isinstance(m, GlobalMaxAvgPool)
    ]
    try:
        p = next(clone.parameters(), None)
        with torch.no_grad():
            clone.eval()(torch.zeros(1, 4, length, device=p.device if p is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
    for seq in [m for m in clone.modules() if isinstance(m, nn.Sequential)]:
        old = list(seq._modules.values())
        new: list[nn.Module] = []
        for i, mod in enumerate(old):
            if i and isinstance(old[i - 1], nonlinear) and isinstance(mod, pools):
                new.append(_Clone())
            new.append(
                _GlobalMaxAvgPoolDL(sizes[id(mod)]) if isinstance(mod, GlobalMaxAvgPool) else mod
            )
        if len(new) != len(old) or any(a is not b for a, b in zip(new, old)):
            seq._modules.clear()
            for i, mod in enumerate(new):
                seq.add_module(str(i), mod)
    return clone


class _TargetModel(nn.Module):
    """Selects one output so captum sees a (N,) model; keeps the child's modules visible."""

    def __init__(self, model: nn.Module, target: int):
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.model(x)
        return y[:, self.target : self.target + 1] if y.ndim == 2 else y[:, None]
