"""Bounded memory of block-wise prediction: ``predict_zarr`` on the 8k x 8k nuclei mosaic.

Runs :func:`napari_dlcb.inference.segment.segment_zarr` (probabilities as
uint8 plus stitched instance labels) over the full-resolution level of the
OME-Zarr mosaic from :func:`napari_dlcb._sample_data.mosaic_path` (generated
into the user cache first if missing), in a fresh subprocess, and reports:

* peak RSS of that process (``psutil`` sampled every 50 ms, and
  ``getrusage`` max RSS), its RSS just before prediction starts (Python, torch,
  the model), and the difference, against the size of the image and of the
  float32 probabilities an in-memory ``predict_tiled`` would hold;
* with the built-in model, the object-level average precision of the stitched
  instance labels against the mosaic's ground truth (AP at IoU 0.5/0.7/0.9);
* wall time per stage (predict / instances / relabel), against the time
  spent inside the model's forward passes during that same run (the model is
  wrapped in a timer): the ratio is the overhead of reading, normalising,
  blending, encoding and writing. Also given: a plain forward pass on a
  (1, 1, 1088, 1088) tensor (a 1024 block plus its 32 px halo, median of 3)
  times the number of blocks.

Model: the built-in U-Net if installed, otherwise a freshly initialised
``UNet2D()`` (same default architecture and cost; labels are then meaningless
but the memory and time are the same).

    python benchmarks/bench_tiled_zarr.py [--size 8192] [--crop 4096]

``--crop N`` predicts only the top-left N x N pixels (for a slow machine; the
result is then labelled as a crop and extrapolated by area).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def child(args: argparse.Namespace) -> None:
    import resource

    import psutil

    proc = psutil.Process()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()

    import dask.array as da
    import torch

    from napari_dlcb.inference.segment import segment_zarr
    from napari_dlcb.io.omezarr import read_zarr
    from napari_dlcb.models.meta import ModelMeta

    try:
        from napari_dlcb.models.registry import list_builtin, load_builtin

        builtin = "unet2d-nuclei" in list_builtin()
    except ImportError:
        builtin = False
    if builtin:
        model, meta = load_builtin("unet2d-nuclei", device="cpu")
        name = "builtin:unet2d-nuclei"
    else:
        from napari_dlcb.models.unet import UNet2D

        model = UNet2D().eval()
        meta = ModelMeta(
            "segmentation",
            model.architecture(),
            ["background", "interior", "boundary"],
            label_kind="instances",
            normalization={"mode": "per_image_zscore"},
        )
        name = "UNet2D() (untrained, default size)"

    class Timed(torch.nn.Module):
        """The model, timing its own forward passes (the compute floor of this very run)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.multiple = getattr(inner, "multiple", None)
            self.seconds = 0.0
            self.calls = 0

        def forward(self, x):
            t0 = time.perf_counter()
            y = self.inner(x)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            return y

    model = Timed(model)
    source = read_zarr(args.mosaic)  # lazy dask array, chunked like the store
    if args.crop:
        source = source[: args.crop, : args.crop]
    assert isinstance(source, da.Array)
    side = 1024 + 2 * 32
    with torch.inference_mode():
        model(torch.zeros(1, 1, side, side))  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model(torch.zeros(1, 1, side, side))
            times.append(time.perf_counter() - t0)
        forward_s = sorted(times)[1]
    model.seconds, model.calls = 0.0, 0

    rss_before = proc.memory_info().rss
    stages: dict[str, float] = {}
    t_start = last = time.perf_counter()
    n_blocks = 0
    for event in segment_zarr((model, meta), source, args.dest, block=1024, halo=32, device="cpu"):
        now = time.perf_counter()
        stages[event["stage"]] = stages.get(event["stage"], 0.0) + now - last
        last = now
        if event["stage"] == "predict":
            n_blocks += 1
    wall = time.perf_counter() - t_start
    stop.set()
    peak_rss = max(peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    import zarr

    labels = zarr.open_group(args.dest, mode="r")["labels/segmentation/0"]
    n_objects = int(max(labels[i : i + 1024].max() for i in range(0, labels.shape[0], 1024)))
    shape = tuple(int(n) for n in source.shape)
    print(
        json.dumps(
            {
                "model": name,
                "shape": shape,
                "blocks": n_blocks,
                "objects": n_objects,
                "rss_before_prediction_gb": rss_before / 1e9,
                "peak_rss_gb": peak_rss / 1e9,
                "prediction_rss_gb": (peak_rss - rss_before) / 1e9,
                "image_in_memory_gb": shape[0] * shape[1] * source.dtype.itemsize / 1e9,
                "float32_image_and_probabilities_gb": shape[0] * shape[1] * 4 * 4 / 1e9,
                "wall_s": wall,
                "stage_s": stages,
                "forward_1088_s": forward_s,
                "forward_1088_x_blocks_s": forward_s * n_blocks,
                "model_forward_in_run_s": model.seconds,
                "model_calls": model.calls,
                "predict_over_forward_in_run": stages["predict"] / model.seconds,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--crop", type=int, default=0)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--mosaic", default="")
    parser.add_argument("--dest", default="")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(HERE))
    from napari_dlcb._sample_data import mosaic_path

    from _common import record

    t0 = time.perf_counter()
    mosaic = mosaic_path(size=args.size)
    make_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="bench_tiled_zarr_"))
    try:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--mosaic",
            str(mosaic),
            "--dest",
            str(tmp / "pred.ome.zarr"),
            "--crop",
            str(args.crop),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode:
            raise SystemExit(done.stderr[-4000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["store_size_gb"] = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 1e9
        if result["model"].startswith("builtin"):  # accuracy of the stitched instances
            import zarr

            from napari_dlcb.inference.metrics import average_precision

            n = args.crop or args.size
            pred = zarr.open_group(str(tmp / "pred.ome.zarr"), mode="r")["labels/segmentation/0"]
            truth = zarr.open_group(str(mosaic), mode="r")["labels/nuclei/0"]
            ap = average_precision(pred[:n, :n], truth[:n, :n], [0.5, 0.7, 0.9])
            result["ap_vs_ground_truth"] = dict(zip(("ap50", "ap70", "ap90"), ap.tolist()))
            result["true_objects"] = int(len(np.unique(truth[:n, :n])) - 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["mosaic"] = f"{args.size} x {args.size}" + (
        f", top-left {args.crop} crop" if args.crop else ""
    )
    result["mosaic_ready_s"] = make_s
    if args.crop:
        scale = (args.size / args.crop) ** 2
        result["extrapolated_full_wall_s"] = result["wall_s"] * scale
    record("tiled_zarr" + (f"_crop{args.crop}" if args.crop else ""), result)


if __name__ == "__main__":
    main()
