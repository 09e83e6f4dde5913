"""Seconds from pressing Train to the first live overlay, quick vs full mode.

The sample session (512x512 nuclei + scribbles), the built-in U-Net, CPU. The
preview predicts a 512x512 viewport, as the GUI does. Also reports the decoder-only
training throughput against full fine-tuning (patches per second).
"""

from __future__ import annotations

import time

import tifffile

from napari_dlcb._sample_data import sample_data_dir
from napari_dlcb.tasks.segmentation import SegmentationTrainer
from napari_dlcb.training.events import EpochEnd, Preview

from _common import record


def run(mode: str, img, scrib) -> dict:
    t0 = time.perf_counter()
    tr = SegmentationTrainer(
        [img], [scrib], label_kind="scribbles", base="builtin", mode=mode, device="cpu", seed=0
    )
    first = None
    speeds = []
    for ev in tr.fit(
        epochs=3,
        batch_size=4,
        preview_image=img,
        preview_region=lambda: (slice(0, 512), slice(0, 512)),
        preview_interval=1.0,
    ):
        if isinstance(ev, Preview) and first is None:
            first = time.perf_counter() - t0
        if isinstance(ev, EpochEnd):
            speeds.append(ev.samples_per_s)
    return {
        "first_overlay_s": first,
        "patches_per_s": max(speeds),
        "total_s": time.perf_counter() - t0,
    }


def main() -> None:
    d = sample_data_dir()
    img = tifffile.imread(d / "nuclei.tif")
    scrib = tifffile.imread(d / "nuclei_scribbles.tif")
    quick, full = run("quick", img, scrib), run("full", img, scrib)
    record(
        "first_overlay",
        {
            "quick": quick,
            "full": full,
            "speedup_patches_per_s": quick["patches_per_s"] / full["patches_per_s"],
        },
    )


if __name__ == "__main__":
    main()
