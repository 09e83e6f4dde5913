"""What live saliency costs a training run: patches per second with each method vs off.

The sample session (512x512 nuclei + scribbles), the built-in U-Net in quick
mode, CPU, a 512x512 viewport previewed once a second (as the GUI does). For
each live-saliency choice: wall-clock training throughput (patches per second
from the end of the first epoch to the last, previews and maps included),
number of maps delivered and the median seconds between them. The
reference is the same run with live saliency off, in the same process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tifffile

from napari_dlcb._sample_data import sample_data_dir
from napari_dlcb.tasks.segmentation import LIVE_SALIENCY, SegmentationTrainer
from napari_dlcb.training.events import EpochEnd, Preview

from _common import record


def run(method: str | None, img, scrib, epochs: int) -> dict:
    tr = SegmentationTrainer(
        [img],
        [scrib],
        label_kind="scribbles",
        base="builtin",
        mode="quick",
        device="cpu",
        seed=0,
        patch_size=256,  # the protocol of the recorded results: 256-px patches,
        epoch_seconds=3600,  # 32 per epoch, whole epochs
    )
    speeds, maps, ends = [], [], []
    t0 = time.perf_counter()
    for ev in tr.fit(
        epochs=epochs,
        batch_size=4,
        samples_per_epoch=32,
        early_stopping=None,
        preview_image=img,
        preview_region=lambda: (slice(0, 512), slice(0, 512)),
        preview_interval=1.0,
        preview_saliency=method,
    ):
        if isinstance(ev, EpochEnd):
            speeds.append(ev.samples_per_s)
            ends.append(time.perf_counter())
        if isinstance(ev, Preview) and isinstance(ev.data, dict) and "saliency" in ev.data:
            maps.append(time.perf_counter())
    gaps = np.diff(maps)
    return {
        # wall clock from the end of epoch 1 to the last epoch: training + previews + maps
        "wall_patches_per_s": 32 * (len(ends) - 1) / (ends[-1] - ends[0]),
        "engine_patches_per_s": float(np.median(speeds[1:] or speeds)),
        "maps": len(maps),
        "median_s_between_maps": float(np.median(gaps)) if len(gaps) else None,
        "total_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    d = sample_data_dir()
    img = tifffile.imread(d / "nuclei.tif")
    scrib = tifffile.imread(d / "nuclei_scribbles.tif")
    off = run(None, img, scrib, args.epochs)
    res = {"off": off}
    for method in LIVE_SALIENCY:
        r = run(method, img, scrib, args.epochs)
        r["wall_throughput_vs_off"] = r["wall_patches_per_s"] / off["wall_patches_per_s"]
        res[method] = r
        print(method, r, flush=True)
    record("live_saliency", res)


if __name__ == "__main__":
    main()
