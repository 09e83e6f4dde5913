"""Kill napari with SIGKILL after painting; reopening the image restores the annotation.

A real napari process (same X display) opens a copy of the sample nuclei image
from disk, enables autosave on a new Labels layer, paints strokes with the
Labels API from inside its running event loop, and then idles. The test polls
the ``.dlcb.zarr`` store beside the image until the strokes are saved, kills the
process with SIGKILL (no atexit, no flush), and opens the image again with the
plugin's reader: the annotation layer must come back exactly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import numpy as np
    import napari
    from qtpy.QtCore import QTimer

    from napari_dlcb._widgets._autosave import enable_autosave

    image_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    viewer = napari.Viewer(show=True)
    (image,) = viewer.open(image_path, plugin="napari-dlcb")
    labels = viewer.add_labels(
        np.zeros(image.data.shape, np.uint8), name="my scribbles",
        scale=image.scale, translate=image.translate,
    )
    auto = enable_autosave(image, labels, delay=0.5, label_kind="scribbles")
    strokes = [((r, 40), 1) for r in range(30, 200, 4)] + [
        ((250, c), 2) for c in range(200, 330, 3)
    ] + [((400, 400), 3)]

    def paint():
        labels.brush_size = 7
        for coord, value in strokes:          # one undo item (and paint event) each
            labels.paint(coord, value)
        labels.fill((5, 500), 2)              # bucket fill of the empty canvas... undone below
        labels.undo()
        np.save(out / "expected.npy", labels.data)
        (out / "painted").write_text(f"{time.time()!r}\\n{auto.store.path}")

    QTimer.singleShot(300, paint)
    napari.run()
    """
)


def _sample_image() -> Path:
    from napari_dlcb._sample_data import sample_data_dir

    return sample_data_dir() / "nuclei.tif"


def test_sigkill_after_painting_restores_annotation(tmp_path):
    from napari_dlcb.io._npe2 import get_reader
    from napari_dlcb.io.project import AnnotationStore

    try:
        src = _sample_image()
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"sample data unavailable: {err}")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    image_path = data_dir / "nuclei.tif"
    shutil.copy(src, image_path)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = open(tmp_path / "child.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(image_path), str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 90
        painted = tmp_path / "painted"
        while not painted.exists():
            assert proc.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "child never painted"
            time.sleep(0.1)
        time.sleep(0.2)  # expected.npy is complete before "painted" is written
        t_painted = float(painted.read_text().splitlines()[0])
        expected = np.load(tmp_path / "expected.npy")
        assert (expected == 1).any() and (expected == 2).any() and (expected == 3).any()

        store = AnnotationStore(image_path)
        assert store.path == data_dir / "nuclei.dlcb.zarr"
        saved_at = None
        while saved_at is None:
            assert proc.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "autosave never wrote the strokes"
            if store.exists and "my scribbles" in store.names():
                if np.array_equal(store.load("my scribbles"), expected):
                    saved_at = time.time()
            time.sleep(0.05)
        latency = saved_at - t_painted
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()

    # reopen the image (reader, no GUI): the annotation layer comes back exactly
    reader = get_reader(str(image_path))
    assert reader is not None
    layers = reader(str(image_path))
    by_name = {kw.get("name"): (data, kw, kind) for data, kw, kind in layers}
    assert "my scribbles" in by_name, list(by_name)
    data, kwargs, kind = by_name["my scribbles"]
    assert kind == "labels"
    np.testing.assert_array_equal(np.asarray(data), expected)
    assert kwargs["metadata"]["label_kind"] == "scribbles"
    print(f"\nautosave: strokes on disk {latency:.2f} s after painting (delay 0.5 s); restored")
