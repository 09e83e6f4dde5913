"""In-silico mutagenesis (ISM): exact mutation maps, with a receptive-field-local fast path.

A mutation map holds, for every position ``i`` and base ``b``, the model's
prediction with base ``b`` at ``i`` minus the prediction for the reference
sequence. Naive ISM runs the whole model once per substitution (3 L forward
passes per sequence). The fast path (the idea of fastISM, Nair et al. 2022)
caches the reference activations of the leading position-local layers (Conv1d,
BatchNorm1d, element-wise activations, max/avg pooling, Dropout) and, for each
substitution, recomputes only the window of each layer that the substitution
can change; the first non-local layer (Flatten, Linear, global pooling, or
anything else) and all after it run in full on the patched activations. The
result is exact, not an approximation: it equals naive ISM up to float
rounding.

The fast path applies to a :class:`torch.nn.Sequential` (nested ones
included, subclasses that keep ``Sequential.forward``) whose first layers are
local; anything else falls back to exact naive ISM. **Recurrent models** (an
LSTM or GRU anywhere, e.g. :class:`~napari_dlcb.models.dna.DanQ`) always take
exact batched ISM: a recurrent layer's receptive field is the whole sequence,
so every substitution changes every later activation and there is no window
to recompute locally (caching the convolution before the LSTM would save
little: the LSTM and the dense layers after it dominate the cost). A log
message (logger ``napari_dlcb.interpret.ism``, level INFO) says so, and
``method="fast"`` refuses such models. Either way the model is handed back
unchanged (mode, device, requires_grad, grads, hooks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.ism_fast import FastISM, as_local, fast_path_supported, flatten_chain
from napari_dlcb.models.dna import is_recurrent
from napari_dlcb.models.ensemble import Ensemble, combine_outputs
from napari_dlcb.models.state import preserve_model_state

__all__ = ["mutation_map", "iter_mutation_map", "naive_mutation_map", "fast_path_supported"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- API
def _prepare(x, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device=device, dtype=torch.float32)
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise DlcbError(f"x must be a numeric one-hot array (N, 4, L), got dtype {arr.dtype}")
        t = torch.as_tensor(arr.astype(np.float32, copy=False), device=device)
    if not bool(torch.isfinite(t).all()):
        raise DlcbError("x has NaN or infinite values; one-hot DNA holds 0s and 1s (or N = 0.25)")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[1] != 4:
        raise DlcbError(f"x must be one-hot DNA of shape (N, 4, L), got {tuple(t.shape)}")
    return t


def _targets(target, T: int) -> list[int]:
    if target is None:
        return list(range(T))
    tl = [int(target)] if np.ndim(target) == 0 else [int(t) for t in target]
    for t in tl:
        if not -T <= t < T:
            raise DlcbError(f"target {t} is out of range: the model has {T} outputs")
    return [t % T for t in tl]


def _out2d(y: torch.Tensor) -> torch.Tensor:
    if y.ndim == 1:
        return y[:, None]
    if y.ndim != 2:
        raise DlcbError(f"the model must return (N, T) outputs for ISM, got shape {tuple(y.shape)}")
    return y


def _model_device(model: nn.Module, device) -> torch.device:
    from napari_dlcb.device import model_device, resolve_device

    if device is not None:
        return resolve_device(device)
    return model_device(model) or torch.device("cpu")


def _mutants_for(x1: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and bases to mutate in ``[start, end)``: every base that is not the reference."""
    block = x1[:, start:end]  # (4, W)
    is_ref = block == 1.0
    b, i = torch.nonzero(~is_ref, as_tuple=True)
    order = torch.argsort(i * 4 + b)
    return i[order] + start, b[order]


class _EnsembleFast:
    """The fast path of an ensemble: every member's, outputs combined as the ensemble does."""

    def __init__(self, fasts: list[FastISM], combine: str):
        self.fasts, self.combine = fasts, combine

    def reference(self, x1: torch.Tensor) -> torch.Tensor:
        """The ensemble's output on one sequence, caching every member's activations."""
        return combine_outputs(torch.stack([f.reference(x1) for f in self.fasts]), self.combine)

    def mutants(self, pos: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The ensemble's outputs for substitutions (as :meth:`FastISM.mutants`)."""
        outs = torch.stack([f.mutants(pos, cols) for f in self.fasts])
        return combine_outputs(outs, self.combine)


def _fast_path(model: nn.Module, method: str) -> FastISM | _EnsembleFast | None:
    """The fast path for ``model``, or None (naive ISM); an error if ``method="fast"`` cannot.

    An :class:`~napari_dlcb.models.ensemble.Ensemble` (k-fold training) takes
    each member's fast path and combines their outputs; if one member has none,
    the whole ensemble takes exact naive ISM.
    """
    if method != "naive" and is_recurrent(model):
        if method == "fast":
            raise DlcbError(
                "the fast ISM path does not apply to recurrent models (an LSTM sees the whole "
                "sequence); use method='auto' (exact batched ISM)"
            )
        logger.info(
            "%s is recurrent (its receptive field is the whole sequence): "
            "exact batched ISM instead of the receptive-field-local fast path",
            type(model).__name__,
        )
        return None
    if isinstance(model, Ensemble) and method != "naive":
        fasts = [_fast_path(m, method) for m in model.members]
        if any(f is None for f in fasts):
            return None
        return _EnsembleFast(fasts, model.combine)
    chain = flatten_chain(model) if method != "naive" else None
    fast = None
    if chain and as_local(chain[0]) is not None:
        fast = FastISM(chain)
        if not fast.ops:
            fast = None
    if method == "fast" and fast is None:
        raise DlcbError(
            "the fast ISM path does not support this model (it is not a Sequential of local layers)"
        )
    return fast


def _reproduces(
    fast: FastISM | _EnsembleFast, x1: torch.Tensor, ref: torch.Tensor, method: str
) -> bool:
    """Whether the fast path gives the model's output on ``x1`` (caching its activations)."""
    if torch.allclose(_out2d(fast.reference(x1)), ref, rtol=1e-4, atol=1e-5):
        return True
    if method == "fast":
        raise DlcbError(
            "the fast ISM path does not reproduce the model's output; use method='naive'"
        )
    return False


def iter_mutation_map(
    model: nn.Module,
    x,
    *,
    regions: Sequence[tuple[int, int]] | None = None,
    target: int | Sequence[int] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = "auto",
    method: str = "auto",
) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Compute a mutation map progressively, region by region.

    For the viewer: pass the visible region first and the rest after it;
    each ``yield`` is a point where a worker can stop or pause.

    Parameters
    ----------
    model, x, target, batch_size, device, method
        As for :func:`mutation_map`.
    regions : sequence of (start, end), optional
        Position ranges in computation order (default: the whole sequence in
        blocks of about ``batch_size / 3`` positions).

    Yields
    ------
    (n, start, end, block)
        ``block`` is ``(4, end - start, T)`` float32 for sequence ``n``.
    """
    dev = _model_device(model, device)
    xt = _prepare(x, dev)
    p0 = next(iter(model.parameters()), None)
    if p0 is not None and p0.is_floating_point():
        xt = xt.to(p0.dtype)  # e.g. a float64 model
    N, _, L = xt.shape
    if method not in ("auto", "fast", "naive"):
        raise DlcbError(f"method must be 'auto', 'fast' or 'naive', not {method!r}")
    if regions is None:
        step = max(1, batch_size // 3)
        regions = [(s, min(L, s + step)) for s in range(0, L, step)]
    for s, e in regions:
        if not 0 <= s < e <= L:
            raise DlcbError(f"region {s}-{e} is outside the sequence (length {L})")
    with preserve_model_state(model):
        model.eval()
        model.to(dev)
        torch.set_grad_enabled(False)
        fast = _fast_path(model, method)
        for n in range(N):
            x1 = xt[n : n + 1]
            ref = _out2d(model(x1))
            if fast is not None and not _reproduces(fast, x1, ref, method):
                fast = None
            T = ref.shape[1]
            tg = _targets(target, T)
            for s, e in regions:
                pos, base = _mutants_for(x1[0], s, e)
                block = np.zeros((4, e - s, len(tg)), dtype=np.float32)
                for b0 in range(0, len(pos), batch_size):
                    p = pos[b0 : b0 + batch_size]
                    bb = base[b0 : b0 + batch_size]
                    cols = F.one_hot(bb, 4).to(x1.dtype)
                    if fast is not None:
                        out = _out2d(fast.mutants(p, cols))
                    else:
                        xb = x1.expand(len(p), -1, -1).clone()
                        xb[torch.arange(len(p), device=dev), :, p] = cols
                        out = _out2d(model(xb))
                    diff = (out - ref)[:, tg].float().cpu().numpy()
                    block[bb.cpu().numpy(), (p - s).cpu().numpy()] = diff
                yield n, s, e, block


def mutation_map(
    model: nn.Module,
    x,
    *,
    start: int = 0,
    end: int | None = None,
    target: int | Sequence[int] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = "auto",
    method: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Exact in-silico saturation mutagenesis: alt minus ref for every base at every position.

    Parameters
    ----------
    model : torch.nn.Module
        Maps float ``(N, 4, L)`` to ``(N, T)`` (``(N,)`` is read as T = 1).
    x : array-like
        One-hot DNA ``(N, 4, L)`` or ``(4, L)`` (numpy or torch, any numeric dtype).
    start, end : int
        Mutate positions ``start <= i < end`` only (default: all).
    target : int or sequence of int, optional
        Output(s) to keep; default all.
    batch_size : int
        Mutated sequences per forward pass.
    device : str or torch.device or None
        Where to compute: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``,
        ``"cuda"``...; None keeps the model's device. The model is handed
        back on its own device.
    method : {"auto", "fast", "naive"}
        ``"auto"`` uses the fast path when the model supports it (see module
        docs) and naive ISM otherwise (always for recurrent models such as
        DanQ, whose LSTM sees the whole sequence); ``"fast"`` raises if
        unsupported.
    progress : callable, optional
        Called as ``progress(done, total)`` after each region.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, 4, L, T)`` on the input's grid: entry ``[n, b, i, t]``
        is output ``t`` with base ``b`` at position ``i`` minus the reference
        output; 0 at the reference base; NaN outside ``[start, end)``. At
        ambiguous positions (e.g. ``N`` = 0.25 each) all four bases are
        substituted.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 20, 2))
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 4, (1, 20)), 4).permute(0, 2, 1).float()
    >>> m = mutation_map(model, x)
    >>> m.shape
    (1, 4, 20, 2)
    >>> bool((m * x.numpy()[..., None] == 0).all())  # zero at the reference bases
    True
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DlcbError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    xt = _prepare(x, "cpu")
    N, _, L = xt.shape
    regions = _regions(L, start, end, batch_size)
    out: np.ndarray | None = None
    done = 0
    options = {"target": target, "batch_size": batch_size, "device": device, "method": method}
    for n, s, e, block in iter_mutation_map(model, x, regions=regions, **options):
        if out is None:
            out = np.full((N, 4, L, block.shape[2]), np.nan, dtype=np.float32)
        out[n, :, s:e] = block
        done += 1
        if progress is not None:
            progress(done, N * len(regions))
    assert out is not None
    return out


def _regions(length: int, start: int, end: int | None, batch_size: int) -> list[tuple[int, int]]:
    """Check ``start``/``end`` and cut ``[start, end)`` into regions of a third of a batch.

    Parameters
    ----------
    length : int
        The sequence length.
    start, end, batch_size
        As for :func:`mutation_map`.

    Returns
    -------
    list of (int, int)
        Half-open position ranges, each mutated in one batch of up to ``batch_size``.
    """
    end = length if end is None else int(end)
    start = int(start)
    if not 0 <= start < end <= length:
        raise DlcbError(f"start/end {start}-{end} do not fit the sequence length {length}")
    step = max(1, batch_size // 3)
    return [(s, min(end, s + step)) for s in range(start, end, step)]


def naive_mutation_map(model: nn.Module, x, **kwargs) -> np.ndarray:
    """Exact naive ISM (one full forward pass per substitution); the reference for tests.

    Takes the same arguments as :func:`mutation_map`.
    """
    kwargs["method"] = "naive"
    return mutation_map(model, x, **kwargs)
