"""The fast path of in-silico mutagenesis: recompute only what a substitution can change.

The idea of fastISM (Nair et al. 2022): cache the reference activations of the
leading position-local layers (Conv1d, BatchNorm1d, element-wise activations,
max/avg pooling, Dropout) of a :class:`torch.nn.Sequential`, and for each
substitution recompute only the window of each layer that it can change; the
first non-local layer and all after it run in full on the patched activations.
Exact, not an approximation. Used by :mod:`napari_dlcb.interpret.ism`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FastISM", "Sliding", "as_local", "fast_path_supported", "flatten_chain"]

_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.PReLU,
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
    nn.BatchNorm1d,
)


# --------------------------------------------------------------------------- plan
@dataclass
class Sliding:
    """A sliding-window layer: conv or pool, with its geometry."""

    module: nn.Module
    kind: str  # "conv" | "max" | "avg"
    k: int
    s: int
    d: int
    pad_left: int
    fill: float


def flatten_chain(model: nn.Module) -> list[nn.Module] | None:
    """The modules a plain ``nn.Sequential`` calls in order, or None if not a plain chain."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    out: list[nn.Module] = []
    for m in model:
        if isinstance(m, nn.Sequential):
            sub = flatten_chain(m)
            if sub is None:
                return None
            out.extend(sub)
        else:
            out.append(m)
    return out


def as_local(m: nn.Module) -> Sliding | nn.Module | None:
    """Describe ``m`` as a local op, or None if it is not position-local."""
    if isinstance(m, _ELEMENTWISE):
        if isinstance(m, nn.PReLU) and m.weight.numel() not in (1,) and m.weight.ndim != 1:
            return None
        return m
    if isinstance(m, nn.Conv1d) and type(m).forward is nn.Conv1d.forward:
        if m.padding_mode != "zeros":
            return None
        k, s, d = m.kernel_size[0], m.stride[0], m.dilation[0]
        if isinstance(m.padding, str):
            pl = 0 if m.padding == "valid" else d * (k - 1) // 2
        else:
            pl = m.padding[0]
        return Sliding(m, "conv", k, s, d, pl, 0.0)
    if isinstance(m, nn.MaxPool1d) and not m.return_indices:
        k = _int(m.kernel_size)
        s = _int(m.stride if m.stride is not None else m.kernel_size)
        return Sliding(m, "max", k, s, _int(m.dilation), _int(m.padding), float("-inf"))
    if (
        isinstance(m, nn.AvgPool1d)
        and not m.ceil_mode
        and (_int(m.padding) == 0 or m.count_include_pad)
    ):
        k = _int(m.kernel_size)
        s = _int(m.stride if m.stride is not None else m.kernel_size)
        return Sliding(m, "avg", k, s, 1, _int(m.padding), 0.0)
    return None


def _int(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def fast_path_supported(model: nn.Module) -> bool:
    """True if :func:`mutation_map` can use the receptive-field-local fast path on ``model``.

    Examples
    --------
    >>> fast_path_supported(nn.Sequential(nn.Conv1d(4, 2, 3), nn.Flatten(), nn.LazyLinear(1)))
    True
    >>> fast_path_supported(nn.Linear(4, 1))
    False

    Recurrent models never are (an LSTM's receptive field is the whole sequence).
    """
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return False
    chain = flatten_chain(model)
    return bool(chain) and as_local(chain[0]) is not None and not isinstance(chain[0], nn.Identity)


class FastISM:
    """Reference activations of the local prefix plus the tail, for one sequence."""

    def __init__(self, chain: list[nn.Module]):
        self.ops: list[Sliding | nn.Module] = []
        for m in chain:
            op = as_local(m)
            if op is None:
                break
            self.ops.append(op)
        self.tail = chain[len(self.ops) :]

    @torch.no_grad()
    def reference(self, x1: torch.Tensor) -> torch.Tensor:
        """Run the chain on one sequence ``(1, 4, L)``, caching every local layer's activations."""
        h = x1
        self.cache: list[dict] = []
        for op in self.ops:
            entry: dict = {"ref_in": h[0]}
            if isinstance(op, Sliding):
                out = op.module(h)
                L_out = out.shape[2]
                need = (L_out - 1) * op.s - op.pad_left + (op.k - 1) * op.d + 1
                pad_right = max(0, need - h.shape[2])
                entry["ref_pad"] = F.pad(h[0], (op.pad_left, pad_right), value=op.fill)
                # Wide stride-1 convs: conv(x + dx) = conv(x) + conv_transpose(dx, flipped kernel),
                # which touches only the changed inputs (narrow first layers gather instead).
                entry["delta"] = (
                    op.kind == "conv"
                    and op.s == 1
                    and op.module.groups == 1
                    and op.module.in_channels >= 16
                )
                if entry["delta"]:
                    entry["wt"] = op.module.weight.flip(2).transpose(0, 1).contiguous()
                h = out
            else:
                h = op(h)
            entry["ref_out"] = h[0]
            entry["L_out"] = h.shape[2]
            self.cache.append(entry)
        if h.ndim != 3:
            raise RuntimeError("local prefix must keep (B, C, L)")
        self.prefix_out = h[0]
        # Global max/mean pooling right after the local prefix: combine the window with
        # cached prefix/suffix maxima and the reference sum instead of pooling all of L.
        self.global_pool = None
        if self.tail and _global_pool_kind(self.tail[0]) is not None:
            ref = self.prefix_out
            ninf = torch.full_like(ref[:, :1], float("-inf"))
            prefix = torch.cat([ninf, torch.cummax(ref, 1).values], 1)  # [:, a] = max over [0, a)
            suffix = torch.cat(
                [torch.cummax(ref.flip(1), 1).values.flip(1), ninf], 1
            )  # [:, a] = max over [a, L)
            self.global_pool = (_global_pool_kind(self.tail[0]), prefix, suffix, ref.sum(1))
        # Flatten -> Linear right after the local prefix: only the window's columns change.
        self.linear_delta = None
        tail = list(self.tail)
        if (
            len(tail) >= 2
            and isinstance(tail[0], nn.Flatten)
            and tail[0].start_dim == 1
            and tail[0].end_dim == -1
            and type(tail[1]) is nn.Linear
        ):
            lin = tail[1]
            C, L = self.prefix_out.shape
            if lin.in_features == C * L:
                flat = h.flatten(1)
                self.linear_delta = (lin.weight.view(lin.out_features, C, L), lin(flat)[0])
                self.after_linear = tail[2:]
        for m in self.tail:
            h = m(h)
        return h

    @torch.no_grad()
    def mutants(self, pos: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Outputs for substitutions: ``pos`` (B,) positions, ``cols`` (B, 4) new columns."""
        h, a, W = self._local(pos, cols)
        return self._tail_out(h, a, W)

    def _local(
        self, pos: torch.Tensor, cols: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Run the local prefix on the changed windows: activations ``h`` (B, C, W) from ``a``."""
        a = pos.clone()  # start of the changed window, per mutant
        W = 1
        h = cols[:, :, None]  # (B, C, W): the new values of the changed window
        k_op = 0
        while k_op < len(self.ops):
            op, entry = self.ops[k_op], self.cache[k_op]
            k_op += 1
            if not isinstance(op, Sliding):
                h = op(h)
            elif entry["delta"]:
                h, a, W, k_op = self._delta_conv(op, entry, h, a, W, k_op)
            else:
                h, a, W = self._gathered(op, entry, h, a, W)
        return h, a, W

    def _delta_conv(self, op: Sliding, entry: dict, h, a, W: int, k_op: int):
        """A wide stride-1 conv as ref + conv_transpose(delta); fused with a following pool."""
        L_out = entry["L_out"]
        span = (op.k - 1) * op.d
        W_out = min(L_out, (W - 1 + span) // op.s + 1)
        dx = h - _windows(entry["ref_in"], a, W)
        dy = F.conv_transpose1d(dx, entry["wt"], None, 1, 0, 0, 1, op.d)  # (B, C', W + span)
        nat = a + op.pad_left - span  # output index of dy[..., 0]
        o0 = nat.clamp(min=0, max=L_out - W_out)
        # If the next sliding layer is an unpadded pool reached through element-wise
        # layers only, produce this conv's output directly on the span that pool reads,
        # which saves the pool's gather-and-overlay step.
        j = k_op
        while j < len(self.ops) and not isinstance(self.ops[j], Sliding):
            j += 1
        nxt = self.ops[j] if j < len(self.ops) else None
        if (
            nxt is not None
            and nxt.kind in ("max", "avg")
            and nxt.pad_left == 0
            and self.cache[j]["ref_pad"].shape[1] == self.cache[j]["ref_in"].shape[1]
        ):
            p_span = (nxt.k - 1) * nxt.d
            Lp = self.cache[j]["L_out"]
            Wp = min(Lp, (W_out - 1 + p_span) // nxt.s + 1)
            p_lo = torch.div(o0 - p_span + nxt.s - 1, nxt.s, rounding_mode="floor")
            p0 = p_lo.clamp(min=0, max=Lp - Wp)
            G = (Wp - 1) * nxt.s + p_span + 1
            g0 = p0 * nxt.s
            h = _windows(entry["ref_out"], g0, G) + _shifted(dy, g0 - nat, G)
            for mid in self.ops[k_op:j]:
                h = mid(h)
            if nxt.kind == "max":
                h = F.max_pool1d(h, nxt.k, nxt.s, 0, nxt.d)
            else:
                h = F.avg_pool1d(h, nxt.k, nxt.s, 0)
            return h, p0, Wp, j + 1
        if W_out != W + span or bool((o0 != nat).any()):
            # window clamped at a sequence end: shift dy, drop what falls outside
            dy = _shifted(dy, o0 - nat, W_out)
        return _windows(entry["ref_out"], o0, W_out) + dy, o0, W_out, k_op

    def _gathered(self, op: Sliding, entry: dict, h, a, W: int):
        """A conv or pool on the reference window around the change, overlaid with ``h``."""
        L_out = entry["L_out"]
        span = (op.k - 1) * op.d
        W_out = min(L_out, (W - 1 + span) // op.s + 1)
        o_lo = torch.div(a + op.pad_left - span + op.s - 1, op.s, rounding_mode="floor")
        o0 = o_lo.clamp(min=0, max=L_out - W_out)
        G = (W_out - 1) * op.s + span + 1
        gpos = o0[:, None] * op.s + torch.arange(G, device=h.device)[None]  # padded coords (B, G)
        g = entry["ref_pad"][:, gpos].permute(1, 0, 2)  # (B, C, G)
        j = gpos - (a[:, None] + op.pad_left)
        inside = (j >= 0) & (j < W)
        jj = j.clamp(0, W - 1)[:, None, :].expand(-1, h.shape[1], -1)
        g = torch.where(inside[:, None, :], h.gather(2, jj), g)
        m = op.module
        if op.kind == "conv":
            h = F.conv1d(g, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        elif op.kind == "max":
            h = F.max_pool1d(g, op.k, op.s, 0, op.d)
        else:
            h = F.avg_pool1d(g, op.k, op.s, 0)
        return h, o0, W_out

    def _tail_out(self, h: torch.Tensor, a: torch.Tensor, W: int) -> torch.Tensor:
        """The model's outputs from the patched window of the local prefix's last activation."""
        B, dev = h.shape[0], h.device
        if self.global_pool is not None:
            kind, prefix, suffix, ref_sum = self.global_pool
            L = self.prefix_out.shape[1]
            outside = torch.maximum(prefix[:, a], suffix[:, a + W]).T  # (B, C)
            mx = torch.maximum(outside, h.amax(2))
            mean = (ref_sum[None] + (h - _windows(self.prefix_out, a, W)).sum(2)) / L
            if kind == "maxavg":
                out = torch.cat([mx, mean], 1)
            else:
                out = (mx if kind == "max" else mean)[:, :, None]
            for m in self.tail[1:]:
                out = m(out)
            return out
        if self.linear_delta is not None:
            # Only the window's columns of the first dense layer see a change. Mutants come
            # sorted by position, so equal window starts form contiguous runs.
            w3, ref_lin = self.linear_delta
            dx = (h - _windows(self.prefix_out, a, W)).reshape(B, -1)  # (B, C * W), (c, w) order
            out = torch.empty(B, w3.shape[0], dtype=h.dtype, device=dev)
            starts = a.tolist()
            i = 0
            while i < B:
                u = starts[i]
                j = i + 1
                while j < B and starts[j] == u:
                    j += 1
                wsub = w3[:, :, u : u + W].reshape(w3.shape[0], -1)
                torch.addmm(ref_lin, dx[i:j], wsub.T, out=out[i:j])
                i = j
            for m in self.after_linear:
                out = m(out)
            return out
        full = self.prefix_out.unsqueeze(0).expand(B, -1, -1).clone()
        idx = (a[:, None] + torch.arange(W, device=dev)[None])[:, None, :].expand(
            -1, full.shape[1], -1
        )
        full.scatter_(2, idx, h)
        for m in self.tail:
            full = m(full)
        return full


def _global_pool_kind(m: nn.Module) -> str | None:
    """``"max"``, ``"avg"`` or ``"maxavg"`` for whole-length pooling layers, else None."""
    from napari_dlcb.models.dna import GlobalMaxAvgPool

    if type(m) is GlobalMaxAvgPool:
        return "maxavg"
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveAvgPool1d)) and _int(m.output_size) == 1:
        if isinstance(m, nn.AdaptiveMaxPool1d) and m.return_indices:
            return None
        return "max" if isinstance(m, nn.AdaptiveMaxPool1d) else "avg"
    return None


def _shifted(d: torch.Tensor, shift: torch.Tensor, width: int) -> torch.Tensor:
    """``d[b, :, shift_b + t]`` for ``t < width``, zero where that index falls outside ``d``."""
    n = d.shape[2]
    if width == n and not bool(shift.any()):
        return d
    t = shift[:, None] + torch.arange(width, device=d.device)[None]
    ok = (t >= 0) & (t < n)
    out = d.gather(2, t.clamp(0, n - 1)[:, None, :].expand(-1, d.shape[1], -1))
    return out.masked_fill(~ok[:, None, :], 0.0)


def _windows(ref: torch.Tensor, start: torch.Tensor, width: int) -> torch.Tensor:
    """``ref[:, start_b : start_b + width]`` for every ``b``, as ``(B, C, width)``."""
    return ref.unfold(1, width, 1)[:, start].permute(1, 0, 2)
