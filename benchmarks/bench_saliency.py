"""Time per saliency map on a 512x512 viewport, beside one forward pass (same run).

Models: the default segmentation network (built-in ``unet2d-nuclei`` when its
weights are installed, else an untrained ``UNet2D`` with the default
architecture: identical cost) on the 512x512 sample nuclei image, target
class 1 summed over the viewport; and the built-in cell classifier on one
32x32 crop (per-cell saliency). Reports seconds and the ratio to one forward
pass, for each method with its default settings (occlusion: window 64,
stride 32 on the viewport, window 8 / stride 4 on the crop).

Usage::

    python benchmarks/bench_saliency.py [--threads 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

METHODS = ("gradients", "smoothgrad", "integrated-gradients", "gradcam", "occlusion")


def _time(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _load_unet():
    from napari_dlcb.models.registry import list_builtin, load_builtin

    if "unet2d-nuclei" in list_builtin():
        model, _ = load_builtin("unet2d-nuclei")
        return model, "builtin unet2d-nuclei"
    from napari_dlcb.models.unet import UNet2D

    return UNet2D().eval(), "UNet2D() default architecture (built-in weights not installed)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--models", default="unet,clf", help="comma-separated subset of unet,clf")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import captum.attr  # noqa: F401 - import once, outside the timings

    from napari_dlcb._sample_data import nuclei_sample
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.interpret.saliency import saliency
    from napari_dlcb.models.classifier import load_base

    (img, _, _), (lab, _, _) = nuclei_sample()
    img = np.asarray(img)[: a.size, : a.size]
    x = Normalizer(mode="per_image_zscore")(img)[0]
    unet, unet_name = _load_unet()
    clf, _, _ = load_base("builtin", in_channels=1, n_classes=4)
    clf.eval()
    lab = np.asarray(lab)[: a.size, : a.size]  # the same window as the image
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    from napari_dlcb.data.cells import object_crops

    crop = object_crops(img, lab, size=32, ids=[int(ids[counts.argmax()])]).crops[0, 0]
    crop = (crop - crop.mean()) / (crop.std() + 1e-6)
    settings = {
        "unet": {
            "window": 64,
            "stride": 32,
            "n_samples": 16,
            "n_steps": 32,
            "batch_size": 4,
            "target": 1,
        },
        "clf": {
            "window": 8,
            "stride": 4,
            "n_samples": 16,
            "n_steps": 32,
            "batch_size": 8,
            "target": 0,
        },
    }
    rows = []
    for name, model, inp in (("unet", unet, x), ("clf", clf, crop)):
        if name not in a.models.split(","):
            continue
        saliency(model, inp, method="gradients", **settings[name])  # warm-up (autograd, captum)
        xt = torch.from_numpy(np.ascontiguousarray(inp, np.float32))[None, None]
        with torch.no_grad():
            model(xt)  # warm-up
            fwd = _time(lambda m=model, t=xt: m(t), a.repeat)
        rows.append((name, "forward", fwd, 1.0))
        for method in METHODS:
            rep = (
                1
                if (
                    name == "unet" and method in ("occlusion", "integrated-gradients", "smoothgrad")
                )
                else a.repeat
            )
            dt = _time(
                lambda m=model, i=inp, me=method, s=settings[name]: saliency(m, i, method=me, **s),
                rep,
            )
            rows.append((name, method, dt, dt / fwd))
            print(f"{name:5s} {method:22s} {dt:8.3f} s  {dt / fwd:8.1f} x forward", flush=True)
    print(
        f"\nmodels: {unet_name} on {img.shape[0]}x{img.shape[1]}; builtin cellclf-nuclei on 32x32; "
        f"torch threads {a.threads}"
    )
    print("| model | method | seconds | x forward |\n|---|---|---|---|")
    for name, method, dt, ratio in rows:
        label = f"U-Net {a.size}x{a.size} viewport" if name == "unet" else "classifier 32x32 crop"
        print(f"| {label} | {method} | {dt:.3f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
