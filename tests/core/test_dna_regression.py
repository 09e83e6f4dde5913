"""Regression tasks (e.g. a bigWig mean per window): standardised targets, MSE, Pearson r."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_dlcb.cli import main
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.tasks.sequence import (
    SequenceTrainer,
    bed_training_data,
)
from napari_dlcb.training.engine import fit_to_end

MOTIF = "GATAAG"


def _seqs_with_counts(n: int, L: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Random sequences carrying 0-3 GATAAG sites; the label is 2 x count + noise."""
    rng = np.random.default_rng(seed)
    seqs, y = [], []
    for _ in range(n):
        s = list(rng.choice(list("ACTT"), L))  # no G outside sites: no chance GATAAG
        k = int(rng.integers(0, 4))
        for j in range(k):
            i = 5 + j * (L // 3)
            s[i : i + 6] = MOTIF
        seqs.append("".join(s))
        y.append(2.0 * k + 5.0 + rng.normal(0, 0.2))
    return seqs, np.array(y, np.float32)[:, None]


def test_regression_trainer_learns_a_count_and_uses_training_statistics():
    seqs, y = _seqs_with_counts(600, 60, seed=0)
    t = SequenceTrainer(
        seqs,
        y,
        task_names=["signal"],
        model_kwargs={"filters": 8, "kernel_size": 8, "hidden": 0},
        device="cpu",
        seed=0,
        folds=1,
    )
    assert t.task_type == "regression" and t.meta.output_activation == "none"
    # targets standardised with the training rows only
    assert t.meta.extra["target_mean"][0] == pytest.approx(float(y[t.train_index].mean()), rel=1e-5)
    assert t.meta.extra["target_std"][0] == pytest.approx(float(y[t.train_index].std()), rel=1e-5)
    train_y = t.train.y.numpy()
    assert abs(train_y.mean()) < 1e-5 and abs(train_y.std() - 1) < 1e-4
    fin = fit_to_end(t.fit(epochs=25, lr=5e-3, batch_size=32))
    assert "pearson" in t.history[-1]
    test_seqs, test_y = _seqs_with_counts(200, 60, seed=1)
    pred = t.predict(test_seqs)[:, 0]
    r = np.corrcoef(pred, test_y[:, 0])[0, 1]
    assert r > 0.85, (r, fin)
    # on the label scale, not the standardised one
    assert abs(pred.mean() - test_y.mean()) < 0.5 and pred.max() > 9


def test_task_type_checks():
    seqs, y = _seqs_with_counts(20, 60, seed=2)
    with pytest.raises(DlcbError, match="binary tasks need labels 0 or 1"):
        SequenceTrainer(seqs, y, task_type="binary", device="cpu")
    with pytest.raises(DlcbError, match="task_type must be"):
        SequenceTrainer(seqs, y, task_type="poisson", device="cpu")
    b = SequenceTrainer(seqs, (y > 6).astype(np.float32), device="cpu")
    assert b.task_type == "binary" and b.meta.output_activation == "sigmoid"


def _synthetic_genome(tmp_path):
    """One chromosome; 120 peaks with 0-3 planted GATAAG sites; bedGraph = 2 x sites + 1."""
    rng = np.random.default_rng(0)
    n_peaks, spacing = 120, 2000
    chrom = list(rng.choice(list("ACTT"), n_peaks * spacing + 2000))
    bed, bg = [], []
    for p in range(n_peaks):
        start = 1000 + p * spacing
        k = p % 4
        for j in range(k):
            i = start + 20 + 50 * j
            chrom[i : i + 6] = MOTIF
        bed.append(("chrT", start, start + 200, f"p{p}"))
        bg.append(("chrT", start, start + 200, 2.0 * k + 1.0))
    fa = tmp_path / "g.fa"
    fa.write_text(">chrT\n" + "".join(chrom) + "\n")
    (tmp_path / "peaks.bed").write_text("".join(f"{c}\t{s}\t{e}\t{n}\n" for c, s, e, n in bed))
    (tmp_path / "signal.bedGraph").write_text("".join(f"{c}\t{s}\t{e}\t{v}\n" for c, s, e, v in bg))
    return fa, tmp_path / "peaks.bed", tmp_path / "signal.bedGraph"


def test_bed_windows_with_signal_labels(tmp_path):
    fa, bed, bg = _synthetic_genome(tmp_path)
    seqs, y, tasks, chroms = bed_training_data(
        fa, bed, window=200, negatives="flanks", labels="none", tracks=[bg]
    )
    assert tasks == ["signal"] and y.shape == (len(seqs), 1)
    peaks_y, neg_y = y[:120, 0], y[120:, 0]
    assert len(neg_y) == 240 and np.allclose(neg_y, 0.0)  # flanks carry no signal
    np.testing.assert_allclose(peaks_y, 2.0 * (np.arange(120) % 4) + 1.0)
    # flanks that would fall on another peak are left out
    crowded = tmp_path / "crowded.bed"
    crowded.write_text("chrT\t1000\t1200\tp0\nchrT\t1600\t1800\tp1\n")
    _, y2, _, _ = bed_training_data(
        fa, crowded, window=200, negatives="flanks", labels="none", tracks=[bg]
    )
    assert len(y2) == 2 + 2  # p0's downstream and p1's upstream flanks are the other peak
    with pytest.raises(DlcbError, match="negatives from the genome"):
        bed_training_data(fa, bed, window=200, negatives="dinucleotide-shuffle", tracks=[bg])


def test_cli_trains_on_signal_and_predicts_values(tmp_path):
    fa, bed, bg = _synthetic_genome(tmp_path)
    out = tmp_path / "model"
    rc = main(
        [
            "train", "sequence", "--fasta", str(fa), "--bed", str(bed), "--window", "200",
            "--bed-labels", "none", "--signal-labels", str(bg), "--out", str(out),
            "--epochs", "40", "--filters", "8", "--lr", "0.005", "--batch-size", "16", "--device", "cpu", "--seed", "0", "--folds", "1",
        ]
    )  # fmt: skip
    assert rc == 0
    model, meta = load_sequence_model(out)
    assert meta.extra["task_type"] == "regression" and meta.classes == ["signal"]
    rng = np.random.default_rng(5)
    k = np.arange(40) % 4
    seqs = []
    for kk in k:
        s = list(rng.choice(list("ACTT"), 200))
        for j in range(kk):
            s[20 + 50 * j : 26 + 50 * j] = MOTIF
        seqs.append("".join(s))
    table = tmp_path / "new.tsv"
    pd.DataFrame({"seq": seqs}).to_csv(table, sep="\t", index=False)
    assert main(["predict", "sequence", "--model", str(out), "--table", str(table), "--out", str(tmp_path / "p.tsv")]) == 0  # fmt: skip
    pred = pd.read_csv(tmp_path / "p.tsv", sep="\t")["score"].to_numpy()
    assert np.corrcoef(pred, 2.0 * k + 1.0)[0, 1] > 0.6  # 0.70 when written
    assert pred.max() > 1.5  # values on the signal scale, not probabilities
    np.testing.assert_allclose(pred, predict_sequences(model, seqs, meta=meta)[:, 0], rtol=1e-5)
