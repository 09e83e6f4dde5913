"""Fine-tune the built-in U-Net and the BioImage Model Zoo nuclei U-Net on real nuclei.

Data: ``stardist_sample_nuclei_2d`` (one 512x512 image, 125 instance labels).
Annotation: rows 0-255 (top half); evaluation: rows 256-511 (bottom half), which no
label touches (dense labels: training sees only the top-half crop). Two label budgets: sparse scribbles (every 16th row of the top half,
1 = background, 2 = nucleus; quick mode) and dense instance masks of the top half
(full mode). Reports foreground IoU and instance AP@0.5 before and after.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_dlcb.inference.metrics import average_precision, foreground_iou
from napari_dlcb.inference.postprocess import instances_from_probabilities
from napari_dlcb.inference.segment import segment
from napari_dlcb.io.images import read_image
from napari_dlcb.models.registry import resolve_base
from napari_dlcb.tasks.segmentation import SegmentationTrainer

from _common import record, shared_data

HALF = 256


def scores(labels, truth):
    return {
        "fg_iou": float(foreground_iou(labels > 0, truth > 0)),
        "ap50": float(average_precision(labels, truth, threshold=0.5)),
    }


def evaluate(model_meta, img, truth):
    prob, labels = segment(model_meta, img, device="cpu")
    if getattr(model_meta[1], "label_kind", None) != "instances":
        # a community foreground model without instance metadata: split the
        # foreground with the same distance-transform watershed the product uses
        labels = instances_from_probabilities(prob, mode="foreground")
    return scores(labels[HALF:], truth[HALF:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per run")
    args = ap.parse_args()
    d = shared_data()
    img = read_image(d / "stardist_sample_nuclei_2d" / "img2d.tif")
    truth = read_image(d / "stardist_sample_nuclei_2d" / "mask2d.tif").astype(np.int32)
    top = np.zeros_like(truth)
    top[:HALF] = truth[:HALF]
    scrib = np.zeros_like(truth)
    for r in range(4, HALF, 16):
        scrib[r] = np.where(truth[r] > 0, 2, 1)
    budgets = {
        "scribbles": {
            "labels": scrib,
            "kind": "scribbles",
            "mode": "quick",
            "pixels": int((scrib > 0).sum()),
        },
        "instances_top_half": {
            "labels": top,
            "kind": "instances",
            "mode": "full",
            "pixels": int(HALF * truth.shape[1]),
            "objects": int(len(np.unique(truth[:HALF])) - 1),
        },
    }
    from napari_dlcb.models.trust import trust_this_session

    trust_this_session(True)  # the zoo package in shared data is TorchScript (code): agreed to
    bases = {
        "builtin": "builtin",
        "bioimageio_unet2d_nuclei_broad": str(d / "bioimageio_unet2d_nuclei_broad"),
    }
    results = {}
    for bname, base in bases.items():
        before = evaluate(resolve_base(base), img, truth)
        results[bname] = {"before": before}
        for budget, cfg in budgets.items():
            t0 = time.perf_counter()
            # dense kinds have no "unlabelled" value: train on the annotated crop only
            crop = slice(0, HALF) if cfg["kind"] != "scribbles" else slice(None)
            tr = SegmentationTrainer(
                [img[crop]],
                [cfg["labels"][crop]],
                label_kind=cfg["kind"],
                base=base,
                mode=cfg["mode"],
                patch_size=128,
                device="cpu",
                seed=0,
            )
            fin = list(
                tr.fit(
                    epochs=200, batch_size=4, lr=1e-3, max_time=args.minutes * 60, early_stopping=20
                )
            )[-1]
            after = evaluate((tr.model, tr.meta), img, truth)
            results[bname][budget] = {
                "after": after,
                "train_seconds": time.perf_counter() - t0,
                "epochs": fin.epochs_run,
                "stop": fin.reason,
                "mode": cfg["mode"],
                "label_pixels": cfg["pixels"],
                **({"objects": cfg["objects"]} if "objects" in cfg else {}),
            }
            print(bname, budget, before, "->", after, flush=True)
    record("nuclei_finetune", {"protocol": __doc__.strip().splitlines()[2:6], **results})


if __name__ == "__main__":
    main()
