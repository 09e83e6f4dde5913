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
