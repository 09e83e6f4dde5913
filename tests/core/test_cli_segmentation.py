"""``napari-dlcb train/predict segmentation`` end to end on tiny real files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_dlcb.cli import main
from napari_dlcb.data.synthetic import synthetic_nuclei


@pytest.fixture
def folders(tmp_path):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir(), labs.mkdir()
    for i in range(2):
        img, lab = synthetic_nuclei((96, 96), seed=40 + i)
        tifffile.imwrite(imgs / f"cell_{i}.tif", img)
        tifffile.imwrite(labs / f"cell_{i}.tif", lab.astype(np.uint16))
    return imgs, labs


def test_train_then_predict_instances(folders, tmp_path, capsys):
    imgs, labs = folders
    model = tmp_path / "model"
    rc = main(
        [
            "train",
            "segmentation",
            "--images",
            str(imgs),
            "--labels",
            str(labs),
            "--out",
            str(model),
            "--labels-kind",
            "instances",
            "--epochs",
            "2",
            "--patch-size",
            "64",
            "--samples-per-epoch",
            "4",
            "--device",
            "cpu",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    assert {"metadata.json", "weights.safetensors", "model.pt"} <= {p.name for p in model.iterdir()}
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "segmentation",
                "--model",
                str(model),
                "--images",
                str(imgs),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    pred = tifffile.imread(out / "cell_0.tif")
    assert pred.shape == (96, 96) and pred.max() >= 1
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "saved model" in printed


def _train_argv(imgs, labs, out):
    return [
        "train",
        "segmentation",
        "--images",
        str(imgs),
        "--labels",
        str(labs),
        "--out",
        str(out),
    ]


def _run_err(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("napari-dlcb: error:") and "\n" not in err
    return err


def test_missing_pair(folders, tmp_path, capsys):
    imgs, labs = folders
    (labs / "cell_1.tif").unlink()
    err = _run_err(
        _train_argv(imgs, labs, tmp_path / "m"),
        capsys,
    )
    assert "cell_1" in err


def test_truncated_tiff(folders, tmp_path, capsys):
    imgs, labs = folders
    data = (imgs / "cell_0.tif").read_bytes()
    (imgs / "cell_0.tif").write_bytes(data[: len(data) // 3])
    err = _run_err(
        _train_argv(imgs, labs, tmp_path / "m"),
        capsys,
    )
    assert "cell_0.tif" in err


def test_shape_mismatch(folders, tmp_path, capsys):
    imgs, labs = folders
    tifffile.imwrite(labs / "cell_0.tif", np.zeros((50, 96), np.uint16))
    err = _run_err(
        [*_train_argv(imgs, labs, tmp_path / "m"), "--labels-kind", "instances"],
        capsys,
    )
    assert "shape" in err


def test_unreadable_model(folders, tmp_path, capsys):
    imgs, _ = folders
    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "metadata.json").write_text("{not json")
    (bad / "weights.safetensors").write_bytes(b"\x00garbage")
    _run_err(
        [
            "predict",
            "segmentation",
            "--model",
            str(bad),
            "--images",
            str(imgs),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )


def test_a_time_budget_sets_the_epochs_it_holds():
    """Without --epochs, --max-minutes (not a fixed 30 epochs) ends a budgeted run."""
    from napari_dlcb.cli import build_parser
    from napari_dlcb.commands.segmentation import BUDGETED_EPOCHS, DEFAULT_EPOCHS, config_from_args

    base = ["train", "segmentation", "--images", "i", "--labels", "l", "--out", "o"]
    parse = build_parser().parse_args
    assert config_from_args(parse(base)).epochs == DEFAULT_EPOCHS == 30
    budgeted = config_from_args(parse([*base, "--max-minutes", "15"]))
    assert budgeted.epochs == BUDGETED_EPOCHS and budgeted.max_time == 900
    assert config_from_args(parse([*base, "--max-minutes", "15", "--epochs", "7"])).epochs == 7
