"""Which base should ``train classification`` start from? Built-in vs from scratch.

BloodMNIST (``../shared/data/bloodmnist_28``, 28 x 28 RGB, 8 classes): for
each number of labelled training images (stratified by class, seeded) and
each seed, ``train classification`` runs twice with every option at the CLI's
default except ``--base``: once from the built-in crop classifier
(``--base builtin``: pretrained on single-channel synthetic nuclei, first
convolution averaged out to RGB) and once from random initialisation
(``--base none``). Both are scored with ``predict classification`` on the
official validation split (1,712 images, never used for training or model
selection). The default the CLI should ship is the arm that wins.

Usage::

    python benchmarks/bench_classification_base.py [--sizes 100,400] [--seeds 0,1]
        [--threads 2] [--max-minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mil import cli  # noqa: E402
from bench_pretrain import accuracy, labelled_subset, write_folder  # noqa: E402

from _common import record, shared_data  # noqa: E402

ARMS = ("builtin", "none")


def run_size(n: int, seed: int, a: argparse.Namespace, tmp: Path, val: tuple) -> dict:
    """Both arms on ``n`` labelled images drawn with ``seed``."""
    x, y, val_paths, vy, val_root = val
    idx = labelled_subset(y, n, np.random.default_rng(seed)) if n < len(y) else np.arange(len(y))
    root = tmp / f"n{n}_seed{seed}"
    write_folder(x[idx], y[idx], root / "labelled")
    (root / "val").symlink_to(val_root)
    result: dict = {"n_labelled": int(len(idx)), "seed": seed}
    for arm in ARMS:
        model = root / arm
        wall, cpu = cli(
            ["train", "classification", "--images", str(root / "labelled"), "--out", str(model),
             "--base", arm, "--max-minutes", str(a.max_minutes), "--device", "cpu",
             "--seed", str(seed)],
            a.threads,
        )  # fmt: skip
        meta = json.loads((model / "metadata.json").read_text())
        result[f"{arm}_accuracy"] = accuracy(model, root, val_paths, vy, a.threads)
        result[f"{arm}_train_wall_s"] = wall
        result[f"{arm}_best_epoch"] = meta["extra"].get("best_epoch")
    result["none_minus_builtin_points"] = 100 * (
        result["none_accuracy"] - result["builtin_accuracy"]
    )
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,400", help="labelled images per run (4000: all)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    a = ap.parse_args()
    npz = np.load(shared_data() / "bloodmnist_28" / "bloodmnist_train_val.npz")
    x, y = npz["train_images"], npz["train_labels"].ravel()
    vy = npz["val_labels"].ravel()
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val_paths = write_folder(npz["val_images"], vy, tmp / "val")
        for n in (int(s) for s in a.sizes.split(",")):
            for seed in (int(s) for s in a.seeds.split(",")):
                runs.append(run_size(n, seed, a, tmp, (x, y, val_paths, vy, tmp / "val")))
                print(json.dumps(runs[-1]), flush=True)
    record(
        "classification_base",
        {"settings": vars(a), "runs": runs, "load_before": load_before},
    )


if __name__ == "__main__":
    main()
