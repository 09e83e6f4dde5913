"""Cell classifier: model, trainer, ImageFolder CLI (train / predict / saliency), bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from skimage.io import imsave

from napari_dlcb.cli import main
from napari_dlcb.data.crops import prepare_images
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.classify import predict_proba
from napari_dlcb.models.classifier import CellClassifier, adapt_in_channels
from napari_dlcb.tasks.classification import ClassificationTrainer
from napari_dlcb.training.metrics import confusion_matrix


def _blob(rng, size, bright: bool, channels: int = 0):
    """A disc (class 'round') or a bar (class 'bar') on noise: learnable in 1 epoch."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    shape = (yy**2 + xx**2 < (size / 4) ** 2) if bright else (np.abs(yy) < size / 10)
    im = 30 + 200 * shape + rng.normal(0, 10, (size, size))
    im = np.clip(im, 0, 255).astype(np.uint8)
    return np.repeat(im[..., None], channels, -1) if channels else im


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "train"
    for cls, bright in (("bar", False), ("round", True)):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            ext = "png" if i % 2 else "tif"
            path = root / cls / f"{i}.{ext}"
            im = _blob(rng, 16, bright)
            tifffile.imwrite(path, im) if ext == "tif" else imsave(path, im, check_contrast=False)
    return root


TRAIN_FAST = ["--base", "none", "--width", "8", "--epochs", "3", "--device", "cpu", "--lr", "0.01"]


def test_model_shapes_channels_and_torchscript():
    net = CellClassifier(2, 5, width=8, blocks=(1, 1)).eval()
    for size in (28, 33, 64):
        assert net(torch.zeros(3, 2, size, size)).shape == (3, 5)
    assert net.features(torch.zeros(1, 2, 28, 28)).shape == (1, 16)
    scripted = torch.jit.script(net)
    x = torch.rand(2, 2, 20, 20)
    torch.testing.assert_close(scripted(x), net(x))
    arch = net.architecture()
    assert arch["name"] == "cellclf" and arch["blocks"] == [1, 1]
    assert (
        CellClassifier(**{k: v for k, v in arch.items() if k != "name"}).state_dict().keys()
        == net.state_dict().keys()
    )


def test_adapt_in_channels_keeps_grey_response():
    net = CellClassifier(1, 3, width=4, blocks=(1,)).eval()
    x = torch.rand(2, 1, 16, 16)
    before = net(x)
    adapt_in_channels(net, 3)
    assert net.in_channels == 3
    torch.testing.assert_close(net(x.repeat(1, 3, 1, 1)), before, atol=1e-5, rtol=1e-5)


def test_prepare_images_mixed_sizes_and_channels_are_reported():
    ims = [np.ones((20, 20)), np.ones((10, 30)), np.ones((20, 20, 3))]
    prep = prepare_images(ims, size=20, channels=1)
    assert prep.data.shape == (3, 1, 20, 20)
    assert any("resized" in n for n in prep.notes)
    assert any("channel" in n for n in prep.notes)
    assert prepare_images([np.ones((20, 20))] * 2).notes == []
    # a 10x30 image keeps its aspect ratio: the padded rows are edge values, not zeros
    assert (prep.data[1] == 1).all()


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_trainer_learns_and_normalises_with_training_stats_only():
    rng = np.random.default_rng(1)
    ims = [_blob(rng, 16, i % 2 == 1) for i in range(40)]
    y = [i % 2 for i in range(40)]
    val = [_blob(rng, 16, i % 2 == 1).astype(float) * 0 + 1000 for i in range(4)]
    tr = ClassificationTrainer(
        ims,
        y,
        ["bar", "round"],
        base="none",
        width=8,
        device="cpu",
        val_images=val,
        val_labels=[0, 1, 0, 1],
    )
    # statistics come from the training images, never from the (absurd) validation ones
    train_mean = np.mean([im.mean() for im in ims])
    assert tr.normalizer.low[0] == pytest.approx(train_mean, rel=1e-3)
    tr2 = ClassificationTrainer(
        ims, y, ["bar", "round"], base="none", width=8, device="cpu", val_fraction=0.25
    )
    tr2.run(epochs=4, lr=0.01)
    assert tr2.history and len(tr2.y_val) == 10
    test = [_blob(rng, 16, i % 2 == 1) for i in range(20)]
    acc = (tr2.predict(test).argmax(1) == np.arange(20) % 2).mean()
    assert acc >= 0.9


def test_linear_mode_trains_only_the_head():
    rng = np.random.default_rng(2)
    ims = [_blob(rng, 16, i % 2 == 1) for i in range(24)]
    tr = ClassificationTrainer(
        ims,
        [i % 2 for i in range(24)],
        ["a", "b"],
        base="none",
        width=8,
        mode="linear",
        device="cpu",
    )
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run(epochs=20)
    after = tr.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in tr.model.parameters())


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_class_imbalance_handling(balance):
    rng = np.random.default_rng(3)
    y = [0] * 30 + [1] * 6
    ims = [_blob(rng, 16, c == 1) for c in y]
    tr = ClassificationTrainer(
        ims, y, ["many", "few"], base="none", width=8, device="cpu", balance=balance
    )
    w = tr._class_weights().numpy()
    assert w[1] > 3 * w[0]
    tr.run(epochs=3, lr=0.01)
    assert tr.finished is not None


def test_cli_train_predict_saliency_roundtrip(folder, tmp_path, capsys):
    out = tmp_path / "model"
    assert (
        main(["train", "classification", "--images", str(folder), "--out", str(out), *TRAIN_FAST])
        == 0
    )
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "metadata.json",
        "model.pt",
        "weights.safetensors",
    ]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["task"] == "classification" and meta["classes"] == ["bar", "round"]
    assert meta["extra"]["input_size"] == 16
    ts = torch.jit.load(str(out / "model.pt"))
    assert ts(torch.zeros(1, 1, 16, 16)).shape == (1, 2)

    pred_dir = tmp_path / "pred"
    (pred_dir / "sub").mkdir(parents=True)
    rng = np.random.default_rng(9)
    imsave(pred_dir / "a.png", _blob(rng, 16, True), check_contrast=False)
    tifffile.imwrite(pred_dir / "sub" / "b.tif", _blob(rng, 16, False))
    tsv = tmp_path / "p.tsv"
    assert (
        main(
            [
                "predict",
                "classification",
                "--model",
                str(out),
                "--images",
                str(pred_dir),
                "--out",
                str(tsv),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = pd.read_csv(tsv, sep="\t")
    assert list(table.columns) == ["path", "predicted", "prob_bar", "prob_round"]
    assert table.path.tolist() == ["a.png", "sub/b.tif"]
    np.testing.assert_allclose(table[["prob_bar", "prob_round"]].sum(1), 1, atol=1e-5)
    assert set(table.predicted) <= {"bar", "round"}

    for method in ("integrated-gradients", "gradients", "smoothgrad", "gradcam", "occlusion"):
        sal = tmp_path / f"{method}.tif"
        assert (
            main(
                [
                    "saliency",
                    "--model",
                    str(out),
                    "--image",
                    str(pred_dir / "a.png"),
                    "--method",
                    method,
                    "--out",
                    str(sal),
                    "--target",
                    "round",
                    "--n-samples",
                    "2",
                    "--n-steps",
                    "8",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        m = tifffile.imread(sal)
        assert m.shape == (16, 16) and m.dtype == np.float32 and np.abs(m).max() > 0
    assert "completeness error" in capsys.readouterr().out


def test_cli_saliency_unknown_target_and_resampled_grid(folder, tmp_path, capsys):
    out = tmp_path / "model"
    main(
        [
            "train",
            "classification",
            "--images",
            str(folder),
            "--out",
            str(out),
            *TRAIN_FAST,
            "--epochs",
            "1",
        ]
    )
    big = tmp_path / "big.png"
    imsave(big, _blob(np.random.default_rng(0), 40, True)[:, :30], check_contrast=False)
    capsys.readouterr()
    assert (
        main(
            [
                "saliency",
                "--model",
                str(out),
                "--image",
                str(big),
                "--method",
                "gradients",
                "--out",
                str(tmp_path / "s.tif"),
                "--target",
                "mitosis",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "mitosis" in err and "does not exist" in err and err.count("\n") == 1
    assert (
        main(
            [
                "saliency",
                "--model",
                str(out),
                "--image",
                str(big),
                "--method",
                "gradients",
                "--out",
                str(tmp_path / "s.tif"),
                "--target",
                "7",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "saliency",
                "--model",
                str(out),
                "--image",
                str(big),
                "--method",
                "gradients",
                "--out",
                str(tmp_path / "s.tif"),
            ]
        )
        == 0
    )
    assert tifffile.imread(tmp_path / "s.tif").shape == (40, 30)


def test_cli_bad_folders(tmp_path, folder, capsys):
    def run(images):
        capsys.readouterr()
        rc = main(
            [
                "train",
                "classification",
                "--images",
                str(images),
                "--out",
                str(tmp_path / "m"),
                *TRAIN_FAST,
            ]
        )
        return rc, capsys.readouterr().err

    (folder / "empty").mkdir()
    rc, err = run(folder)
    assert rc == 2 and "class folder 'empty'" in err and "no PNG or TIFF" in err
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    imsave(single / "only" / "a.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    rc, err = run(single)
    assert rc == 2 and "single class" in err
    rc, err = run(tmp_path / "missing")
    assert rc == 2 and "not a folder" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    rc, err = run(flat)
    assert rc == 2 and "sub-folder" in err


def test_cli_mixed_sizes_and_channels_are_resized_with_a_message(folder, tmp_path, capsys):
    rng = np.random.default_rng(4)
    imsave(folder / "round" / "big_rgb.png", _blob(rng, 24, True, channels=3), check_contrast=False)
    imsave(folder / "bar" / "small.png", _blob(rng, 12, False), check_contrast=False)
    rc = main(
        [
            "train",
            "classification",
            "--images",
            str(folder),
            "--out",
            str(tmp_path / "m"),
            *TRAIN_FAST,
            "--epochs",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "note: 2 of 26 images were not 16x16: resized" in out
    assert "did not have 1 channel" in out


def test_predict_proba_rejects_a_segmentation_model():
    from napari_dlcb.models.saved import ModelMeta

    meta = ModelMeta("segmentation", {"name": "unet2d"}, ["bg", "fg"])
    with pytest.raises(DlcbError, match="not a classifier"):
        predict_proba(torch.nn.Identity(), meta, [np.zeros((8, 8))])


def test_trainer_bad_input():
    ims = [np.zeros((8, 8))] * 4
    with pytest.raises(DlcbError, match="at least 2 classes"):
        ClassificationTrainer(ims, [0] * 4, ["one"], base="none")
    with pytest.raises(DlcbError, match="'b' has no images"):
        ClassificationTrainer(ims, [0] * 4, ["a", "b"], base="none")
    with pytest.raises(DlcbError, match="4 images but 3 labels"):
        ClassificationTrainer(ims, [0, 1, 0], ["a", "b"], base="none")
    with pytest.raises(DlcbError, match="unknown training mode"):
        ClassificationTrainer(ims, [0, 1, 0, 1], ["a", "b"], base="none", mode="magic")


def test_builtin_base_is_adapted_to_channels_and_classes():
    from napari_dlcb.models.classifier import load_base
    from napari_dlcb.models.registry import list_builtin

    assert "cellclf-nuclei" in list_builtin("classification")
    model, parent, info = load_base("builtin", in_channels=3, n_classes=5)
    assert parent == "builtin:cellclf-nuclei" and info["input_size"] == 32
    assert model.in_channels == 3 and model.n_classes == 5
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(DlcbError, match="not found|not a napari-dlcb|no such|missing"):
        load_base("/nonexistent/model", in_channels=1, n_classes=2)


def _cells_scene():
    img = np.zeros((96, 96), np.float32)
    lab = np.zeros((96, 96), np.int32)
    k = 0
    for r in range(6, 90, 22):
        for c in range(6, 90, 22):
            k += 1
            big = k % 2 == 0
            rr, cc = np.mgrid[:96, :96]
            disc = (rr - r - 6) ** 2 + (cc - c - 6) ** 2 <= (6 if big else 3) ** 2
            lab[disc] = k
            img[disc] = 1.0
    return img, lab


def test_cell_classification_task_end_to_end(tmp_path):
    from napari_dlcb.tasks.cells import CellClassificationTask

    img, lab = _cells_scene()
    ann = {1: "small", 2: "large", 3: "small", 4: "large", 5: "small", 6: "large"}
    task = CellClassificationTask(
        img,
        lab,
        ann,
        classes=["small", "large"],
        crop_size=24,
        base="builtin",
        mode="linear",
        device="cpu",
    )
    events = list(task.fit(epochs=40))
    assert any(type(e).__name__ == "Preview" and "confusion" in e.data for e in events)
    ids, probs = task.predict()
    assert ids.tolist() == list(range(1, 17)) and probs.shape == (16, 2)
    pred = probs.argmax(1)
    truth = (ids % 2 == 0).astype(int)  # 1 = large
    assert (pred == truth).mean() >= 0.9
    cls_img = task.class_image(probs)
    assert set(np.unique(cls_img)) <= {0, 1, 2}
    assert (cls_img[lab == 2] == pred[1] + 1).all()
    table = task.table(probs)
    assert table.object_id.tolist() == ids.tolist()
    assert {"class", "prob_small", "prob_large", "area", "eccentricity", "annotated"} <= set(table)
    assert table.annotated.iloc[0] == "small" and table.annotated.iloc[10] == ""
    smap, origin, res = task.cell_saliency(2, method="gradients", target="large")
    assert smap.shape == (24, 24) and res.target == 1
    np.testing.assert_array_equal(origin, task.crops.origins[1])
    assert task.features().shape[0] == 16


def test_cell_classification_task_bad_input():
    from napari_dlcb.tasks.cells import CellClassificationTask

    img, lab = _cells_scene()
    with pytest.raises(DlcbError, match="label some cells"):
        CellClassificationTask(img, lab, {}, base="none")
    with pytest.raises(DlcbError, match="only one class"):
        CellClassificationTask(img, lab, {1: "a", 2: "a"}, base="none")
    with pytest.raises(DlcbError, match="object 99 is not"):
        CellClassificationTask(img, lab, {1: "a", 99: "b"}, base="none")
    with pytest.raises(DlcbError, match="no objects"):
        CellClassificationTask(img, np.zeros_like(lab), {1: "a", 2: "b"}, base="none")


def test_cli_cpu_budget_stops_cleanly_and_saves(folder, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(
        [
            "train",
            "classification",
            "--images",
            str(folder),
            "--out",
            str(out),
            *TRAIN_FAST,
            "--epochs",
            "50",
            "--max-cpu-minutes",
            "0.00001",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "CPU budget of 1e-05 min reached" in text
    assert "finished (cancelled)" in text
    assert (out / "model.pt").is_file()


def test_cli_saliency_of_a_segmentation_model(tmp_path):
    from napari_dlcb.models.saved import ModelMeta, save_model
    from napari_dlcb.models.unet import UNet2D

    torch.manual_seed(0)
    net = UNet2D(1, 2, base=4, depth=2).eval()
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "nuclei"],
        normalization={"mode": "per_image_zscore"},
    )
    folder = save_model(net, tmp_path / "unet", meta)
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((40, 36)) * 1000).astype(np.uint16))
    out = tmp_path / "sal.tif"
    assert (
        main(
            [
                "saliency",
                "--model",
                str(folder),
                "--image",
                str(img),
                "--method",
                "occlusion",
                "--window",
                "4",
                "--target",
                "nuclei",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = tifffile.imread(out)
    assert m.shape == (40, 36) and np.abs(m).max() > 0


# --------------------------------------------------------------------------- live saliency
def _model_snapshot(model: torch.nn.Module) -> dict:
    from napari_dlcb.models.state import hook_counts

    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "weights": {n: t.detach().clone() for n, t in model.state_dict().items()},
        "hooks": hook_counts(model),
    }


def _assert_same_snapshot(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    for n, g in a["grads"].items():
        assert (g is None) == (b["grads"][n] is None), n
        assert g is None or torch.equal(g, b["grads"][n]), n
    assert all(torch.equal(a["weights"][n], b["weights"][n]) for n in a["weights"])


_SCENE_ANNOTATIONS = {1: "small", 2: "large", 3: "small", 4: "large", 5: "small", 6: "large"}


@pytest.mark.parametrize(
    ("mode", "val_fraction"), [("linear", 0.0), ("full", 0.0), ("linear", 0.5)]
)
def test_live_cell_saliency_explains_current_weights_and_hands_model_back(
    mode, val_fraction, monkeypatch
):
    from napari_dlcb.interpret.saliency import saliency
    from napari_dlcb.tasks import cells as clf
    from napari_dlcb.training.events import EpochEnd, Finished, Preview, Progress

    img, lab = _cells_scene()
    task = clf.CellClassificationTask(
        img,
        lab,
        _SCENE_ANNOTATIONS,
        classes=["small", "large"],
        crop_size=24,
        base="builtin",
        mode=mode,
        val_fraction=val_fraction,
        augment=False,
        device="cpu",
    )
    monkeypatch.setattr(clf, "LIVE_SALIENCY_SHARE", 1.0)  # a map on every preview
    model = task.trainer.model
    cell = 11  # not a labelled cell: the map explains the current prediction for it
    i = int(np.flatnonzero(task.crops.ids == cell)[0])
    x = task.trainer.normalizer(task.crops.crops[i].astype(np.float32), channel_axis=0)
    before, maps, steps, n_epochs = None, [], [], 0
    for e in task.fit(
        epochs=6,
        preview_interval=0.0,
        preview_saliency=clf.LiveCellSaliency(cell, method="gradients"),
        early_stopping=None,
    ):
        if isinstance(e, Progress):
            before = _model_snapshot(model)  # right after an optimiser step
        elif isinstance(e, EpochEnd):
            n_epochs += 1
        elif isinstance(e, Preview) and "saliency" in e.data:
            d = e.data
            assert d["saliency"].shape == (24, 24) and d["saliency"].dtype == np.float32
            assert d["saliency_object"] == cell and d["saliency_method"] == "gradients"
            assert d["saliency_origin"] == tuple(int(v) for v in task.crops.origins[i])
            assert d["saliency_class"] == task.classes[d["saliency_target"]]
            if val_fraction:  # the validation confusion matrix still comes with it
                assert d["confusion"].shape == (2, 2)
            if e.step >= 0:  # the engine's preview between two optimiser steps
                # the model is handed back as the optimiser left it: mode, grads, weights,
                # hooks
                _assert_same_snapshot(before, _model_snapshot(model))
            # ... and the map is the saliency of exactly these weights (the whole model:
            # in linear mode the frozen extractor with the head as trained so far)
            ref = saliency(model, x, method="gradients", classes=task.classes, channel_axis=0)
            assert d["saliency_target"] == ref.target
            np.testing.assert_allclose(d["saliency"], ref.map, rtol=1e-4, atol=1e-7)
            assert np.ptp(d["saliency"]) > 0
            maps.append(d["saliency"])
            steps.append(e.step)
        elif isinstance(e, Finished):
            assert e.reason == "completed"
    assert n_epochs == 6 and len(maps) >= 6  # one map after every optimiser step at least
    assert sum(e_step >= 0 for e_step in steps) >= 6
    assert not np.allclose(maps[0], maps[-1], rtol=1e-3, atol=0)  # it follows the training
    if mode == "linear":  # only the head was trained; the extractor is still frozen in place
        assert all(p.requires_grad for p in model.parameters())
    # without a request nothing changes: no map, same events as before
    plain = [e for e in task.fit(epochs=1, preview_interval=0.0) if isinstance(e, Preview)]
    assert plain and not any("saliency" in e.data for e in plain)


def test_live_cell_saliency_budget_errors_and_changing_cell(monkeypatch, slow_saliency):
    import threading

    import napari_dlcb.interpret.saliency as sal
    from napari_dlcb.tasks import cells as clf
    from napari_dlcb.training.events import Finished, Preview, Progress

    img, lab = _cells_scene()
    task = clf.CellClassificationTask(
        img, lab, _SCENE_ANNOTATIONS, classes=["small", "large"], crop_size=24, device="cpu"
    )
    # a fixed request is checked before any training
    for bad, match in (
        (clf.LiveCellSaliency(99), "object 99 is not in the labels"),
        (clf.LiveCellSaliency(7, method="deeplift"), "unknown saliency method 'deeplift'"),
        (clf.LiveCellSaliency(7, target="huge"), "target class 'huge' does not exist"),
        (clf.LiveCellSaliency(7, target=2), "target class 2 does not exist"),
        ("7", "must be a LiveCellSaliency or an object id"),
    ):
        with pytest.raises(DlcbError, match=match):
            next(task.fit(epochs=1, preview_saliency=bad))

    cost, real = 0.2, sal.saliency
    calls = slow_saliency(cost)  # saliency() now takes `cost` seconds; calls = their times
    stop = threading.Event()
    shown, steps_between = [], [0]
    for e in task.fit(
        epochs=100_000, preview_interval=0.0, preview_saliency=7, stop=stop, early_stopping=None
    ):
        if isinstance(e, Progress):
            steps_between[-1] += 1
        elif isinstance(e, Preview) and "saliency" in e.data:
            shown.append(e.data)
            steps_between.append(0)
            if len(calls) >= 4:
                stop.set()
    share = clf.LIVE_SALIENCY_SHARE
    assert len(shown) == len(calls) == 4  # an int is the object id ...
    assert {d["saliency_method"] for d in shown} == {"integrated-gradients"}  # ... with IG
    assert all(d["saliency_object"] == 7 for d in shown)
    # after a map of `cost` s, the next one waits at least cost * (1 / share - 1)
    assert min(np.diff(calls)) >= cost / share * 0.99
    # and the training went on in between: optimiser steps between any two maps
    assert len(steps_between) == 5 and all(n >= 1 for n in steps_between[1:-1])

    # a method that cannot explain the model: one error, and the training goes on
    def broken(*args, **kwargs):
        raise RuntimeError("Sizes of tensors must match except in dimension 1\nmore detail")

    monkeypatch.setattr(sal, "saliency", broken)
    events = list(
        task.fit(
            epochs=5,
            preview_interval=0.0,
            preview_saliency=clf.LiveCellSaliency(7, method="occlusion"),
            early_stopping=None,
        )
    )
    data = [e.data for e in events if isinstance(e, Preview)]
    assert [d["saliency_error"] for d in data if "saliency_error" in d] == [
        "live occlusion saliency of cell 7 is unavailable: "
        "Sizes of tensors must match except in dimension 1"
    ]
    assert not any("saliency" in d for d in data)
    assert sum("confusion" in d for d in data) == 5  # the confusion matrix goes on
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed"

    # a callable request is asked at every preview: the explained cell can change mid-way
    monkeypatch.setattr(sal, "saliency", real)
    monkeypatch.setattr(clf, "LIVE_SALIENCY_SHARE", 1.0)
    asked = []

    def current():
        asked.append(len(asked))
        if len(asked) <= 2:
            return None  # no cell chosen yet: no map
        return clf.LiveCellSaliency(3 if len(asked) <= 4 else 12, method="gradients")

    objects = [
        e.data["saliency_object"]
        for e in task.fit(
            epochs=4, preview_interval=0.0, preview_saliency=current, early_stopping=None
        )
        if isinstance(e, Preview) and "saliency" in e.data
    ]
    assert len(asked) >= 6 and objects[:2] == [3, 3] and set(objects[2:]) == {12}


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("config", "changes", "match"),
    [
        ("cells", {"crop_size": 4}, "crop size must be from 8 to 256, got 4"),
        ("cells", {"crop_size": "big"}, "crop size must be a whole number, got 'big'"),
        ("cells", {"epochs": 0}, "epochs must be from 1 to 100000, got 0"),
        ("cells", {"mode": "magic"}, "unknown training mode 'magic'"),
        ("cells", {"balance": "oversample"}, "unknown class balancing 'oversample'"),
        ("cells", {"val_fraction": 1.0}, "validation fraction must be a fraction in [0, 1)"),
        ("classification", {"lr": -1}, "learning rate must be a finite number > 0"),
        ("classification", {"batch_size": 0}, "batch size must be from 1 to 65536, got 0"),
        ("classification", {"blocks": (2, 0)}, "blocks per stage must be from 1 to 64, got 0"),
        ("classification", {"input_size": 2}, "input size must be from 4 to 1024, got 2"),
        ("classification", {"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_configs_give_one_line_errors_naming_the_option(config, changes, match):
    from napari_dlcb.tasks.classification_config import CellsConfig, ClassificationConfig

    base = CellsConfig() if config == "cells" else ClassificationConfig()
    with pytest.raises(DlcbError) as err:
        base.replace(**changes)
    assert match in str(err.value) and "\n" not in str(err.value)


def test_one_frozen_backbone_mode_name():
    """Cells called it "linear", segmentation "quick": one name now, the old one accepted."""
    from napari_dlcb.tasks.classification_config import CellsConfig, ClassificationConfig

    assert CellsConfig().validate().mode == "quick"  # the cell classifier's default
    assert CellsConfig(mode="linear").validate().mode == "quick"
    assert ClassificationConfig(mode="linear").validate().mode == "quick"
    assert CellsConfig().validate().balance == "loss"
    assert ClassificationConfig(balance="none").validate().balance is None
    cfg = ClassificationConfig(mode="linear", base="none", width=4, blocks=(1,), device="cpu")
    rng = np.random.default_rng(5)
    tr = ClassificationTrainer(
        [_blob(rng, 16, i % 2 == 1) for i in range(8)], [i % 2 for i in range(8)], ["a", "b"],
        config=cfg,
    )  # fmt: skip
    fin = tr.run(epochs=2)
    assert tr.meta.extra["mode"] == "quick"
    assert tr.meta.extra["training_runs"][-1]["kept"] == fin.kept
    assert len(tr.history) == fin.epochs_run == 2


def test_cli_accepts_quick_and_the_old_linear_spelling(folder, tmp_path):
    for mode in ("quick", "linear"):
        out = tmp_path / mode
        args = ["train", "classification", "--images", str(folder), "--out", str(out)]
        assert main([*args, *TRAIN_FAST, "--epochs", "1", "--mode", mode]) == 0
        assert json.loads((out / "metadata.json").read_text())["extra"]["mode"] == "quick"


def test_cli_and_python_build_the_same_config(tmp_path):
    from napari_dlcb.cli import build_parser
    from napari_dlcb.commands.classification import train_config
    from napari_dlcb.tasks.classification_config import ClassificationConfig

    args = build_parser().parse_args(
        ["train", "classification", "--images", "x", "--out", "y", "--mode", "linear",
         "--blocks", "1,1", "--balance", "none", "--epochs", "4"]
    )  # fmt: skip
    want = ClassificationConfig(
        mode="quick", blocks=(1, 1), balance=None, epochs=4, val_fraction=0.1
    ).validate()
    assert train_config(args) == want


def test_cell_embedding_is_a_job_with_progress_and_stop():
    """Issue 8: UMAP ran 81 s with no progress; the embedding is a generator of steps now."""
    import threading

    from napari_dlcb.tasks.cells import CellClassificationTask, CellEmbedding

    img, lab = _cells_scene()
    task = CellClassificationTask(img, lab, _SCENE_ANNOTATIONS, base="none", device="cpu")
    gen = task.iter_embedding(method="pca")
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as done:
            result = done.value
            break
    assert [(p.done, p.total) for p in steps] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [p.message for p in steps[:3]] == ["network features", "pca embedding", "measurements"]
    assert isinstance(result, CellEmbedding) and result.xy.shape == (16, 2)
    assert result.table.object_id.tolist() == list(range(1, 17))
    stop = threading.Event()
    gen = task.iter_embedding(method="pca", stop=stop)
    next(gen)
    stop.set()
    with pytest.raises(StopIteration) as end:
        next(gen)
    assert end.value.value is None
    umap = task.iter_embedding(method="umap")
    next(umap)
    assert "first use compiles code" in next(umap).message  # said before UMAP starts
    umap.close()


def test_cell_task_implements_the_task_interface(tmp_path):
    from napari_dlcb.models.saved import load_model
    from napari_dlcb.tasks.base import Task
    from napari_dlcb.tasks.cells import CellClassificationTask, CellsConfig

    img, lab = _cells_scene()
    cfg = CellsConfig(crop_size=24, base="none", device="cpu", epochs=3)
    task = CellClassificationTask(img, lab, _SCENE_ANNOTATIONS, config=cfg, augment=False)
    assert isinstance(task, Task) and task.config.augment is False and cfg.augment is True
    fin = task.run()
    assert fin.epochs_run == 3 == len(task.history)
    folder = task.save(tmp_path / "cells")
    model, meta = load_model(folder, device="cpu")
    assert meta.extra["crop_size"] == 24 and meta.extra["mode"] == "quick"
    assert meta.extra["training_runs"][-1]["kept"] == fin.kept
    ids, probs = task.predict((img, lab))  # another image: cropped like the training cells
    np.testing.assert_allclose(probs, task.predict()[1], atol=1e-6)
    x = task.trainer.normalise(task.crops.crops.astype(np.float32))
    with torch.no_grad():
        ref = torch.softmax(model.eval()(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(ref, probs, atol=1e-5)


def test_live_confusion_keeps_to_its_share_of_the_time():
    import time

    from napari_dlcb.tasks.classification import budgeted

    calls = []

    def slow(net):
        calls.append(net)
        time.sleep(0.05)
        return {"confusion": 1}

    view = budgeted(slow, share=0.2)
    assert view("a") == {"confusion": 1}
    assert view("b") is None  # due again only after 4 x 0.05 s of training
    time.sleep(0.25)
    assert view("c") == {"confusion": 1} and calls == ["a", "c"]
