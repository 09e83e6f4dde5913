"""Small DNA data: default ``train sequence`` vs a 1-6-mer logistic regression (issue 10).

Protocol: for each DeepBind TF (ARID3A, FOXM1, GATA3), the ``test/*_B`` file
(500 ChIP-seq peaks + 500 shuffled sequences, 101 bp) is subsampled to 500
peaks + 500 negatives and split 80/20, stratified, with seed ``s``; a model is
trained on the 80 % with the DEFAULT settings, exactly what a user gets
(``napari-dlcb train sequence --table TRAIN --out M --seed s``; nothing else),
and scored on the 20 % with ``napari-dlcb predict sequence``. The baseline is
a logistic regression on 1-6-mer counts of both strands (scikit-learn,
``LogisticRegressionCV`` over C, 5 folds, AUROC) on the same split. Seeds 0, 1, 2.

Run::

    nice -n 10 python benchmarks/bench_dna_small.py            # the protocol (CLI)
    nice -n 10 python benchmarks/bench_dna_small.py --study     # the hyper-parameter study

``--study`` is the tuning that chose the defaults: every candidate is trained
(in-process, :class:`~napari_dlcb.tasks.sequence.SequenceTask`) on an inner
75 % of the 80 % training part and scored on the inner 25 %; the 20 % test
part is never looked at. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from napari_dlcb.training.metrics import auprc, auroc

ROOT = Path(__file__).resolve().parents[1]
DATA = (
    Path(os.environ.get("NAPARI_DLCB_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "deepbind_encode_chipseq"
)
TFS = ("ARID3A", "FOXM1", "GATA3")

#: Candidates of the study: overrides of the defaults as they were before it
#: (``STUDY_BASE``). The winner became ``SequenceConfig``'s default.
STUDY_BASE = {
    "epochs": 20,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "early_stopping": 4,
    "model_kwargs": {"filters": 16, "kernel_size": 24, "hidden": 32, "dropout": 0.5},
}


def load_split(tf: str, seed: int, *, n: int = 500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The protocol's 80/20 stratified split of ``n`` peaks + ``n`` negatives of ``tf``'s B set."""
    from sklearn.model_selection import train_test_split

    path = next((DATA / "test").glob(f"{tf}_*_B.seq.gz"))
    df = pd.read_csv(path, sep="\t")
    pos, neg = df[df.Bound == 1], df[df.Bound == 0]
    df = pd.concat(
        [
            pos.sample(min(n, len(pos)), random_state=seed),
            neg.sample(min(n, len(neg)), random_state=seed),
        ]
    ).reset_index(drop=True)
    train, test = train_test_split(df, test_size=0.2, stratify=df.Bound, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _revcomp(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGTNacgtn", "TGCANtgcan"))


def kmer_lr(train_seqs, train_y, test_seqs, *, seed: int = 0) -> np.ndarray:
    """Scores of a 1-6-mer logistic regression (counts of both strands, CV over C)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    cv = CountVectorizer(analyzer="char", ngram_range=(1, 6), lowercase=False)
    cv.fit(list(train_seqs) + [_revcomp(s) for s in train_seqs])

    def feats(seqs):
        return cv.transform(list(seqs)) + cv.transform([_revcomp(s) for s in seqs])

    clf = make_pipeline(
        MaxAbsScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-3, 2, 11).tolist(),
            cv=5,
            scoring="roc_auc",
            max_iter=5000,
            random_state=seed,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.8's LogisticRegressionCV notices
        clf.fit(feats(train_seqs), np.asarray(train_y))
    return clf.predict_proba(feats(test_seqs))[:, 1]


def _cli(*args: str, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    subprocess.run(
        [sys.executable, "-m", "napari_dlcb.cli", *args],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def cli_default(train: pd.DataFrame, test: pd.DataFrame, seed: int, work: Path, threads: int):
    """Train with the CLI defaults on ``train`` and return the scores of ``test``."""
    work.mkdir(parents=True, exist_ok=True)
    train[["seq", "Bound"]].to_csv(work / "train.tsv", sep="\t", index=False)
    test[["seq", "Bound"]].to_csv(work / "test.tsv", sep="\t", index=False)
    cmd = ["train", "sequence", "--table", str(work / "train.tsv"), "--out", str(work / "model")]
    cmd += ["--seed", str(seed)]
    _cli(*cmd, threads=threads)
    _cli(
        "predict",
        "sequence",
        "--model",
        str(work / "model"),
        "--table",
        str(work / "test.tsv"),
        "--out",
        str(work / "pred.tsv"),
        threads=threads,
    )
    return pd.read_csv(work / "pred.tsv", sep="\t")["score"].to_numpy()


def protocol(tfs, seeds, threads: int) -> None:
    """The issue's protocol through the CLI; prints one row per TF (mean and spread over seeds)."""
    print(
        "command per split: napari-dlcb train sequence --table TRAIN.tsv --out MODEL --seed S; "
        "napari-dlcb predict sequence --model MODEL --table TEST.tsv --out PRED.tsv",
        flush=True,
    )
    out = Path(tempfile.mkdtemp(prefix="dna_small_"))
    rows = []
    for tf in tfs:
        res = {"cnn": [], "lr": [], "cnn_pr": [], "lr_pr": [], "cpu": []}
        for seed in seeds:
            train, test = load_split(tf, seed)
            y = test.Bound.to_numpy()
            before = os.times()
            s_cnn = cli_default(train, test, seed, out / f"{tf}_{seed}", threads)
            after = os.times()
            s_lr = kmer_lr(train.seq, train.Bound, test.seq, seed=seed)
            res["cnn"].append(auroc(s_cnn, y))
            res["lr"].append(auroc(s_lr, y))
            res["cnn_pr"].append(auprc(s_cnn, y))
            res["lr_pr"].append(auprc(s_lr, y))
            res["cpu"].append(
                after.children_user
                + after.children_system
                - before.children_user
                - before.children_system
            )
            print(
                f"{tf} seed {seed}: default CNN AUROC {res['cnn'][-1]:.3f} AUPRC {res['cnn_pr'][-1]:.3f} | "
                f"1-6-mer LR AUROC {res['lr'][-1]:.3f} AUPRC {res['lr_pr'][-1]:.3f} | "
                f"train+predict CPU {res['cpu'][-1]:.0f} s",
                flush=True,
            )
        rows.append((tf, res))
    print(f"\nload: {os.getloadavg()}")
    print(
        "| TF | default CNN AUROC | 1-6-mer LR AUROC | CNN wins (seeds) | default CNN AUPRC | LR AUPRC | CPU s / run |"
    )
    print("|---|---|---|---|---|---|---|")
    for tf, r in rows:
        wins = sum(a > b for a, b in zip(r["cnn"], r["lr"]))
        print(
            f"| {tf} | {_ms(r['cnn'])} | {_ms(r['lr'])} | {wins}/{len(r['cnn'])} | "
            f"{_ms(r['cnn_pr'])} | {_ms(r['lr_pr'])} | {np.mean(r['cpu']):.0f} |"
        )


def _ms(v) -> str:
    """Mean and half the range (spread) as ``0.812 ± 0.021``."""
    v = np.asarray(v, float)
    return f"{v.mean():.3f} ± {(v.max() - v.min()) / 2:.3f}"


# --------------------------------------------------------------------------- study
def _candidates() -> dict[str, dict]:
    """Named overrides of ``STUDY_BASE``; round 1 fixes the optimisation budget, round 2 the rest."""
    long = {"epochs": 100, "early_stopping": 15, "lr_patience": 5, "lr": 3e-3}

    def c(filters, k, **kw):
        mk = {"filters": filters, "kernel_size": k, "hidden": kw.pop("hidden", 0)}
        mk["dropout"] = kw.pop("dropout", 0.2)
        return {**long, **kw, "model_kwargs": mk}

    return {
        "old defaults (16x24, dense 32)": {},
        "old model, 100 epochs, patience 15": {**long, "lr": 1e-3},
        "16x15 linear": c(16, 15),
        "64x11 linear": c(64, 11),
        "128x8 linear": c(128, 8),
        "256x8 linear": c(256, 8),
        "256x6 linear": c(256, 6),
        "256x12 linear": c(256, 12),
        "256x8 lr 1e-3": c(256, 8, lr=1e-3),
        "256x8 lr 1e-2": c(256, 8, lr=1e-2),
        "256x8 wd 1e-4": c(256, 8, weight_decay=1e-4),
        "256x8 dropout 0.5": c(256, 8, dropout=0.5),
        "256x8 dense 32": c(256, 8, hidden=32),
        "256x8 batch 32": c(256, 8, batch_size=32),
        "defaults": None,  # whatever SequenceConfig() holds now
    }


def study(tfs, seeds, threads: int, names=None, extra=None) -> None:
    """Every candidate on inner validation splits of the training part (test untouched)."""
    import torch
    from sklearn.model_selection import train_test_split

    from napari_dlcb.tasks.sequence import SequenceTask
    from napari_dlcb.training.engine import fit_to_end

    torch.set_num_threads(threads)
    cands = _candidates()
    if names:
        cands = {k: v for k, v in cands.items() if any(n in k for n in names)}
    for item in extra or []:  # ad hoc candidates: NAME=JSON overrides
        name, _, text = item.partition("=")
        cands[name] = json.loads(text)
    splits = []
    for tf in tfs:
        for seed in seeds:
            train, _ = load_split(tf, seed)  # the test part is never read
            tr, va = train_test_split(
                train, test_size=0.25, stratify=train.Bound, random_state=100 + seed
            )
            splits.append((tf, seed, tr, va))
    lr_scores = {
        (tf, seed): auroc(kmer_lr(tr.seq, tr.Bound, va.seq, seed=seed), va.Bound.to_numpy())
        for tf, seed, tr, va in splits
    }
    print("| candidate | " + " | ".join(tfs) + " | mean | beats LR | CPU s/run |")
    print("|---|" + "---|" * (len(tfs) + 3))
    lr_row = [np.mean([lr_scores[(tf, s)] for s in seeds]) for tf in tfs]
    print(
        "| 1-6-mer LR | "
        + " | ".join(f"{v:.3f}" for v in lr_row)
        + f" | {np.mean(lr_row):.3f} | - | - |",
        flush=True,
    )
    for name, over in cands.items():
        kw = {} if over is None else _merge(STUDY_BASE, over)
        per_tf: dict[str, list[float]] = {tf: [] for tf in tfs}
        wins, cpu = 0, []
        for tf, seed, tr, va in splits:
            c0 = time.process_time()
            y = tr.Bound.to_numpy(np.float32)[:, None]
            task = SequenceTask(tr.seq.tolist(), y, seed=seed, device="cpu", **kw)
            fit_to_end(task.fit())
            a = auroc(task.predict(va.seq.tolist())[:, 0], va.Bound.to_numpy())
            cpu.append(time.process_time() - c0)
            per_tf[tf].append(a)
            wins += a > lr_scores[(tf, seed)]
        means = [np.mean(per_tf[tf]) for tf in tfs]
        print(
            f"| {name} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {np.mean(means):.3f} | {wins}/{len(splits)} | {np.mean(cpu):.0f} |",
            flush=True,
        )
    print(f"\nload: {os.getloadavg()}")


def _merge(base: dict, over: dict) -> dict:
    out = {**base, **{k: v for k, v in over.items() if k != "model_kwargs"}}
    out["model_kwargs"] = {**base.get("model_kwargs", {}), **over.get("model_kwargs", {})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tf", nargs="*", default=list(TFS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--study", action="store_true", help="the hyper-parameter study (validation only)"
    )
    ap.add_argument("--only", nargs="*", help="study: candidates whose name contains one of these")
    ap.add_argument(
        "--candidate", nargs="*", help="study: extra candidates NAME='{json overrides}'"
    )
    args = ap.parse_args()
    if args.study:
        study(args.tf, args.seeds, args.threads, args.only, args.candidate)
    else:
        protocol(args.tf, args.seeds, args.threads)


if __name__ == "__main__":
    main()
