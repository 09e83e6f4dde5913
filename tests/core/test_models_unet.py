"""UNet2D: any-size inputs, encode/decode split, head reset, TorchScript, built-in weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.models.saved import build_model
from napari_dlcb.models.unet import UNet2D


def small(**kw) -> UNet2D:
    torch.manual_seed(0)
    kw = {"base": 4, "depth": 3, **kw}
    return UNet2D(kw.pop("in_channels", 1), kw.pop("n_classes", 3), **kw).eval()


@pytest.mark.parametrize("shape", [(100, 77), (64, 64), (17, 250), (5, 3), (1, 1)])
def test_output_on_input_grid_for_any_size(shape):
    net = small(in_channels=2, n_classes=4)
    y = net(torch.randn(3, 2, *shape))
    assert y.shape == (3, 4, *shape)
    assert torch.isfinite(y).all()


def test_default_model_is_compact_and_handles_odd_sizes():
    net = UNet2D().eval()
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.5e6 <= n_params <= 2.0e6
    with torch.no_grad():
        assert net(torch.randn(1, 1, 100, 77)).shape == (1, 3, 100, 77)


@pytest.mark.parametrize("upsample", ["bilinear", "transposed"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_encode_decode_equals_forward(upsample, batchnorm):
    net = small(upsample=upsample, batchnorm=batchnorm)
    x = torch.randn(2, 1, 45, 38)
    feats = net.encode(x)
    assert len(feats) == net.depth + 1
    # padded to a multiple of 2**depth = 8 -> 48 x 40, halved per level
    assert [tuple(f.shape[-2:]) for f in feats] == [(48, 40), (24, 20), (12, 10), (6, 5)]
    assert feats[-1].shape[1] == 4 * 2**3
    assert torch.equal(net.decode(feats, x.shape[-2:]), net(x))


def test_no_padding_when_size_is_a_multiple():
    net = small()
    x = torch.randn(1, 1, 32, 16)
    assert net.encode(x)[0].shape[-2:] == (32, 16)


def test_padding_is_centred_reflection():
    net = small()  # multiple of 8
    x = torch.randn(1, 1, 45, 38)
    p = net._pad(x)
    assert p.shape[-2:] == (48, 40)
    assert torch.equal(p[..., 1:46, 1:39], x)  # 3 rows -> 1 top + 2 bottom; 2 cols -> 1 + 1
    assert torch.equal(p[..., 0, 1:39], x[..., 1, :])  # reflect, not zeros
    tiny = net._pad(torch.randn(1, 1, 2, 3))  # pad larger than the image: replicate
    assert tiny.shape[-2:] == (8, 8)


def test_batch_invariance_in_eval_mode():
    net = small()
    x = torch.randn(4, 1, 40, 33)
    with torch.no_grad():
        full = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)


def test_parameter_groups_partition_the_model():
    net = small()
    enc = {id(p) for p in net.encoder_parameters()}
    dec = {id(p) for p in net.decoder_parameters()}
    everything = {id(p) for p in net.parameters()}
    assert enc and dec
    assert enc.isdisjoint(dec)
    assert enc | dec == everything


def test_frozen_encoder_training_changes_only_decoder():
    net = small().train()
    for p in net.encoder_parameters():
        p.requires_grad_(False)
    enc_before = [p.clone() for p in net.encoder_parameters()]
    dec_before = [p.clone() for p in net.decoder_parameters()]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with torch.no_grad():
        feats = net.encode(x)  # cached features, as in quick mode
    loss = torch.nn.functional.cross_entropy(net.decode(feats, x.shape[-2:]), y)
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc_before, net.encoder_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(dec_before, net.decoder_parameters()))


def test_reset_head_for_new_classes():
    net = small()
    x = torch.randn(1, 1, 30, 30)
    trunk_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("head")}
    net.reset_head(5)
    assert net.n_classes == 5
    assert net.architecture()["n_classes"] == 5
    assert net(x).shape == (1, 5, 30, 30)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk_before.items())
    assert net.head.weight.shape == (5, 4, 1, 1)
    assert {id(p) for p in net.head.parameters()} <= {id(p) for p in net.decoder_parameters()}
    # a freshly built net from the new architecture dict has the same tensors
    fresh = build_model(net.architecture())
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in after.items()
    }


def test_reset_head_keeps_dtype():
    net = small().double()
    net.reset_head(2)
    assert net.head.weight.dtype == torch.float64
    assert net(torch.randn(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("upsample", ["bilinear", "transposed"])
def test_torchscript_script_matches_eager_for_other_sizes(upsample):
    net = small(upsample=upsample)
    scripted = torch.jit.script(net)
    for shape in [(100, 77), (16, 16), (9, 31)]:
        x = torch.randn(2, 1, *shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-6)
    assert scripted.encode(torch.randn(1, 1, 20, 20))[0].shape[-2:] == (24, 24)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="upsample"):
        UNet2D(upsample="nearest")
    with pytest.raises(ValueError):
        UNet2D(depth=0)
    with pytest.raises(ValueError):
        UNet2D(dropout=1.0)
    with pytest.raises(ValueError):
        small().reset_head(0)


def test_dropout_only_in_training_mode():
    net = small(dropout=0.5)
    x = torch.randn(1, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(1)
    with torch.no_grad():
        a = net(x)
        b = net(x)
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------- built-in
def test_builtin_segments_synthetic_nuclei():
    from napari_dlcb.models.registry import load_builtin

    model, meta = load_builtin("unet2d-nuclei")
    assert isinstance(model, UNet2D) and not model.training
    assert meta.classes == ["background", "interior", "boundary"]
    assert meta.normalization == {"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    img, lab = synthetic_nuclei((256, 256), seed=12345)
    x = img.astype(np.float32)
    lo, hi = np.percentile(x, [1.0, 99.8])
    x = ((x - lo) / (hi - lo)).astype(np.float32)
    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(x)[None, None]), 1)[0].numpy()
    assert prob.shape == (3, 256, 256)
    fg = prob[0] < 0.5
    iou = (fg & (lab > 0)).sum() / (fg | (lab > 0)).sum()
    assert iou > 0.7
    # boundary class sits on nucleus edges, interior inside
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(lab, mode="inner")
    inner = (lab > 0) & ~edge
    assert prob[2][edge].mean() > prob[2][inner].mean() + 0.2
    assert prob[1][inner].mean() > 0.6
