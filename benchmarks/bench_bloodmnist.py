"""BloodMNIST through the CLI: train on 4,000 images, report validation accuracy.

Writes the shared BloodMNIST subset out as an ImageFolder (PNG, one sub-folder
per class) in a temporary folder, runs ``napari-dlcb train classification``
and ``napari-dlcb predict classification`` in a subprocess, and scores the TSV
against the official validation labels. Reference: MedMNIST v2 ResNet-18
(28 px) test accuracy 0.958, trained on the full 11,959-image training set.

The defaults reproduce the recorded quiet-box run (``benchmarks/RESULTS.md``): a
network trained from scratch (``--base none --width 32 --blocks 2,2,2``), 30
epochs, a wall-clock guard of ``--max-minutes``, two torch threads, and
test-time augmentation (8 rotations/flips) at prediction. ``--plain`` instead
runs the CLI as a user would, with its defaults (``--base builtin``).

Usage::

    python benchmarks/bench_bloodmnist.py [--epochs 30] [--threads 1] [--no-tta]
        [--extra "--blocks 2,2,2"] [--seed 0]
    python benchmarks/bench_bloodmnist.py --plain --max-minutes 10 --seed 1   # CLI defaults
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import add_user_options

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bloodmnist_28"
REFERENCE_ACC = 0.958


def write_image_folder(
    images: np.ndarray, labels: np.ndarray, classes: list[str], out: Path
) -> None:
    from skimage.io import imsave

    for name in classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, (im, y) in enumerate(zip(images, labels.ravel())):
        imsave(out / classes[int(y)] / f"{i:05d}.png", im, check_contrast=False)


def cli(args: list[str], threads: int) -> tuple[float, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_dlcb.cli", *args], check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def score(tmp: Path, threads: int, *, tta: bool) -> tuple[float, int, float]:
    """Accuracy of ``tmp/model`` on ``tmp/val`` (``predict classification``), n, seconds."""
    import pandas as pd

    pred_args = ["predict", "classification", "--model", str(tmp / "model"), "--images",
                 str(tmp / "val"), "--out", str(tmp / "val.tsv"), "--device", "cpu"]  # fmt: skip
    wall, _ = cli(pred_args + (["--tta"] if tta else []), threads)
    table = pd.read_csv(tmp / "val.tsv", sep="\t")
    truth = table["path"].str.split("/").str[0]
    return float((table["predicted"] == truth).mean()), len(table), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-minutes", type=float, default=30, help="wall-clock guard")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default="none")
    ap.add_argument(
        "--extra", default="--width 32 --blocks 2,2,2", help="more train options, space separated"
    )
    ap.add_argument("--no-tta", dest="tta", action="store_false")
    add_user_options(ap, "--images/--out/--seed/--device and the --max-minutes budget")
    a = ap.parse_args()
    npz = np.load(DATA / "bloodmnist_train_val.npz")
    raw = json.loads((DATA / "classes.json").read_text())
    names = raw["classes"]
    classes = [f"{int(k)}_{names[k].split(' ')[0]}" for k in sorted(names, key=int)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image_folder(npz["train_images"], npz["train_labels"], classes, tmp / "train")
        write_image_folder(npz["val_images"], npz["val_labels"], classes, tmp / "val")
        if a.plain:
            options = ["--max-minutes", str(a.max_minutes)]
        else:
            options = [
                *("--base", a.base, "--epochs", str(a.epochs)),
                *("--max-minutes", str(a.max_minutes), *a.extra.split()),
            ]
        train_args = ["train", "classification", "--images", str(tmp / "train")]
        train_args += ["--out", str(tmp / "model"), "--device", "cpu", "--seed", str(a.seed)]
        train_wall, train_cpu = cli(train_args + options, a.threads)
        scores = {}
        for tta in (False, True) if a.tta else (False,):
            scores[tta], n, pred_wall = score(tmp, a.threads, tta=tta)
        acc = scores[a.tta]
        meta = json.loads((tmp / "model" / "metadata.json").read_text())
    print(
        f"BloodMNIST val accuracy {acc:.4f} (without TTA {scores[False]:.4f}) (n={n}; "
        f"reference MedMNIST v2 ResNet-18 "
        f"test {REFERENCE_ACC}, 3x more training data); train {train_wall:.0f} s wall, "
        f"{train_cpu:.0f} s CPU ({a.threads} threads); predict {pred_wall:.1f} s; "
        f"best epoch {meta['extra'].get('best_epoch')}; tta={a.tta}; seed {a.seed}; "
        f"plain={a.plain}"
    )


if __name__ == "__main__":
    main()
