"""Pretrain the built-in nuclei U-Net (``builtin:unet2d-nuclei``) on synthetic images.

Reproducible: every random number comes from ``--seed``. The model is a
:class:`napari_dlcb.models.unet.UNet2D` with three output classes (background,
nucleus interior, nucleus boundary), trained with class-weighted cross-entropy
on synthetic fluorescence nuclei from
:func:`napari_dlcb.data.synthetic.synthetic_nuclei` with broad variation of
size, density, blur, noise, illumination, per-nucleus brightness, gamma and
bit depth, and random crops of 128-256 px with flips and 90-degree rotations.
Each image is normalised on its own (1st/99.8th percentile), which is what the
metadata records, so users' images of any intensity range work.

It then chooses the post-processing thresholds on synthetic validation images,
evaluates on held-out synthetic images and on the real
``stardist_sample_nuclei_2d`` image (DSB2018, never used for training,
checkpoint or threshold selection), turning probabilities into instances with a seeded watershed, and
writes:

- ``napari_dlcb/models/weights/unet2d_nuclei.safetensors`` (float16 storage)
- ``napari_dlcb/models/weights/unet2d_nuclei.json`` (ModelMeta, with recipe and scores)
- ``napari_dlcb/models/weights/MODEL_CARD_unet2d_nuclei.md``

Usage (about 13 minutes on one core of a busy, shared 2-core machine)::

    python scripts/pretrain_unet.py              # train, evaluate, write the files
    python scripts/pretrain_unet.py --eval-only  # re-evaluate the shipped weights
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_dlcb.data.synthetic import synthetic_nuclei  # noqa: E402
from napari_dlcb.models.registry import WEIGHTS_DIR  # noqa: E402
from napari_dlcb.models.saved import ModelMeta, load_weights, save_weights  # noqa: E402
from napari_dlcb.models.unet import UNet2D  # noqa: E402

NAME = "unet2d_nuclei"
CLASSES = ["background", "interior", "boundary"]
NORMALIZATION = {"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8}
ARCH = {"in_channels": 1, "n_classes": 3, "base": 16, "depth": 4, "dropout": 0.1}
MIN_SIZE = 12  # pixels; smaller instances are dropped
FG_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SEED_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# ------------------------------------------------------------------------------- data
def normalize(img: np.ndarray, p_low: float = 1.0, p_high: float = 99.8) -> np.ndarray:
    """Per-image percentile normalisation (the ``per_image_percentile`` mode)."""
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [p_low, p_high])
    return ((img - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def targets_from_labels(labels: np.ndarray) -> np.ndarray:
    """Instance labels -> 0 background, 1 interior, 2 boundary (inner, 1 px)."""
    target = (labels > 0).astype(np.uint8)
    target[segmentation.find_boundaries(labels, mode="inner")] = 2
    return target


def random_image(seed: int, shape: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic training image with randomised acquisition and appearance."""
    rng = np.random.default_rng(seed)
    r_lo = rng.uniform(4.0, 11.0)
    r_hi = r_lo * rng.uniform(1.3, 2.0)
    density = rng.uniform(0.06, 0.4)
    n = max(1, int(density * shape[0] * shape[1] / (np.pi * (0.5 * (r_lo + r_hi)) ** 2)))
    blur = rng.uniform(0.6, 2.5)
    img, lab = synthetic_nuclei(
        shape,
        n_nuclei=n,
        radius=(r_lo, r_hi),
        touching=rng.uniform(0.05, 0.6),
        blur=blur,
        noise=float(np.exp(rng.uniform(np.log(0.005), np.log(0.15)))),
        illumination=rng.uniform(0.0, 1.2),
        seed=int(rng.integers(2**31)),
    )
    img = img.astype(np.float32)
    # per-nucleus brightness: a few very bright (mitotic-like) nuclei make dim ones
    # sit low after percentile normalisation, as in real widefield images
    n_lab = int(lab.max())
    if n_lab:
        gain = np.exp(rng.normal(0.0, rng.uniform(0.1, 0.5), n_lab + 1))
        bright = rng.random(n_lab + 1) < rng.uniform(0.0, 0.08)
        gain[bright] *= rng.uniform(2.0, 5.0, int(bright.sum()))
        gain[0] = 1.0
        grown = segmentation.expand_labels(lab, distance=int(math.ceil(2 * blur)))
        gmap = ndi.gaussian_filter(gain[grown].astype(np.float32), blur)
        img *= gmap
    # gamma, then a random intensity range and bit depth
    img /= max(float(img.max()), 1.0)
    img = img ** rng.uniform(0.7, 1.4)
    top = float(np.exp(rng.uniform(np.log(150.0), np.log(60000.0))))
    offset = rng.uniform(0.0, 0.1) * top
    img = np.round(img * top + offset)
    return img.astype(np.float32), lab


@dataclass
class Pool:
    """Pre-generated normalised images and their 3-class targets."""

    images: np.ndarray  # (N, Y, X) float32, normalised
    targets: np.ndarray  # (N, Y, X) uint8

    @classmethod
    def make(cls, seeds: list[int], shape: tuple[int, int]) -> Pool:
        ims, tgs = [], []
        for s in seeds:
            img, lab = random_image(s, shape)
            ims.append(normalize(img, NORMALIZATION["p_low"], NORMALIZATION["p_high"]))
            tgs.append(targets_from_labels(lab))
        return cls(np.stack(ims), np.stack(tgs))


def sample_batch(
    pool: Pool, rng: np.random.Generator, pixels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops (128-256 px, multiple of 16), flips and rot90, same size per batch."""
    side = int(rng.integers(8, 17)) * 16
    bs = max(2, pixels // (side * side))
    n, h, w = pool.images.shape
    xs, ys = [], []
    for _ in range(bs):
        i = int(rng.integers(n))
        r0, c0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        x = pool.images[i, r0 : r0 + side, c0 : c0 + side]
        y = pool.targets[i, r0 : r0 + side, c0 : c0 + side]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        # mild intensity jitter after normalisation (contrast, offset)
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.05, 0.05)
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return (
        torch.from_numpy(np.stack(xs)[:, None].astype(np.float32)),
        torch.from_numpy(np.stack(ys).astype(np.int64)),
    )


# ------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    """Softmax probabilities (3, Y, X) of one raw image."""
    x = torch.from_numpy(normalize(img, NORMALIZATION["p_low"], NORMALIZATION["p_high"]))
    return torch.softmax(model(x[None, None]), 1)[0].numpy()


def remove_small(lab: np.ndarray, min_size: int) -> np.ndarray:
    """Zero out labels with fewer than ``min_size`` pixels."""
    sizes = np.bincount(lab.ravel())
    small = sizes < min_size
    small[0] = False
    return np.where(small[lab], 0, lab)


def instances(prob: np.ndarray, *, fg_threshold=0.5, seed_threshold=0.5, min_size=12) -> np.ndarray:
    """Probabilities -> instances: interior seeds, watershed into the foreground."""
    fg = (1.0 - prob[0]) > fg_threshold
    seeds = remove_small(measure.label(prob[1] > seed_threshold), max(2, min_size // 4))
    lab = segmentation.watershed(-prob[1], markers=seeds, mask=fg)
    # foreground blobs that got no seed become their own instance
    rest = measure.label(fg & (lab == 0))
    lab = np.where(rest > 0, rest + lab.max(), lab)
    lab = remove_small(lab, min_size)
    return segmentation.relabel_sequential(lab)[0].astype(np.int32)


def matching(gt: np.ndarray, pred: np.ndarray, thresh: float = 0.5) -> dict:
    """Instance matching at IoU > thresh (unique for thresh >= 0.5)."""
    gt = segmentation.relabel_sequential(gt)[0]
    n_gt, n_pred = int(gt.max()), int(pred.max())
    both = (gt > 0) & (pred > 0)
    pairs, inter = np.unique(np.stack([gt[both], pred[both]]), axis=1, return_counts=True)
    area_gt = np.bincount(gt.ravel(), minlength=n_gt + 1)
    area_pr = np.bincount(pred.ravel(), minlength=n_pred + 1)
    iou = inter / (area_gt[pairs[0]] + area_pr[pairs[1]] - inter)
    tp = int((iou > thresh).sum())
    fp, fn = n_pred - tp, n_gt - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / max(n_pred, 1),
        "recall": tp / max(n_gt, 1),
        "ap": tp / max(tp + fp + fn, 1),
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
    }


def evaluate(prob: np.ndarray, gt: np.ndarray, post: dict) -> dict:
    fg_pred = (1.0 - prob[0]) > post["fg_threshold"]
    fg_gt = gt > 0
    iou = float((fg_pred & fg_gt).sum() / max((fg_pred | fg_gt).sum(), 1))
    lab = instances(prob, **post)
    m50 = matching(gt, lab, 0.5)
    aps = [matching(gt, lab, t)["ap"] for t in np.arange(0.5, 0.95, 0.05)]
    return {
        "foreground_iou": round(iou, 4),
        "ap50": round(m50["ap"], 4),
        "f1_50": round(m50["f1"], 4),
        "precision50": round(m50["precision"], 4),
        "recall50": round(m50["recall"], 4),
        "map_50_90": round(float(np.mean(aps)), 4),
        "n_true": int(len(np.unique(gt)) - 1),
        "n_pred": int(lab.max()),
    }


def choose_postprocess(model: torch.nn.Module, seed: int) -> dict:
    """Pick the thresholds on synthetic validation images (never on the real test image).

    Foreground threshold: best mean foreground IoU; then seed threshold: best
    mean AP@0.5.
    """
    model.eval()
    rng = np.random.default_rng(seed + 11)
    items = [random_image(int(rng.integers(2**31)) + 3 * 2**30, (384, 384)) for _ in range(8)]
    items += [synthetic_nuclei((384, 384), seed=50_000 + 97 * seed + i) for i in range(4)]
    probs = [(predict(model, img), lab) for img, lab in items]

    def score(post: dict, key: str) -> float:
        return float(np.mean([evaluate(p, lab, post)[key] for p, lab in probs]))

    post = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_size": MIN_SIZE}
    post["fg_threshold"] = max(
        FG_GRID, key=lambda t: score({**post, "fg_threshold": t}, "foreground_iou")
    )
    post["seed_threshold"] = max(
        SEED_GRID, key=lambda t: score({**post, "seed_threshold": t}, "ap50")
    )
    return post


def evaluate_all(model: torch.nn.Module, shared: Path | None, seed: int, post: dict) -> dict:
    model.eval()
    out: dict = {}
    syn = []
    for i in range(8):  # synthetic test images with the library defaults, unseen seeds
        img, lab = synthetic_nuclei((512, 512), seed=10_000 + 97 * seed + i)
        syn.append(evaluate(predict(model, img), lab, post))
    out["synthetic_default_512"] = {
        k: round(float(np.mean([s[k] for s in syn])), 4) for k in syn[0]
    }
    rng = np.random.default_rng(seed + 7)
    hard = []
    for _ in range(8):  # randomised like training, unseen seeds
        img, lab = random_image(int(rng.integers(2**31)) + 2**31, (384, 384))
        hard.append(evaluate(predict(model, img), lab, post))
    out["synthetic_varied_384"] = {
        k: round(float(np.mean([s[k] for s in hard])), 4) for k in hard[0]
    }
    if shared is not None and (shared / "stardist_sample_nuclei_2d").is_dir():
        import tifffile

        img = tifffile.imread(shared / "stardist_sample_nuclei_2d" / "img2d.tif")
        gt = tifffile.imread(shared / "stardist_sample_nuclei_2d" / "mask2d.tif")
        out["stardist_sample_nuclei_2d"] = evaluate(predict(model, img), gt, post)
        ref = shared / "bioimageio_unet2d_nuclei_broad"
        if ref.is_dir():
            out["reference_bioimageio_unet2d_nuclei_broad"] = reference_scores(ref, img, gt)
    return out


@torch.no_grad()
def reference_scores(package: Path, img: np.ndarray, gt: np.ndarray) -> dict:
    """The community bioimage.io nuclei U-Net on the same image (foreground only).

    Instances: connected components of the thresholded foreground, split by a
    distance-transform watershed, the usual post-processing for such models.
    """
    from napari_dlcb.models.bioimageio import load_bioimageio

    model, _ = load_bioimageio(package, trusted=True)  # the reference package in shared data
    x = img.astype(np.float32)
    x = (x - x.mean()) / (x.std() + 1e-6)
    p = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0].numpy()
    fg = p > 0.5
    fg_gt = gt > 0
    iou = float((fg & fg_gt).sum() / max((fg | fg_gt).sum(), 1))
    dist = ndi.distance_transform_edt(fg)
    peaks = measure.label(morphology.h_maxima(ndi.gaussian_filter(dist, 1.0), 1.0))
    lab = segmentation.watershed(-dist, markers=peaks, mask=fg)
    lab = remove_small(lab, MIN_SIZE)
    m = matching(gt, lab, 0.5)
    return {"foreground_iou": round(iou, 4), "ap50": round(m["ap"], 4), "f1_50": round(m["f1"], 4)}


# --------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> tuple[UNet2D, dict]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    base = 1_000_000 * (args.seed + 1)
    pool = Pool.make([base + i for i in range(args.pool)], (256, 256))
    val = Pool.make([base + 500_000 + i for i in range(args.val)], (192, 192))
    freq = np.bincount(pool.targets.ravel(), minlength=3) / pool.targets.size
    weights = 1.0 / np.sqrt(freq)
    weights = weights / (weights * freq).sum()  # expected weight per pixel = 1
    t_data = time.perf_counter() - t0
    print(f"data: {args.pool} + {args.val} images in {t_data:.1f}s, class freq {np.round(freq, 3)}")

    model = UNet2D(**ARCH).to(memory_format=torch.channels_last)  # ~30 % faster on CPU
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    cw = torch.tensor(weights, dtype=torch.float32)
    xv = torch.from_numpy(val.images[:, None])
    yv = torch.from_numpy(val.targets.astype(np.int64))
    best, best_state, log = math.inf, None, []
    running = 0.0
    t1 = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        x, y = sample_batch(pool, rng, args.batch_pixels)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y, weight=cw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                vl = float(
                    np.mean(
                        [
                            F.cross_entropy(model(xv[i : i + 4]), yv[i : i + 4], weight=cw)
                            for i in range(0, len(xv), 4)
                        ]
                    )
                )
            sched.step(vl)
            tl = running / args.eval_every
            running = 0.0
            lr = opt.param_groups[0]["lr"]
            log.append(
                {"step": step, "train_loss": round(tl, 4), "val_loss": round(vl, 4), "lr": lr}
            )
            if vl < best:
                best = vl
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            print(
                f"step {step:5d}  train {tl:.4f}  val {vl:.4f}  lr {lr:.2e}  "
                f"{time.perf_counter() - t1:6.0f}s",
                flush=True,
            )
    model.load_state_dict(best_state)
    recipe = {
        "seed": args.seed,
        "steps": args.steps,
        "pool_images": args.pool,
        "val_images": args.val,
        "pixels_per_batch": args.batch_pixels,
        "optimizer": f"Adam(lr={args.lr}), ReduceLROnPlateau(factor=0.5, patience=2) on val loss",
        "loss": "cross-entropy, class weights 1/sqrt(frequency)",
        "class_weights": [round(float(w), 4) for w in weights],
        "best_val_loss": round(best, 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "log": log,
    }
    return model, recipe


# ----------------------------------------------------------------------------- output
def write_outputs(model: UNet2D, recipe: dict, scores: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / f"{NAME}.safetensors", dtype=torch.float16)
    meta = ModelMeta(
        task="segmentation",
        architecture=model.architecture(),
        classes=CLASSES,
        label_kind="instances",
        class_values=None,
        normalization=dict(NORMALIZATION),
        input_axes="bcyx",
        in_channels=1,
        output_activation="softmax",
        parent=None,
        extra={
            "description": "U-Net for 2-D fluorescence nuclei, pretrained on synthetic images",
            "postprocess": recipe["postprocess"],
            "nucleus_radius_px": [4, 22],
            "training": recipe,
            "evaluation": scores,
            "model_card": f"MODEL_CARD_{NAME}.md",
        },
    )
    text = json.dumps({"format_version": 1, **meta.to_dict()}, indent=2)
    (out / f"{NAME}.json").write_text(text + "\n", encoding="utf-8")
    card = model_card(model, recipe, scores, (out / f"{NAME}.safetensors").stat().st_size)
    (out / f"MODEL_CARD_{NAME}.md").write_text(card, encoding="utf-8")


def _machine(recipe: dict) -> str:
    load = recipe.get("load_average_1min")
    cpus = recipe.get("cpu_count")
    where = f"on a {cpus}-core CPU" if cpus else "on a CPU"
    if load is None:
        return f"{where} shared with other jobs"
    return f"{where} shared with other jobs (1-min load average {load} at the end of training)"


def args_lr(recipe: dict) -> str:
    return recipe["optimizer"].split("lr=")[1].split(")")[0]


def _row(name: str, s: dict) -> str:
    cols = ("foreground_iou", "ap50", "f1_50", "precision50", "recall50", "map_50_90")
    vals = " | ".join(f"{s[c]:.3f}" if c in s else "–" for c in cols)
    n = f"{s['n_pred']:.0f} / {s['n_true']:.0f}" if "n_true" in s else "–"
    return f"| {name} | {vals} | {n} |"


def model_card(model: UNet2D, recipe: dict, scores: dict, n_bytes: int) -> str:
    """The model card, written from the numbers of this very run."""
    n_params = sum(p.numel() for p in model.parameters())
    post = recipe["postprocess"]
    rows = [
        _row(
            "synthetic, library defaults (8 x 512², unseen seeds)", scores["synthetic_default_512"]
        ),
        _row(
            "synthetic, randomised like training (8 x 384², unseen seeds)",
            scores["synthetic_varied_384"],
        ),
    ]
    if "stardist_sample_nuclei_2d" in scores:
        rows.append(
            _row(
                "**real: stardist_sample_nuclei_2d** (512², DSB2018)",
                scores["stardist_sample_nuclei_2d"],
            )
        )
    if "reference_bioimageio_unet2d_nuclei_broad" in scores:
        rows.append(
            _row(
                "reference: bioimage.io `unet2d_nuclei_broad` on the same real image",
                scores["reference_bioimageio_unet2d_nuclei_broad"],
            )
        )
    table = "\n".join(rows)
    return f"""# Model card: `builtin:unet2d-nuclei`

The default starting point for nuclei segmentation in napari-dlcb. A compact
2-D U-Net that predicts, for every pixel, the probability of **background**,
nucleus **interior** and nucleus **boundary**; a seeded watershed turns these
into instance labels. Users fine-tune it on their own images with a few
scribbles (quick mode trains the decoder on cached encoder features).

## Model

| | |
|---|---|
| architecture | `UNet2D(in_channels=1, n_classes=3, base=16, depth=4, dropout=0.1, batchnorm=True, upsample="bilinear")` |
| parameters | {n_params:,} |
| weights | `unet2d_nuclei.safetensors`, float16 storage ({n_bytes / 2**20:.1f} MiB), loaded as float32 |
| input | one channel, any size (padded internally to a multiple of 16), **each image normalised on its own**: `(x - p1) / (p99.8 - p1)` (`{{"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8}}`) |
| output | logits (B, 3, Y, X); softmax → background / interior / boundary |
| instances | foreground = `1 - p_background > {post["fg_threshold"]}`; seeds = connected components of `p_interior > {post["seed_threshold"]}`; watershed on `-p_interior` inside the foreground; unseeded foreground blobs become their own instance; instances under {post["min_size"]} px are dropped. Thresholds were chosen on synthetic validation images only. |
| licence | BSD-3-Clause, like napari-dlcb; trained only on synthetic data the project generates |

## Training data

Synthetic widefield fluorescence nuclei from `napari_dlcb.data.synthetic.synthetic_nuclei`,
{recipe["pool_images"]} images of 256 × 256 px, each from its own seed and its own random
acquisition: semi-axes from 4–11 px up to 1.3–2× that (equivalent radius about 4–22 px),
density 6–40 % of the area, 5–60 % touching/overlapping nuclei, blur σ 0.6–2.5 px, read
noise 0.5–15 %, illumination gradient 0–1.2; then per-nucleus brightness (log-normal,
plus up to 8 % very bright "mitotic-like" nuclei at 2–5×), gamma 0.7–1.4, and a random
intensity range of 150–60,000 counts with integer rounding (low bit depth). Targets:
`skimage.segmentation.find_boundaries(labels, mode="inner")` → boundary, other
nucleus pixels → interior. Validation for the learning-rate schedule and the choice
of the best step: {recipe["val_images"]} further synthetic images (192 px).
**No real image was used for training, checkpoint selection or threshold selection.**

## Recipe

- {recipe["steps"]} steps of Adam (lr {args_lr(recipe)}), `ReduceLROnPlateau(factor=0.5, patience=2)` on
  the validation loss every 50 steps; the best validation step is kept (best loss {recipe["best_val_loss"]}).
- Batches of about {recipe["pixels_per_batch"]:,} pixels: random crops of 128–256 px (multiples of 16),
  random 90° rotations and flips, contrast ×0.8–1.2 and offset ±0.05 after normalisation.
- Loss: cross-entropy with class weights {recipe["class_weights"]} (1/√frequency, background / interior / boundary).
- Seed {recipe["seed"]}; {recipe["threads"]} intra-op thread(s); torch {recipe["torch"]}; channels-last memory format.
- Wall time: {recipe["train_seconds"] / 60:.1f} min for data + training, {recipe["eval_seconds"] / 60:.1f} min for
  evaluation, {_machine(recipe)}.

Reproduce (same torch version and thread count give the same weights):

```bash
python scripts/pretrain_unet.py --seed {recipe["seed"]} --steps {recipe["steps"]} --threads {recipe["threads"]}
python scripts/pretrain_unet.py --eval-only   # re-score the shipped weights
```

## Evaluation

Foreground IoU is pixel-wise; AP@0.5 = TP / (TP + FP + FN) with a match when the
instance IoU exceeds 0.5 (the DSB2018 / StarDist "accuracy"); mAP averages AP over IoU
thresholds 0.5:0.05:0.9. The real image `stardist_sample_nuclei_2d` (512 × 512, 125 nuclei,
from DSB2018 via the StarDist package) was never seen in training.

| data | fg IoU | AP@0.5 | F1@0.5 | precision | recall | mAP 0.5–0.9 | instances (pred / true) |
|---|---|---|---|---|---|---|---|
{table}

The reference is the community bioimage.io U-Net (trained on real DSB2018 nuclei, foreground
only), run with its own z-score normalisation, threshold 0.5, and a distance-transform
watershed for instances.

## Intended use

- Fluorescence (bright nuclei on a dark background) 2-D images: DAPI, Hoechst, H2B-FP.
- A starting point for fine-tuning with a few scribbles in napari, and a quick first
  segmentation before any annotation.

## Limitations

- Trained on synthetic ellipses only: irregular, lobed or very textured nuclei, and
  dense tissue, are segmented less well; fine-tune on a few annotated crops.
- Expects nuclei of roughly 4–22 px radius; rescale images whose nuclei are much larger or
  smaller.
- Not for brightfield, phase contrast, H&E or membrane stains; not for 3-D stacks
  (use it slice by slice at most).
- Touching nuclei are separated only through the predicted boundary class; strongly
  overlapping nuclei merge.
- The real-image scores come from a single image with 125 nuclei: expect a few points of
  variation on other data. The augmentation ranges (notably the bright "mitotic" nuclei)
  were designed after looking at that image, so it is not a fully blind test.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--pool", type=int, default=512, help="synthetic training images (256 px)")
    p.add_argument("--val", type=int, default=16, help="synthetic validation images (192 px)")
    p.add_argument("--batch-pixels", type=int, default=8 * 128 * 128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=50)
    # One intra-op thread: on a shared 2-core machine two threads spin on OpenMP
    # barriers (measured 2.3 s vs 0.57 s per step under load); use 2+ when idle.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--eval-only", action="store_true", help="evaluate the weights in --out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = args.shared_data if args.shared_data.is_dir() else None

    if args.eval_only:
        meta = json.loads((args.out / f"{NAME}.json").read_text())
        model = UNet2D(**{k: v for k, v in meta["architecture"].items() if k != "name"})
        load_weights(model, args.out / f"{NAME}.safetensors")
        post = meta["extra"]["postprocess"]
        print(json.dumps(evaluate_all(model, shared, args.seed, post), indent=2))
        return 0

    model, recipe = train(args)
    # evaluate the weights as shipped (float16 storage)
    model = model.half().float()
    t = time.perf_counter()
    recipe["postprocess"] = post = choose_postprocess(model, args.seed)
    print(f"post-processing chosen on synthetic validation images: {post}")
    scores = evaluate_all(model, shared, args.seed, post)
    recipe["eval_seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(scores, indent=2))
    write_outputs(model, recipe, scores, args.out)
    print(f"wrote {args.out / NAME}.safetensors/.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
