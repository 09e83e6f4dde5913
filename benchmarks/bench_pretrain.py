"""Autoencoder pretraining through the CLI: BloodMNIST with 100 labelled images.

The 4,000 BloodMNIST training images are split into 100 labelled ones
(stratified by class, seeded) and the rest, unlabelled. Two arms, scored on
the official validation split (never used for training or model selection):

- *scratch*: ``train classification --base none`` on the 100 labelled images;
- *pretrained*: ``pretrain classification`` (denoising autoencoder; by
  default it decodes from the pooled features) on all 4,000 images without
  their labels, then ``train classification --base MODEL_DIR`` on the same
  100 labelled images (by default the new head is first trained alone on the
  frozen encoder's features for 30 epochs, then every layer: LP-FT).

Both arms use the same network (``--width``, ``--blocks``), epochs, seed and
10 % of the labelled images as their own validation split; early stopping is
off by default (on 11 validation images it ends both arms near chance). Target: the
pretrained arm beats scratch by >= 5 accuracy points.

Usage::

    nice -n 10 python benchmarks/bench_pretrain.py [--seeds 0] [--n-labelled 100]
        [--pretrain-cpu-minutes 6] [--epochs 60] [--extra "--early-stopping 0"]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mil import cli  # noqa: E402

from _common import record, shared_data  # noqa: E402


def write_folder(images: np.ndarray, labels: np.ndarray | None, out: Path) -> list[str]:
    """PNG files, in class sub-folders when ``labels`` is given; relative paths in order."""
    from skimage.io import imsave

    paths = []
    for i, im in enumerate(images):
        rel = f"{i:05d}.png" if labels is None else f"c{int(labels[i])}/{i:05d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        imsave(out / rel, im, check_contrast=False)
        paths.append(rel)
    return paths


def labelled_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` images, stratified by class (at least 2 per class)."""
    classes = np.unique(labels)
    share = np.maximum(2, np.round(n * np.bincount(labels) / len(labels)).astype(int))
    while share.sum() > n:
        share[np.argmax(share)] -= 1
    while share.sum() < n:
        share[np.argmin(share)] += 1
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), share[c], replace=False) for c in classes]
    )


def accuracy(model: Path, root: Path, paths: list[str], y: np.ndarray, threads: int) -> float:
    """Validation accuracy of a saved classifier (``predict classification``)."""
    import pandas as pd

    out = root / f"{model.name}.tsv"
    cli(["predict", "classification", "--model", str(model), "--images", str(root / "val"),
         "--out", str(out), "--device", "cpu"], threads)  # fmt: skip
    table = pd.read_csv(out, sep="\t").set_index("path")
    pred = np.array([int(str(table.loc[p, "predicted"]).lstrip("c")) for p in paths])
    return float((pred == y).mean())


def run_seed(seed: int, a: argparse.Namespace, tmp: Path) -> dict:
    """Write the folders of one seed, run both arms, score them."""
    npz = np.load(shared_data() / "bloodmnist_28" / "bloodmnist_train_val.npz")
    x, y = npz["train_images"], npz["train_labels"].ravel()
    idx = labelled_subset(y, a.n_labelled, np.random.default_rng(seed))
    root = tmp / f"seed{seed}"
    write_folder(x[idx], y[idx], root / "labelled")
    write_folder(x, None, root / "unlabelled")  # all 4,000, labels ignored
    vy = npz["val_labels"].ravel()
    val_paths = write_folder(npz["val_images"], vy, root / "val")
    net = ["--width", str(a.width), "--blocks", a.blocks]
    ae = root / "ae"
    pre_wall, pre_cpu = cli(
        ["pretrain", "classification", "--images", str(root / "unlabelled"), "--out", str(ae),
         *net, "--epochs", str(a.pretrain_epochs), "--max-cpu-minutes",
         str(a.pretrain_cpu_minutes), "--device", "cpu", "--seed", str(seed)],
        a.threads,
    )  # fmt: skip
    result = {"seed": seed, "pretrain_wall_s": pre_wall, "pretrain_cpu_s": pre_cpu}
    for arm, base in (("scratch", ["--base", "none", *net]), ("pretrained", ["--base", str(ae)])):
        model = root / arm
        wall, cpu = cli(
            ["train", "classification", "--images", str(root / "labelled"), "--out", str(model),
             *base, "--mode", "full", "--epochs", str(a.epochs), "--val-fraction", "0.1",
             *shlex.split(a.extra), "--device", "cpu", "--seed", str(seed)],
            a.threads,
        )  # fmt: skip
        result[f"{arm}_accuracy"] = accuracy(model, root, val_paths, vy, a.threads)
        result[f"{arm}_train_cpu_s"] = cpu
    result["gain_points"] = 100 * (result["pretrained_accuracy"] - result["scratch_accuracy"])
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n-labelled", type=int, default=100)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", default="1,1,1")
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--pretrain-cpu-minutes", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--extra",
        default="--early-stopping 0",
        help='more fine-tuning options, e.g. "--early-stopping 0"',
    )
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in a.seeds.split(",")):
            runs.append(run_seed(seed, a, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    gains = np.array([r["gain_points"] for r in runs])
    record(
        "autoencoder_pretraining",
        {"settings": vars(a), "runs": runs, "gain_points_mean": gains.mean(),
         "load_before": load_before},
    )  # fmt: skip


if __name__ == "__main__":
    main()
