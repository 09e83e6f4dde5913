"""NaN/Inf at prediction time: refused in one line, the same rule as in training (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dlcb.data.normalize import check_finite, check_pixels
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.classify import predict_crops, predict_proba
from napari_dlcb.models.classifier import CellClassifier
from napari_dlcb.models.meta import ModelMeta


def _classifier() -> tuple[torch.nn.Module, ModelMeta]:
    torch.manual_seed(0)
    net = CellClassifier(1, 2, width=4, blocks=(1,))
    meta = ModelMeta(
        "classification",
        {"name": "cellclf", "in_channels": 1, "n_classes": 2, "width": 4, "blocks": [1]},
        ["a", "b"],
        normalization={"mode": "per_image_percentile"},
        extra={"input_size": 16},
    )
    return net, meta


def _with(value: float) -> np.ndarray:
    im = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    im[3, 4] = value
    return im


@pytest.mark.parametrize(
    ("value", "what"), [(np.nan, "1 NaN pixels"), (np.inf, "1 NaN or infinite pixels")]
)
def test_classifier_prediction_refuses_nonfinite_pixels(value, what):
    net, meta = _classifier()
    good = _with(0.5)
    probs, _ = predict_proba(net, meta, [good], device="cpu")
    assert np.isfinite(probs).all() and probs.shape == (1, 2)
    # before: the NaN spread through the normalisation and every probability was NaN
    with pytest.raises(DlcbError, match=f"image 2 of 2 has {what}"):
        predict_proba(net, meta, [good, _with(value)], device="cpu")


def test_a_model_that_returns_nan_is_refused():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(DlcbError, match="the model returned NaN"):
        predict_crops(Broken(), np.zeros((3, 1, 8, 8), np.float32), device="cpu")


def test_check_finite_is_the_one_rule():
    check_finite(np.array([1, 2], np.uint8))  # integers are always finite
    check_finite(np.ones(4, np.float32))
    with pytest.raises(DlcbError, match="2 NaN pixels"):
        check_finite(np.array([np.nan, 1.0, np.nan, 2.0]), "x")
    with pytest.raises(DlcbError, match="x has 64 NaN or infinite pixels"):
        check_pixels(np.full((8, 8), -np.inf, np.float32), "x")


# ----------------------------------------------------------------- interpretation (issue 12)
@pytest.mark.parametrize("method", ["gradients", "integrated-gradients", "occlusion", "smoothgrad"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_saliency_refuses_nonfinite_pixels_like_prediction(method, bad):
    from torch import nn

    from napari_dlcb.errors import DlcbError
    from napari_dlcb.interpret.saliency import saliency

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    saliency(model, img, method=method, target=0, window=4, n_steps=2, n_samples=2)  # clean: fine
    img[3, 5] = bad
    with pytest.raises(DlcbError, match=r"NaN (or infinite )?pixels") as err:
        saliency(model, img, method=method, target=0, window=4, n_steps=2, n_samples=2)
    assert "\n" not in str(err.value)


def test_mutation_map_refuses_nonfinite_dna():
    import torch
    from torch import nn

    from napari_dlcb.errors import DlcbError
    from napari_dlcb.interpret.ism import mutation_map

    model = nn.Sequential(nn.Conv1d(4, 2, 3), nn.AdaptiveMaxPool1d(1), nn.Flatten())
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (1, 20)), 4).permute(0, 2, 1).float()
    assert mutation_map(model, x, device="cpu").shape == (1, 4, 20, 2)
    x[0, 1, 4] = float("nan")
    with pytest.raises(DlcbError, match="NaN or infinite"):
        mutation_map(model, x, device="cpu")
    with pytest.raises(DlcbError, match="batch size must be"):
        mutation_map(model, x.nan_to_num(), batch_size=-1, device="cpu")
