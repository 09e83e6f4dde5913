"""DeepBind ENCODE benchmark: train with the CLI on each ``train/*_AC`` file (positives +
dinucleotide-shuffled negatives), test AUROC on the matching ``test/*_B`` file.

Issue 3 target: beat 1-6-mer logistic regression on all three TFs
(ARID3A 0.849, FOXM1 0.871, GATA3 0.904) with at most 5 minutes of CPU training each.

Run: ``python benchmarks/bench_deepbind.py [--epochs 30] [--threads 1] [--out DIR]``.
Needs ``../shared/data/deepbind_encode_chipseq``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from napari_dlcb.training.sequence import auroc

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DLCB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "deepbind_encode_chipseq"
KMER_LR = {"ARID3A": 0.849, "FOXM1": 0.871, "GATA3": 0.904}


def cli(*args: str, threads: int) -> float:
    """Run ``napari-dlcb`` and return its CPU time (user + system) in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "napari_dlcb.cli", *args], check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="where to keep the models (default: a temp folder)")
    ap.add_argument("--tf", nargs="*", default=list(KMER_LR))
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="deepbind_bench_"))
    rows = []
    for tf in args.tf:
        train = next((DATA / "train").glob(f"{tf}_*_AC.seq.gz"))
        test = next((DATA / "test").glob(f"{tf}_*_B.seq.gz"))
        model = out / tf
        t0 = time.time()
        cpu_train = cli("train", "sequence", "--table", str(train), "--out", str(model),
                        "--negatives", "dinucleotide-shuffle", "--arch", "deepbind", "--epochs", str(args.epochs),
                        "--max-minutes", "5", "--device", "cpu", "--seed", "0", threads=args.threads)
        wall_train = time.time() - t0
        pred = out / f"{tf}_pred.tsv"
        cli("predict", "sequence", "--model", str(model), "--table", str(test), "--out", str(pred), threads=args.threads)
        df = pd.read_csv(pred, sep="\t")
        auc = auroc(df["score"].to_numpy(), df["Bound"].to_numpy())
        rows.append((tf, auc, KMER_LR[tf], cpu_train, wall_train))
        print(f"{tf}: AUROC {auc:.3f} (k-mer LR {KMER_LR[tf]}), train CPU {cpu_train:.0f} s, wall {wall_train:.0f} s", flush=True)
    print("| TF | test AUROC (napari-dlcb DeepBind) | 1-6-mer LR | beats it | training CPU s | training wall s |")
    print("|---|---|---|---|---|---|")
    for tf, auc, ref, c, w in rows:
        print(f"| {tf} | {auc:.3f} | {ref:.3f} | {'yes' if auc > ref else 'NO'} | {c:.0f} | {w:.0f} |")


if __name__ == "__main__":
    main()
