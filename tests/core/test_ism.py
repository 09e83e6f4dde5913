"""Mutation maps: the fast receptive-field-local path equals naive ISM exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret import iter_mutation_map, mutation_map
from napari_dlcb.interpret.ism import fast_path_supported
from napari_dlcb.models.dna import Basset, DeepBind


def _onehot(n, L, seed=0, n_pos=()):
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.one_hot(torch.randint(0, 4, (n, L), generator=g), 4).permute(0, 2, 1).float()
    for i in n_pos:
        x[:, :, i] = 0.25
    return x


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.05)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _naive_reference(model, x, target=None):
    """An independent, deliberately simple ISM: every substitution as its own sequence."""
    model = model.eval()
    with torch.no_grad():
        ref = model(x)
        N, _, L = x.shape
        out = np.zeros((N, 4, L, ref.shape[1]), np.float32)
        for n in range(N):
            muts = x[n].repeat(4 * L, 1, 1)  # (4L, 4, L): index b * L + i
            for b in range(4):
                for i in range(L):
                    muts[b * L + i, :, i] = 0
                    muts[b * L + i, b, i] = 1
            pred = torch.cat([model(muts[k : k + 256]) for k in range(0, 4 * L, 256)])
            diff = (pred - ref[n]).reshape(4, L, -1).numpy()
            out[n] = np.where((x[n].numpy() == 1)[..., None], 0.0, diff)
    return out


ARCHS = {
    "global_max": lambda: nn.Sequential(
        nn.Conv1d(4, 8, 7, padding=3),
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ),
    "deepbind": lambda: DeepBind(3, filters=8, kernel_size=9),
    "basset": lambda: _randomise_bn(
        Basset(
            2, length=96, filters=(12, 10, 8), kernels=(7, 5, 3), pools=(2, 3, 2), hidden=(16, 8)
        )
    ),
    "dilated_strided": lambda: nn.Sequential(
        nn.Conv1d(4, 6, 5, dilation=3, padding=4),
        nn.ELU(),
        nn.MaxPool1d(3, stride=2, padding=1),
        nn.Conv1d(6, 20, 4, stride=2),
        nn.GELU(),
        nn.Conv1d(20, 18, 3, padding="same", dilation=2),
        nn.AvgPool1d(2),
        nn.Flatten(),
        nn.Linear(18 * 11, 2),
    ),
    "nested_valid_conv_ceil_pool": lambda: nn.Sequential(
        nn.Sequential(nn.Conv1d(4, 24, 3), nn.BatchNorm1d(24), nn.Softplus()),
        nn.MaxPool1d(4, ceil_mode=True),
        nn.Dropout(0.5),
        nn.Conv1d(24, 16, 5, padding=2),
        nn.Tanh(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 1),
    ),
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_fast_equals_naive(name, device):
    torch.manual_seed(1)
    model = ARCHS[name]().to(device)
    x = _onehot(2, 96, n_pos=(5, 50)).to(device)
    assert fast_path_supported(model)
    fast = mutation_map(model, x, method="fast", batch_size=64)
    naive = mutation_map(model, x, method="naive", batch_size=64)
    ref = _naive_reference(model.cpu(), x.cpu())
    scale = np.abs(ref).max()
    assert scale > 1e-3
    np.testing.assert_allclose(naive, ref, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(fast, ref, atol=1e-4 * scale, rtol=0)
    xn = x.cpu().numpy()
    assert np.all(fast[np.broadcast_to(xn[..., None] == 1, fast.shape)] == 0)
    # ambiguous N columns: all four substitutions are real effects
    assert np.abs(fast[:, :, 5]).min() >= 0 and np.count_nonzero(fast[:, :, 5]) > 0


def test_basset_size_relative_exactness():
    torch.manual_seed(0)
    model = _randomise_bn(Basset(5, length=600, filters=(64, 48, 48), hidden=(64, 64))).eval()
    x = _onehot(1, 600, seed=3)
    fast = mutation_map(model, x, start=250, end=330, method="fast")
    naive = mutation_map(model, x, start=250, end=330, method="naive")
    rel = np.nanmax(np.abs(fast - naive)) / np.nanmax(np.abs(naive))
    assert rel < 1e-4
    assert np.isnan(fast[:, :, :250]).all() and np.isnan(fast[:, :, 330:]).all()
    assert not np.isnan(fast[:, :, 250:330]).any()


class _Custom(nn.Module):
    """Not a Sequential: needs the naive fallback."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 5, 7, padding=3)
        self.lin = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.lin(h.amax(2) * h.mean(2))


class _Square(nn.Module):
    def forward(self, x):
        return x * x


def test_fallback_on_unsupported_models():
    torch.manual_seed(0)
    x = _onehot(1, 40)
    custom = _Custom()
    assert not fast_path_supported(custom)
    np.testing.assert_allclose(mutation_map(custom, x), _naive_reference(custom, x), atol=1e-6)
    with pytest.raises(DlcbError, match="fast ISM path does not support"):
        mutation_map(custom, x, method="fast")
    # a Sequential whose local prefix stops at an unknown module: tail runs in full
    seq = nn.Sequential(
        nn.Conv1d(4, 6, 5), _Square(), nn.Conv1d(6, 3, 3), nn.Flatten(), nn.LazyLinear(2)
    )
    seq(x)
    np.testing.assert_allclose(
        mutation_map(seq, x, method="fast"), _naive_reference(seq, x), atol=1e-5
    )

    class OwnForward(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    own = OwnForward(nn.Conv1d(4, 2, 3), nn.Flatten(), nn.LazyLinear(1))
    own(x)
    assert not fast_path_supported(own)
    np.testing.assert_allclose(mutation_map(own, x), _naive_reference(own, x), atol=1e-6)


def test_model_handed_back_unchanged():
    torch.manual_seed(0)
    model = ARCHS["basset"]().train()
    x = _onehot(1, 96)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mutation_map(model, x)
    mutation_map(model, x, method="naive")
    assert model.training and all(m.training for m in model.modules())
    assert model[0].weight.requires_grad is False and model[4].weight.requires_grad
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats untouched
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert torch.is_grad_enabled()


def test_targets_batching_dtypes_and_errors():
    torch.manual_seed(0)
    model = ARCHS["deepbind"]()
    x = _onehot(2, 50)
    full = mutation_map(model, x)
    assert full.shape == (2, 4, 50, 3) and full.dtype == np.float32
    np.testing.assert_allclose(mutation_map(model, x, target=1)[..., 0], full[..., 1], atol=1e-6)
    np.testing.assert_allclose(mutation_map(model, x, target=[2, 0]), full[..., [2, 0]], atol=1e-6)
    np.testing.assert_allclose(mutation_map(model, x, batch_size=7), full, atol=1e-6)
    np.testing.assert_allclose(mutation_map(model, x.numpy().astype(np.uint8)), full, atol=1e-6)
    np.testing.assert_allclose(mutation_map(model, x[0].numpy())[0], full[0], atol=1e-6)
    m64 = mutation_map(ARCHS["deepbind"]().double(), x)
    assert m64.shape == (2, 4, 50, 3) and m64.dtype == np.float32
    with pytest.raises(DlcbError, match="out of range"):
        mutation_map(model, x, target=3)
    with pytest.raises(DlcbError, match=r"\(N, 4, L\)"):
        mutation_map(model, np.zeros((1, 5, 10)))
    with pytest.raises(DlcbError, match="do not fit"):
        mutation_map(model, x, start=10, end=60)
    pieces = list(iter_mutation_map(model, x[:1], regions=[(20, 30), (0, 20), (30, 50)]))
    assert [(s, e) for _, s, e, _ in pieces] == [(20, 30), (0, 20), (30, 50)]
    np.testing.assert_allclose(pieces[0][3], full[0, :, 20:30], atol=1e-6)
