"""Pretrain the built-in cell classifier (``builtin:cellclf-nuclei``) reproducibly.

The network is pretrained on crops of synthetic fluorescence nuclei
(:func:`napari_dlcb.data.synthetic.synthetic_nuclei`), labelled by
morphology into four classes (small/large x round/elongated, split at the
median area and at eccentricity 0.7) so that its features describe nuclear
size, shape, texture and context. No public evaluation data is used, so the
BloodMNIST benchmark and the tests stay independent of the pretraining.

Usage (about 2 CPU-minutes)::

    python scripts/pretrain_classifier.py [--images 60] [--epochs 12] [--seed 0]

Writes ``napari_dlcb/models/weights/cellclf_nuclei.{safetensors,json}`` and
``cellclf_nuclei_MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_dlcb.data.cells import object_crops, regionprops_table
from napari_dlcb.data.synthetic import synthetic_nuclei
from napari_dlcb.tasks.classification import ClassificationTrainer

WEIGHTS = Path(__file__).resolve().parents[1] / "napari_dlcb" / "models" / "weights"
CLASSES = ["small_round", "small_elongated", "large_round", "large_elongated"]
SIZE = 32


def make_dataset(n_images: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    crops, labels, areas, eccs = [], [], [], []
    for i in range(n_images):
        img, lab = synthetic_nuclei((192, 192), radius=(4.0, 14.0), seed=seed * 1000 + i)
        table = regionprops_table(lab)
        table = table[~table.touches_border & (table.area > 20)]
        if table.empty:
            continue
        oc = object_crops(img, lab, size=SIZE, ids=table.object_id.tolist())
        crops += list(oc.crops[:, 0])
        areas += table.area.tolist()
        eccs += table.eccentricity.tolist()
    areas, eccs = np.asarray(areas), np.asarray(eccs)
    large = areas > np.median(areas)
    elong = eccs > 0.7
    labels = 2 * large.astype(int) + elong.astype(int)
    return crops, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    crops, labels = make_dataset(a.images, a.seed)
    counts = np.bincount(labels, minlength=len(CLASSES))
    print(f"{len(crops)} synthetic nucleus crops, classes {dict(zip(CLASSES, counts.tolist()))}")
    trainer = ClassificationTrainer(
        crops,
        labels,
        CLASSES,
        base="none",
        width=a.width,
        input_size=SIZE,
        val_fraction=0.15,
        seed=a.seed,
        device="cpu",
    )
    fin = trainer.run(epochs=a.epochs, lr=2e-3)
    best = max(h.get("accuracy", 0) for h in trainer.history)
    print(
        f"finished ({fin.reason}), best val accuracy {best:.3f}, {time.perf_counter() - t0:.0f} s"
    )
    model = trainer.model.cpu().eval()
    meta = trainer.meta
    meta.extra = {
        "input_size": SIZE,
        "pretraining": "synthetic nuclei crops, morphology classes (scripts/pretrain_classifier.py)",
        "val_accuracy": round(best, 4),
        "n_train": int(len(trainer.y_train)),
        "seed": a.seed,
    }
    from safetensors.torch import save_file

    a.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(a.out / "cellclf_nuclei.safetensors"))
    (a.out / "cellclf_nuclei.json").write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    n_params = sum(v.numel() for v in state.values())
    (a.out / "cellclf_nuclei_MODEL_CARD.md").write_text(
        f"""# cellclf-nuclei: built-in crop classifier (napari-dlcb)

**Architecture**: `CellClassifier` (compact ResNet: 3x3 stem, 3 stages of basic residual
blocks {meta.architecture["blocks"]}, width {a.width}/{2 * a.width}/{4 * a.width}, batch norm,
global average pooling, dropout {meta.architecture["dropout"]}, linear head), {n_params:,}
tensors' elements, 1 input channel, {SIZE}x{SIZE} crops, float32 safetensors.

**Intended use**: a starting point for fine-tuning on crops centred on segmented cells or
nuclei ("full" mode), or a frozen feature extractor for a linear head ("linear" mode) and
for per-object embeddings. The pretraining classes are not biology; do not use the
pretrained head to make claims about real cells.

**Training data**: {len(crops)} crops ({SIZE} px) of synthetic fluorescence nuclei made by
`napari_dlcb.data.synthetic.synthetic_nuclei` ({a.images} images of 192x192, seeds
{a.seed * 1000}..{a.seed * 1000 + a.images - 1}; objects touching the border and smaller
than 20 px dropped). Labels: {", ".join(CLASSES)} (area above/below the median, eccentricity
above/below 0.7). Class counts: {dict(zip(CLASSES, counts.tolist()))}.

**Training**: `scripts/pretrain_classifier.py --images {a.images} --epochs {a.epochs}
--width {a.width} --seed {a.seed}`; AdamW lr 2e-3, weight decay 1e-4, batch 64,
label smoothing 0.05, inverse-frequency class weights, flips/rot90/zoom/intensity
augmentation, normalisation: z-score with the training crops' statistics (stored in
`cellclf_nuclei.json`). Validation accuracy on a held-out 15 % of synthetic crops:
{best:.3f}.

**Limitations**: synthetic, single-channel, nuclear-stain-like images only; for RGB or
multichannel data the first convolution is adapted (averaged weights) and the model must
be fine-tuned. No real patient or public benchmark data was used.

**Licence**: BSD-3-Clause, like napari-dlcb.
"""
    )
    print(f"wrote {a.out / 'cellclf_nuclei.safetensors'} ({n_params:,} values)")


if __name__ == "__main__":
    main()
