"""Training throughput of ``fit()`` against a plain PyTorch loop (target ratio >= 0.9).

Same model (the default U-Net), same data (random 256x256 patches held in memory),
same optimiser (Adam), same batch size and number of steps, same thread count.
Each is run twice alternately and the best time is kept, to reduce noise.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from napari_dlcb.models.unet import UNet2D
from napari_dlcb.training.engine import fit, masked_loss

from _common import record

STEPS, BATCH, SIZE = 12, 4, 256


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH, 1, SIZE, SIZE, generator=g)
    y = torch.randint(-1, 3, (STEPS * BATCH, SIZE, SIZE), generator=g)
    return TensorDataset(x, y)


def plain_loop(ds) -> float:
    torch.manual_seed(0)
    model = UNet2D(1, 3)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = masked_loss("cross_entropy")
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def engine(ds, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = UNet2D(1, 3)
    t0 = time.perf_counter()
    for _ in fit(
        model,
        ds,
        None,
        epochs=1,
        batch_size=BATCH,
        device="cpu",
        early_stopping=None,
        channels_last=channels_last,
    ):
        pass
    return time.perf_counter() - t0


def main() -> None:
    ds = data()
    plain_loop(ds)  # warm-up
    plain, same, fast = [], [], []
    for _ in range(2):
        plain.append(plain_loop(ds))
        same.append(engine(ds, channels_last=False))
        fast.append(engine(ds, channels_last=True))
    n = STEPS * BATCH
    p, e, f = n / min(plain), n / min(same), n / min(fast)
    record(
        "engine_throughput",
        {
            "plain_samples_per_s": p,
            "engine_samples_per_s_same_memory_format": e,
            "engine_samples_per_s_channels_last": f,
            "ratio_same_format": e / p,
            "ratio_channels_last": f / p,
            "steps": STEPS,
            "batch": BATCH,
            "patch": SIZE,
            "target": ">= 0.9",
        },
    )


if __name__ == "__main__":
    main()
