"""The hostile-input corpus: files that break readers, and a bounded way to run the CLI on them.

Everything is generated small at test time (the 60000 x 60000 PNG is a
100-byte header, the 20000 x 20000 TIFF is a zlib bomb of a few hundred kB).
:func:`run_cli` runs ``napari_dlcb.cli.main(argv)`` in a forked child of a
forkserver that imported torch and the CLI once, so a case costs a fork, not
a 10-s interpreter start; the child runs under ``RLIMIT_AS`` (4 GiB) and is
killed after ``timeout`` seconds, and its exit status, stdout, stderr, peak
memory and time come back.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the limits every case must stay within
TIMEOUT_S = 60.0
MEMORY_BYTES = 4 * 2**30

_PRELOAD = [
    "numpy",
    "torch",
    "tifffile",
    "zarr",
    "dask.array",
    "PIL.Image",
    "imageio.v3",
    "napari_dlcb.cli",
    "napari_dlcb.commands.segmentation",
    "napari_dlcb.commands.tune",
    "napari_dlcb.tasks.segmentation",
    "napari_dlcb.models.saved",
    "napari_dlcb.inference.segment",
    "napari_dlcb.io._npe2",
    "napari_dlcb.commands.classification",
    "napari_dlcb.commands.sequence",
    "napari_dlcb.commands.export",
    "napari_dlcb.commands.pretrain",
]
_CTX: list = []


def _context():
    if not _CTX:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _CTX.append(ctx)
    return _CTX[0]


@dataclass
class Result:
    """What one CLI run did."""

    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    max_rss_bytes: int
    timed_out: bool

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.strip().splitlines() if ln.strip()]


def _child(argv: list[str], folder: str, env: dict[str, str]) -> None:  # pragma: no cover - child
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    os.environ.update(env)
    out = os.open(os.path.join(folder, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(os.path.join(folder, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out, 1)
    os.dup2(err, 2)
    import torch

    torch.set_num_threads(1)
    from napari_dlcb.cli import main

    rc = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(folder, "stats.json").write_text(json.dumps({"rc": rc, "max_rss": rss}))
    os._exit(rc)


def run_cli(argv: list[str], folder: Path, *, timeout: float = TIMEOUT_S, env=None) -> Result:
    """Run the CLI on ``argv`` in a bounded child; its files go to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = _context().Process(target=_child, args=(list(map(str, argv)), str(folder), env or {}))
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    timed_out = proc.is_alive()
    if timed_out:
        proc.kill()
        proc.join()
    seconds = time.perf_counter() - t0

    def read(name: str) -> str:
        f = folder / name
        return f.read_text(errors="replace") if f.exists() else ""

    stats = json.loads(read("stats.json") or "{}")
    return Result(
        rc=proc.exitcode,
        stdout=read("stdout"),
        stderr=read("stderr"),
        seconds=seconds,
        max_rss_bytes=int(stats.get("max_rss", 0)),
        timed_out=timed_out,
    )


# ----------------------------------------------------------------------------- hostile files


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def big_png(path: Path, side: int = 12_000) -> Path:
    """A real ``side`` x ``side`` grey PNG (zeros compress to ~150 kB)."""
    from PIL import Image

    Image.new("L", (side, side)).save(path, compress_level=1)
    return path


def tiff_bomb(path: Path, side: int = 20_000) -> Path:
    """A tiled zlib TIFF of ``side`` x ``side`` zeros: small on disk, huge when decoded."""
    import tifffile

    tile = np.zeros((512, 512), np.uint8)
    n = (-(-side // 512)) ** 2
    tifffile.imwrite(
        path,
        (tile for _ in range(n)),
        shape=(side, side),
        dtype=np.uint8,
        tile=(512, 512),
        compression="zlib",
    )
    return path


def truncated(path: Path, fraction: float = 0.6) -> Path:
    """Cut a file to ``fraction`` of its length."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    return path


def fifo(path: Path) -> Path:
    """A named pipe (opening it for reading would block forever)."""
    os.mkfifo(path)
    return path


def device_link(path: Path, device: str = "/dev/zero") -> Path:
    """A symlink to a device (reading it never ends)."""
    path.symlink_to(device)
    return path


def nuclei(side: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic image (uint16) and its instance labels."""
    from napari_dlcb.data.synthetic import synthetic_nuclei

    img, lab = synthetic_nuclei((side, side), seed=seed)
    return img, lab.astype(np.uint16)


def tiny_model(folder: Path) -> Path:
    """A small instance U-Net model folder (random weights)."""
    from napari_dlcb.models.saved import ModelMeta, save_model
    from napari_dlcb.models.unet import UNet2D

    net = UNet2D(1, 3, base=4, depth=2)
    meta = ModelMeta(
        "segmentation",
        net.architecture(),
        ["background", "interior", "boundary"],
        label_kind="instances",
        normalization={"mode": "per_image_percentile"},
    )
    return save_model(net, folder, meta)


def looping_model(folder: Path) -> Path:
    """A TorchScript model folder whose forward never returns (not trusted by anyone)."""
    import torch

    from napari_dlcb.models.weights import save_weights

    class Loop(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x
            while bool(y.sum() > -1.0):
                y = y + 1.0
            return y

    folder.mkdir(parents=True)
    scripted = torch.jit.script(Loop())
    torch.jit.save(scripted, str(folder / "model.pt"))
    save_weights(scripted, folder / "weights.safetensors")
    meta = {
        "format_version": 1,
        "task": "segmentation",
        "architecture": {"name": "torchscript"},
        "classes": ["background", "foreground"],
        "label_kind": "classes",
        "in_channels": 1,
        "input_axes": "bcyx",
        "normalization": {"mode": "per_image_percentile"},
    }
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def with_metadata(src: Path, dest: Path, **changes) -> Path:
    """A copy of a model folder with fields of its ``metadata.json`` changed."""
    import shutil

    shutil.copytree(src, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    (dest / "metadata.json").write_text(json.dumps(meta))
    return dest
