"""The hostile-input corpus through the npe2 reader hooks: decline or report, never raise or hang.

napari calls ``get_reader(path)`` for every file dropped on it, and the
returned reader with the same path. For each hostile file both run in a
forked child (60 s, 4 GiB address space), which reports what happened:
``declined`` (``get_reader`` returned None), ``reported`` (the reader gave
napari's "nothing to add" ``[(None,)]`` and one
:class:`~napari_dlcb.io._npe2.UnreadableFileWarning`), ``layers`` (it read
the file) or ``raised`` / ``hung`` / ``crashed``, which are never allowed.
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import resource
import shutil
import warnings
from pathlib import Path

import _hostile as H
import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork, FIFOs, RLIMIT_AS")

OK_BAD = {"declined", "reported"}  # what a reader may do with a file it cannot read


def _probe(hook: str, path: str, queue) -> None:  # pragma: no cover - child
    resource.setrlimit(resource.RLIMIT_AS, (H.MEMORY_BYTES, H.MEMORY_BYTES))
    try:
        if hook == "image":
            from napari_dlcb.io._npe2 import UnreadableFileWarning, get_reader
        else:
            from napari_dlcb.io._npe2 import UnreadableFileWarning
            from napari_dlcb.tasks.genome_reader import get_genome_reader as get_reader
        reader = get_reader(path)
        if reader is None:
            queue.put(("declined", ""))
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layers = reader(path)
        notes = [str(w.message) for w in caught if issubclass(w.category, UnreadableFileWarning)]
        assert isinstance(layers, list) and layers, layers
        if len(layers) == 1 and len(layers[0]) == 1 and layers[0][0] is None:
            assert len(notes) == 1 and "\n" not in notes[0], notes
            queue.put(("reported", notes[0]))
        else:
            assert all(len(ly) == 3 and ly[2] in ("image", "labels", "shapes", "points",
                                                  "tracks", "vectors", "surface")
                       for ly in layers), layers  # fmt: skip
            queue.put(("layers", ""))
    except BaseException as exc:  # noqa: BLE001 - what the test reports
        queue.put(("raised", f"{type(exc).__name__}: {exc}"[:500]))


def _run(hook: str, path: Path) -> tuple[str, str]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_probe, args=(hook, str(path), queue))
    proc.start()
    proc.join(H.TIMEOUT_S)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return "hung", ""
    if queue.empty():
        return "crashed", f"exit {proc.exitcode}"
    return queue.get()


def _image_files(d: Path) -> dict[str, tuple[Path, set[str]]]:
    img = (np.random.default_rng(0).random((64, 64)) * 60000).astype(np.uint16)
    f: dict[str, tuple[Path, set[str]]] = {}
    f["fifo"] = (H.fifo(d / "fifo.tif"), {"declined"})
    f["dev-zero"] = (H.device_link(d / "zero.tif"), {"declined"})
    (d / "broken.tif").symlink_to(d / "nowhere.tif")
    f["broken-link"] = (d / "broken.tif", {"declined"})
    f["missing"] = (d / "missing.tif", {"declined"})
    (d / "empty.tif").write_bytes(b"")
    f["empty"] = (d / "empty.tif", {"declined"})
    (d / "text.tif").write_text("hello, not an image\n" * 10)
    f["text-as-tif"] = (d / "text.tif", {"declined"})
    (d / "garbage.tif").write_bytes(b"II*\x00 this is not a TIFF at all" * 3)
    f["garbage-tiff"] = (d / "garbage.tif", OK_BAD)
    tifffile.imwrite(d / "trunc.tif", img, compression="zlib")
    f["truncated-tiff"] = (H.truncated(d / "trunc.tif"), OK_BAD)
    from PIL import Image

    Image.fromarray((img // 256).astype(np.uint8)).save(d / "trunc.png")
    f["truncated-png"] = (H.truncated(d / "trunc.png", 0.5), OK_BAD)
    f["png-60000"] = (H.png_claiming(d / "bomb.png", 60_000, 60_000), OK_BAD)
    f["tiff-bomb"] = (H.tiff_bomb(d / "bomb.tif"), OK_BAD | {"layers"})  # lazy, block-wise
    tifffile.imwrite(d / "complex.tif", (img + 1j * img).astype(np.complex64))
    f["complex"] = (d / "complex.tif", OK_BAD)
    nan = img.astype(np.float32)
    nan[::7, ::5] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    f["nan"] = (d / "nan.tif", {"layers"})  # napari shows NaN pixels; only models refuse them
    tifffile.imwrite(d / "five_d.tif", np.ones((2, 2, 2, 16, 16), np.uint8))
    f["5d"] = (d / "five_d.tif", {"layers"} | OK_BAD)
    (d / "bad.zarr").mkdir()
    (d / "bad.zarr" / ".zarray").write_text("{" * 100)
    f["garbage-zarr"] = (d / "bad.zarr", OK_BAD)
    (d / "fake.ome.zarr").mkdir()
    (d / "fake.ome.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    f["empty-zarr-group"] = (d / "fake.ome.zarr", OK_BAD)
    return f


def _genome_files(d: Path) -> dict[str, tuple[Path, set[str]]]:
    rng = np.random.default_rng(0)
    fa = ">chr1\n" + "".join(rng.choice(list("ACGT"), 3000)) + "\n"
    f: dict[str, tuple[Path, set[str]]] = {}
    gz = gzip.compress(fa.encode())
    (d / "trunc.fa.gz").write_bytes(gz[: len(gz) // 2])
    f["fasta-truncated-gz"] = (d / "trunc.fa.gz", OK_BAD)
    (d / "empty.fa").write_bytes(b"")
    f["fasta-empty"] = (d / "empty.fa", OK_BAD)
    (d / "binary.fa").write_bytes(os.urandom(2000))
    f["fasta-binary"] = (d / "binary.fa", OK_BAD)
    f["fasta-fifo"] = (H.fifo(d / "fifo.fa"), {"declined"})
    f["fasta-missing"] = (d / "missing.fa", {"declined"})
    f["bed-fifo"] = (H.fifo(d / "fifo.bed"), {"declined"})
    (d / "bad.bed").write_text("chr1\tten\ttwenty\n" * 10)
    f["bed-not-numbers"] = (d / "bad.bed", OK_BAD)
    (d / "rev.bed").write_text("chr1\t500\t100\n" * 10)
    f["bed-start-after-end"] = (d / "rev.bed", OK_BAD)
    (d / "garbage.vcf").write_text("this is\tnot a vcf\n" * 5)
    f["vcf-garbage"] = (d / "garbage.vcf", OK_BAD)
    (d / "garbage.bcf").write_bytes(os.urandom(500))
    f["bcf-garbage"] = (d / "garbage.bcf", OK_BAD)
    (d / "garbage.bedGraph").write_text("chr1 x y z\n" * 10)
    f["bedgraph-garbage"] = (d / "garbage.bedGraph", OK_BAD)
    import pyBigWig

    good = d / "good.bw"
    bw = pyBigWig.open(str(good), "w")
    bw.addHeader([("chr1", 6000)], maxZooms=2)
    bw.addEntries(["chr1"] * 2, [0, 500], ends=[100, 600], values=[1.0, 2.0])
    bw.close()
    data = good.read_bytes()
    for name, cut in {"magic-only": 4, "header-only": 64, "half": len(data) // 2}.items():
        (d / f"{name}.bw").write_bytes(data[:cut])
        f[f"bigwig-{name}"] = (d / f"{name}.bw", OK_BAD)
    (d / "noise.bw").write_bytes(data[:4] + os.urandom(400))
    f["bigwig-noise"] = (d / "noise.bw", OK_BAD)
    good.unlink()
    shutil.rmtree(d / "unused", ignore_errors=True)
    return f


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_readers")
    (root / "img").mkdir(), (root / "gen").mkdir()
    out = {f"image-{k}": ("image", *v) for k, v in _image_files(root / "img").items()}
    out.update({f"genome-{k}": ("genome", *v) for k, v in _genome_files(root / "gen").items()})
    return out


NAMES = [
    *(f"image-{k}" for k in ("fifo", "dev-zero", "broken-link", "missing", "empty",
                             "text-as-tif", "garbage-tiff", "truncated-tiff", "truncated-png",
                             "png-60000", "tiff-bomb", "complex", "nan", "5d", "garbage-zarr",
                             "empty-zarr-group")),
    *(f"genome-{k}" for k in ("fasta-truncated-gz", "fasta-empty", "fasta-binary", "fasta-fifo",
                              "fasta-missing", "bed-fifo", "bed-not-numbers",
                              "bed-start-after-end", "vcf-garbage", "bcf-garbage",
                              "bedgraph-garbage", "bigwig-magic-only", "bigwig-header-only",
                              "bigwig-half", "bigwig-noise")),
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_reader_declines_or_reports_never_raises(name, files):
    hook, path, allowed = files[name]
    outcome, detail = _run(hook, path)
    assert outcome in allowed, f"{name}: {outcome} {detail}"


def test_the_reader_corpus_is_complete(files):
    assert set(files) == set(NAMES)
