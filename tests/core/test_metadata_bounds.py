"""Architectures from model metadata are refused before they are built for hours (issue 12)."""

from __future__ import annotations

import time

import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.models.architectures import MAX_MODULES, count_parameters


def test_a_network_of_too_many_layers_is_refused_quickly():
    t0 = time.perf_counter()
    # before: 100,000 residual blocks were built one by one (over 100 s, then refused or not)
    with pytest.raises(DlcbError, match=f"more than {MAX_MODULES:,} layers"):
        count_parameters({"name": "cellclf", "in_channels": 1, "n_classes": 2, "blocks": [10**5]})
    assert time.perf_counter() - t0 < 60


def test_a_deep_unet_is_refused_by_its_depth():
    # before: 10**7 levels made a list of 10**7 ever larger integers (hung)
    with pytest.raises(DlcbError, match=r"depth=10000000 is out of range \(1 to 12\)"):
        count_parameters({"name": "unet2d", "base": 4, "depth": 10**7})


def test_real_networks_are_counted():
    assert count_parameters({"name": "unet2d", "base": 4, "depth": 2}) > 0
    assert count_parameters({"name": "cellclf", "blocks": [2, 2, 2]}) > 0
    assert count_parameters({"name": "basset", "n_tasks": 3}) > 0
