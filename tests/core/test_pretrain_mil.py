"""Autoencoder pretraining and multiple-instance image classification: core, CLI, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from skimage.io import imsave

from napari_dlcb.cli import main
from napari_dlcb.data.crops import DenoisingDataset, corrupt
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.classify import predict_heatmaps, predict_proba
from napari_dlcb.models.mil import MILClassifier
from napari_dlcb.models.saved import load_model
from napari_dlcb.tasks.classification import ClassificationTrainer
from napari_dlcb.tasks.classification_config import MILConfig, PretrainConfig
from napari_dlcb.tasks.mil import MILTrainer
from napari_dlcb.tasks.pretrain import AutoencoderPretrainer

SMALL = {"width": 4, "blocks": (1, 1), "device": "cpu"}


def _blobs(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Crops with a bright disc of random radius and place on noise (structure to learn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        r0, c0 = rng.uniform(size / 4, 3 * size / 4, 2)
        rad = rng.uniform(size / 8, size / 4)
        disc = (yy - r0) ** 2 + (xx - c0) ** 2 < rad**2
        out.append((40 + 150 * disc + rng.normal(0, 8, (size, size))).astype(np.float32))
    return out


def _squares(n: int, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], list[int], list]:
    """Noise images; every second one holds a bright 6 x 6 square (label 1) somewhere."""
    rng = np.random.default_rng(seed)
    ims, labels, boxes = [], [], []
    for i in range(n):
        im = rng.normal(0, 1, (size, size)).astype(np.float32)
        box = None
        if i % 2:
            r, c = rng.integers(2, size - 8, 2)
            im[r : r + 6, c : c + 6] += 4
            box = (int(r), int(c))
        ims.append(im)
        labels.append(i % 2)
        boxes.append(box)
    return ims, labels, boxes


# ----------------------------------------------------------------------------- autoencoder
def test_corruption_is_reproducible_and_masks_patches():
    x = torch.ones(2, 1, 8, 8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = corrupt(x, noise=0.0, mask_fraction=0.5, patch=4, generator=g1)
    assert torch.equal(a, corrupt(x, noise=0.0, mask_fraction=0.5, patch=4, generator=g2))
    # whole 4 x 4 patches are hidden or kept
    blocks = a.reshape(2, 1, 2, 4, 2, 4).amax(dim=(3, 5)) == a.reshape(2, 1, 2, 4, 2, 4).amin(
        dim=(3, 5)
    )
    assert bool(blocks.all())
    ds = DenoisingDataset(np.random.rand(5, 1, 8, 8).astype(np.float32), fixed=True, seed=1)
    assert torch.equal(ds[3][0], ds[3][0]) and not torch.equal(ds[3][0], ds[3][1])


def test_autoencoder_learns_and_its_encoder_is_a_base(tmp_path):
    ims = _blobs(48)  # off-centre discs: the decoder needs the feature maps' positions
    pre = AutoencoderPretrainer(
        ims, val_fraction=0.25, batch_size=16, lr=1e-2, seed=0, decoder="maps", **SMALL
    )
    assert not pre.model.pooled
    before = pre.reconstruction_error()
    fin = pre.run(epochs=12)
    after = pre.reconstruction_error()
    assert after < 0.6 * before, (before, after, fin.kept)
    assert pre.history and fin.reason in ("completed", "early_stopping")
    folder = pre.save(tmp_path / "ae")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["task"] == "classification" and meta["classes"] == []
    assert meta["extra"]["encoder_only"] and meta["extra"]["input_size"] == 16
    assert meta["extra"]["pretraining"]["method"] == "denoising autoencoder"
    assert meta["extra"]["pretraining"]["decoder"] == "maps"
    # the encoder is what a classifier fine-tunes from
    tr = ClassificationTrainer(ims[:12], [0, 1] * 6, ["a", "b"], base=str(folder), device="cpu")
    assert tr.parent == str(folder) and tr.model.n_classes == 2 and tr.input_size == 16
    saved, _ = load_model(folder)
    torch.testing.assert_close(tr.model.stem[0].weight, saved.stem[0].weight)
    torch.testing.assert_close(
        tr.model.stages.state_dict()["0.0.conv1.weight"],
        pre.encoder.stages.state_dict()["0.0.conv1.weight"].cpu(),
    )
    # an encoder without classes cannot classify
    model, emeta = load_model(folder)
    with pytest.raises(DlcbError, match="pretrained without labels"):
        predict_proba(model, emeta, ims[:2])


def test_head_warmup_trains_the_new_head_on_frozen_features_first(tmp_path):
    """LP-FT: an encoder pretrained without labels gets its head trained alone first."""
    ims = _blobs(24)
    pre = AutoencoderPretrainer(ims, val_fraction=0.25, batch_size=16, seed=0, **SMALL)
    assert pre.model.pooled  # the default decoder reads the pooled features
    pre.run(epochs=1)
    folder = pre.save(tmp_path / "ae")
    labels = [0, 1] * 6
    tr = ClassificationTrainer(ims[:12], labels, ["a", "b"], base=str(folder), device="cpu")
    assert tr.encoder_only_base and tr.head_warmup_epochs() == 30  # the default for encoders
    scratch = ClassificationTrainer(ims[:12], labels, ["a", "b"], base="none", **SMALL)
    assert not scratch.encoder_only_base and scratch.head_warmup_epochs() == 0
    off = ClassificationTrainer(ims[:12], labels, ["a", "b"], base=str(folder), head_warmup=0)
    assert off.head_warmup_epochs() == 0
    # the warm-up moves the head only; the backbone and its BN statistics stay as pretrained
    stem = {k: v.clone() for k, v in tr.model.stem.state_dict().items()}
    head = tr.model.head.weight.detach().clone()
    common = {"loss": tr._loss(), "monitor": "val_loss", "batch_size": 8, "device": "cpu"}
    tr._warm_up_head(common, 3)
    for k, v in tr.model.stem.state_dict().items():
        torch.testing.assert_close(v, stem[k])
    assert not torch.allclose(tr.model.head.weight, head)
    assert all(p.requires_grad for p in tr.model.parameters())
    # then every layer is fine-tuned, and the run records its warm-up
    fin = tr.run(epochs=1)
    assert fin.reason == "completed"
    assert tr.meta.extra["training_runs"][-1]["head_warmup"] == 1  # never more than epochs
    assert next(tr.model.parameters()).device.type == "cpu"
    assert not torch.allclose(tr.model.stem[0].weight, stem["0.weight"])
    with pytest.raises(DlcbError, match="head warm-up"):
        ClassificationTrainer(ims[:12], labels, ["a", "b"], base=str(folder), head_warmup=-1)
    with pytest.raises(DlcbError, match="no linear head"):
        MILConfig(head_warmup=2).validate()
    with pytest.raises(DlcbError, match="quick mode"):
        ClassificationTrainer(ims[:12], labels, ["a", "b"], base=str(folder), mode="quick",
                              head_warmup=5)  # fmt: skip
    # a MIL classifier from the same encoder has no head to warm up: none by default
    mil = MILTrainer(ims[:12], labels, ["a", "b"], base=str(folder), val_fraction=0, device="cpu")
    assert mil.head_warmup_epochs() == 0
    assert mil.run(epochs=1).reason == "completed"
    with pytest.raises(DlcbError, match="autoencoder decoder"):
        PretrainConfig(decoder="unet").validate()


def test_pretrain_bad_input():
    with pytest.raises(DlcbError, match="at least 8 unlabelled images"):
        AutoencoderPretrainer(_blobs(3), **SMALL)
    with pytest.raises(DlcbError, match="mask fraction"):
        PretrainConfig(mask_fraction=1.5).validate()
    with pytest.raises(DlcbError, match="both 0"):
        PretrainConfig(noise=0, mask_fraction=0).validate()


# ----------------------------------------------------------------------------- MIL
def _hit(hm: np.ndarray, box: tuple[int, int], margin: int = 3) -> bool:
    r, c = np.unravel_index(int(np.argmax(hm)), hm.shape)
    return box[0] - margin <= r < box[0] + 6 + margin and box[1] - margin <= c < box[1] + 6 + margin


@pytest.mark.parametrize("pooling", ["attention", "noisy-and"])
def test_mil_learns_a_bright_square_and_its_heatmap_peaks_on_it(pooling):
    ims, labels, _ = _squares(48, seed=0)
    test_ims, test_labels, boxes = _squares(20, seed=1)
    tr = MILTrainer(
        ims, labels, ["plain", "square"], base="none", width=8, blocks=(1, 1), attention_dim=16,
        pooling=pooling, val_fraction=0, augment=False, lr=1e-2, batch_size=8, device="cpu",
    )  # fmt: skip
    tr.run(epochs=10)
    probs, maps = tr.heatmaps(test_ims)
    acc = float((probs.argmax(1) == np.array(test_labels)).mean())
    assert acc >= 0.9, acc
    hits = [_hit(m, b) for m, b in zip(maps, boxes) if b is not None]
    assert np.mean(hits) >= 0.8, hits
    assert all(m.shape == (32, 32) and m.dtype == np.float32 for m in maps)


def test_mil_model_is_torchscript_and_heatmaps_follow_the_image_grid():
    net = MILClassifier(1, 3, width=4, blocks=(1, 1), pooling="noisy-and", attention_dim=8).eval()
    x = torch.rand(2, 1, 24, 24)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))
    assert net.heatmap(x, 2).shape == (2, 24, 24)
    from napari_dlcb.models.meta import ModelMeta

    meta = ModelMeta(
        "classification", net.architecture(), ["a", "b", "c"], in_channels=1,
        normalization={"mode": "zscore", "low": [0.0], "high": [1.0]},
        extra={"mil": True, "input_size": 24},
    )  # fmt: skip
    probs, maps, notes = predict_heatmaps(net, meta, [np.zeros((40, 30))], device="cpu")
    assert probs.shape == (1, 3) and maps[0].shape == (40, 30) and notes
    with pytest.raises(DlcbError, match="multiple-instance"):
        meta.extra["mil"] = False
        predict_heatmaps(net, meta, [np.zeros((24, 24))], device="cpu")


def test_mil_config_errors():
    with pytest.raises(DlcbError, match="MIL pooling"):
        MILConfig(pooling="max").validate()
    with pytest.raises(DlcbError, match="mode 'full'"):
        MILConfig(mode="quick").validate()
    assert MILConfig(pooling="noisy_and").validate().pooling == "noisy-and"


# ----------------------------------------------------------------------------- CLI
def _write(folder, ims, labels=None, names=("plain", "square")):
    for i, im in enumerate(ims):
        sub = folder if labels is None else folder / names[labels[i]]
        sub.mkdir(parents=True, exist_ok=True)
        arr = np.clip(40 * (im - im.min()), 0, 255).astype(np.uint8)
        imsave(sub / f"{i:03d}.png", arr, check_contrast=False)


def test_cli_pretrain_then_fine_tune_records_the_parent(tmp_path, capsys):
    _write(tmp_path / "flat", _blobs(16))
    _write(tmp_path / "labelled", _blobs(12, seed=1), [0, 1] * 6)
    ae = tmp_path / "ae"
    rc = main(
        ["pretrain", "classification", "--images", str(tmp_path / "flat"), "--out", str(ae),
         "--width", "4", "--blocks", "1,1", "--epochs", "1", "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "fine-tune it with" in capsys.readouterr().out
    clf = tmp_path / "clf"
    rc = main(
        ["train", "classification", "--images", str(tmp_path / "labelled"), "--out", str(clf),
         "--base", str(ae), "--epochs", "1", "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((clf / "metadata.json").read_text())
    assert meta["parent"] == str(ae)
    assert meta["extra"]["training_runs"][-1]["head_warmup"] == 1  # LP-FT by default, <= epochs
    assert json.loads((ae / "metadata.json").read_text())["extra"]["pretraining"]["decoder"] == (
        "pooled"
    )
    # an ImageFolder is accepted for pretraining too (labels ignored)
    rc = main(
        ["pretrain", "classification", "--images", str(tmp_path / "labelled"), "--out",
         str(tmp_path / "ae2"), "--base", str(ae), "--epochs", "1", "--device", "cpu",
         "--decoder", "maps"]
    )  # fmt: skip
    assert rc == 0
    assert (
        json.loads((tmp_path / "ae2" / "metadata.json").read_text())["extra"]["pretraining"][
            "decoder"
        ]
        == "maps"
    )
    rc = main(
        ["train", "classification", "--images", str(tmp_path / "labelled"), "--out",
         str(tmp_path / "clf0"), "--base", str(ae), "--epochs", "1", "--device", "cpu",
         "--head-warmup", "0"]
    )  # fmt: skip
    runs = json.loads((tmp_path / "clf0" / "metadata.json").read_text())["extra"]["training_runs"]
    assert rc == 0 and "head_warmup" not in runs[-1]
    # predicting with an encoder that has no classes: one line
    capsys.readouterr()
    rc = main(
        ["predict", "classification", "--model", str(ae), "--images", str(tmp_path / "flat"),
         "--out", str(tmp_path / "p.tsv")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "pretrained without labels" in err and err.count("\n") == 1


def test_cli_mil_train_predict_heatmaps(tmp_path, capsys):
    ims, labels, _ = _squares(16)
    _write(tmp_path / "train", ims, labels)
    _write(tmp_path / "test", ims[:4], labels[:4])
    model = tmp_path / "mil"
    rc = main(
        ["train", "classification", "--mil", "--pooling", "noisy-and", "--images",
         str(tmp_path / "train"), "--out", str(model), "--base", "none", "--width", "4",
         "--blocks", "1,1", "--attention-dim", "8", "--epochs", "1", "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["extra"]["mil"] and meta["architecture"]["pooling"] == "noisy-and"
    rc = main(
        ["predict", "classification", "--model", str(model), "--images", str(tmp_path / "test"),
         "--out", str(tmp_path / "p.tsv"), "--heatmaps", str(tmp_path / "hm"), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    hm = tifffile.imread(tmp_path / "hm" / "square" / "001.tif")
    assert hm.shape == (32, 32) and hm.dtype == np.float32
    assert len(list((tmp_path / "hm").rglob("*.tif"))) == 4


def test_cli_pretrain_and_mil_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "flat", _blobs(10))
    _write(tmp_path / "labelled", _blobs(4), [0, 1] * 2)
    cases = [
        (["pretrain", "classification", "--images", str(tmp_path / "empty"), "--out", "x"],
         "no PNG or TIFF images"),
        (["pretrain", "classification", "--images", str(tmp_path / "nope"), "--out", "x"],
         "not a folder"),
        (["pretrain", "classification", "--images", str(tmp_path / "flat"), "--out", "x",
          "--mask-fraction", "2"], "mask fraction must be"),
        (["train", "classification", "--mil", "--images", str(tmp_path / "flat"), "--out", "x"],
         "--mil learns from image-level labels"),
        (["predict", "classification", "--model", str(tmp_path / "nomodel"), "--images",
          str(tmp_path / "flat"), "--out", "x.tsv", "--heatmaps", "hm"], "model"),
    ]  # fmt: skip
    for argv, match in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and match in err and err.count("\n") == 1, (argv, err)
    # --heatmaps with a classifier that is not MIL
    clf = tmp_path / "clf"
    assert main(
        ["train", "classification", "--images", str(tmp_path / "labelled"), "--out", str(clf),
         "--base", "none", "--width", "4", "--epochs", "1", "--device", "cpu"]
    ) == 0  # fmt: skip
    capsys.readouterr()
    rc = main(
        ["predict", "classification", "--model", str(clf), "--images", str(tmp_path / "flat"),
         "--out", str(tmp_path / "p.tsv"), "--heatmaps", str(tmp_path / "hm")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "multiple-instance model" in err and err.count("\n") == 1
