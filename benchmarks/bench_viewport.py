"""Live-preview latency: ``predict_region`` for a viewport vs one plain forward pass.

The default segmentation model (the built-in U-Net if installed, otherwise a
freshly initialised ``UNet2D()`` of the same default architecture) on CPU.
For 512x512 and 1024x1024 viewports in the middle of a 4096x4096 synthetic
nuclei image we time:

* ``forward``: ``model(x)`` on a (1, 1, h, w) tensor of the viewport size
  (eval mode, ``torch.inference_mode``): the irreducible cost;
* ``region``: ``predict_region`` with a normaliser frozen once beforehand, as
  the GUI does (reading the viewport plus a 32 px halo, normalising, the
  forward pass on the padded window, softmax, blending, copying back);
* ``region_cold``: the same with an unfrozen per-image normaliser, which
  first computes statistics of the whole 4096x4096 image.

The ratio ``region / forward`` is the overhead of tiling, halo, normalisation
and blending. Medians of ``--repeats`` runs after one warm-up.

    python benchmarks/bench_viewport.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from _common import record


def default_model():
    try:
        from napari_dlcb.models.registry import list_builtin, load_builtin

        if "unet2d-nuclei" in list_builtin():
            model, meta = load_builtin("unet2d-nuclei", device="cpu")
            return model, meta.normalization, "builtin:unet2d-nuclei"
    except ImportError:
        pass
    from napari_dlcb.models.unet import UNet2D

    return UNet2D().eval(), {"mode": "per_image_zscore"}, "UNet2D() (untrained, default size)"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.data.synthetic import synthetic_nuclei
    from napari_dlcb.inference.tiled import freeze_normalizer, predict_region

    model, norm_dict, model_name = default_model()
    image = np.tile(synthetic_nuclei((1024, 1024), seed=0)[0], (4, 4))  # 4096 x 4096
    normalizer = Normalizer.from_dict(norm_dict)
    frozen = freeze_normalizer(normalizer, image)
    results = {"model": model_name, "image": list(image.shape), "repeats": args.repeats}
    for side in (512, 1024):
        r0 = c0 = (image.shape[0] - side) // 2
        region = (slice(r0, r0 + side), slice(c0, c0 + side))
        x = torch.randn(1, 1, side, side)

        def forward(x=x):
            with torch.inference_mode():
                model(x)

        def region_warm(region=region):
            predict_region(model, image, region, device="cpu", normalizer=frozen)

        def region_cold(region=region):
            predict_region(model, image, region, device="cpu", normalizer=normalizer)

        t_forward = median_time(forward, args.repeats)
        t_region = median_time(region_warm, args.repeats)
        t_cold = median_time(region_cold, max(1, args.repeats // 2))
        results[f"{side}"] = {
            "forward_s": t_forward,
            "region_s": t_region,
            "region_cold_s": t_cold,
            "overhead_ratio": t_region / t_forward,
            "cold_ratio": t_cold / t_forward,
        }
    record("viewport", results)


if __name__ == "__main__":
    main()
