"""Per-object features, PCA embedding and the network views (filters, top patches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.errors import DlcbError
from napari_dlcb.interpret.embedding import available_methods, embed, object_features
from napari_dlcb.interpret.network import (
    activation_maximisation,
    filter_grid,
    receptive_field,
    top_activating_patches,
)
from napari_dlcb.models.classifier import CellClassifier
from napari_dlcb.models.state import hook_counts


def _two_kinds():
    """Bright and dim square objects: features must separate them."""
    img = np.zeros((64, 64), np.float32)
    lab = np.zeros((64, 64), np.int32)
    k = 0
    for r in range(4, 60, 14):
        for c in range(4, 60, 14):
            k += 1
            lab[r : r + 8, c : c + 8] = k
            img[r : r + 8, c : c + 8] = 3.0 if k % 2 else 1.0
    return img, lab


def test_object_features_whole_image_equal_naive_mean():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()).train()
    img, lab = _two_kinds()
    of = object_features(m, img, lab, layer="1")
    with torch.no_grad():
        act = m.eval()(torch.from_numpy(img)[None, None])[0].numpy()
    m.train()
    for i, oid in enumerate(of.ids):
        np.testing.assert_allclose(of.features[i], act[:, lab == oid].mean(1), rtol=1e-5)
    assert m.training and hook_counts(m) == {}


def test_object_features_crop_mode_and_pca_separates_classes():
    torch.manual_seed(0)
    m = CellClassifier(1, 2, width=4, blocks=(1,)).eval()
    img, lab = _two_kinds()
    of = object_features(m, img, lab, crop_size=12)
    assert of.features.shape == (16, 4)
    xy = embed(of.features)
    bright = (of.ids % 2).astype(bool)
    # the first component separates bright from dim objects perfectly
    assert xy[bright, 0].min() > xy[~bright, 0].max() or xy[bright, 0].max() < xy[~bright, 0].min()


def test_pca_matches_svd_and_bad_inputs():
    x = np.random.default_rng(0).normal(size=(30, 6)) * [5, 1, 1, 1, 1, 1]
    xy = embed(x, standardize=False)
    xc = x - x.mean(0)
    var = np.linalg.svd(xc, compute_uv=False) ** 2 / len(x)
    np.testing.assert_allclose(xy.var(0), var[:2], rtol=1e-4)
    with pytest.raises(DlcbError, match="at least 2"):
        embed(x[:1])
    with pytest.raises(DlcbError, match="NaN"):
        embed(np.full((3, 2), np.nan))
    with pytest.raises(DlcbError, match="unknown embedding"):
        embed(x, method="mds")
    if "umap" not in available_methods():
        with pytest.raises(DlcbError, match="umap-learn"):
            embed(x, method="umap")


def test_filter_grid_layouts():
    grid, w = filter_grid(nn.Conv2d(3, 5, 3), zoom=2, pad=1)
    assert w.shape == (5, 3, 3, 3) and grid.shape == (15, 22, 3)
    assert grid.min() >= 0 and grid.max() <= 1
    grid, _ = filter_grid(nn.Conv2d(2, 4, 3), zoom=1, pad=1)
    assert grid.shape == (4 * 4 + 1, 2 * 4 + 1)
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = -2.0
    g, _ = filter_grid(conv, zoom=1, pad=0)
    assert g[0, 0] == 0.0 and g[1, 1] == 0.5


def test_top_patches_find_planted_maxima_and_receptive_field():
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
    assert receptive_field(m, layer="1", in_channels=1, size=32) == 5
    imgs = [np.zeros((32, 32), np.float32) for _ in range(2)]
    imgs[0][5, 20] = 3.0
    imgs[1][25, 9] = 9.0
    with torch.no_grad():
        for conv in m:
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, 1, 1] = 1.0
    # with only centre weights the effective receptive field is 1 px
    assert receptive_field(m, layer="1", in_channels=1, size=32) == 1
    tp = top_activating_patches(m, imgs, layer="1", channel=1, k=2, patch_size=5)
    assert tp.patch_size == 5
    assert tp.locations.tolist() == [[1, 25, 9], [0, 5, 20]]
    np.testing.assert_allclose(tp.values, [2 * 9, 2 * 3])
    assert tp.patches.shape == (2, 1, 5, 5) and tp.patches[0, 0, 2, 2] == 9.0
    with pytest.raises(DlcbError, match="channel 5 does not exist"):
        top_activating_patches(m, imgs, layer="1", channel=5)


def test_activation_maximisation_increases_activation_and_restores_model():
    torch.manual_seed(0)
    m = CellClassifier(1, 2, width=4, blocks=(1,)).train()
    img, trace = activation_maximisation(
        m, layer="stages.0.0.conv2", channel=1, shape=(16, 16), steps=20
    )
    assert img.shape == (1, 16, 16)
    assert trace[-1] > trace[0]
    assert m.training and all(p.requires_grad for p in m.parameters())
    assert all(p.grad is None for p in m.parameters())


# --------------------------------------------------------------------------- UMAP and t-SNE
def _two_clusters(n: int = 30, dim: int = 12, gap: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian clouds ``gap`` standard deviations apart in feature space."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim)) + gap / np.sqrt(dim)  # centre distance = gap
    group = np.repeat([0, 1], n)
    return np.concatenate([a, b]).astype(np.float32), group


def _nearest_centroid_accuracy(xy: np.ndarray, group: np.ndarray) -> float:
    """Share of points closer to their own group's 2-D centroid than to the other's."""
    c = np.stack([xy[group == g].mean(0) for g in (0, 1)])
    d = np.linalg.norm(xy[:, None, :] - c[None], axis=-1)
    return float((d.argmin(1) == group).mean())


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_nonlinear_embedding_shape_seed_and_separation(method):
    pytest.importorskip("umap" if method == "umap" else "sklearn")
    assert method in available_methods()
    x, group = _two_clusters()
    xy = embed(x, method=method, seed=0)
    assert xy.shape == (60, 2) and xy.dtype == np.float32
    assert np.isfinite(xy).all()
    # the same seed gives the same map, bit for bit
    np.testing.assert_array_equal(embed(x, method=method, seed=0), xy)
    # the two clusters stay apart: a nearest-centroid rule separates them perfectly,
    # and every point is nearer its own cluster's points than the other cluster's
    assert _nearest_centroid_accuracy(xy, group) == 1.0
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (group[d.argmin(1)] == group).all()
    assert xy.std(0).min() > 0  # not collapsed onto a line or a point
    # a 3-D embedding has the requested number of components
    assert embed(x[:20], method=method, n_components=3, seed=0).shape == (20, 3)


def test_umap_seed_changes_the_layout_and_tiny_inputs_are_refused():
    pytest.importorskip("umap")
    x, _ = _two_clusters()
    a, b = embed(x, method="umap", seed=0), embed(x, method="umap", seed=1)
    assert np.abs(a - b).max() > 1e-3  # the seed is really passed on
    with pytest.raises(DlcbError, match="UMAP needs at least 4 objects"):
        embed(x[:3], method="umap")
    # t-SNE handles very few objects (perplexity is scaled down)
    pytest.importorskip("sklearn")
    assert np.isfinite(embed(x[:3], method="tsne")).all()


def test_embedding_module_imports_without_torch():
    """The classifier dock lists the methods and embeds on the GUI side without torch."""
    import subprocess
    import sys

    code = (
        "import sys; from napari_dlcb.interpret.embedding import available_methods, embed; "
        "import numpy as np; assert embed(np.eye(3)).shape == (3, 2); "
        "assert 'pca' in available_methods(); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
