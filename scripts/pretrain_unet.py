"""Pretrain the built-in nuclei U-Net (``builtin:unet2d-nuclei``) on real DSB2018 nuclei.

Data: ``../shared/data/dsb2018_stage1_train_nuclei``, the Data Science Bowl 2018
stage-1 training set (BBBC038, CC0; 664 images with instance labels: 557 grey
fluorescence or brightfield, 107 RGB brightfield/histology). A seeded split,
stratified by the number of channels, gives 75 % train / 10 % validation / 15 %
test; its ids are written to ``scripts/dsb2018_split.json`` and the model card.
Image ``4dbbb275960ab9e4`` is put in the test split whatever the draw: the
``stardist_sample_nuclei_2d`` image is a 512 x 512 crop of it (same mask, pixel
correlation 0.98), so that sample stays an unseen image.

Input convention (what the metadata records, and what users' images get): one
grey channel, each image normalised on its own to its 1st / 99.8th percentiles.
RGB images become grey as the mean of R, G and B. Nuclei darker than their
background (all RGB and 16 grey brightfield images, decided per image from the
labels) are shown to the network in both polarities, as is (dark nuclei, what a
user's brightfield image looks like) and inverted (bright nuclei), half the
time each, so the model works on either without a user choice.

Training: :class:`napari_dlcb.models.unet.UNet2D` with three classes
(background, interior, boundary = ``find_boundaries(mode="inner")``, the
package's ``make_target(..., "instances")``), class-weighted cross-entropy,
Adam with warm-up and cosine decay, random crops of 128-256 px around nuclei,
zoom 0.7-1.5x, flips, 90-degree rotations, gain / offset / gamma, blur and
noise. The best step on the validation crops is kept. Post-processing
thresholds are chosen on the validation images (mean AP@0.5), then the model is
scored on the test images (never trained on, never used for a choice).

Resumable and time-budgeted: a checkpoint (safetensors + JSON, no pickle) is
written every ``--checkpoint-every`` steps to ``--run-dir``; running the same
command again continues from it; ``--minutes`` stops training early (the
schedule is by step, so an interrupted and resumed run gives the same weights
as an uninterrupted one with the same thread count).

Usage (run under ``nice``; about 90 min on 2 shared CPU cores)::

    nice -n 19 python scripts/pretrain_unet.py --threads 2
    python scripts/pretrain_unet.py --eval-only   # re-score the shipped weights
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from dsb2018 import (  # noqa: E402
    ARCH,
    CARD,
    CLASSES,
    DSB,
    NAME,
    NORMALIZATION,
    SPLIT_FILE,
    evaluate_images,
    load_dsb,
    make_meta,
    make_split,
    normalize,
    predict_prob,
    write_card,
)

from napari_dlcb.data.labels import make_target  # noqa: E402
from napari_dlcb.models.registry import WEIGHTS_DIR  # noqa: E402
from napari_dlcb.models.saved import load_weights, save_weights  # noqa: E402
from napari_dlcb.models.unet import UNet2D  # noqa: E402
from napari_dlcb.training.checkpoint import load_checkpoint, write_checkpoint  # noqa: E402

#: the previous built-in, trained on synthetic nuclei only (scripts/pretrain_unet.py at
#: that commit): a warm start that the CPU budget needed (see the model card)
INIT = "git:7a368bf"
ZOOM = (0.7, 1.5)
SIDES = (128, 160, 192, 224, 256)
# 0.75-0.9 added on 2026-12-03: the first search picked 0.7, the grid's upper edge
FG_GRID = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
SEED_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
MIN_SIZE_GRID = (10, 20, 30)


# ------------------------------------------------------------------------------- data
class Pool:
    """Training images (normalised, float16), their labels and nucleus centres."""

    def __init__(self, items: list[dict]):
        self.images = [normalize(it["grey"]).astype(np.float16) for it in items]
        self.labels = [it["labels"].astype(np.int32) for it in items]
        self.dark = [bool(it["dark"]) for it in items]
        self.centres = []
        for lab in self.labels:
            n = int(lab.max())
            c = ndi.center_of_mass(lab > 0, lab, range(1, n + 1)) if n else []
            self.centres.append(np.round(np.array(c, float).reshape(-1, 2)).astype(int))


def _crop(arr: np.ndarray, r0: int, c0: int, size: int, fill) -> np.ndarray:
    """A size x size window at (r0, c0), padded with ``fill`` where it leaves ``arr``."""
    out = np.full((size, size), fill, arr.dtype)
    h, w = arr.shape
    a0, b0 = max(r0, 0), max(c0, 0)
    a1, b1 = min(r0 + size, h), min(c0 + size, w)
    if a1 > a0 and b1 > b0:
        out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = arr[a0:a1, b0:b1]
    return out


def sample_one(pool: Pool, rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (side x side) crop and its 3-class target (-1 = outside the image)."""
    i = int(rng.integers(len(pool.images)))
    img, lab = pool.images[i], pool.labels[i]
    h, w = lab.shape
    zoom = float(np.exp(rng.uniform(*np.log(ZOOM))))
    src = max(16, int(round(side / zoom)))
    cen = pool.centres[i]
    if len(cen) and rng.random() < 0.85:
        r, c = cen[rng.integers(len(cen))] + rng.integers(-src // 3, src // 3 + 1, 2)
    else:
        r, c = rng.integers(h), rng.integers(w)
    r0 = int(np.clip(r - src // 2, min(0, h - src), max(0, h - src)))
    c0 = int(np.clip(c - src // 2, min(0, w - src), max(0, w - src)))
    inside = _crop(np.ones_like(lab, dtype=bool), r0, c0, src, False)
    x = _crop(img.astype(np.float32), r0, c0, src, 0.0)
    if not inside.all():  # mirror the image into the padding; the target ignores it
        x = np.where(inside, x, np.flip(x))
    y = _crop(lab, r0, c0, src, 0)
    idx = np.minimum(((np.arange(side) + 0.5) * src / side).astype(int), src - 1)
    y, inside = y[np.ix_(idx, idx)], inside[np.ix_(idx, idx)]
    if src != side:
        t = torch.from_numpy(x)[None, None]
        x = F.interpolate(t, size=(side, side), mode="bilinear", antialias=src > side)[0, 0].numpy()
    target = make_target(y, "instances", [0, 1, 2])
    target[~inside] = -1
    k = int(rng.integers(4))
    x, target = np.rot90(x, k), np.rot90(target, k)
    if rng.random() < 0.5:
        x, target = x[:, ::-1], target[:, ::-1]
    return _intensity(np.ascontiguousarray(x), rng, pool.dark[i]), np.ascontiguousarray(target)


def _intensity(x: np.ndarray, rng: np.random.Generator, dark: bool) -> np.ndarray:
    """Polarity (dark-nuclei images only), blur, gain/offset/gamma and noise."""
    if dark and rng.random() < 0.5:
        x = 1.0 - x
    if rng.random() < 0.2:
        x = ndi.gaussian_filter(x, rng.uniform(0.5, 1.5))
    x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        x = np.sign(x) * np.abs(x) ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.3:
        x = x + rng.normal(0.0, rng.uniform(0.01, 0.08), x.shape)
    return x.astype(np.float32)


def sample_batch(pool: Pool, rng: np.random.Generator, pixels: int):
    side = int(rng.choice(SIDES))
    pairs = [sample_one(pool, rng, side) for _ in range(max(2, pixels // side**2))]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return x, y


def val_crops(items: list[dict], side: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed centre crop per validation image (the training loss's yardstick)."""
    xs, ys = [], []
    for it in items:
        x, lab = normalize(it["grey"]), it["labels"]
        h, w = lab.shape
        r0, c0 = (h - side) // 2, (w - side) // 2
        xs.append(_crop(x, r0, c0, side, 0.0))
        t = make_target(_crop(lab, r0, c0, side, 0), "instances", [0, 1, 2])
        t[~_crop(np.ones_like(lab, bool), r0, c0, side, False)] = -1
        ys.append(t)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


# --------------------------------------------------------------------------- training
def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up for 200 steps, then cosine decay to 1 % of ``--lr``."""
    if step < 200:
        return args.lr * (step + 1) / 200
    t = (step - 200) / max(1, args.steps - 200)
    return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _val_loss(model, xv, yv, cw) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            F.cross_entropy(model(xv[i : i + 8]), yv[i : i + 8], weight=cw, ignore_index=-1)
            for i in range(0, len(xv), 8)
        ]
    model.train()
    return float(torch.stack(losses).mean())


def recalibrate_batchnorm(model, pool: Pool, rng: np.random.Generator, args) -> None:
    """Set BatchNorm running statistics to their average over many training batches.

    While training, the running statistics follow the last few batches (momentum 0.1);
    with batches of 2-6 crops of very different images (fluorescence, brightfield) they
    swing, and the validation loss with them (0.28 -> 0.41 between the last two
    checkpoints). A cumulative average over ``args.bn_batches`` augmented training
    batches (dropout off, no gradient) gives the statistics the model is used with.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
        m.train()
    with torch.no_grad():
        for _ in range(args.bn_batches):
            model(sample_batch(pool, rng, args.batch_pixels)[0])
    for m in bns:
        m.momentum = 0.1
    model.eval()


def train(args: argparse.Namespace, split: dict, items: dict) -> tuple[UNet2D, dict]:
    """Train (or resume) for ``args.steps`` steps; return the best model and the recipe."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pool = Pool([items[i] for i in split["train"]])
    xv, yv = val_crops([items[i] for i in split["val"]])
    freq = np.bincount(
        np.concatenate([make_target(lab, "instances", [0, 1, 2]).ravel() for lab in pool.labels]),
        minlength=3,
    )
    freq = freq / freq.sum()
    weights = 1.0 / np.sqrt(freq)
    weights = weights / (weights * freq).sum()
    cw = torch.tensor(weights, dtype=torch.float32)
    # plain NCHW: with 2 threads on a shared CPU channels-last was 3-8x slower (measured)
    model = UNet2D(**ARCH)
    if args.init:
        load_init(model, args.init)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ckdir = args.run_dir
    ckdir.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "best": math.inf, "best_step": 0, "log": [], "seconds": 0.0}
    best_state = None
    if (ckdir / "trainer_state.json").exists():
        state, best_state = load_checkpoint(ckdir, model, opt, torch.device("cpu"))
        rng.bit_generator.state = state.pop("numpy_rng")
        torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
        state.pop("optimizer", None)
        print(f"resumed at step {state['step']} from {ckdir}", flush=True)
    t_start, running, n_run = time.perf_counter(), 0.0, 0
    seconds0 = state["seconds"]
    model.train()
    while state["step"] < args.steps:
        if args.minutes and time.perf_counter() - t_start > 60 * args.minutes:
            print(f"time budget reached at step {state['step']}; run again to resume", flush=True)
            break
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        x, y = sample_batch(pool, rng, args.batch_pixels)
        loss = F.cross_entropy(model(x), y, weight=cw, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running, n_run = running + loss.item(), n_run + 1
        state["step"] = step + 1
        if state["step"] % args.checkpoint_every == 0 or state["step"] == args.steps:
            vl = _val_loss(model, xv, yv, cw)
            state["seconds"] = seconds0 + time.perf_counter() - t_start
            entry = {
                "step": state["step"],
                "train_loss": round(running / n_run, 4),
                "val_loss": round(vl, 4),
                "lr": round(lr_at(step, args), 6),
                "minutes": round(state["seconds"] / 60, 1),
            }
            state["log"].append(entry)
            print(json.dumps(entry), flush=True)
            running, n_run = 0.0, 0
            if vl < state["best"]:
                state["best"], state["best_step"] = vl, state["step"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ck = {
                **state,
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state().tolist(),
            }
            write_checkpoint(ckdir, model, opt, ck, best_state)
    if best_state is not None:
        model.load_state_dict(best_state)
    bn = {"val_loss_before": round(_val_loss(model, xv, yv, cw), 4)}
    kept = {k: v.detach().clone() for k, v in model.state_dict().items()}
    recalibrate_batchnorm(model, pool, np.random.default_rng(args.seed + 1), args)
    bn["val_loss_after"] = round(_val_loss(model, xv, yv, cw), 4)
    bn["batches"] = args.bn_batches
    bn["kept"] = bn["val_loss_after"] < bn["val_loss_before"]
    if not bn["kept"]:  # the recalibrated statistics score worse: keep the trained ones
        model.load_state_dict(kept)
    print(f"batch-norm statistics recalibrated: {bn}", flush=True)
    recipe = {
        "seed": args.seed,
        "steps": args.steps,
        "steps_done": state["step"],
        "init": args.init,
        "pixels_per_batch": args.batch_pixels,
        "crop_sides": list(SIDES),
        "zoom": list(ZOOM),
        "optimizer": f"Adam(lr={args.lr}), 200 warm-up steps, cosine decay to 1 %",
        "loss": "cross-entropy, class weights 1/sqrt(frequency)",
        "class_weights": [round(float(w), 4) for w in weights],
        "best_val_loss": round(state["best"], 4),
        "batchnorm_recalibration": bn,
        "best_step": state["best_step"],
        "train_minutes": round(state["seconds"] / 60, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "log": state["log"],
    }
    return model.eval(), recipe


def load_init(model: UNet2D, init: str) -> None:
    """Start from other weights: a safetensors file, or ``git:<rev>`` (the built-in at rev)."""
    import subprocess
    import tempfile

    if init.startswith("git:"):
        blob = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "show",
                f"{init[4:]}:napari_dlcb/models/weights/{NAME}.safetensors",
            ],
            check=True,
            capture_output=True,
        ).stdout
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(blob)
            f.flush()
            load_weights(model, f.name)
    else:
        load_weights(model, init)
    print(f"initialised from {init}", flush=True)


# ------------------------------------------------------------------------- post-processing
def choose_postprocess(model, items: list[dict]) -> dict:
    """Grid-search the instance thresholds on the validation images (mean AP@0.5)."""
    from napari_dlcb.inference.metrics import average_precision
    from napari_dlcb.inference.postprocess import instances_from_probabilities

    probs = [(predict_prob(model, it["grey"]), it["labels"]) for it in items]
    best, best_score = None, -1.0
    for fg in FG_GRID:
        for seed in SEED_GRID:
            for ms in MIN_SIZE_GRID:
                post = {"fg_threshold": fg, "seed_threshold": seed, "min_size": ms}
                s = float(
                    np.mean(
                        [
                            average_precision(instances_from_probabilities(p, **post), lab, 0.5)
                            for p, lab in probs
                        ]
                    )
                )
                if s > best_score:
                    best, best_score = post, s
    print(f"post-processing on {len(items)} validation images: {best} (AP@0.5 {best_score:.3f})")
    return best


def repost(args: argparse.Namespace, split: dict, items: dict) -> int:
    """Choose the thresholds of the shipped weights again; rewrite metadata and card."""
    meta_file = args.out / f"{NAME}.json"
    meta = json.loads(meta_file.read_text())
    model = UNet2D(**{k: v for k, v in meta["architecture"].items() if k != "name"})
    load_weights(model, args.out / f"{NAME}.safetensors")
    model.eval()
    old = meta["extra"]["postprocess"]
    post = choose_postprocess(model, [items[i] for i in split["val"]])
    scores = evaluate_images(model, post, split, items)
    print(json.dumps(scores, indent=2))
    meta["extra"]["postprocess"] = post
    meta["extra"]["postprocess_previous"] = old
    meta["extra"]["evaluation"].update(scores)
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    write_card(meta, args.out / CARD, split)
    print(f"post-processing {old} -> {post}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument(
        "--init",
        default=INIT,
        help="start from these weights: a .safetensors file, git:<rev> (the built-in at that "
        "commit), or '' for random initialisation",
    )
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--batch-pixels", type=int, default=6 * 128 * 128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--bn-batches", type=int, default=300, help="batch-norm recalibration")
    # one thread: on the shared 2-core machine two threads were 3-8x slower per step
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DSB)
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/dlcb_pretrain_unet"))
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--eval-only", action="store_true", help="re-score the weights in --out")
    p.add_argument(
        "--repost",
        action="store_true",
        help="choose the post-processing thresholds of the weights in --out again (validation "
        "images), re-score them and rewrite the metadata and the model card",
    )
    p.add_argument("--card", action="store_true", help="rewrite the model card from the JSON")
    p.add_argument(
        "--add",
        nargs=2,
        action="append",
        metavar=("KEY", "JSON_FILE"),
        default=[],
        help="with --card: store a result file under extra.evaluation.KEY first "
        "(bench_dsb_finetune.py output, or --eval-only output of another model)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = make_split(args.data / "index.csv", seed=args.seed)
    SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
    if args.card:
        meta_file = args.out / f"{NAME}.json"
        meta = json.loads(meta_file.read_text())
        for key, file in args.add:
            meta["extra"]["evaluation"][key] = json.loads(Path(file).read_text())
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        write_card(meta, args.out / CARD, split)
        return 0
    items = load_dsb(args.data, split["train"] + split["val"] + split["test"])

    if args.eval_only:
        meta = json.loads((args.out / f"{NAME}.json").read_text())
        model = UNet2D(**{k: v for k, v in meta["architecture"].items() if k != "name"})
        load_weights(model, args.out / f"{NAME}.safetensors")
        scores = evaluate_images(model.eval(), meta["extra"]["postprocess"], split, items)
        print(json.dumps(scores, indent=2))
        return 0

    if args.repost:
        return repost(args, split, items)

    model, recipe = train(args, split, items)
    if recipe["steps_done"] < args.steps:
        return 3  # budget spent: run again to resume
    model = model.half().float()  # score the weights as shipped (float16 storage)
    t = time.perf_counter()
    post = choose_postprocess(model, [items[i] for i in split["val"]])
    scores = evaluate_images(model, post, split, items)
    recipe["eval_minutes"] = round((time.perf_counter() - t) / 60, 1)
    print(json.dumps(scores, indent=2))
    meta = make_meta(post, recipe, scores, split)
    save_weights(model, args.out / f"{NAME}.safetensors", dtype=torch.float16)
    (args.out / f"{NAME}.json").write_text(
        json.dumps({"format_version": 1, **meta.to_dict()}, indent=2) + "\n"
    )
    print(f"wrote {args.out / NAME}.safetensors/.json; classes {CLASSES}, norm {NORMALIZATION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
