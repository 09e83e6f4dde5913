"""The built-in models pretrained on real data (issue 13): files, cards, and a quick score each.

``builtin:unet2d-nuclei`` (DSB2018, ``scripts/pretrain_unet.py``) and
``builtin:dna-encode`` (ENCODE / janggu ChIP-seq, ``scripts/pretrain_dna_encode.py``).
The score checks use the real data in ``../shared/data`` and are skipped without it;
their thresholds are the measured values (model card) minus a margin.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from napari_dlcb.models.registry import WEIGHTS_DIR, builtin_info, load_builtin

ROOT = Path(__file__).resolve().parents[2]

#: measured on the shipped weights (model cards); the tests allow a margin below
STARDIST_FG_IOU = 0.847
STARDIST_AP50 = 0.750
GATA3_AUROC = 0.947


def _card(name: str) -> str:
    entry, _ = builtin_info(name)
    return (WEIGHTS_DIR / entry.card).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ U-Net
def test_unet_builtin_is_the_real_data_model_and_its_card_agrees():
    model, meta = load_builtin("unet2d-nuclei")
    assert meta.architecture["name"] == "unet2d" and meta.in_channels == 1
    assert meta.classes == ["background", "interior", "boundary"]
    assert meta.label_kind == "instances"
    assert meta.normalization == {"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8}
    data = meta.extra["data"]
    assert data["licence"] == "CC0" and "DSB2018" in data["name"]
    card = _card("unet2d-nuclei")
    post = meta.extra["postprocess"]
    assert f"1 - p_background > {post['fg_threshold']}" in card
    assert f"p_interior > {post['seed_threshold']}" in card
    test = meta.extra["evaluation"]["test"]["grey"]
    assert f"{test['fg_iou']:.3f} | {test['ap50']:.3f}" in card
    assert (WEIGHTS_DIR / "unet2d_nuclei.safetensors").stat().st_size < 5_000_000


def test_unet_split_keeps_test_images_out_of_training():
    split = json.loads((ROOT / "scripts" / "dsb2018_split.json").read_text())
    _, meta = builtin_info("unet2d-nuclei")
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    assert len(train) + len(val) + len(test) == 664
    assert {k: meta.extra["data"][k] for k in ("train", "val", "test")} == {
        "train": len(train),
        "val": len(val),
        "test": len(test),
    }
    assert "4dbbb275960ab9e4" in test  # the StarDist sample is a crop of it
    card = _card("unet2d-nuclei")
    ids = re.search(r"- test ids: (.*)", card).group(1).split(", ")
    assert set(ids) == test


def test_unet_builtin_segments_the_stardist_sample(shared_data):
    import tifffile

    from napari_dlcb.inference.metrics import average_precision, foreground_iou
    from napari_dlcb.inference.segment import segment

    d = shared_data / "stardist_sample_nuclei_2d"
    img = tifffile.imread(d / "img2d.tif")
    truth = tifffile.imread(d / "mask2d.tif")
    _, labels = segment("builtin", img, tile=512, device="cpu")
    measured = load_builtin("unet2d-nuclei")[1].extra["evaluation"]["stardist_sample_nuclei_2d"]
    assert measured["fg_iou"] >= STARDIST_FG_IOU and measured["ap50"] >= STARDIST_AP50
    assert foreground_iou(labels > 0, truth > 0) > STARDIST_FG_IOU - 0.03
    assert average_precision(labels, truth, 0.5) > STARDIST_AP50 - 0.05


# -------------------------------------------------------------------------------- DNA
def test_dna_encode_is_registered_with_its_card():
    from napari_dlcb.models.registry import DEFAULT_BUILTIN, list_builtin

    assert "dna-encode" in list_builtin("sequence")
    assert DEFAULT_BUILTIN["sequence"] == "dna-multitask"  # the sample's demo model stays
    model, meta = load_builtin("dna-encode")
    assert meta.classes == ["ARID3A", "FOXM1", "GATA3", "POU5F1", "MAFK"]
    assert meta.architecture["name"] == "deepbind" and meta.architecture["hidden"] == 0
    assert meta.extra["length"] == 101
    card = _card("dna-encode")
    for tf, auc in meta.extra["evaluation"]["test_auroc"].items():
        assert f"| {tf} |" in card and f"**{auc:.3f}**" in card
    assert meta.extra["data"]["n_sequences"] == 125448 and f"{125448:,}" in card
    assert (WEIGHTS_DIR / "dna_encode.safetensors").stat().st_size < 100_000


def test_dna_encode_scores_held_out_gata3(shared_data):
    import pandas as pd

    from napari_dlcb.inference.sequence import predict_sequences
    from napari_dlcb.training.metrics import auroc

    f = next((shared_data / "deepbind_encode_chipseq" / "test").glob("GATA3_*_B.seq.gz"))
    df = pd.read_csv(f, sep="\t")
    rng = np.random.default_rng(0)
    take = np.r_[
        rng.choice(np.flatnonzero(df.Bound == 1), 200, replace=False),
        rng.choice(np.flatnonzero(df.Bound == 0), 200, replace=False),
    ]
    model, meta = load_builtin("dna-encode")
    p = predict_sequences(model, df.seq.iloc[take].tolist(), meta=meta, device="cpu")
    score = auroc(p[:, meta.classes.index("GATA3")], df.Bound.to_numpy()[take])
    assert meta.extra["evaluation"]["test_auroc"]["GATA3"] >= GATA3_AUROC
    assert score > GATA3_AUROC - 0.04  # chance is 0.5; the 1-6-mer baseline 0.904
    synthetic, smeta = load_builtin("dna-multitask")  # the demo model scores far lower
    q = predict_sequences(synthetic, df.seq.iloc[take].tolist(), meta=smeta, device="cpu")
    assert auroc(q[:, smeta.classes.index("GATA3")], df.Bound.to_numpy()[take]) < score - 0.1


def test_cli_names_the_built_in_it_uses(shared_data, tmp_path, capsys):
    from napari_dlcb.cli import main

    f = next((shared_data / "deepbind_encode_chipseq" / "test").glob("GATA3_*_B.seq.gz"))
    out = tmp_path / "pred.tsv"
    args = ["predict", "sequence", "--table", str(f), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--model", "builtin:dna-encode"]) == 0
    err = capsys.readouterr().err
    assert "built-in dna-encode" in err and "real ChIP-seq peaks" in err and "GATA3 0.947" in err
    assert main([*args, "--model", "builtin"]) == 0
    assert "built-in dna-multitask" in capsys.readouterr().err


def test_dna_encode_fine_tunes_on_a_new_task():
    from napari_dlcb.tasks.sequence import SequenceTask
    from napari_dlcb.training.engine import fit_to_end

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 101)) for _ in range(32)]
    y = np.array([[s.count("GATA") > 1] for s in seqs], np.float32)
    t = SequenceTask(seqs, y, task_names=["CTCF"], base="builtin:dna-encode", device="cpu", folds=1)
    assert t.meta.parent == "builtin:dna-encode"
    base, _ = load_builtin("dna-encode")
    conv = next(iter(t.model.parameters()))
    assert np.allclose(conv.detach().numpy(), next(iter(base.parameters())).detach().numpy())
    assert fit_to_end(t.fit(epochs=1)).epochs_run == 1
