"""Fault injection: random SIGKILLs during training, prediction and the annotation autosave.

For each target the work runs in a forked child and is killed with SIGKILL at a
random moment (uniform in ``[0, --max-delay]`` s); then the output is checked:

- ``train``: ``train segmentation`` into a model folder that already holds a
  complete model. After the kill the folder holds a complete, loadable model
  (the previous or the new one); ``--resume`` then finishes the run from its
  last checkpoint (the log must say so when a checkpoint exists).
- ``predict``: ``predict segmentation --overwrite`` onto a complete result
  folder. After the kill it holds a complete result (the result mark and one
  readable label TIFF per image), never a mix or a truncated file.
- ``autosave``: :meth:`AnnotationStore.save` of constant arrays ``k = 1, 2,
  ...`` in a loop. After the kill a new process reads one whole array (all
  pixels equal to one ``k``), and can save again (the dead writer's lock is
  taken over).

Prints one line per target: kills, clean outcomes, failures (with why).

    nice -n 10 python benchmarks/bench_faults.py --kills 30
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core"))


def _cli_child(argv: list[str], log: str) -> None:  # pragma: no cover - child
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1)  # also under pytest's capture
    import torch

    torch.set_num_threads(1)
    from napari_dlcb.cli import main

    rc = main([str(a) for a in argv])
    sys.stdout.flush()
    os._exit(rc)


def _autosave_child(image: str, start: int) -> None:  # pragma: no cover - child
    from napari_dlcb.io.project import AnnotationStore

    store = AnnotationStore(image)
    k = start
    while True:
        k += 1
        store.save("labels", np.full((256, 256), k % 60000 + 1, np.uint16))


def _run_killed(target, args, delay: float) -> int | None:
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=target, args=args)
    proc.start()
    proc.join(delay)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        return None
    return proc.exitcode


def _world(root: Path) -> dict:
    import _hostile as H
    import tifffile

    w = {"root": root, "imgs": root / "images", "labs": root / "labels"}
    w["imgs"].mkdir(), w["labs"].mkdir()
    for i in range(3):
        img, lab = H.nuclei(side=96, seed=i)
        tifffile.imwrite(w["imgs"] / f"c{i}.tif", img)
        tifffile.imwrite(w["labs"] / f"c{i}.tif", lab)
    w["model"] = H.tiny_model(root / "model")
    return w


def _train_argv(w: dict, out: Path, *extra: str) -> list:
    return ["train", "segmentation", "--images", w["imgs"], "--labels", w["labs"], "--out", out,
            "--base", "scratch", "--labels-kind", "instances", "--epochs", "4", "--patch-size",
            "32", "--samples-per-epoch", "8", "--device", "cpu", *extra]  # fmt: skip


def check_train(
    w: dict, kills: int, max_delay: float, rng: random.Random, *, p_resume: float = 0.3
) -> dict:
    """Kill ``train segmentation`` ``kills`` times; the model folder stays whole; resume works."""
    from napari_dlcb.models.saved import load_model

    out = w["root"] / "train_out"
    stats = {"kills": 0, "clean": 0, "resumed": 0, "fail": []}
    log = str(w["root"] / "train.log")
    t0 = time.perf_counter()
    assert _run_killed(_cli_child, (_train_argv(w, out), log), 600) == 0, Path(log).read_text()
    full = min(max_delay, time.perf_counter() - t0)  # kill anywhere within one whole run
    for i in range(kills):
        rc = _run_killed(
            _cli_child, (_train_argv(w, out, "--overwrite"), log), rng.uniform(0, full)
        )
        stats["kills"] += rc is None
        try:
            load_model(out, device="cpu")  # the previous or the new model, complete
            stats["clean"] += 1
        except Exception as exc:  # noqa: BLE001 - what the benchmark reports
            stats["fail"].append(f"kill {i}: model unreadable: {exc}")
            continue
        if (out / "checkpoints").is_dir() and rng.random() < p_resume:
            rlog = w["root"] / f"resume{i}.log"
            rc = _run_killed(_cli_child, (_train_argv(w, out, "--resume"), str(rlog)), 600)
            text = rlog.read_text()
            if rc == 0 and "resum" in text.lower():
                stats["resumed"] += 1
            else:
                stats["fail"].append(f"kill {i}: --resume exit {rc}: {text.strip()[-200:]}")
    return stats


def _predict_complete(w: dict, out: Path) -> str | None:
    import tifffile

    from napari_dlcb.commands._outputs import RESULT_MARK

    if not out.exists():
        return None
    if not (out / RESULT_MARK).is_file():
        return "no result mark"
    for img in w["imgs"].glob("*.tif"):
        found = [p for p in out.rglob("*.tif") if p.name.startswith(img.stem)]
        if not found:
            return f"no result for {img.name}"
        for p in found:
            try:
                tifffile.imread(p)
            except Exception as exc:  # noqa: BLE001
                return f"{p.name} unreadable: {exc}"
    return None


def check_predict(w: dict, kills: int, max_delay: float, rng: random.Random) -> dict:
    """Kill ``predict segmentation --overwrite`` ``kills`` times; the result folder stays whole."""
    out = w["root"] / "pred_out"
    argv = ["predict", "segmentation", "--model", w["model"], "--images", w["imgs"], "--out",
            out, "--device", "cpu", "--overwrite"]  # fmt: skip
    log = str(w["root"] / "predict.log")
    stats = {"kills": 0, "clean": 0, "fail": []}
    t0 = time.perf_counter()
    assert _run_killed(_cli_child, (argv, log), 600) == 0, Path(log).read_text()
    full = min(max_delay, time.perf_counter() - t0)  # kill anywhere within one whole run
    for i in range(kills):
        rc = _run_killed(_cli_child, (argv, log), rng.uniform(0, full))
        stats["kills"] += rc is None
        why = _predict_complete(w, out) if out.exists() else "result folder gone"
        if why is None:
            stats["clean"] += 1
        else:
            stats["fail"].append(f"kill {i}: {why}")
    return stats


def check_autosave(w: dict, kills: int, max_delay: float, rng: random.Random) -> dict:
    """Kill a saving loop ``kills`` times; the store reads one whole array and saves again."""
    from napari_dlcb.io.project import AnnotationStore

    image = w["imgs"] / "c0.tif"
    stats = {"kills": 0, "clean": 0, "fail": []}
    for i in range(kills):
        rc = _run_killed(_autosave_child, (str(image), i * 1000), rng.uniform(0.05, max_delay))
        stats["kills"] += rc is None
        try:
            store = AnnotationStore(image)
            if "labels" in store.names():
                arr = store.load("labels")
                if arr.shape != (256, 256) or len(np.unique(arr)) != 1:
                    stats["fail"].append(f"kill {i}: mixed array {np.unique(arr)[:5]}")
                    continue
            store.save("probe", np.zeros((4, 4), np.uint8))  # a dead writer blocks nothing
            stats["clean"] += 1
        except Exception as exc:  # noqa: BLE001
            stats["fail"].append(f"kill {i}: {type(exc).__name__}: {exc}")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--targets", default="train,predict,autosave")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=60.0, help="latest kill (s after start)")
    args = p.parse_args(argv)
    os.environ.setdefault("NAPARI_DLCB_CACHE", tempfile.mkdtemp(prefix="dlcb-cache-"))
    import napari_dlcb.cli  # noqa: F401 - loaded once, before the forks

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="dlcb-faults-"))
    try:
        w = _world(root)
        checks = {"train": check_train, "predict": check_predict, "autosave": check_autosave}
        bad = 0
        for name in args.targets.split(","):
            t0 = time.perf_counter()
            delay = args.max_delay if name != "autosave" else min(args.max_delay, 1.5)
            s = checks[name](w, args.kills, delay, rng)
            fails = s.pop("fail")
            bad += len(fails)
            print(
                f"{name}: {s}, failures {len(fails)}, {time.perf_counter() - t0:.0f} s", flush=True
            )
            for f in fails[:10]:
                print(f"  {f}")
        print(f"load {os.getloadavg()[0]:.2f}")
        return 1 if bad else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
