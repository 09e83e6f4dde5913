"""DanQ (CNN + bidirectional LSTM) vs the 1-6-mer baseline on the DeepBind ENCODE sets (issue 13).

Protocol, through the CLI only: for each TF, train on the ``train/*_AC`` peaks
(shuffled negatives added by the CLI) with ``napari-dlcb train sequence
--architecture danq --max-minutes M --seed 0``, then score the held-out
``test/*_B`` set (500 peaks + 500 shuffled) with ``napari-dlcb predict sequence``.
The reference is a 1-6-mer logistic regression trained on the same ``_AC`` peaks
and scored on the same ``_B`` set (0.849 / 0.871 / 0.904 for ARID3A / FOXM1 /
GATA3). CPU seconds are the child processes' user + system time.

Run (one TF, about 10 CPU-minutes)::

    nice -n 10 python benchmarks/bench_dna_danq.py --tf GATA3 --max-minutes 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_dlcb.training.metrics import auroc  # noqa: E402

DATA = (
    Path(os.environ.get("NAPARI_DLCB_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "deepbind_encode_chipseq"
)
#: 1-6-mer logistic regression, trained on ``_AC`` and scored on ``_B`` (issue 13)
BASELINE = {"ARID3A": 0.849, "FOXM1": 0.871, "GATA3": 0.904}


def _cli(*args: str, threads: int) -> float:
    """Run one CLI verb; return its CPU seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    before = os.times()
    subprocess.run(
        [sys.executable, "-m", "napari_dlcb.cli", *args],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    after = os.times()
    return (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )


def run(tf: str, arch: str, minutes: float, threads: int, work: Path) -> tuple[float, float]:
    """AUROC on ``tf``'s ``_B`` set and CPU seconds of training + prediction."""
    train = next((DATA / "train").glob(f"{tf}_*_AC.seq.gz"))
    test = next((DATA / "test").glob(f"{tf}_*_B.seq.gz"))
    model, pred = work / f"{tf}_{arch}", work / f"{tf}_{arch}.tsv"
    cmd = ["train", "sequence", "--table", str(train), "--out", str(model)]
    cmd += ["--architecture", arch, "--max-minutes", str(minutes), "--seed", "0"]
    cmd += ["--device", "cpu"]
    cpu = _cli(*cmd, threads=threads)
    cpu += _cli(
        "predict", "sequence", "--model", str(model), "--table", str(test), "--out", str(pred),
        "--device", "cpu", threads=threads,
    )  # fmt: skip
    df = pd.read_csv(pred, sep="\t")
    return auroc(df["score"].to_numpy(), df["Bound"].to_numpy()), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tf", nargs="*", default=list(BASELINE))
    ap.add_argument("--arch", nargs="*", default=["danq"])
    ap.add_argument("--max-minutes", type=float, default=8.0, help="training wall-clock budget")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dna_danq_"))
    rows = []
    for tf in args.tf:
        for arch in args.arch:
            auc, cpu = run(tf, arch, args.max_minutes, args.threads, work)
            rows.append((tf, arch, auc, cpu))
            print(f"{tf} {arch}: AUROC {auc:.3f} (1-6-mer {BASELINE[tf]:.3f}), {cpu:.0f} CPU s")
    print(f"\nload: {os.getloadavg()}")
    print("| TF | architecture | `_B` AUROC | 1-6-mer LR | CPU min (train + predict) |")
    print("|---|---|---|---|---|")
    for tf, arch, auc, cpu in rows:
        print(f"| {tf} | {arch} | {auc:.3f} | {BASELINE[tf]:.3f} | {cpu / 60:.1f} |")


if __name__ == "__main__":
    main()
