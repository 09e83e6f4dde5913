"""Sequence training, saved models and the `napari-dlcb` sequence verbs, end to end on small data."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from napari_dlcb.cli import main
from napari_dlcb.data.dna import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.tasks.sequence import (
    SequenceTrainer,
    bed_training_data,
    table_training_data,
)
from napari_dlcb.training.engine import fit_to_end
from napari_dlcb.training.metrics import auroc

MOTIF = "TGATAAGA"


def _planted(n, L=60, seed=0):
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n):
        s = list(rng.choice(list("ACGT"), L))
        i = int(rng.integers(0, L - len(MOTIF)))
        s[i : i + len(MOTIF)] = MOTIF
        seqs.append("".join(s))
    return seqs


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    d = tmp_path_factory.mktemp("tab")
    p = d / "train.seq.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("FoldID\tEventID\tseq\tBound\n")
        for i, s in enumerate(_planted(600)):
            fh.write(f"A\tseq{i}\t{s}\t1\n")
    t = d / "test.tsv"
    rng = np.random.default_rng(5)
    pos = _planted(100, seed=9)
    neg = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(100)]
    pd.DataFrame({"seq": pos + neg, "Bound": [1] * 100 + [0] * 100}).to_csv(
        t, sep="\t", index=False
    )
    return p, t


def test_auroc_matches_definition():
    rng = np.random.default_rng(0)
    s, y = rng.random(50), rng.integers(0, 2, 50)
    pairs = [
        (a > b) + 0.5 * (a == b)
        for a, la in zip(s, y)
        for b, lb in zip(s, y)
        if la == 1 and lb == 0
    ]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))
    assert np.isnan(auroc(s, np.ones(50)))


def test_table_training_data_adds_shuffled_negatives(table):
    p, _ = table
    seqs, y, tasks = table_training_data(p, negatives="dinucleotide-shuffle")
    assert tasks == ["Bound"] and len(seqs) == 1200 and y[:600].min() == 1 and y[600:].max() == 0
    with pytest.raises(DlcbError, match="add negatives"):
        table_training_data(p)


@pytest.mark.slow
def test_cli_train_predict_interpret(table, tmp_path):
    train, test = table
    out = tmp_path / "model"
    rc = main(
        [
            "train",
            "sequence",
            "--table",
            str(train),
            "--out",
            str(out),
            "--epochs",
            "40",
            "--filters",
            "16",
            "--batch-size",
            "32",
            "--lr",
            "0.005",
            "--device",
            "cpu",
            "--seed",
            "1",
            "--folds",
            "1",
        ]
    )
    assert rc == 0 and (out / "model.pt").is_file() and (out / "weights.safetensors").is_file()
    pred = tmp_path / "pred.tsv"
    assert (
        main(["predict", "sequence", "--model", str(out), "--table", str(test), "--out", str(pred)])
        == 0
    )
    df = pd.read_csv(pred, sep="\t")
    assert list(df.columns) == ["seq", "Bound", "score"] and df.score.between(0, 1).all()
    assert auroc(df.score.to_numpy(), df.Bound.to_numpy()) > 0.9
    # TorchScript model.pt takes (B, 4, L) one-hot and gives the same logits
    ts = torch.jit.load(str(out / "model.pt"))
    model, meta = load_sequence_model(out)
    x = torch.as_tensor(one_hot(df.seq.tolist()[:8]))
    torch.testing.assert_close(ts(x), model(x))
    assert meta.input_axes == "bcl" and meta.extra["length"] == 60
    # mutation map: strongest effects inside the planted motif
    seq = df.seq[0]
    mm = tmp_path / "mm.npy"
    assert main(["mutation-map", "--model", str(out), "--sequence", seq, "--out", str(mm)]) == 0
    m = np.load(mm)
    assert m.shape == (4, 60, 1)
    i = seq.find(MOTIF)
    effect = np.abs(m[..., 0]).max(0)
    assert i <= int(effect.argmax()) < i + len(MOTIF)
    # bad input: wrong table column, model that is not a folder
    assert (
        main(
            [
                "predict",
                "sequence",
                "--model",
                str(out),
                "--table",
                str(test),
                "--out",
                str(pred),
                "--sequence-column",
                "x",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "mutation-map",
                "--model",
                str(tmp_path / "nope"),
                "--sequence",
                "ACGT",
                "--out",
                str(mm),
            ]
        )
        == 2
    )


def test_trainer_multitask_nan_masking_and_fine_tuning(tmp_path):
    seqs = _planted(80, L=40) + _planted(80, L=40, seed=3)
    y = np.zeros((160, 2), np.float32)
    y[:80, 0] = 1
    y[80:, 1] = np.nan  # unlabelled for task 1
    t = SequenceTrainer(
        seqs,
        y,
        task_names=["a", "b"],
        model_kwargs={"filters": 4, "kernel_size": 8},
        device="cpu",
        folds=1,
    )
    fin = fit_to_end(t.fit(epochs=2, batch_size=32))
    assert fin.epochs_run == 2 and len(t.history) == 2
    folder = t.save(tmp_path / "m")
    p = predict_sequences(*load_sequence_model(folder)[:1], seqs[:5])
    assert p.shape == (5, 2)
    # fine-tune to a single new task: body kept, new read-out
    t2 = SequenceTrainer(seqs, y[:, :1], task_names=["c"], base=str(folder), device="cpu", folds=1)
    torch.testing.assert_close(t2.model[0].weight, t.model[0].weight)
    assert t2.model[-1].out_features == 1 and t2.meta.parent == str(folder)
    # a task the base model knows keeps its read-out row
    t3 = SequenceTrainer(seqs, y, task_names=["new", "A"], base=str(folder), device="cpu", folds=1)
    torch.testing.assert_close(t3.model[-1].weight[1], t.model[-1].weight[0])
    assert not torch.equal(t3.model[-1].weight[0], t.model[-1].weight[1])
    # Basset needs its window length
    tb = SequenceTrainer(
        seqs,
        y,
        arch="basset",
        model_kwargs={"filters": (8, 8, 8), "pools": (2, 2, 2), "hidden": (8, 8)},
        device="cpu",
        folds=1,
    )
    with pytest.raises(DlcbError, match="takes 40 bp windows, but the sequences are 30 bp"):
        tb.predict([s[:30] for s in seqs[:3]])
    with pytest.raises(DlcbError, match="too short for pools"):
        SequenceTrainer(seqs, y, arch="basset", device="cpu")
    with pytest.raises(DlcbError, match="unequal lengths"):
        SequenceTrainer(seqs[:3] + ["ACGT"], np.ones((4, 1)))


def test_bed_training_data_and_cli_bed(tmp_path):
    rng = np.random.default_rng(0)
    chroms = {}
    for c in ("chr1", "chr2"):
        s = list(rng.choice(list("ACGT"), 4000))
        for i in range(200, 3800, 400):
            s[i : i + 8] = MOTIF
        chroms[c] = "".join(s)
    fa = tmp_path / "g.fa"
    fa.write_text("".join(f">{c}\n{s}\n" for c, s in chroms.items()))
    bed = tmp_path / "p.bed"
    bed.write_text(
        "".join(f"{c}\t{i - 10}\t{i + 18}\tpk\n" for c in chroms for i in range(200, 3800, 400))
    )
    seqs, y, tasks, ch = bed_training_data(fa, bed, window=100, negatives="gc-matched")
    assert len(seqs) == 36 and y.sum() == 18 and all(len(s) == 100 for s in seqs)
    assert ch[:9] == ["chr1"] * 9
    out = tmp_path / "m"
    rc = main(
        [
            "train",
            "sequence",
            "--fasta",
            str(fa),
            "--bed",
            str(bed),
            "--out",
            str(out),
            "--window",
            "100",
            "--epochs",
            "1",
            "--filters",
            "4",
            "--device",
            "cpu",
            "--val-chroms",
            "chr2",
        ]
    )
    assert rc == 0 and (out / "metadata.json").is_file()
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t3990\t4100\tpk\n")
    assert (
        main(["train", "sequence", "--fasta", str(fa), "--bed", str(bad), "--out", str(out)]) == 2
    )
    assert (
        main(["train", "sequence", "--table", "x.tsv", "--fasta", str(fa), "--out", str(out)]) == 2
    )


def test_sequence_config_validates_and_the_cli_builds_it(tmp_path, table):
    from napari_dlcb.models.dna import ARCHITECTURES
    from napari_dlcb.tasks.base import Task
    from napari_dlcb.tasks.sequence import SequenceConfig, SequenceTask
    from napari_dlcb.tasks.sequence_config import ARCHITECTURES as NAMES

    assert set(NAMES) == set(ARCHITECTURES) and issubclass(SequenceTask, Task)
    assert SequenceTrainer is SequenceTask
    cfg = SequenceConfig(epochs=3, lr=5e-4).validate()
    assert SequenceConfig.from_dict(cfg.to_dict()) == cfg
    for bad, match in [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"val_fraction": 1.0}, r"val_fraction must be a fraction in \[0, 1\)"),
        ({"arch": "resnet"}, "unknown architecture 'resnet'"),
        ({"weight_decay": -1}, "weight_decay must be a finite number >= 0"),
        ({"folds": 0}, "folds must be from 1 to 100"),
    ]:
        with pytest.raises(DlcbError, match=match):
            SequenceConfig(**bad).validate()
    train, _ = table
    out = tmp_path / "m"
    args = ["train", "sequence", "--table", str(train), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--epochs", "0"]) == 2 and not out.exists()  # one-line error, no model
    # the task's own fit options come from the config (and a call may override them)
    seqs, y = _planted(40), np.ones((40, 1), np.float32)
    y[::2] = 0
    t = SequenceTask(seqs, y, config=SequenceConfig(epochs=2, batch_size=8, device="cpu", folds=1))
    assert t.run().epochs_run == 2 and t.run(epochs=1).epochs_run == 1
    assert t.meta.extra["training"]["epochs_run"] == 1
