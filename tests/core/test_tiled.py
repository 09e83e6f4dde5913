"""Tiled, region and block-wise prediction: exactness, invariances, model hand-back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from napari_dlcb.data.images import ImageSource, reflect_index
from napari_dlcb.data.normalize import freeze_normalizer, sample_pixels
from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.blockwise import predict_zarr
from napari_dlcb.inference.metrics import average_precision
from napari_dlcb.inference.postprocess import instances_from_probabilities
from napari_dlcb.inference.store import open_prediction
from napari_dlcb.inference.tiled import predict_tiled, predict_viewport
from napari_dlcb.inference.tiling import axis_plan

HALO = 8


def small_net(in_channels: int = 1, out_channels: int = 3, seed: int = 0) -> nn.Module:
    """Translation-equivariant conv net, receptive-field radius 4 (< HALO)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2),
        nn.Dropout2d(0.5),
        nn.ReLU(),
        nn.Conv2d(6, out_channels, 3, padding=1),
    )


def reference(model: nn.Module, image: np.ndarray, halo: int = HALO) -> np.ndarray:
    """The model on the whole reflect-padded image, cropped: what tiling must reproduce."""
    cyx = image[None] if image.ndim == 2 else image
    padded = np.pad(cyx.astype(np.float32), ((0, 0), (halo, halo), (halo, halo)), mode="reflect")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.softmax(model(torch.from_numpy(padded)[None]), 1)[0].numpy()
    model.train(was_training)
    return out[:, halo:-halo, halo:-halo]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).random((300, 517)).astype(np.float32)


# ---------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    ("tile", "halo", "overlap"),
    [(64, 8, 8), (256, 32, 32), (100, 10, 40), (50, 0, 0), (33, 16, 5), (96, 32, 48)],
)
@pytest.mark.parametrize("align", [1, 16, 32])
@pytest.mark.parametrize("origin", [0, 10, 37])
def test_axis_plan_is_a_partition_of_unity_inside_the_cores(tile, halo, overlap, align, origin):
    for span in range(1, 700, 3):
        total = np.zeros(span)
        for t in axis_plan(origin, origin + span, tile, halo, overlap, align):
            assert t.start + halo <= t.lo < t.hi <= t.start + tile - halo
            assert origin <= t.lo and t.hi <= origin + span
            if tile - 2 * halo >= align:
                assert (t.start + halo) % align == 0  # cores on the model's pooling grid
            assert np.all(t.weight > 0)
            total[t.lo - origin : t.hi - origin] += t.weight
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blend_weights_are_smooth():
    plan = axis_plan(0, 1000, 256, 32, 32)
    ramp = plan[1].weight[:32]
    assert np.all(np.diff(ramp) > 0) and ramp[0] < 0.01 and ramp[-1] > 0.99
    assert np.max(np.abs(np.diff(ramp))) < 0.06  # no step: a cosine hand-over


def test_reflect_index_matches_numpy_pad():
    for size in (1, 2, 3, 7):
        padded = np.pad(np.arange(size), 20, mode="reflect")
        np.testing.assert_array_equal(reflect_index(-20, size + 20, size), padded)


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("shape", [(300, 517), (37, 20), (1, 5), (64, 64)])
@pytest.mark.parametrize("tile", [48, 100, (64, 128), None])
def test_tiled_equals_whole_image_prediction(shape, tile):
    model = small_net()
    img = np.random.default_rng(1).random(shape).astype(np.float32)
    out = predict_tiled(model, img, tile=tile, halo=HALO, device="cpu")
    assert out.shape == (3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(model, img), atol=1e-5)


class PoolingNet(nn.Module):
    """Down- and upsamples by 2, like a one-level U-Net: equivariant to even shifts only."""

    multiple = 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        low = nn.functional.interpolate(
            torch.relu(self.b(nn.functional.avg_pool2d(h, 2))), scale_factor=2
        )
        return self.c(torch.cat([h, low], 1))


@pytest.mark.parametrize("multiple", [2, None])  # the model's own factor, or the default 32
def test_tiles_sit_on_the_models_pooling_grid(image, multiple):
    model = PoolingNet()
    image = image[:, :516]  # an even padded size for the one-pass reference
    if multiple is None:
        del PoolingNet.multiple
    try:
        whole = reference(model, image, halo=16)
        tiled = predict_tiled(model, image, tile=96, halo=16, device="cpu")
        part = predict_viewport(
            model, image, (slice(101, 180), slice(33, 250)), halo=16, device="cpu"
        )
    finally:
        PoolingNet.multiple = 2
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(part, whole[:, 101:180, 33:250], atol=1e-5)


def test_batch_size_does_not_change_the_result(image):
    model = small_net()
    one = predict_tiled(model, image, tile=64, halo=HALO, batch_size=1, device="cpu")
    many = predict_tiled(model, image, tile=64, halo=HALO, batch_size=7, device="cpu")
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_every_dtype_gives_the_same_result():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 200, (70, 90))
    model = small_net()
    want = predict_tiled(model, values.astype(np.float32), tile=64, halo=HALO, device="cpu")
    for dtype in (np.uint8, np.uint16, np.int32, np.float64):
        got = predict_tiled(model, values.astype(dtype), tile=64, halo=HALO, device="cpu")
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(dtype))


def test_channel_axis_anywhere():
    rng = np.random.default_rng(3)
    cyx = rng.random((2, 80, 70)).astype(np.float32)
    model = small_net(in_channels=2)
    first = predict_tiled(model, cyx, tile=64, halo=HALO, channel_axis=0, device="cpu")
    last = predict_tiled(
        model, np.moveaxis(cyx, 0, -1), tile=64, halo=HALO, channel_axis=-1, device="cpu"
    )
    np.testing.assert_allclose(first, last, atol=1e-6)
    np.testing.assert_allclose(first, reference(model, cyx), atol=1e-5)


def test_sigmoid_and_logits():
    model = small_net(out_channels=1)
    img = np.random.default_rng(4).random((50, 60)).astype(np.float32)
    logits = predict_tiled(model, img, tile=48, halo=HALO, activation=None, device="cpu")
    prob = predict_tiled(model, img, tile=48, halo=HALO, activation="sigmoid", device="cpu")
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert logits.min() < 0 or logits.max() > 1  # really logits


def test_progress_reports_every_batch(image):
    calls = []
    predict_tiled(
        small_net(),
        image,
        tile=64,
        halo=HALO,
        batch_size=5,
        device="cpu",
        progress=lambda d, t: calls.append((d, t)),
    )
    total = calls[0][1]
    assert calls == [(i, total) for i in range(1, total + 1)] and total > 1


# ---------------------------------------------------------------------------- regions


@pytest.mark.parametrize(
    "region",
    [
        (slice(100, 164), slice(200, 331)),  # interior: real context all round
        (slice(0, 40), slice(480, None)),  # corner: mirrored outside the image
        ((250, 300), (0, 517)),  # a full-width band as (start, stop) pairs
    ],
)
def test_region_equals_crop_of_whole_prediction(image, region):
    model = small_net()
    whole = reference(model, image)
    rows, cols = (r if isinstance(r, slice) else slice(*r) for r in region)
    part = predict_viewport(model, image, region, halo=HALO, device="cpu")
    np.testing.assert_allclose(part, whole[:, rows, cols], atol=1e-5)


def test_region_reads_only_the_window():
    reads = []

    class Spy:
        shape = (10_000, 10_000)
        dtype = np.float32

        def __getitem__(self, key):
            reads.append(key)
            return np.ones(tuple(s.stop - s.start for s in key), np.float32)

    predict_viewport(
        small_net(), Spy(), (slice(5000, 5100), slice(0, 100)), halo=HALO, device="cpu"
    )
    spare = 32  # the automatic tile is rounded up to a multiple of 32
    for rows, cols in reads:
        assert 5000 - HALO - spare <= rows.start and rows.stop <= 5100 + HALO + spare
        assert cols.start >= 0 and cols.stop <= 100 + HALO + spare


def test_empty_region_is_a_user_error(image):
    with pytest.raises(DlcbError, match="empty"):
        predict_viewport(small_net(), image, (slice(10, 10), slice(0, 5)), device="cpu")


# ---------------------------------------------------------------------------- model hand-back


def test_model_is_handed_back_unchanged(image, device):
    model = small_net().to(device).train()
    model[1].eval()  # a mixed mode that must survive
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    predict_tiled(model, image[:100, :100], tile=64, halo=HALO, device=device)
    assert [m.training for m in model.modules()] == modes
    assert all(p.device.type == torch.device(device).type for p in model.parameters())
    assert model[0].weight.requires_grad is False and model[3].weight.requires_grad is True
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    for k, v in model.state_dict().items():  # batch-norm statistics untouched
        assert torch.equal(v, before[k]), k


def test_model_goes_back_to_its_device_after_running_elsewhere(image):
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    model = small_net()
    predict_tiled(model, image[:64, :64], tile=64, halo=HALO, device="cuda")
    assert next(model.parameters()).device.type == "cpu"


def test_resolve_device():
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert auto.type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DlcbError):
        resolve_device("tpu9")


# ---------------------------------------------------------------------------- errors


def test_user_errors_are_one_line_dlcb_errors(image):
    model = small_net()
    with pytest.raises(DlcbError, match="channel_axis"):
        predict_tiled(model, np.zeros((3, 40, 40)), device="cpu")
    with pytest.raises(DlcbError, match="twice the halo"):
        predict_tiled(model, image, tile=16, halo=8, device="cpu")
    with pytest.raises(DlcbError, match="activation"):
        predict_tiled(model, image, activation="relu", device="cpu")
    with pytest.raises(DlcbError, match="cannot process"):  # 2 channels into a 1-channel net
        predict_tiled(model, np.zeros((2, 40, 40)), channel_axis=0, device="cpu")

    class Shrinks(nn.Module):
        def forward(self, x):
            return x[..., 1:-1, 1:-1]

    with pytest.raises(DlcbError, match="on the input grid"):
        predict_tiled(Shrinks(), image, device="cpu")


# ---------------------------------------------------------------------------- normalisation


def test_per_image_normalizer_is_frozen_on_the_whole_image(image):
    from napari_dlcb.data.normalize import Normalizer

    img = image * 1000 + np.linspace(0, 500, image.shape[1])  # tiles differ in statistics
    model = small_net()
    for mode in ("per_image_zscore", "per_image_percentile"):
        norm = Normalizer(mode=mode)
        got = predict_tiled(model, img, tile=64, halo=HALO, normalizer=norm, device="cpu")
        want = reference(model, norm(img)[0])
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=mode)
        frozen = freeze_normalizer(norm, img)
        assert frozen.mode == mode.removeprefix("per_image_")


def test_pixel_sample_is_normalizers_subsample():
    img = np.random.default_rng(5).random((123, 77)).astype(np.float32)
    flat = img.reshape(1, -1)
    k = flat.shape[1] // 1000 + 1
    np.testing.assert_array_equal(sample_pixels(ImageSource(img, None), 1000)[:, 0], flat[:, ::k])


def test_plain_callable_normalizer_is_applied_per_tile(image):
    model = small_net()
    got = predict_tiled(
        model, image, tile=64, halo=HALO, normalizer=lambda x: 2 * x - 1, device="cpu"
    )
    np.testing.assert_allclose(got, reference(model, 2 * image - 1), atol=1e-5)


# ---------------------------------------------------------------------------- zarr


def test_predict_zarr_equals_predict_tiled(tmp_path, image):
    import zarr

    from napari_dlcb.io.omezarr import read_multiscale

    model = small_net()
    src = zarr.open_array(
        str(tmp_path / "src.zarr"), mode="w", shape=image.shape, chunks=(100, 100), dtype="f4"
    )
    src[:] = image
    whole = predict_tiled(model, image, tile=64, halo=HALO, device="cpu")
    out = tmp_path / "pred.ome.zarr"
    events = list(
        predict_zarr(
            model,
            str(tmp_path / "src.zarr"),
            out,
            block=128,
            halo=HALO,
            dtype="float32",
            labels="classes",
            class_values=[0, 10, 20],
            device="cpu",
        )
    )
    assert [e["done"] for e in events] == list(range(1, 16)) and events[-1][
        "total"
    ] == 15  # 3 x 5 blocks
    assert events[-1]["path"] == out and not any("path" in e for e in events[:-1])
    prob, labels = open_prediction(out)
    np.testing.assert_allclose(prob, whole, atol=1e-5)
    np.testing.assert_array_equal(labels, np.array([0, 10, 20])[whole.argmax(0)])
    levels, meta = read_multiscale(out, squeeze=False)  # a valid OME-Zarr image
    assert meta["axes"] == "cyx" and levels[0].chunksize == (3, 128, 128)
    lab_levels, lab_meta = read_multiscale(out / "labels" / "segmentation")
    assert lab_meta["kind"] == "labels" and lab_levels[0].shape == image.shape


def test_predict_zarr_uint8_storage_and_dask_source(tmp_path, image):
    import dask.array as da

    model = small_net()
    whole = predict_tiled(model, image, tile=64, halo=HALO, device="cpu")
    out = tmp_path / "p.ome.zarr"
    for _ in predict_zarr(
        model, da.from_array(image, chunks=64), out, block=200, halo=HALO, device="cpu"
    ):
        pass
    import zarr

    stored = zarr.open_group(str(out), mode="r")["0"]
    assert stored.dtype == np.uint8
    prob, labels = open_prediction(out)
    assert labels is None
    assert np.max(np.abs(prob - whole)) <= 0.5 / 255 + 1e-6


def test_predict_zarr_cancel_leaves_nothing_and_restores_model(tmp_path, image):
    model = small_net().train()
    out = tmp_path / "cancelled.ome.zarr"
    gen = predict_zarr(model, image, out, block=64, halo=HALO, device="cpu")
    next(gen)
    assert not model.training  # running
    gen.close()
    assert model.training
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_predict_zarr_refuses_to_overwrite(tmp_path, image):
    out = tmp_path / "x.ome.zarr"
    out.mkdir()
    with pytest.raises(DlcbError, match="exists"):
        predict_zarr(small_net(), image, out, device="cpu")
    list(
        predict_zarr(
            small_net(), image[:50, :50], out, block=64, halo=HALO, device="cpu", overwrite=True
        )
    )
    assert open_prediction(out)[0].shape == (3, 50, 50)


class Foreground(nn.Module):
    """Logits (0, 20 (x - 0.5)): the softmax foreground is the image thresholded at 0.5."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 20 * (x - 0.5)], dim=1)


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = 1.0
    return img


def test_predict_zarr_instances_are_stitched_across_blocks(tmp_path):
    rng = np.random.default_rng(6)
    centres = [(y, x) for y in range(20, 300, 40) for x in range(20, 300, 40)]
    centres = [(y + rng.integers(-4, 5), x + rng.integers(-4, 5)) for y, x in centres]
    img = discs((300, 300), centres, 17)  # neighbours touch or overlap
    whole = instances_from_probabilities(
        Foreground()(torch.from_numpy(img)[None, None]).softmax(1)[0].numpy()
    )
    assert whole.max() == len(centres)
    out = tmp_path / "inst.ome.zarr"
    events = list(
        predict_zarr(
            Foreground(), img, out, block=100, halo=4, margin=48, labels="instances", device="cpu"
        )
    )
    assert [e["stage"] for e in events].count("relabel") == 9
    _, labels = open_prediction(out)
    assert labels.max() == len(centres)  # consecutive ids, no object split or merged
    assert average_precision(labels, whole, 0.95) == 1.0


# ---------------------------------------------------------------------------- distributed


def test_distributed_matches_predict_zarr(tmp_path):
    import zarr
    from distributed import Client, LocalCluster

    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.inference.distributed import predict_zarr_distributed
    from napari_dlcb.models.saved import ModelMeta, load_model, save_model
    from napari_dlcb.models.unet import UNet2D

    torch.manual_seed(0)
    net = UNet2D(1, 3, base=4, depth=2)
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "interior", "boundary"],
        label_kind="instances",
        normalization={"mode": "per_image_zscore"},
    )
    model_dir = save_model(net, tmp_path / "model", meta)
    img = (np.random.default_rng(7).random((150, 230)) * 300).astype(np.uint16)
    src = zarr.open_array(
        str(tmp_path / "img.zarr"), mode="w", shape=img.shape, chunks=(64, 64), dtype="u2"
    )
    src[:] = img

    model, meta = load_model(model_dir)
    local = tmp_path / "local.ome.zarr"
    list(
        predict_zarr(
            model,
            str(tmp_path / "img.zarr"),
            local,
            block=64,
            halo=16,
            device="cpu",
            normalizer=Normalizer.from_dict(meta.normalization),
            labels="instances",
            postprocess={"min_size": 1},
        )
    )
    done = []
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        path = predict_zarr_distributed(
            model_dir,
            str(tmp_path / "img.zarr"),
            tmp_path / "dist.ome.zarr",
            client=client,
            block=64,
            halo=16,
            device="cpu",
            labels="auto",
            postprocess={"min_size": 1},
            progress=lambda d, t: done.append((d, t)),
        )
    a_prob, a_lab = open_prediction(local)
    b_prob, b_lab = open_prediction(path)
    np.testing.assert_array_equal(a_prob, b_prob)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert done[-1] == (3 * 12, 3 * 12)


# ---------------------------------------------------------------------------- import cost


def test_importing_inference_does_not_import_torch():
    code = (
        "import sys, napari_dlcb.inference as inf\n"
        "assert 'torch' not in sys.modules\n"
        "inf.predict_tiled; inf.segment; inf.average_precision\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- segment


@pytest.fixture
def saved_instance_model(tmp_path):
    from napari_dlcb.models.saved import ModelMeta, save_model
    from napari_dlcb.models.unet import UNet2D

    torch.manual_seed(1)
    net = UNet2D(1, 3, base=4, depth=2)
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "interior", "boundary"],
        label_kind="instances",
        normalization={"mode": "per_image_zscore"},
        extra={"postprocess": {"min_size": 1}},
    )
    return save_model(net, tmp_path / "model", meta), net, meta


def test_segment_uses_the_models_metadata(saved_instance_model):
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.inference.postprocess import labels_from_probabilities
    from napari_dlcb.inference.segment import segment

    model_dir, net, meta = saved_instance_model
    img = (np.random.default_rng(8).random((90, 140)) * 4000).astype(np.uint16)
    prob, labels = segment(model_dir, img, tile=64, halo=16, device="cpu")
    want = predict_tiled(
        net, img, tile=64, halo=16, device="cpu", normalizer=Normalizer(mode="per_image_zscore")
    )
    np.testing.assert_allclose(prob, want, atol=1e-5)
    np.testing.assert_array_equal(labels, labels_from_probabilities(want, meta))
    pair = segment((net, meta.to_dict()), img, tile=64, halo=16, device="cpu")
    np.testing.assert_allclose(pair.probabilities, prob, atol=1e-6)


def test_segment_errors(saved_instance_model):
    import dataclasses

    from napari_dlcb.inference.segment import segment

    model_dir, net, meta = saved_instance_model
    with pytest.raises(DlcbError, match="channel"):
        segment(model_dir, np.zeros((40, 40, 3), np.uint8), device="cpu")
    with pytest.raises(DlcbError, match="not a segmentation model"):
        segment((net, dataclasses.replace(meta, task="sequence")), np.zeros((40, 40)), device="cpu")
    with pytest.raises(DlcbError):
        segment(model_dir.parent / "missing", np.zeros((40, 40)), device="cpu")


def test_segment_zarr_writes_stitched_instances(saved_instance_model, tmp_path):
    from napari_dlcb.inference.segment import segment, segment_zarr

    model_dir, _, _ = saved_instance_model
    img = (np.random.default_rng(9).random((130, 100)) * 4000).astype(np.uint16)
    out = tmp_path / "seg.ome.zarr"
    events = list(
        segment_zarr(model_dir, img, out, block=64, halo=16, device="cpu", dtype="float32")
    )
    assert {e["stage"] for e in events} == {"predict", "instances", "relabel"}
    prob, labels = open_prediction(out)
    whole = segment(model_dir, img, tile=64, halo=16, device="cpu")
    # the U-Net sees past the halo, so block cuts differ slightly from one whole-image run
    np.testing.assert_allclose(prob, whole.probabilities, atol=2e-3)
    assert labels is not None and labels.max() > 0
    ids = np.unique(labels)
    assert ids[ids > 0].tolist() == list(range(1, labels.max() + 1))  # consecutive ids
