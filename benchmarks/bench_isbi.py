"""ISBI 2012 EM membranes through the CLI: train on slices 0-24, test on 25-29.

Target: pixel error <= 0.08 after at most 15 minutes of CPU training.
Reference: U-Net (Ronneberger et al. 2015) 0.0611 on the hidden test set.

Usage: python benchmarks/bench_isbi.py [--minutes 14] [--base builtin] [--extra "..."] [--seed 0]
       python benchmarks/bench_isbi.py --plain --minutes 15 --seed 1   # the CLI's defaults
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import add_user_options, record, shared_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--base", default="builtin")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--extra", default="")
    add_user_options(ap, "the data, --labels-kind classes, --seed, --device and --max-minutes")
    args = ap.parse_args()
    src = shared_data() / "isbi2012_em_membrane" / "train"
    from napari_dlcb.io.images import read_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for sub in ("img", "lab", "test", "pred"):
            (tmp / sub).mkdir()
        for i in range(30):
            dst = "img" if i < 25 else "test"
            (tmp / dst / f"{i}.png").symlink_to(src / "image" / f"{i}.png")
            if i < 25:
                (tmp / "lab" / f"{i}.png").symlink_to(src / "label" / f"{i}.png")
        model = tmp / "model"
        cli = [sys.executable, "-m", "napari_dlcb.cli"]
        t0 = time.perf_counter()
        train = [*cli, "train", "segmentation", "--images", str(tmp / "img")]
        train += ["--labels", str(tmp / "lab"), "--out", str(model), "--labels-kind", "classes"]
        train += ["--device", "cpu", "--max-minutes", str(args.minutes), "--seed", str(args.seed)]
        if not args.plain:
            train += ["--base", args.base, "--epochs", str(args.epochs), *shlex.split(args.extra)]
        subprocess.run(train, check=True)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(
            cli
            + [
                "predict",
                "segmentation",
                "--model",
                str(model),
                "--images",
                str(tmp / "test"),
                "--out",
                str(tmp / "pred"),
            ],
            check=True,
        )
        pred_s = time.perf_counter() - t0
        errs = []
        for i in range(25, 30):
            truth = read_image(src / "label" / f"{i}.png") > 127
            pred = read_image(tmp / "pred" / f"{i}.tif") > 127
            errs.append(float((truth != pred).mean()))
    record(
        "isbi2012",
        {
            "pixel_error": float(np.mean(errs)),
            "per_slice": errs,
            "train_seconds": train_s,
            "predict_seconds_5_slices": pred_s,
            "base": "(CLI default)" if args.plain else args.base,
            "budget_minutes": args.minutes,
            "extra": args.extra,
            "seed": args.seed,
            "plain": args.plain,
            "target": "<= 0.08",
            "reference_unet_hidden_test": 0.0611,
        },
    )


if __name__ == "__main__":
    main()
