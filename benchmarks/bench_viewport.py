"""Live-preview latency: ``predict_viewport`` for a viewport vs one plain forward pass.

The default segmentation model (the built-in U-Net if installed, otherwise a
freshly initialised ``UNet2D()`` of the same default architecture) on CPU.
For 512x512 and 1024x1024 viewports in the middle of a 4096x4096 synthetic
nuclei image we time:

* ``forward``: ``model(x)`` on a (1, 1, h, w) tensor of the viewport size
  (eval mode, ``torch.inference_mode``): the irreducible cost;
* ``region``: ``predict_viewport`` with a normaliser frozen once beforehand, as
  the GUI does (reading the viewport plus a 32 px halo, normalising, the
  forward pass on the padded window, softmax, blending, copying back);
* ``region_cold``: the same with an unfrozen per-image normaliser, which
  first computes statistics of the whole 4096x4096 image;
* ``forward_window``: ``model(x)`` on the window predict_viewport really feeds
  the model (viewport + 2 x 32 px halo, rounded up to a multiple of 32).

``region / forward`` is the whole overhead of the halo, tiling,
normalisation and blending; ``region / forward_window`` the part that is not
the halo's extra pixels. Medians of ``--repeats`` round-robin runs after one
warm-up.

Also reports how far 256 px tiles (32 px halo) are from one pass over a
640 x 640 crop, with hard cuts (``overlap=0``) and with the cosine blend.

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


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run round-robin so load drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.data.synthetic import synthetic_nuclei
    from napari_dlcb.inference.tiled import freeze_normalizer, predict_tiled, predict_viewport

    model, norm_dict, model_name = default_model()
    image = np.tile(synthetic_nuclei((1024, 1024), seed=0)[0], (4, 4))  # 4096 x 4096
    normalizer = Normalizer.from_dict(norm_dict)
    frozen = freeze_normalizer(normalizer, image)
    results = {"model": model_name, "image": list(image.shape), "repeats": args.repeats}
    for side in (512, 1024):
        r0 = c0 = (image.shape[0] - side) // 2
        region = (slice(r0, r0 + side), slice(c0, c0 + side))
        window = -(-(side + 2 * 32) // 32) * 32  # what predict_viewport feeds the model

        def forward(n):
            x = torch.randn(1, 1, n, n)
            with torch.inference_mode():
                model(x)

        t = interleaved_medians(
            {
                "forward": lambda side=side: forward(side),
                "forward_window": lambda window=window: forward(window),
                "region": lambda region=region: predict_viewport(
                    model, image, region, device="cpu", normalizer=frozen
                ),
                "region_cold": lambda region=region: predict_viewport(
                    model, image, region, device="cpu", normalizer=normalizer
                ),
            },
            args.repeats,
        )
        results[f"{side}"] = {
            **{f"{k}_s": v for k, v in t.items()},
            "window": window,
            "overhead_ratio": t["region"] / t["forward"],
            "overhead_vs_window_ratio": t["region"] / t["forward_window"],
            "cold_ratio": t["region_cold"] / t["forward"],
        }
    # seams: 256 px tiles (hard cut vs cosine blend) against one pass over a 640 px crop
    crop = image[:640, :640]
    whole = predict_tiled(model, crop, tile=None, device="cpu", normalizer=normalizer)
    for overlap in (0, 32):
        tiled = predict_tiled(
            model, crop, tile=256, overlap=overlap, device="cpu", normalizer=normalizer
        )
        results[f"tiles256_overlap{overlap}_max_abs_diff"] = float(np.abs(tiled - whole).max())
        results[f"tiles256_overlap{overlap}_mean_abs_diff"] = float(np.abs(tiled - whole).mean())
    record("viewport", results)


if __name__ == "__main__":
    main()
