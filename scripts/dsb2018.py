"""DSB2018 helpers shared by ``scripts/pretrain_unet.py`` and ``benchmarks/bench_dsb_finetune.py``.

The seeded split of ``../shared/data/dsb2018_stage1_train_nuclei``, the image
reading convention of the built-in U-Net (one grey channel; RGB = mean of R, G,
B), scoring with the package's own prediction and metrics, and the built-in's
metadata and model card.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DSB = DATA / "dsb2018_stage1_train_nuclei"
STARDIST = DATA / "stardist_sample_nuclei_2d"
SPLIT_FILE = ROOT / "scripts" / "dsb2018_split.json"
NAME = "unet2d_nuclei"
CARD = "MODEL_CARD_unet2d_nuclei.md"
CLASSES = ["background", "interior", "boundary"]
NORMALIZATION = {"mode": "per_image_percentile", "p_low": 1.0, "p_high": 99.8}
ARCH = {"in_channels": 1, "n_classes": 3, "base": 16, "depth": 4, "dropout": 0.1}
#: ``stardist_sample_nuclei_2d/img2d.tif`` is the crop [8:520, 184:696] of this image
STARDIST_SOURCE = "4dbbb275960ab9e4"
FRACTIONS = {"train": 0.75, "val": 0.10, "test": 0.15}


def make_split(index_csv: Path, *, seed: int = 0) -> dict:
    """Seeded 75/10/15 split stratified by ``channels``; the StarDist sample's source is test.

    Returns ``{"seed", "fractions", "forced_test", "train", "val", "test"}`` (sorted ids).
    """
    with open(index_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(seed)
    for ch in sorted({r["channels"] for r in rows}):
        ids = sorted(r["id"] for r in rows if r["channels"] == ch)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        n_val = int(round(FRACTIONS["val"] * len(ids)))
        n_test = int(round(FRACTIONS["test"] * len(ids)))
        out["val"] += ids[:n_val]
        out["test"] += ids[n_val : n_val + n_test]
        out["train"] += ids[n_val + n_test :]
    for part in ("train", "val"):
        if STARDIST_SOURCE in out[part]:
            out[part].remove(STARDIST_SOURCE)
            out["test"].append(STARDIST_SOURCE)
    return {
        "dataset": "dsb2018_stage1_train_nuclei",
        "seed": seed,
        "stratified_by": "channels",
        "fractions": FRACTIONS,
        "forced_test": [STARDIST_SOURCE],
        **{k: sorted(v) for k, v in out.items()},
    }


def to_grey(image: np.ndarray) -> np.ndarray:
    """The built-in's input: grey as is, RGB(A) as the mean of R, G and B (float32)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].mean(-1)
    return image.astype(np.float32)


def load_dsb(root: Path, ids: list[str]) -> dict[str, dict]:
    """``{id: {"grey", "labels", "channels", "dark"}}``; ``dark``: nuclei darker than background."""
    from napari_dlcb.io.images import read_image

    items = {}
    for i in ids:
        img = np.asarray(read_image(root / "images" / f"{i}.png"))
        lab = np.asarray(read_image(root / "labels" / f"{i}.png")).astype(np.int32)
        grey = to_grey(img)
        fg = lab > 0
        dark = bool(fg.any() and (~fg).any() and grey[fg].mean() < grey[~fg].mean())
        items[i] = {
            "grey": grey,
            "labels": lab,
            "channels": 3 if img.ndim == 3 else 1,
            "dark": dark,
        }
    return items


def normalize(grey: np.ndarray) -> np.ndarray:
    """The metadata's per-image percentile normalisation, as the package applies it."""
    from napari_dlcb.data.normalize import Normalizer

    return Normalizer.from_dict(NORMALIZATION)(grey)[0]


def make_meta(post: dict, recipe: dict, scores: dict, split: dict):
    """The built-in's ModelMeta (what ``unet2d_nuclei.json`` holds)."""
    from napari_dlcb.models.saved import ModelMeta
    from napari_dlcb.models.unet import UNet2D

    return ModelMeta(
        task="segmentation",
        architecture=UNet2D(**ARCH).architecture(),
        classes=list(CLASSES),
        label_kind="instances",
        normalization=dict(NORMALIZATION),
        input_axes="bcyx",
        in_channels=1,
        output_activation="softmax",
        extra={
            "description": "U-Net for 2-D nuclei (fluorescence and brightfield), "
            "pretrained on the real DSB2018 stage-1 training images",
            "postprocess": {k: post[k] for k in ("fg_threshold", "seed_threshold", "min_size")},
            "nucleus_radius_px": [4, 30],
            "input": "one grey channel; RGB images as the mean of R, G and B; "
            "bright or dark nuclei",
            "data": {
                "name": "DSB2018 stage-1 training set (BBBC038)",
                "licence": "CC0",
                "split_file": "scripts/dsb2018_split.json",
                **{k: len(split[k]) for k in ("train", "val", "test")},
            },
            "training": recipe,
            "evaluation": scores,
            "model_card": CARD,
            "source_script": "scripts/pretrain_unet.py",
        },
    )


# ------------------------------------------------------------------------------ scoring
def predict_prob(model, grey: np.ndarray) -> np.ndarray:
    """Softmax probabilities (3, Y, X) as the CLI computes them (tiled, metadata normalisation)."""
    from napari_dlcb.data.normalize import Normalizer
    from napari_dlcb.inference.tiled import predict_tiled

    return predict_tiled(
        model,
        grey,
        tile=512,
        device="cpu",
        normalizer=Normalizer.from_dict(NORMALIZATION),
        activation="softmax",
    )


def score(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Foreground IoU, AP@0.5 and mean AP over IoU 0.5:0.05:0.95 of one image."""
    from napari_dlcb.inference.metrics import average_precision, foreground_iou

    ap = average_precision(pred, truth, np.arange(0.5, 0.96, 0.05))
    return {
        "fg_iou": foreground_iou(pred > 0, truth > 0),
        "ap50": float(ap[0]),
        "map": float(np.mean(ap)),
        "n_true": int(len(np.unique(truth)) - 1),
        "n_pred": int(len(np.unique(pred)) - 1),
    }


def summarise(rows: list[dict]) -> dict:
    """Mean over images, and AP@0.5 pooled over all objects (TP, FP, FN summed)."""
    if not rows:
        return {}
    tp = sum(r["ap50"] * (r["n_true"] + r["n_pred"]) / (1 + r["ap50"]) for r in rows)
    n = sum(r["n_true"] + r["n_pred"] for r in rows)
    return {
        "images": len(rows),
        "fg_iou": round(float(np.mean([r["fg_iou"] for r in rows])), 4),
        "ap50": round(float(np.mean([r["ap50"] for r in rows])), 4),
        "map_50_95": round(float(np.mean([r["map"] for r in rows])), 4),
        "ap50_pooled": round(float(tp / max(n - tp, 1)), 4),
        "objects_true": sum(r["n_true"] for r in rows),
        "objects_pred": sum(r["n_pred"] for r in rows),
    }


def evaluate_images(model, post: dict, split: dict, items: dict) -> dict:
    """Scores of the validation and test splits by group, and of the StarDist sample."""
    from napari_dlcb.inference.postprocess import instances_from_probabilities

    def run(grey, truth):
        prob = predict_prob(model, grey)
        keys = ("fg_threshold", "seed_threshold", "min_size")
        return score(instances_from_probabilities(prob, **{k: post[k] for k in keys}), truth)

    out: dict = {}
    for part in ("val", "test"):
        groups: dict[str, list] = {
            "grey": [],
            "grey_bright": [],
            "grey_dark": [],
            "rgb": [],
            "rgb_inverted": [],
        }
        for i in split[part]:
            it = items[i]
            if it["channels"] == 1:
                r = run(it["grey"], it["labels"])
                groups["grey"].append(r)
                groups["grey_dark" if it["dark"] else "grey_bright"].append(r)
            else:
                groups["rgb"].append(run(it["grey"], it["labels"]))
                groups["rgb_inverted"].append(run(255.0 - it["grey"], it["labels"]))
        out[part] = {k: summarise(v) for k, v in groups.items() if v}
    if STARDIST.is_dir():
        import tifffile

        img = tifffile.imread(STARDIST / "img2d.tif")
        truth = tifffile.imread(STARDIST / "mask2d.tif").astype(np.int32)
        r = run(to_grey(img), truth)
        out["stardist_sample_nuclei_2d"] = {k: round(float(v), 4) for k, v in r.items()}
    return out


def load_split() -> dict:
    """The split written by ``scripts/pretrain_unet.py``."""
    return json.loads(SPLIT_FILE.read_text())


# --------------------------------------------------------------------------- model card
GROUPS = {
    "grey": "grey, all",
    "grey_bright": "grey, bright nuclei (fluorescence)",
    "grey_dark": "grey, dark nuclei (brightfield)",
    "rgb": "RGB as grey (dark nuclei, as a user's image)",
    "rgb_inverted": "RGB as grey, inverted (bright nuclei)",
}


def _row(label: str, s: dict) -> str:
    return (
        f"| {label} | {s['images']} | {s['fg_iou']:.3f} | {s['ap50']:.3f} | "
        f"{s['ap50_pooled']:.3f} | {s['map_50_95']:.3f} | "
        f"{s['objects_pred']} / {s['objects_true']} |"
    )


def _table(scores: dict, extra_rows: list[str] = ()) -> str:
    head = (
        "| images | n | fg IoU | AP@0.5 (mean of images) | AP@0.5 (pooled objects) | "
        "mAP 0.5-0.95 | objects (pred / true) |\n|---|---|---|---|---|---|---|"
    )
    rows = [_row(GROUPS[k], v) for k, v in scores.items() if k in GROUPS]
    return "\n".join([head, *rows, *extra_rows])


def _finetune_section(ft: dict | None) -> str:
    if not ft:
        return "Not measured yet: run `benchmarks/bench_dsb_finetune.py`."
    lines = [
        "| model | n scored | fg IoU | AP@0.5 | AP@0.5 pooled | mAP 0.5-0.95 |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (("off the shelf", "off_the_shelf"), ("fine-tuned on 5 (CLI)", "finetuned")):
        m, rng = ft["mean"][key], ft["range"][key]
        lines.append(
            f"| {label} | {ft['runs'][0]['scored_images']} | {m['fg_iou']:.3f} "
            f"({rng['fg_iou'][0]:.3f}-{rng['fg_iou'][1]:.3f}) | {m['ap50']:.3f} "
            f"({rng['ap50'][0]:.3f}-{rng['ap50'][1]:.3f}) | {m['ap50_pooled']:.3f} | "
            f"{m['map_50_95']:.3f} |"
        )
    return "\n".join(lines)


def write_card(meta: dict, path: Path, split: dict) -> None:
    """Write the model card from the metadata (which holds every number it shows)."""
    ex = meta["extra"]
    tr, ev, post = ex["training"], ex["evaluation"], ex["postprocess"]
    sd = ev.get("stardist_sample_nuclei_2d")
    sd_row = (
        [
            f"| stardist_sample_nuclei_2d (crop of test image {STARDIST_SOURCE}) | 1 | "
            f"{sd['fg_iou']:.3f} | {sd['ap50']:.3f} | - | {sd['map']:.3f} | "
            f"{int(sd['n_pred'])} / {int(sd['n_true'])} |"
        ]
        if sd
        else []
    )
    old = ev.get("previous_builtin_synthetic", {})
    old_rows = [
        _row(f"previous built-in (synthetic), {GROUPS[k]}", v)
        for k, v in old.get("test", {}).items()
        if k in ("grey", "rgb")
    ]
    template = (Path(__file__).with_name("dsb2018_card.md")).read_text()
    text = template.format(
        arch=", ".join(f"{k}={v!r}" for k, v in meta["architecture"].items() if k != "name"),
        fg=post["fg_threshold"],
        seed=post["seed_threshold"],
        min_size=post["min_size"],
        n_train=len(split["train"]),
        n_val=len(split["val"]),
        n_test=len(split["test"]),
        val_ids=", ".join(split["val"]),
        test_ids=", ".join(split["test"]),
        steps=tr["steps"],
        lr=tr["optimizer"],
        pixels=tr["pixels_per_batch"],
        sides=tr["crop_sides"],
        zoom=tr["zoom"],
        weights=tr["class_weights"],
        best_step=tr["best_step"],
        best_val=tr["best_val_loss"],
        minutes=tr["train_minutes"],
        threads=tr["threads"],
        torch=tr["torch"],
        seed_=tr["seed"],
        eval_minutes=tr.get("eval_minutes", "-"),
        load=tr.get("load_1min", "-"),
        val_table=_table(ev["val"]),
        test_table=_table(ev["test"], sd_row + old_rows),
        finetune=_finetune_section(ev.get("finetune_5_grey")),
        finetune_old=_finetune_section(ev.get("finetune_5_grey_previous_builtin")),
    )
    path.write_text(text)
