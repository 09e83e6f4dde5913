"""The hostile-input corpus through the CLI: every case ends in exit 2 with one clean line.

Each case runs ``napari-dlcb`` in a bounded child (:func:`_hostile.run_cli`:
60 s, 4 GiB address space) and must end with exit status 2, exactly one line
on stderr (``napari-dlcb: error: ...``, naming what is wrong: the regex of
the case), no traceback, and its inputs untouched. Verbs: ``train
segmentation``, ``predict segmentation``, ``tune segmentation``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import _hostile as H
import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork server, FIFOs, RLIMIT_AS")


# ----------------------------------------------------------------------------- the world


def _image_maker(kind: str) -> Callable[[Path], None]:
    """Writes the hostile image ``kind`` into a folder as ``x.<suffix>``."""
    img, _ = H.nuclei()

    def write(folder: Path) -> None:
        if kind == "fifo":
            H.fifo(folder / "x.tif")
        elif kind == "dev-zero":
            H.device_link(folder / "x.tif")
        elif kind == "broken-link":
            (folder / "x.tif").symlink_to(folder / "nowhere.tif")
        elif kind == "truncated-tiff":
            tifffile.imwrite(folder / "x.tif", img, compression="zlib")
            H.truncated(folder / "x.tif")
        elif kind == "garbage-tiff":
            (folder / "x.tif").write_bytes(b"II*\x00 this is not a TIFF at all" * 3)
        elif kind == "empty-file":
            (folder / "x.tif").write_bytes(b"")
        elif kind == "truncated-png":
            from PIL import Image

            Image.fromarray((img // 256).astype(np.uint8)).save(folder / "x.png")
            H.truncated(folder / "x.png", 0.5)
        elif kind == "png-60000":
            H.png_claiming(folder / "x.png", 60_000, 60_000)
        elif kind == "png-12k":
            H.big_png(folder / "x.png")
        elif kind == "tiff-bomb":
            H.tiff_bomb(folder / "x.tif")
        elif kind == "one-pixel":
            tifffile.imwrite(folder / "x.tif", np.ones((1, 1), np.uint16))
        elif kind == "4d":
            tifffile.imwrite(folder / "x.tif", np.ones((2, 3, 32, 32), np.uint8))
        elif kind == "5d":
            tifffile.imwrite(folder / "x.tif", np.ones((2, 2, 2, 32, 32), np.uint8))
        elif kind == "bool":
            tifffile.imwrite(folder / "x.tif", img > img.mean())
        elif kind == "complex":
            tifffile.imwrite(folder / "x.tif", (img + 1j * img).astype(np.complex64))
        elif kind in ("nan", "inf"):
            bad = img.astype(np.float32)
            rng = np.random.default_rng(0)
            bad[rng.random(bad.shape) < 0.1] = np.nan if kind == "nan" else np.inf
            tifffile.imwrite(folder / "x.tif", bad)
        elif kind == "rgb":
            tifffile.imwrite(folder / "x.tif", np.stack([img] * 3, -1).astype(np.uint16))
        elif kind != "empty-folder":
            raise AssertionError(kind)

    return write


#: hostile images -> what the one line must say
IMAGE_CASES = {
    "fifo": "not a regular file",
    "dev-zero": "not a regular file",
    "broken-link": "not a regular file",
    "truncated-tiff": "truncated or not a TIFF",
    "garbage-tiff": "truncated or not a TIFF",
    "empty-file": r"empty \(0 bytes\)",
    "truncated-png": "truncated or not a PNG",
    "png-60000": "3,600 megapixels, more than",
    "png-12k": "training holds in memory",
    "tiff-bomb": "400 megapixels, more than the 67 that training holds in memory",
    "one-pixel": "1x1 pixels",
    "4d": "not a 2-D grey or multichannel image",
    "5d": "not a 2-D grey or multichannel image",
    "bool": "boolean",
    "complex": "complex64 pixels",
    "nan": "NaN pixels",
    "inf": "NaN or infinite pixels",
    "empty-folder": "no PNG or TIFF images",
}
#: how prediction differs: big but valid images are predicted block by block, so the
#: corpus bounds them with --timeout (which must end them cleanly)
PREDICT_IMAGE_CASES = {
    **IMAGE_CASES,
    "png-12k": r"timed out after 8 s \(--timeout\)",
    "tiff-bomb": r"timed out after 8 s \(--timeout\)",
    "rgb": "3 channel",
}
_TIMEOUT_CASES = {"png-12k", "tiff-bomb"}


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 2**24:
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    w = SimpleNamespace(root=root)
    w.imgs, w.labs = root / "images", root / "labels"
    w.imgs.mkdir(), w.labs.mkdir()
    for i in range(2):
        img, lab = H.nuclei(seed=i)
        tifffile.imwrite(w.imgs / f"c{i}.tif", img)
        tifffile.imwrite(w.labs / f"c{i}.tif", lab)
    w.model = H.tiny_model(root / "model")
    w.loop = H.looping_model(root / "loop_model")
    w.model_4096 = H.with_metadata(w.model, root / "m4096", architecture={"base": 4096})
    w.model_depth = H.with_metadata(w.model, root / "mdepth", architecture={"depth": 10**7})
    w.model_channels = H.with_metadata(w.model, root / "mch", in_channels=10**9)
    w.model_garbage = root / "mgarbage"
    shutil.copytree(w.model, w.model_garbage)
    (w.model_garbage / "metadata.json").write_text("{" * 100_000)
    w.model_trunc = root / "mtrunc"
    shutil.copytree(w.model, w.model_trunc)
    H.truncated(w.model_trunc / "weights.safetensors", 0.5)
    w.model_zero = root / "mzero"
    shutil.copytree(w.model, w.model_zero)
    (w.model_zero / "weights.safetensors").unlink()
    H.device_link(w.model_zero / "weights.safetensors")
    w.a_file = root / "a_file.txt"
    w.a_file.write_text("not a folder")
    w.other = root / "other"
    w.other.mkdir()
    (w.other / "notes.txt").write_text("someone's notes")
    w.ro = _read_only_dir(root / "ro_src", root / "ro")
    _genome(w, root / "genome")
    # one folder per hostile image (images) and matching labels for training
    w.bad = {}
    for kind in PREDICT_IMAGE_CASES:
        folder, labels = root / "bad" / kind / "images", root / "bad" / kind / "labels"
        folder.mkdir(parents=True), labels.mkdir(parents=True)
        _image_maker(kind)(folder)
        # labels the size of the image where it has one, so the image's own fault is found
        lab = np.ones((1, 1), np.uint16) if kind == "one-pixel" else H.nuclei()[1]
        tifffile.imwrite(labels / "x.tif", lab)
        w.bad[kind] = (folder, labels)
    w.digests = {p: _tree_digest(p) for p in (w.imgs, w.labs, w.model, w.other)}
    yield w
    if w.ro is not None and w.ro.get("mounted"):
        subprocess.run(["umount", str(w.ro["path"])], check=False)


def _read_only_dir(src: Path, mount: Path) -> dict | None:
    """A folder nobody can write, root included: a read-only bind mount (root) or chmod."""
    src.mkdir()
    mount.mkdir()
    if os.geteuid() != 0:
        os.chmod(mount, 0o555)
        return {"path": mount, "mounted": False}
    ok = subprocess.run(["mount", "--bind", str(src), str(mount)], capture_output=True)
    if ok.returncode != 0:
        return None
    ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", str(mount)], check=False)
        return None
    return {"path": mount, "mounted": True}


# ----------------------------------------------------------------------------- the cases


@dataclass
class Case:
    verb: str
    name: str
    argv: Callable[[SimpleNamespace, Path], list]
    expect: str
    timeout: float = H.TIMEOUT_S
    after: Callable[[SimpleNamespace, Path], None] | None = None
    needs: str = ""
    marks: list = field(default_factory=list)


def _train(w, t, *extra, images=None, labels=None, out=None):
    return [
        "train",
        "segmentation",
        "--images",
        images or w.imgs,
        "--labels",
        labels or w.labs,
        "--out",
        out or t / "model_out",
        "--base",
        "scratch",
        "--labels-kind",
        "instances",
        "--epochs",
        "1",
        "--patch-size",
        "32",
        "--samples-per-epoch",
        "2",
        "--device",
        "cpu",
        *extra,
    ]


def _predict(w, t, *extra, images=None, model=None, out=None):
    return [
        "predict",
        "segmentation",
        "--model",
        model or w.model,
        "--images",
        images or w.imgs,
        "--out",
        out or t / "pred_out",
        "--device",
        "cpu",
        *extra,
    ]


def _tune(w, t, *extra, images=None, labels=None, out=None, budget=("--trials", "1")):
    return [
        "tune",
        "segmentation",
        "--images",
        images or w.imgs,
        "--labels",
        labels or w.labs,
        "--out",
        out or t / "study_out",
        "--base",
        "scratch",
        "--labels-kind",
        "instances",
        "--device",
        "cpu",
        *budget,
        *extra,
    ]


VERBS = {"train": _train, "predict": _predict, "tune": _tune}


def _option_cases() -> list[Case]:
    train = {
        "lr-nan": (["--lr", "nan"], "lr must be a finite number"),
        "lr-inf": (["--lr", "inf"], "lr must be a finite number"),
        "lr-negative": (["--lr", "-1"], "lr must be a finite number > 0"),
        "lr-zero": (["--lr", "0"], "lr must be a finite number > 0"),
        "lr-word": (["--lr", "fast"], "argument --lr: invalid float value"),
        "epochs-zero": (["--epochs", "0"], "epochs must be from 1"),
        "epochs-negative": (["--epochs", "-1"], "epochs must be from 1"),
        "epochs-float": (["--epochs", "2.5"], "argument --epochs: invalid int value"),
        "batch-zero": (["--batch-size", "0"], "batch_size must be from 1"),
        "batch-negative": (["--batch-size", "-1"], "batch_size must be from 1"),
        "batch-huge": (["--batch-size", "10000000"], "batch_size must be from 1 to 4096"),
        "val-1.5": (["--val-fraction", "1.5"], r"val_fraction must be a fraction in \[0, 1\)"),
        "val-negative": (["--val-fraction", "-0.1"], "val_fraction must be a fraction"),
        "val-nan": (["--val-fraction", "nan"], "val_fraction must be a fraction"),
        "patch-100000": (["--patch-size", "100000"], "patch_size must be from 32 to 2048"),
        "patch-7": (["--patch-size", "7"], "patch_size must be from 32 to 2048"),
        "patch-not-16": (["--patch-size", "50"], "patch_size must be a multiple of 16"),
        "patch-over-image": (["--patch-size", "1024"], "larger than every image"),
        "pretrained-factor-2": (["--pretrained-lr-factor", "2"], "pretrained_lr_factor must be"),
        "pretrained-factor-nan": (["--pretrained-lr-factor", "nan"], "pretrained_lr_factor"),
        "samples-zero": (["--samples-per-epoch", "0"], "samples_per_epoch must be at least 1"),
        "epoch-seconds-negative": (["--epoch-seconds", "-1"], "epoch_seconds must be"),
        "epoch-seconds-inf": (["--epoch-seconds", "inf"], "epoch_seconds must be"),
        "early-stopping-zero": (["--early-stopping", "0"], "early_stopping must be at least 1"),
        "max-minutes-zero": (["--max-minutes", "0"], "max_time must be"),
        "max-minutes-nan": (["--max-minutes", "nan"], "max_time must be"),
        "distill-negative": (["--distill", "-1"], "distill must be"),
        "distill-inf": (["--distill", "inf"], "distill must be"),
        "seed-negative": (["--seed", "-1"], "seed must be at least 0"),
        "labels-kind-unknown": (["--labels-kind", "blobs"], "argument --labels-kind: invalid"),
        "mode-unknown": (["--mode", "turbo"], "argument --mode: invalid choice"),
        "device-unknown": (["--device", "tpu"], "argument --device: invalid choice"),
        "unknown-option": (["--colour", "red"], "unrecognized arguments: --colour"),
        "timeout-zero": (["--timeout", "0"], r"--timeout must be a number of seconds"),
        "timeout-nan": (["--timeout", "nan"], r"--timeout must be a number of seconds"),
        "resume-and-overwrite": (["--resume", "--overwrite"], "--resume continues the run"),
    }
    predict = {
        "tile-zero": (["--tile", "0"], "argument --tile: must be a whole number from 32"),
        "tile-negative": (["--tile", "-1"], "argument --tile: must be a whole number"),
        "tile-huge": (["--tile", "100000"], "argument --tile: must be a whole number"),
        "tile-word": (["--tile", "big"], "argument --tile: must be a whole number"),
        "device-unknown": (["--device", "tpu"], "argument --device: invalid choice"),
        "timeout-negative": (["--timeout", "-5"], "--timeout must be a number of seconds"),
    }
    tune = {
        "epochs-zero": (["--epochs", "0"], "argument --epochs: must be a whole number from 1"),
        "trials-zero": (["--trials", "0"], "argument --trials: must be a whole number from 1"),
        "budget-zero": (["--budget-minutes", "0"], "budget in minutes must be"),
        "budget-nan": (["--budget-minutes", "nan"], "budget in minutes must be"),
        "budget-negative": (["--budget-minutes", "-1"], "budget in minutes must be"),
        "workers-zero": (["--n-workers", "0"], "argument --n-workers: must be a whole number"),
        "seed-negative": (["--seed", "-1"], "argument --seed: must be a whole number from 0"),
        "param-garbage": (["--param", "lr=abc"], "lr"),
        "strategy-unknown": (["--strategy", "genius"], "argument --strategy: invalid choice"),
    }
    cases = [Case("train", n, _opts(_train, a), e) for n, (a, e) in train.items()]
    cases += [Case("predict", n, _opts(_predict, a), e) for n, (a, e) in predict.items()]
    cases += [Case("tune", n, _opts(_tune, a), e) for n, (a, e) in tune.items()]
    cases.append(Case("tune", "no-budget", lambda w, t: _tune(w, t, budget=()), "give a budget"))
    return cases


def _opts(verb, extra):
    return lambda w, t: verb(w, t, *extra)


def _model_cases() -> list[Case]:
    m = {
        "missing": (lambda w, t: t / "no_model", "model not found"),
        "a-file": (lambda w, t: w.a_file, "a napari-dlcb model folder or a bioimage.io package"),
        "base-4096": (lambda w, t: w.model_4096, "parameters, more than the 400,000,000"),
        "depth-1e7": (lambda w, t: w.model_depth, "depth=10000000 is out of range"),
        "in-channels-1e9": (lambda w, t: w.model_channels, "'in_channels' must be an integer"),
        "garbage-metadata": (lambda w, t: w.model_garbage, "cannot read .*metadata.json"),
        "truncated-weights": (lambda w, t: w.model_trunc, "corrupt or truncated"),
        "weights-dev-zero": (lambda w, t: w.model_zero, "model weights not found"),
        "untrusted-torchscript": (lambda w, t: w.loop, "can run code on this computer"),
    }
    cases = [Case("predict", f"model-{n}", _model_argv(get), e) for n, (get, e) in m.items()]
    cases.append(
        Case(
            "predict",
            "model-loops-forever-timeout",
            lambda w, t: _predict(w, t, "--trust-model", "--timeout", "5", model=w.loop),
            r"timed out after 5 s \(--timeout\)",
            after=_nothing_at("pred_out"),
        )
    )
    cases += [
        Case("train", f"base-{n}", _base_argv(get), e)
        for n, (get, e) in m.items()
        if n not in ("missing", "a-file")
    ]
    return cases


def _model_argv(get):
    return lambda w, t: _predict(w, t, model=get(w, t))


def _base_argv(get):
    def argv(w, t):
        args = _train(w, t)
        args[args.index("scratch")] = get(w, t)
        return args

    return argv


def _nothing_at(name):
    def check(w, t):
        out = t / name
        assert not out.exists(), f"{out} was created"
        leftovers = [p.name for p in t.iterdir() if p.name.startswith(f".{name}.")]
        assert not leftovers, f"temporary siblings left behind: {leftovers}"

    return check


def _unchanged(path_of):
    def check(w, t):
        p = path_of(w, t)
        assert p.exists() and _tree_digest(p) == w.digests.get(p, _tree_digest(p))

    return check


def _output_cases() -> list[Case]:
    outs = {
        "out-is-a-file": (lambda w, t: w.a_file, "is a file; give a folder"),
        "out-under-a-file": (lambda w, t: w.a_file / "sub", "a_file.txt is a file, not a folder"),
        "out-dev-null": (lambda w, t: Path("/dev/null"), "not a regular folder"),
        "out-other-files": (lambda w, t: w.other, "is a folder of other files"),
        "out-read-only": (lambda w, t: w.ro["path"] / "out", "cannot be written"),
        "out-is-input": (lambda w, t: w.imgs, "is the input"),
        "out-inside-input": (lambda w, t: w.imgs / "out", "lies inside the input"),
        "out-contains-input": (lambda w, t: w.root, "contains the input"),
    }
    cases = []
    for verb, make in VERBS.items():
        for name, (get, expect) in outs.items():
            if verb == "tune" and name == "out-contains-input":
                expect = "contains the input"
            cases.append(
                Case(
                    verb,
                    name,
                    _out_argv(make, get),
                    expect,
                    after=_inputs_untouched,
                    needs="ro" if name == "out-read-only" else "",
                )
            )
    cases.append(
        Case(
            "predict",
            "out-is-the-model",
            lambda w, t: _predict(w, t, out=w.model),
            "is the input",
            after=_inputs_untouched,
        )
    )
    cases.append(
        Case(
            "train",
            "out-holds-a-model",
            lambda w, t: _train(w, t, out=_copy(w.model, t / "old")),
            "already holds a model; pass --overwrite",
            after=_same_as(lambda w, t: t / "old", lambda w: w.model),
        )
    )
    cases.append(
        Case(
            "train",
            "out-holds-checkpoints",
            lambda w, t: _train(w, t, out=_checkpoints_only(t / "half")),
            "checkpoints of an unfinished run; pass --resume",
        )
    )
    cases.append(
        Case(
            "predict",
            "out-holds-results",
            lambda w, t: _predict(w, t, out=_old_results(t / "res")),
            "already holds results; pass --overwrite",
            after=lambda w, t: (t / "res" / "old.tif").read_bytes() == b"old",
        )
    )
    return cases


def _out_argv(make, get):
    return lambda w, t: make(w, t, out=get(w, t))


def _inputs_untouched(w, t):
    for p in (w.imgs, w.labs, w.model, w.other):
        assert _tree_digest(p) == w.digests[p], f"{p} changed"
    assert not w.a_file.is_dir() and w.a_file.read_text() == "not a folder"


def _copy(src, dest):
    shutil.copytree(src, dest)
    return dest


def _same_as(get, src):
    return lambda w, t: _tree_digest(get(w, t)) == _tree_digest(src(w))


def _checkpoints_only(folder):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "run.json").write_text("{}")
    return folder


def _old_results(folder):
    from napari_dlcb.commands._outputs import RESULT_MARK

    folder.mkdir()
    (folder / RESULT_MARK).write_text("{}")
    (folder / "old.tif").write_bytes(b"old")
    return folder


def _image_cases() -> list[Case]:
    cases = []
    for kind, expect in IMAGE_CASES.items():
        cases.append(Case("train", f"image-{kind}", _bad_images(_train, kind), expect))
    for kind, expect in PREDICT_IMAGE_CASES.items():
        extra = ("--timeout", "8") if kind in _TIMEOUT_CASES else ()
        cases.append(
            Case(
                "predict",
                f"image-{kind}",
                _bad_images(_predict, kind, extra, labels=False),
                expect,
                after=_nothing_at("pred_out"),
            )
        )
    for kind in ("fifo", "png-60000", "nan", "empty-folder", "one-pixel", "4d"):
        expect = IMAGE_CASES[kind]
        if kind in ("nan", "one-pixel"):  # every trial fails on it: the study says so
            expect = "no trial finished"
        cases.append(Case("tune", f"image-{kind}", _bad_images(_tune, kind), expect))
    return cases


def _bad_images(make, kind, extra=(), labels=True):
    def argv(w, t):
        images, labs = w.bad[kind]
        kw = {"images": images, "labels": labs} if labels else {"images": images}
        return make(w, t, *extra, **kw)

    return argv


def _label_cases() -> list[Case]:
    def labels_with(verb, kind):
        def argv(w, t):
            labs = t / "labs"
            shutil.copytree(w.labs, labs)
            lab = tifffile.imread(labs / "c0.tif")
            if kind == "size-mismatch":
                tifffile.imwrite(labs / "c0.tif", lab[:32, :32])
            elif kind == "missing":
                (labs / "c0.tif").unlink()
            elif kind == "extra":
                tifffile.imwrite(labs / "zz.tif", lab)
            elif kind == "fractions":
                tifffile.imwrite(labs / "c0.tif", lab.astype(np.float32) + 0.5)
            elif kind == "3d":
                tifffile.imwrite(labs / "c0.tif", np.stack([lab, lab]))
            elif kind == "complex":
                tifffile.imwrite(labs / "c0.tif", lab.astype(np.complex64))
            return verb(w, t, labels=labs)

        return argv

    expect = {
        "size-mismatch": r"has shape \(32, 32\) but c0.tif is \(64, 64\)",
        "missing": "no label image for c0",
        "extra": "label image.* without an image: zz",
        "fractions": "not whole numbers",
        "3d": "not a 2-D integer image",
        "complex": "not whole numbers",
    }
    cases = []
    for verb in (_train, _tune):
        name = "train" if verb is _train else "tune"
        cases += [Case(name, f"labels-{k}", labels_with(verb, k), e) for k, e in expect.items()]
    return cases


def _genome(w: SimpleNamespace, folder: Path) -> None:
    """A small genome, peaks on it, and bigWigs that crashed pyBigWig (issue 12)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    w.fasta = folder / "g.fa"
    w.fasta.write_text(">chr1\n" + "".join(rng.choice(list("ACGT"), 6000)) + "\n")
    w.bed = folder / "peaks.bed"
    w.bed.write_text("".join(f"chr1\t{s}\t{s + 100}\n" for s in range(500, 5000, 400)))
    import pyBigWig

    good = folder / "good.bw"
    bw = pyBigWig.open(str(good), "w")
    bw.addHeader([("chr1", 6000)], maxZooms=2)
    bw.addEntries(["chr1"] * 3, [0, 500, 900], ends=[100, 600, 1000], values=[1.0, 2.0, 3.0])
    bw.close()
    data = good.read_bytes()
    w.bigwig = {}
    for name, data in {"magic-only": data[:4], "header-only": data[:64]}.items():
        w.bigwig[name] = folder / f"{name}.bw"
        w.bigwig[name].write_bytes(data)


def _sequence_cases() -> list[Case]:
    def argv(kind):
        return lambda w, t: [
            "train",
            "sequence",
            "--fasta",
            w.fasta,
            "--bed",
            w.bed,
            "--window",
            "200",
            "--signal-labels",
            w.bigwig[kind],
            "--epochs",
            "1",
            "--out",
            t / "seq_out",
            "--device",
            "cpu",
        ]

    return [
        Case("train", f"sequence-bigwig-{kind}", argv(kind), "corrupt or truncated bigWig")
        for kind in ("magic-only", "header-only")
    ]


def _all_cases() -> list[Case]:
    return [
        *_option_cases(),
        *_model_cases(),
        *_output_cases(),
        *_image_cases(),
        *_label_cases(),
        *_sequence_cases(),
    ]


CASES = _all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.verb}-{c.name}" for c in CASES])
def test_hostile_cli_case_is_one_clean_line(case, world, tmp_path):
    if case.needs == "ro" and world.ro is None:
        pytest.skip("no read-only folder can be made here (root without mount rights)")
    argv = case.argv(world, tmp_path)
    res = H.run_cli(
        argv,
        tmp_path / "_run",
        timeout=case.timeout,
        env={
            "NAPARI_DLCB_CACHE": str(tmp_path / "_cache"),
        },
    )
    assert not res.timed_out, f"hung for {case.timeout} s: {res.stderr[-500:]}"
    assert res.seconds < H.TIMEOUT_S
    assert res.max_rss_bytes < H.MEMORY_BYTES
    assert res.rc == 2, f"exit {res.rc}; stderr: {res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.lines) == 1, res.stderr
    line = res.lines[0]
    assert line.startswith("napari-dlcb: error: "), line
    assert re.search(case.expect, line), f"{line!r} does not match {case.expect!r}"
    if case.after is not None:
        ok = case.after(world, tmp_path)
        assert ok is None or ok


def test_the_corpus_covers_every_case_of_issue_12():
    names = {f"{c.verb}-{c.name}" for c in CASES}
    for verb in ("train", "predict"):
        for n in ("image-fifo", "image-dev-zero", "image-png-60000", "image-png-12k",
                  "image-tiff-bomb", "image-nan", "image-one-pixel", "image-4d", "image-5d",
                  "image-bool", "image-complex", "image-truncated-tiff", "image-truncated-png",
                  "image-empty-folder", "out-is-a-file", "out-under-a-file", "out-dev-null",
                  "out-other-files", "out-read-only", "out-is-input", "out-inside-input",
                  "out-contains-input"):  # fmt: skip
            assert f"{verb}-{n}" in names
    for n in ("lr-nan", "lr-inf", "lr-negative", "lr-zero", "epochs-zero", "epochs-negative",
              "batch-zero", "batch-negative", "val-1.5", "val-negative", "patch-100000",
              "patch-7", "labels-size-mismatch"):  # fmt: skip
        assert f"train-{n}" in names
    assert "predict-tile-huge" in names and "predict-model-loops-forever-timeout" in names
    assert len([c for c in CASES if c.verb == "tune"]) >= 20
