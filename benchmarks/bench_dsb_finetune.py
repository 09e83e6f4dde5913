"""Built-in U-Net on held-out DSB2018 images: off the shelf, and fine-tuned on 5 through the CLI.

Issue 13's measurement. The test split of ``scripts/dsb2018_split.json`` (made by
``scripts/pretrain_unet.py``; the built-in never trained on it) has grey and RGB
images. For each repeat r, 5 grey test images (drawn with seed r) are copied
into a folder and the model is fine-tuned on them with the CLI::

    napari-dlcb train segmentation --images FT/images --labels FT/labels \
        --labels-kind instances --base builtin --out MODEL --seed r
    napari-dlcb predict segmentation --model MODEL --images SCORE --out PRED

and scored on the *other* grey test images (never on an image it trained on):
foreground IoU and AP@0.5 (matching at IoU 0.5, StarDist / DSB), mean over
images and pooled over objects. Off the shelf = the built-in exported as a model
folder and run through the same ``predict segmentation``.

``--builtin-dir DIR`` scores another set of built-in files (``unet2d_nuclei.json``
+ ``.safetensors``, e.g. the previous synthetic built-in from git history) the
same way: fine-tuning then starts from that model folder instead of ``builtin``.

Run: ``nice python benchmarks/bench_dsb_finetune.py [--repeats 3] [--threads 1]``
(about 10 min per repeat on 2 shared cores). Writes ``bench_out/dsb_finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import record

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from dsb2018 import DSB, NAME, load_split, score, summarise  # noqa: E402


def cli(*args: str, threads: int) -> float:
    """Run ``python -m napari_dlcb.cli`` with this checkout first on the path; wall seconds."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "napari_dlcb.cli", *args]
    print("$ napari-dlcb " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def copy_pairs(ids: list[str], folder: Path, *, labels: bool) -> Path:
    (folder / "images").mkdir(parents=True)
    if labels:
        (folder / "labels").mkdir()
    for i in ids:
        shutil.copy(DSB / "images" / f"{i}.png", folder / "images" / f"{i}.png")
        if labels:
            shutil.copy(DSB / "labels" / f"{i}.png", folder / "labels" / f"{i}.png")
    return folder


def export_builtin(weights_dir: Path, folder: Path) -> Path:
    """The built-in files as a napari-dlcb model folder (for ``predict segmentation``)."""
    import torch

    from napari_dlcb.models.saved import ModelMeta, build_model, load_weights, save_model

    meta = ModelMeta.from_dict(json.loads((weights_dir / f"{NAME}.json").read_text()))
    model = build_model(meta.architecture)
    load_weights(model, weights_dir / f"{NAME}.safetensors")
    return save_model(model.eval(), folder, meta, example_input=torch.zeros(1, 1, 64, 64))


def score_folder(pred_dir: Path, ids: list[str]) -> dict:
    import tifffile

    from napari_dlcb.io.images import read_image

    rows = []
    for i in ids:
        truth = np.asarray(read_image(DSB / "labels" / f"{i}.png")).astype(np.int32)
        rows.append(score(tifffile.imread(pred_dir / f"{i}.tif"), truth))
    return summarise(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-finetune", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=30, help="CLI --epochs (its default)")
    ap.add_argument("--builtin-dir", type=Path, default=None)
    ap.add_argument("--name", default="dsb_finetune")
    ap.add_argument("--limit", type=int, default=None, help="smoke test: first N grey images")
    args = ap.parse_args()
    split = load_split()
    with open(DSB / "index.csv") as f:
        channels = {ln.split(",")[0]: ln.split(",")[4] for ln in f.read().splitlines()[1:]}
    grey = [i for i in split["test"] if channels[i] == "1"][: args.limit]
    work = Path(tempfile.mkdtemp(prefix="bench_dsb_"))
    weights_dir = args.builtin_dir or ROOT / "napari_dlcb" / "models" / "weights"
    base_folder = export_builtin(weights_dir, work / "base_model")
    base = "builtin" if args.builtin_dir is None else str(base_folder)
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    score_dir = copy_pairs(grey, work / "all_grey", labels=False)
    cli(
        "predict",
        "segmentation",
        "--model",
        str(base_folder),
        "--images",
        str(score_dir / "images"),
        "--out",
        str(work / "pred_base"),
        "--device",
        "cpu",
        threads=args.threads,
    )
    off_all = score_folder(work / "pred_base", grey)
    runs = []
    for r in range(args.repeats):
        rng = np.random.default_rng(r)
        ft = sorted(rng.choice(grey, args.n_finetune, replace=False).tolist())
        rest = [i for i in grey if i not in ft]
        ft_dir = copy_pairs(ft, work / f"ft{r}", labels=True)
        model = work / f"model{r}"
        t_train = cli(
            "train",
            "segmentation",
            "--images",
            str(ft_dir / "images"),
            "--labels",
            str(ft_dir / "labels"),
            "--labels-kind",
            "instances",
            "--base",
            base,
            "--out",
            str(model),
            "--epochs",
            str(args.epochs),
            "--seed",
            str(r),
            "--device",
            "cpu",
            threads=args.threads,
        )
        rest_dir = copy_pairs(rest, work / f"rest{r}", labels=False)
        cli(
            "predict",
            "segmentation",
            "--model",
            str(model),
            "--images",
            str(rest_dir / "images"),
            "--out",
            str(work / f"pred{r}"),
            "--device",
            "cpu",
            threads=args.threads,
        )
        run = {
            "repeat": r,
            "finetune_ids": ft,
            "scored_images": len(rest),
            "off_the_shelf": score_folder(work / "pred_base", rest),
            "finetuned": score_folder(work / f"pred{r}", rest),
            "train_seconds": round(t_train, 1),
        }
        load.append(os.getloadavg()[0])
        print(json.dumps(run), flush=True)
        runs.append(run)
    keys = ("fg_iou", "ap50", "ap50_pooled", "map_50_95")
    mean = {
        kind: {k: round(float(np.mean([run[kind][k] for run in runs])), 4) for k in keys}
        for kind in ("off_the_shelf", "finetuned")
    }
    spread = {
        kind: {
            k: [min(run[kind][k] for run in runs), max(run[kind][k] for run in runs)] for k in keys
        }
        for kind in ("off_the_shelf", "finetuned")
    }
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": "builtin" if args.builtin_dir is None else str(args.builtin_dir),
        "grey_test_images": len(grey),
        "off_the_shelf_all_grey_test": off_all,
        "runs": runs,
        "mean": mean,
        "range": spread,
        "targets": {"fg_iou": 0.80, "ap50": 0.70},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_1min": [round(v, 2) for v in load],
        "threads": args.threads,
    }
    record(args.name, result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
