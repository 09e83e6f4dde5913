"""K-fold training of the sequence task: folds, the ensemble model, the CLI and the interpretation verbs."""

from __future__ import annotations

import contextlib
import io
import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from napari_dlcb.cli import main
from napari_dlcb.data.dna import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.inference.sequence import load_sequence_model, predict_sequences
from napari_dlcb.interpret.ism import mutation_map
from napari_dlcb.models.architectures import build_model
from napari_dlcb.models.ensemble import Ensemble
from napari_dlcb.tasks.sequence import SequenceTask
from napari_dlcb.tasks.sequence_kfold import AUTO_FOLDS_BELOW, fold_splits, resolve_folds
from napari_dlcb.training.engine import fit_to_end
from napari_dlcb.training.events import Finished, Warning

MOTIF = "GATAAG"
TINY = {"filters": 4, "kernel_size": 5}


def _data(n=60, L=30, seed=0):
    rng = np.random.default_rng(seed)
    seqs, y = [], []
    for i in range(n):
        s = "".join(rng.choice(list("ACGT"), L))
        if i % 2:
            s = s[:10] + MOTIF + s[10 + len(MOTIF) :]
        seqs.append(s)
        y.append(i % 2)
    return seqs, np.array(y, np.float32)[:, None]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    """A 3-member ensemble trained through the CLI (tiny: 2 epochs, 4 filters)."""
    d = tmp_path_factory.mktemp("kfold")
    seqs, y = _data(80, L=40)
    pd.DataFrame({"seq": seqs, "Bound": y[:, 0].astype(int)}).to_csv(
        d / "train.tsv", sep="\t", index=False
    )
    args = ["train", "sequence", "--table", str(d / "train.tsv"), "--out", str(d / "m")]
    args += ["--folds", "3", "--epochs", "2", "--filters", "4", "--device", "cpu"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 0
    (d / "train.log").write_text(err.getvalue())
    return d


def test_fold_split_validates_every_row_once():
    for n, k in ((10, 3), (803, 5), (12, 12)):
        splits = fold_splits(n, k, seed=1)
        val = np.concatenate([v for _, v in splits])
        assert sorted(val.tolist()) == list(range(n))
        for train, v in splits:
            assert not set(train) & set(v) and len(train) + len(v) == n
    assert [len(v) for _, v in fold_splits(10, 3, seed=0)] == [4, 3, 3]


def test_resolve_folds_default_rule_and_refusals():
    assert resolve_folds(None, AUTO_FOLDS_BELOW - 1, False) == 5
    assert resolve_folds(None, AUTO_FOLDS_BELOW, False) == 1
    assert resolve_folds(None, 100, True) == 1  # explicit validation rows: one model
    assert resolve_folds(None, 100, False, distributed=True) == 1
    assert resolve_folds(1, 100, False) == 1
    with pytest.raises(DlcbError, match="explicit validation rows"):
        resolve_folds(3, 100, True)
    with pytest.raises(DlcbError, match="torchrun"):
        resolve_folds(3, 100, False, distributed=True)
    with pytest.raises(DlcbError, match="need at least 20 rows"):
        resolve_folds(10, 12, False)


def test_kfold_task_events_metadata_and_round_trip(tmp_path):
    seqs, y = _data()
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=2, folds=3)
    assert task.folds == 3 and task.architecture["name"] == "ensemble"
    events = list(task.fit())
    folds = [e.message for e in events if isinstance(e, Warning) and e.kind == "fold"]
    assert folds[0].startswith("fold 1/3") and folds[-1].startswith("fold 3/3 finished")
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and finished[0] is events[-1]  # the members' own: fold warnings
    assert "cross-validated auroc" in finished[0].kept
    cv = task.meta.extra["cross_validation"]
    assert cv["folds"] == 3 and cv["members"] == 3 and len(cv["scores"]) == 3
    assert cv["mean"] == pytest.approx(np.mean(cv["scores"]), abs=1e-3)
    assert {h["fold"] for h in task.history} == {0, 1, 2}
    arch = task.meta.architecture
    assert arch["name"] == "ensemble" and arch["members"] == 3 and arch["combine"] == "probability"
    assert arch["member"]["name"] == "deepbind"
    folder = task.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == [
        "metadata.json",
        "model.pt",
        "weights.safetensors",
    ]
    assert json.loads((folder / "metadata.json").read_text())["extra"]["cross_validation"] == cv
    model, meta = load_sequence_model(folder, device="cpu")
    assert isinstance(model, Ensemble) and len(model.members) == 3
    x = torch.as_tensor(one_hot(seqs[:8]))
    torch.testing.assert_close(model(x), task.model.eval()(x))
    torch.testing.assert_close(torch.jit.load(str(folder / "model.pt"))(x), model(x))


def test_ensemble_predicts_the_mean_of_its_members():
    member = {"name": "deepbind", "n_tasks": 2, "filters": 4, "kernel_size": 5}
    for combine in ("probability", "mean"):
        torch.manual_seed(0)
        net = build_model({"name": "ensemble", "members": 3, "member": member, "combine": combine})
        seqs, _ = _data(10)
        got = predict_sequences(net, seqs, device="cpu", rc_average=False, activation="none")
        outs = [
            predict_sequences(m, seqs, device="cpu", rc_average=False, activation="none")
            for m in net.members
        ]
        if combine == "mean":
            np.testing.assert_allclose(got, np.mean(outs, 0), atol=1e-5)
        else:
            prob = 1 / (1 + np.exp(-got))
            np.testing.assert_allclose(
                prob, np.mean([1 / (1 + np.exp(-o)) for o in outs], 0), atol=1e-5
            )
    with pytest.raises(DlcbError, match="members"):
        build_model({"name": "ensemble", "members": 0, "member": member})
    with pytest.raises(DlcbError, match="cannot be 'ensemble'"):
        build_model({"name": "ensemble", "members": 2, "member": {"name": "ensemble"}})


def test_stop_keeps_the_finished_folds():
    seqs, y = _data()
    stop = threading.Event()
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=2, folds=3)
    for ev in task.fit(stop=stop):
        if isinstance(ev, Warning) and ev.message.startswith("fold 2/3 finished"):
            stop.set()
    assert ev.reason == "cancelled" and isinstance(ev, Finished)
    assert task.architecture["members"] == 2 and len(task.model.members) == 2
    assert task.meta.extra["cross_validation"]["members"] == 2
    # closed (not stopped) after two folds, as when a dock closes: both are kept
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=2, folds=3)
    run = task.fit()
    for ev in run:
        if isinstance(ev, Warning) and ev.message.startswith("fold 2/3 finished"):
            run.close()
            break
    assert task.architecture["members"] == 2 and len(task.model.members) == 2
    # stopped in the first fold: that member is kept, as a single network
    stop = threading.Event()
    stop.set()
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=2, folds=3)
    fit_to_end(task.fit(stop=stop))
    assert task.architecture["name"] == "deepbind" and not isinstance(task.model, Ensemble)


def test_regression_ensemble_averages_outputs():
    seqs, y = _data()
    y = y + np.random.default_rng(0).normal(0, 0.1, y.shape).astype(np.float32)
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=1, folds=2)
    fit_to_end(task.fit())
    assert task.architecture["combine"] == "mean"
    assert task.meta.extra["cross_validation"]["metric"] == "pearson"


def test_single_model_below_the_threshold_with_folds_1():
    seqs, y = _data()
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=1, folds=1)
    assert task.folds == 1 and task.architecture["name"] == "deepbind"
    assert SequenceTask(seqs, y, model_kwargs=TINY, device="cpu").folds == 5  # default rule


def test_cli_folds_and_interpretation_verbs(ensemble_dir, capsys, tmp_path):
    d = ensemble_dir
    meta = json.loads((d / "m" / "metadata.json").read_text())
    assert meta["architecture"]["members"] == 3 and "cross_validation" in meta["extra"]
    log = (d / "train.log").read_text()
    assert "fold 2/3: member 2 trains on" in log and "3-fold model: the mean of 3 members" in log
    pred = tmp_path / "p.tsv"
    args = ["predict", "sequence", "--model", str(d / "m"), "--table", str(d / "train.tsv")]
    assert main([*args, "--out", str(pred)]) == 0
    assert pd.read_csv(pred, sep="\t")["score"].between(0, 1).all()
    assert "ensemble of 3 deepbind" in capsys.readouterr().err
    seq = pd.read_csv(d / "train.tsv", sep="\t").seq[1]
    mm = tmp_path / "mm.npy"
    assert main(["mutation-map", "--model", str(d / "m"), "--sequence", seq, "--out", str(mm)]) == 0
    assert np.load(mm).shape == (4, 40, 1)
    model, _ = load_sequence_model(d / "m", device="cpu")
    x = one_hot([seq])
    fast = mutation_map(model, x, method="fast", device="cpu")  # every member's fast path
    np.testing.assert_allclose(
        fast, mutation_map(model, x, method="naive", device="cpu"), atol=1e-4
    )
    out = tmp_path / "motifs"
    args = ["motifs", "--model", str(d / "m"), "--table", str(d / "train.tsv"), "--out", str(out)]
    assert main([*args, "--no-logos"]) == 0
    names = [
        line.split()[1]
        for line in (out / "filters.meme").read_text().splitlines()
        if line.startswith("MOTIF")
    ]
    assert len(names) == 12 and names[0] == "member0_filter0" and names[-1] == "member2_filter3"


def test_score_variants_and_fine_tuning_on_an_ensemble(ensemble_dir, tmp_path, capsys):
    d = ensemble_dir
    rng = np.random.default_rng(3)
    chrom = "".join(rng.choice(list("ACGT"), 300))
    (tmp_path / "g.fa").write_text(">chr1\n" + chrom + "\n")
    body = "".join(
        f"chr1\t{p}\tv{p}\t{chrom[p - 1]}\t{'A' if chrom[p - 1] != 'A' else 'C'}\n"
        for p in (100, 150)
    )
    (tmp_path / "v.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n" + body)
    out = tmp_path / "s.tsv"
    args = ["score-variants", "--model", str(d / "m"), "--fasta", str(tmp_path / "g.fa")]
    assert main([*args, "--vcf", str(tmp_path / "v.vcf"), "--out", str(out)]) == 0
    assert (pd.read_csv(out, sep="\t")["status"] == "ok").all()
    capsys.readouterr()
    args = ["train", "sequence", "--table", str(d / "train.tsv"), "--out", str(tmp_path / "ft")]
    assert main([*args, "--base", str(d / "m"), "--epochs", "1", "--folds", "1"]) == 2
    assert "cannot fine-tune a 'ensemble' model" in capsys.readouterr().err


def test_attributions_on_an_ensemble(ensemble_dir):
    from napari_dlcb.interpret.dna_attribution import deeplift_shap, gradient_x_input

    model, _ = load_sequence_model(ensemble_dir / "m", device="cpu")
    seq = pd.read_csv(ensemble_dir / "train.tsv", sep="\t").seq[1]
    att = gradient_x_input(model, one_hot([seq]), device="cpu")
    assert np.isfinite(att.map).all()
    with pytest.raises(DlcbError, match="does not support ensemble"):
        deeplift_shap(model, one_hot([seq]), device="cpu")


def test_a_time_budget_is_shared_by_the_folds(monkeypatch):
    """--max-minutes bounds the whole k-fold run: each fold gets a share of what is left."""
    seqs, y = _data()
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=1, folds=3, max_time=90)
    seen, fit_one = [], task.fit_one

    def spy(*args, options, **kw):
        seen.append(options.get("max_time"))
        return fit_one(*args, options=options, **kw)

    monkeypatch.setattr(task, "fit_one", spy)
    fit_to_end(task.fit())
    # a third of 90 s, then half of what is left, then all of it
    assert len(seen) == 3 and 25 < seen[0] <= 30 and seen[1] <= 45 and seen[2] <= 90, seen


def test_kfold_pos_weight_is_each_members_own_and_their_mean():
    seqs, y = _data(100)
    y[:] = 0
    y[::10] = 1  # 10 % positives: every member weights them, by its own training folds
    task = SequenceTask(seqs, y, model_kwargs=TINY, device="cpu", epochs=1, folds=3)
    list(task.fit())
    folds = task.meta.extra["training"]["folds"]
    per_fold = [f["pos_weight"][0] for f in folds]
    assert len(per_fold) == 3 and all(5 <= w <= 15 for w in per_fold)  # ~9 each
    assert len(set(per_fold)) > 1  # not one fold's weight copied to all
    mean = task.meta.extra["pos_weight"][0]
    assert mean == pytest.approx(np.mean(per_fold), abs=1e-3)
