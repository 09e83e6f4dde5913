"""Saliency maps: shapes, sanity checks (Adebayo et al. 2018), exactness, state hand-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.saliency import METHODS, occlusion, resolve_layer, saliency
from napari_dlcb.models.classifier import CellClassifier
from napari_dlcb.models.state import hook_counts, preserve_model_state
from napari_dlcb.models.unet import UNet2D

FAST = {"n_samples": 4, "n_steps": 16, "window": 4, "stride": 4}


def _settle_bn(model: nn.Module, shape, seed: int = 0) -> nn.Module:
    """Give batch norm non-trivial running statistics, then switch to eval."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(*shape, generator=g) * 2 + 0.5)
    return model.eval()


def _classifier(seed: int = 0) -> CellClassifier:
    torch.manual_seed(seed)
    return _settle_bn(CellClassifier(1, 3, width=4, blocks=(1, 1)), (4, 1, 16, 16), seed)


def _unet(seed: int = 0) -> UNet2D:
    torch.manual_seed(seed)
    return _settle_bn(UNet2D(1, 2, base=4, depth=2), (2, 1, 32, 32), seed)


@pytest.fixture
def image():
    rng = np.random.default_rng(1)
    return rng.normal(size=(16, 16)).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["classifier", "segmentation"])
def test_map_on_input_grid_and_model_handed_back(method, kind, image, device):
    model = _classifier() if kind == "classifier" else _unet()
    model.train()  # a mode the method must not leave changed
    first = next(model.parameters())
    first.requires_grad_(False)
    marker = torch.full_like(next(iter(model.head.parameters())), 0.25)
    model.head.weight.grad = marker
    grad_ref = model.head.weight.grad
    hooks_before = hook_counts(model)
    region = None if kind == "classifier" else (slice(4, 10), slice(4, 10))
    res = saliency(model, image, method=method, target=1, region=region, device=device, **FAST)
    assert res.map.shape == image.shape
    assert res.map.dtype == np.float32
    assert np.isfinite(res.map).all()
    assert np.abs(res.map).max() > 0
    assert res.target == 1 and res.method == method
    # handed back unchanged
    assert model.training and all(m.training for m in model.modules())
    assert not first.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not first)
    assert model.head.weight.grad is grad_ref
    assert torch.equal(model.head.weight.grad, torch.full_like(marker, 0.25))
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head"))
    assert hook_counts(model) == hooks_before == {}
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_integrated_gradients_completeness():
    """Attributions sum to F(x) - F(baseline) within 1 % (stated tolerance)."""
    model = _classifier()
    rng = np.random.default_rng(3)
    for target in range(3):
        x = rng.normal(size=(16, 16))
        res = saliency(model, x, method="integrated-gradients", target=target, n_steps=64)
        diff = res.extra["output_difference"]
        assert abs(diff) > 1e-3
        assert abs(res.map.sum() - diff) <= 0.01 * abs(diff) + 1e-5
        assert res.extra["relative_completeness_error"] < 0.01
        assert res.extra["completeness_error"] == pytest.approx(abs(res.map.sum() - diff), abs=1e-4)


def test_integrated_gradients_completeness_segmentation_region():
    model = _unet()
    x = 3 * np.random.default_rng(4).normal(size=(24, 24))
    region = np.zeros((24, 24), bool)
    region[2:20, 4:22] = True
    for reg in (None, region):
        res = saliency(model, x, method="integrated-gradients", target=1, region=reg, n_steps=64)
        diff = res.extra["output_difference"]
        assert abs(diff) > 0.5
        assert abs(res.map.sum() - diff) <= 0.01 * abs(diff)


def test_occlusion_one_pixel_equals_brute_force():
    model = _classifier()
    x = np.random.default_rng(5).normal(size=(2, 7, 7)).astype(np.float32)
    model2 = CellClassifier(2, 3, width=4, blocks=(1, 1))
    model2 = _settle_bn(model2, (4, 2, 7, 7))
    res = occlusion(model2, x, target=2, channel_axis=0, window=1, stride=1, baseline=0.3)
    xt = torch.from_numpy(x)[None]
    with torch.no_grad():
        ref = model2(xt)[0, 2]
        brute = np.zeros((7, 7), np.float32)
        for r in range(7):
            for c in range(7):
                xo = xt.clone()
                xo[0, :, r, c] = 0.3
                brute[r, c] = float(ref - model2(xo)[0, 2])
    np.testing.assert_allclose(res.map, brute, atol=1e-5)
    assert res.extra["n_windows"] == 49
    del model


@pytest.mark.parametrize("method", METHODS)
def test_maps_change_when_weights_are_randomised(method):
    """Adebayo et al.'s model-randomisation test: a map must depend on the weights."""
    x = np.random.default_rng(6).normal(size=(16, 16))
    m1 = _classifier(seed=0)
    a = saliency(m1, x, method=method, target=0, **FAST).map
    m2 = _classifier(seed=0)
    with torch.no_grad():  # cascading randomisation: re-initialise every layer
        torch.manual_seed(123)
        for mod in m2.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.reset_parameters()
    b = saliency(m2, x, method=method, target=0, **FAST).map
    same = saliency(_classifier(seed=0), x, method=method, target=0, **FAST).map
    np.testing.assert_allclose(a, same, rtol=1e-5, atol=1e-6)  # deterministic
    assert not np.allclose(a, b, rtol=1e-2, atol=1e-4)
    ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    assert abs(np.corrcoef(ra, rb)[0, 1]) < 0.9


def test_segmentation_region_is_local():
    """Gradients of a small region's logit vanish outside the U-Net's receptive field."""
    model = _unet()
    x = np.random.default_rng(7).normal(size=(96, 96))
    res = saliency(model, x, method="gradients", target=1, region=(slice(0, 4), slice(0, 4)))
    assert np.abs(res.map[:8, :8]).max() > 0
    assert np.abs(res.map[64:, 64:]).max() == 0


def test_target_by_name_and_default():
    model = _classifier()
    x = np.random.default_rng(8).normal(size=(16, 16))
    classes = ["a", "b", "c"]
    by_name = saliency(model, x, method="gradients", target="c", classes=classes)
    by_index = saliency(model, x, method="gradients", target=2)
    np.testing.assert_array_equal(by_name.map, by_index.map)
    with torch.no_grad():
        pred = int(model(torch.from_numpy(x).float()[None, None]).argmax())
    assert saliency(model, x, method="gradients").target == pred


def test_any_dtype_gives_the_same_map():
    model = _classifier()
    x = np.random.default_rng(9).integers(0, 255, size=(16, 16))
    maps = [
        saliency(model, x.astype(dt), method="gradients", target=0).map
        for dt in (np.uint8, np.int32, np.float64)
    ]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-6)
    np.testing.assert_allclose(maps[0], maps[2], rtol=1e-6)


def test_multichannel_channel_axis():
    model = _settle_bn(CellClassifier(3, 2, width=4, blocks=(1,)), (2, 3, 12, 12))
    x = np.random.default_rng(10).normal(size=(12, 12, 3))
    res = saliency(model, x, method="integrated-gradients", target=1, channel_axis=-1)
    assert res.map.shape == (12, 12)
    assert res.per_channel.shape == (3, 12, 12)
    np.testing.assert_allclose(res.per_channel.sum(0), res.map, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": 3}, "does not exist"),
        ({"target": -1}, "does not exist"),
        ({"target": "mitosis", "classes": ["a", "b", "c"]}, "does not exist"),
        ({"method": "lrp"}, "unknown saliency method"),
        ({"method": "gradcam", "layer": "stages.9"}, "does not exist"),
        ({"method": "occlusion", "window": 40}, "larger than the image"),
    ],
)
def test_bad_requests_raise_one_line_errors(kwargs, match, image):
    model = _classifier()
    kwargs = {"method": "gradients", **kwargs}
    with pytest.raises(DlcbError, match=match) as err:
        saliency(model, image, **kwargs)
    assert "\n" not in str(err.value)


def test_empty_region_and_missing_target_on_segmentation(image):
    model = _unet()
    with pytest.raises(DlcbError, match="region is empty"):
        saliency(model, image, method="gradients", region=np.zeros((16, 16), bool))
    with pytest.raises(DlcbError, match="does not exist"):
        saliency(model, image, method="gradients", target=2)


def test_gradcam_default_layer_and_relu():
    model = _classifier()
    layer = resolve_layer(model, None)
    assert layer is model.stages[-1][-1].conv2
    x = np.random.default_rng(11).normal(size=(16, 16))
    res = saliency(model, x, method="gradcam", target=0)
    assert res.map.min() >= 0
    assert res.extra["layer"] == "stages.1.0.conv2"
    assert res.extra["layer_shape"] == (8, 8)


def test_smoothgrad_is_reproducible_and_leaves_rng_alone():
    model = _classifier()
    x = np.random.default_rng(12).normal(size=(16, 16))
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a = saliency(model, x, method="smoothgrad", n_samples=4, seed=5).map
    assert torch.equal(torch.random.get_rng_state(), state)
    b = saliency(model, x, method="smoothgrad", n_samples=4, seed=5).map
    c = saliency(model, x, method="smoothgrad", n_samples=4, seed=6).map
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_preserve_model_state_removes_and_reports_leftover_hooks():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(RuntimeError, match="left hooks"):
        with preserve_model_state(model):
            model[0].register_forward_hook(lambda *a: None)
    assert hook_counts(model) == {}


def test_preserve_model_state_restores_after_an_exception():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    with pytest.raises(KeyError):
        with preserve_model_state(model):
            model.eval()
            model[0].weight.requires_grad_(False)
            model[0].weight.grad = torch.ones(2, 2)
            raise KeyError("boom")
    assert model.training and model[1].training
    assert model[0].weight.requires_grad
    assert model[0].weight.grad is None


@pytest.mark.parametrize("method", METHODS)
def test_works_inside_inference_mode_like_outside(method, image):
    """The training engine's live preview runs under ``torch.inference_mode()``."""
    model = _unet().train()
    model(torch.randn(1, 1, 16, 16)).sum().backward()  # a training step left gradients
    grads = [p.grad.clone() for p in model.parameters()]
    ref = saliency(model, image, method=method, target=1, **FAST)
    with torch.inference_mode():
        res = saliency(model, image, method=method, target=1, **FAST)
        # the caller's inference mode is intact afterwards
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    np.testing.assert_allclose(res.map, ref.map, rtol=1e-5, atol=1e-6)
    assert np.abs(res.map).max() > 0
    assert model.training and hook_counts(model) == {}
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_integrated_gradients_matches_captum_and_returns_one_attribution():
    """One implementation (with progress) gives captum's numbers and the one result type."""
    from captum.attr import IntegratedGradients

    from napari_dlcb.interpret.attribution import Attribution

    model = _classifier()
    x = np.random.default_rng(21).normal(size=(16, 16)).astype(np.float32)
    res = saliency(model, x, method="integrated-gradients", target=2, n_steps=16, batch_size=5)
    ref, delta = IntegratedGradients(model).attribute(
        torch.from_numpy(x)[None, None],
        target=2,
        n_steps=16,
        internal_batch_size=5,
        return_convergence_delta=True,
    )
    np.testing.assert_allclose(res.map, ref[0, 0].detach().numpy(), rtol=1e-4, atol=1e-6)
    assert isinstance(res, Attribution) and res.method == "integrated-gradients"
    assert res.completeness.shape == (1,)
    assert res.completeness[0] == pytest.approx(float(delta[0]), abs=1e-4)
    assert res.max_completeness_error == pytest.approx(res.extra["completeness_error"], abs=1e-6)
    for method in METHODS:  # every method returns the same type
        assert isinstance(saliency(model, x, method=method, target=0, **FAST), Attribution)


def test_integrated_gradients_reports_progress_and_stops():
    """Issue 8: whole-image IG ran 148 s with no progress and no cancel."""
    import threading

    from napari_dlcb.interpret.saliency import iter_saliency

    model = _unet().train()
    x = np.random.default_rng(22).normal(size=(32, 32)).astype(np.float32)
    gen = iter_saliency(model, x, method="integrated-gradients", target=1, n_steps=12, batch_size=4)
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as done:
            res = done.value
            break
    assert [(p.done, p.total) for p in seen] == [(4, 12), (8, 12), (12, 12)]
    ref = saliency(model, x, method="integrated-gradients", target=1, n_steps=12, batch_size=4)
    np.testing.assert_array_equal(res.map, ref.map)
    # Stop after the first batch: no result, and the model is handed back unchanged
    stop = threading.Event()
    gen = iter_saliency(
        model, x, method="integrated-gradients", target=1, n_steps=12, batch_size=4, stop=stop
    )
    assert next(gen).done == 4
    stop.set()
    with pytest.raises(StopIteration) as end:
        next(gen)
    assert end.value.value is None
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert hook_counts(model) == {}
    # closing the generator half-way (a cancelled GUI job) also hands the model back
    gen = iter_saliency(model, x, method="integrated-gradients", target=1, n_steps=12, batch_size=4)
    next(gen)
    gen.close()
    assert model.training and all(p.requires_grad for p in model.parameters())
