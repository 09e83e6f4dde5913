"""Multiple-instance image classification through the CLI: "does this mosaic hold a platelet?"

Mosaics of 4 x 4 BloodMNIST cells (112 x 112 px RGB) are labelled only by
whether one of their tiles is a platelet (BloodMNIST class "platelet"; its
index is read from ``classes.json``). Positives hold 1-3 platelet tiles at
random places, negatives none; about half of every split is positive. The
cell pools are disjoint: training and validation mosaics come from two
disjoint parts of the 4,000 training images, test mosaics from the official
validation split.

``napari-dlcb train classification --mil`` learns from the image labels only;
``napari-dlcb predict classification --heatmaps`` classifies the held-out
mosaics and writes each one's localisation map. Scores: image-level accuracy,
and for positive test mosaics whether the heatmap's maximum falls on a
platelet tile (targets: >= 0.90 and >= 80 %).

Usage::

    nice -n 10 python benchmarks/bench_mil.py [--seeds 0,1,2] [--pooling attention]
        [--n-train 600] [--epochs 12] [--max-cpu-minutes 6]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, record, shared_data  # noqa: E402

TILE = 28
GRID = 4


def platelet_index(folder: Path) -> int:
    """Index of the class named "platelet" in BloodMNIST's ``classes.json``."""
    names = json.loads((folder / "classes.json").read_text())["classes"]
    return next(int(k) for k, v in names.items() if v.lower().startswith("platelet"))


def make_mosaics(
    images: np.ndarray, labels: np.ndarray, n: int, platelet: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """``n`` mosaics (n, 112, 112, 3), their labels (1 = holds a platelet), platelet tiles."""
    pos_pool = np.flatnonzero(labels == platelet)
    neg_pool = np.flatnonzero(labels != platelet)
    out = np.empty((n, GRID * TILE, GRID * TILE, 3), np.uint8)
    y = (rng.permutation(n) < n // 2).astype(int)
    where: list[list[int]] = []
    for i in range(n):
        tiles = rng.choice(neg_pool, GRID * GRID, replace=False)
        spots = sorted(rng.choice(GRID * GRID, rng.integers(1, 4), replace=False).tolist())
        if y[i]:
            tiles[spots] = rng.choice(pos_pool, len(spots), replace=False)
        where.append(spots if y[i] else [])
        for t, idx in enumerate(tiles):
            r, c = divmod(t, GRID)
            out[i, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = images[idx]
    return out, y, where


def write_folder(mosaics: np.ndarray, y: np.ndarray, out: Path) -> list[str]:
    """ImageFolder ``out/{no_platelet,platelet}/NNNN.png``; the relative paths in order."""
    from skimage.io import imsave

    paths = []
    for i, (im, label) in enumerate(zip(mosaics, y)):
        rel = f"{'platelet' if label else 'no_platelet'}/{i:04d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        imsave(out / rel, im, check_contrast=False)
        paths.append(rel)
    return paths


def cli(args: list[str], threads: int) -> tuple[float, float]:
    """Run ``napari-dlcb ARGS`` in a subprocess; wall and CPU seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_dlcb.cli", *args], check=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - t0, cpu


def heatmap_hit(hm: np.ndarray, spots: list[int]) -> bool:
    """Whether the map's maximum lies on one of the platelet tiles."""
    r, c = np.unravel_index(int(np.argmax(hm)), hm.shape)
    return int(r // TILE) * GRID + int(c // TILE) in spots


def run_seed(seed: int, a: argparse.Namespace, tmp: Path) -> dict:
    """Build the mosaics of one seed, train, predict, score."""
    import pandas as pd
    import tifffile

    data = shared_data() / "bloodmnist_28"
    npz = np.load(data / "bloodmnist_train_val.npz")
    platelet = platelet_index(data)
    rng = np.random.default_rng(seed)
    x, lab = npz["train_images"], npz["train_labels"].ravel()
    order = rng.permutation(len(x))
    tr_idx, va_idx = order[: int(0.85 * len(x))], order[int(0.85 * len(x)) :]
    splits = {
        "train": make_mosaics(x[tr_idx], lab[tr_idx], a.n_train, platelet, rng),
        "val": make_mosaics(x[va_idx], lab[va_idx], a.n_val, platelet, rng),
        "test": make_mosaics(npz["val_images"], npz["val_labels"].ravel(), a.n_test, platelet, rng),
    }
    root = tmp / f"seed{seed}"
    paths = {k: write_folder(m, y, root / k) for k, (m, y, _) in splits.items()}
    model = root / "model"
    train_wall, train_cpu = cli(
        ["train", "classification", "--mil", "--images", str(root / "train"),
         "--val", str(root / "val"), "--out", str(model), "--base", a.base,
         "--pooling", a.pooling, "--width", str(a.width), "--blocks", a.blocks,
         "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
         "--max-cpu-minutes", str(a.max_cpu_minutes), "--device", "cpu", "--seed", str(seed)],
        a.threads,
    )  # fmt: skip
    pred_wall, _ = cli(
        ["predict", "classification", "--model", str(model), "--images", str(root / "test"),
         "--out", str(root / "test.tsv"), "--heatmaps", str(root / "heatmaps"), "--device", "cpu"],
        a.threads,
    )  # fmt: skip
    table = pd.read_csv(root / "test.tsv", sep="\t").set_index("path")
    _, y_test, where = splits["test"]
    pred = np.array([table.loc[p, "predicted"] == "platelet" for p in paths["test"]], int)
    hits = [
        heatmap_hit(tifffile.imread(root / "heatmaps" / Path(p).with_suffix(".tif")), spots)
        for p, label, spots in zip(paths["test"], y_test, where)
        if label
    ]
    meta = json.loads((model / "metadata.json").read_text())
    return {
        "seed": seed,
        "accuracy": float((pred == y_test).mean()),
        "heatmap_hit_rate": float(np.mean(hits)),
        "n_test": int(len(y_test)),
        "n_positive_test": int(y_test.sum()),
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "predict_wall_s": pred_wall,
        "epochs_run": len(meta["extra"].get("history", [])),
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pooling", default="attention", choices=["attention", "noisy-and"])
    ap.add_argument("--n-train", type=int, default=600)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--base", default="none")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--blocks", default="1,1,1")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-cpu-minutes", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in a.seeds.split(",")):
            runs.append(run_seed(seed, a, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    acc = np.array([r["accuracy"] for r in runs])
    hit = np.array([r["heatmap_hit_rate"] for r in runs])
    record(
        f"mil_{a.pooling}",
        {
            "settings": vars(a),
            "runs": runs,
            "accuracy_mean": acc.mean(),
            "accuracy_min_max": [acc.min(), acc.max()],
            "heatmap_hit_mean": hit.mean(),
            "heatmap_hit_min_max": [hit.min(), hit.max()],
            "load_before": load_before,
        },
    )


if __name__ == "__main__":
    main()
