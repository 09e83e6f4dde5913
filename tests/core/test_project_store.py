"""Annotation autosave: AnnotationStore (crash-safe) and DebouncedSaver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_dlcb.errors import DlcbError
from napari_dlcb.io import project
from napari_dlcb.io.autosave import DebouncedSaver
from napari_dlcb.io.project import AnnotationStore, user_cache_dir


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DLCB_CACHE", str(tmp_path / "cache"))


def _wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# ----------------------------------------------------------------------------- store


def test_round_trip_with_metadata(tmp_path):
    store = AnnotationStore(tmp_path / "cells.ome.tif")
    assert not store.exists and store.names() == []
    assert not store.path.exists()  # nothing created before the first save
    scribbles = np.zeros((40, 50), np.uint8)
    scribbles[3, 4:20] = 1
    classes = np.arange(2000 * 3, dtype=np.int64).reshape(2000, 3)
    store.save(
        "scribbles", scribbles, metadata={"label_kind": "scribbles", "scale": np.array([0.5, 2])}
    )
    store.save("Labels [2]/x", classes, metadata={"label_kind": "classes", "translate": (1, 2)})
    assert store.path == tmp_path / "cells.dlcb.zarr" and store.exists
    assert store.names() == ["scribbles", "Labels [2]/x"]
    np.testing.assert_array_equal(store.load("scribbles"), scribbles)
    back = store.load("Labels [2]/x")
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, classes)
    md = store.metadata("scribbles")
    assert md["label_kind"] == "scribbles" and md["scale"] == [0.5, 2.0]
    assert md["saved_at"].endswith("+00:00")
    everything = store.load_all()
    assert list(everything) == ["scribbles", "Labels [2]/x"]
    assert everything["Labels [2]/x"][1]["translate"] == [1.0, 2.0]


def test_overwrite_delete_and_reopen(tmp_path):
    image = tmp_path / "img.png"
    store = AnnotationStore(image)
    store.save("a", np.ones((4, 4), np.int32))
    store.save("b", np.ones((4, 4), np.int32))
    store.save("a", np.full((6, 6), 5, np.int32))  # a keeps its place in the order
    layer_dir = store._layer_dir("a")
    assert sorted(p.name for p in layer_dir.iterdir() if p.name != "CURRENT").__len__() == 1
    reopened = AnnotationStore.find(image)
    assert reopened is not None and reopened.names() == ["a", "b"]
    np.testing.assert_array_equal(reopened.load("a"), np.full((6, 6), 5))
    reopened.delete("a")
    reopened.delete("never-existed")
    assert reopened.names() == ["b"]
    with pytest.raises(DlcbError, match="no annotation layer 'a'"):
        reopened.load("a")
    assert AnnotationStore.find(tmp_path / "other.png") is None


def test_bad_input_is_a_clear_error(tmp_path):
    store = AnnotationStore(tmp_path / "x.tif")
    with pytest.raises(DlcbError, match="label_kind must be one of"):
        store.save("s", np.zeros((2, 2), np.uint8), metadata={"label_kind": "sketch"})
    with pytest.raises(DlcbError, match="integer labels"):
        store.save("s", np.zeros((2, 2), np.float32))
    with pytest.raises(DlcbError, match="non-empty name"):
        store.save("", np.zeros((2, 2), np.uint8))
    with pytest.raises(DlcbError, match="JSON"):
        store.save("s", np.zeros((2, 2), np.uint8), metadata={"f": object()})
    assert store.names() == []


def test_cache_location(tmp_path, monkeypatch):
    assert user_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("NAPARI_DLCB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "napari-dlcb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "napari-dlcb"


def test_read_only_folder_falls_back_to_cache(tmp_path, monkeypatch):
    image = tmp_path / "ro" / "cells.tif"
    monkeypatch.setattr(project.os, "access", lambda *a, **k: False)
    store = AnnotationStore(image)
    assert store.path.parent == tmp_path / "cache" / "annotations"
    assert store.path.name.startswith("cells-") and store.path.name.endswith(".dlcb.zarr")
    assert store.path == AnnotationStore.cache_path(image)
    assert AnnotationStore.cache_path(tmp_path / "other" / "cells.tif") != store.path
    store.save("s", np.ones((3, 3), np.uint8))
    monkeypatch.undo()
    monkeypatch.setenv("NAPARI_DLCB_CACHE", str(tmp_path / "cache"))
    found = AnnotationStore.find(image)  # found again later, now in the cache
    assert found is not None and found.path == store.path and found.names() == ["s"]


def test_permission_error_on_save_switches_to_cache(tmp_path, monkeypatch):
    image = tmp_path / "cells.tif"
    store = AnnotationStore(image)
    real = AnnotationStore._ensure_root

    def deny_local(self):
        if self.path == AnnotationStore.local_path(image):
            raise PermissionError(13, "Permission denied")
        real(self)

    monkeypatch.setattr(AnnotationStore, "_ensure_root", deny_local)
    store.save("s", np.ones((3, 3), np.uint8))
    assert store.path == AnnotationStore.cache_path(image)
    assert not AnnotationStore.local_path(image).exists()


def test_shipped_sample_annotations_go_to_cache(tmp_path):
    from napari_dlcb._sample_data import sample_data_dir

    store = AnnotationStore(sample_data_dir() / "nuclei.tif")
    assert store.path.is_relative_to(tmp_path / "cache")


# ----------------------------------------------------------------------------- crash safety

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_dlcb.io.project import AnnotationStore

    store = AnnotationStore(sys.argv[1])
    start = int(sys.argv[2])
    base = np.random.default_rng(0).integers(0, 2**20, (384, 384), dtype=np.int32)
    i = start
    while True:
        store.save("layer", base + i, metadata={"label_kind": "instances", "i": i})
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_during_saves_never_corrupts(tmp_path):
    image = tmp_path / "img.tif"
    base = np.random.default_rng(0).integers(0, 2**20, (384, 384), dtype=np.int32)
    rng = np.random.default_rng(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = AnnotationStore(image)
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(image), str(round_ * 10_000)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        first = child.stdout.readline()  # one save completed in this round
        assert first.strip() == str(round_ * 10_000)
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait()
        printed = [int(x) for x in [first, *child.stdout.read().split()]]
        child.stdout.close()
        i = store.metadata("layer")["i"]
        # the newest committed save: the last one reported, or one finished just before the kill
        assert i in (printed[-1], printed[-1] + 1)
        np.testing.assert_array_equal(store.load("layer"), base + i)
        assert store.names() == ["layer"]


# ----------------------------------------------------------------------------- debounce


def test_many_marks_make_one_write(tmp_path):
    store = AnnotationStore(tmp_path / "img.tif")
    saved = []
    saver = DebouncedSaver(store, delay=0.3, on_saved=saved.append)
    labels = np.zeros((32, 32), np.uint8)
    for i in range(25):
        labels[i, i] = 2
        saver.mark_dirty("scribbles", lambda: labels, {"label_kind": "scribbles"})
        time.sleep(0.005)
    assert saved == [] and saver.pending == ["scribbles"]
    assert _wait_until(lambda: saved == ["scribbles"])
    time.sleep(0.4)
    assert saved == ["scribbles"] and saver.saves == 1
    assert store.load("scribbles").sum() == 50  # the state after the last mark
    labels[0, 5] = 1  # the array keeps changing after the save: the store has a copy
    assert store.load("scribbles")[0, 5] == 0
    saver.close()


def test_max_delay_saves_during_continuous_drawing(tmp_path):
    store = AnnotationStore(tmp_path / "img.tif")
    saved = []
    saver = DebouncedSaver(store, delay=0.2, max_delay=0.3, on_saved=saved.append)
    end = time.monotonic() + 0.8
    while time.monotonic() < end:  # never quiet for 0.2 s
        saver.mark_dirty("s", np.ones((4, 4), np.uint8))
        time.sleep(0.05)
    assert len(saved) >= 2
    saver.close()


def test_flush_close_and_errors(tmp_path):
    store = AnnotationStore(tmp_path / "img.tif")
    errors = []
    saver = DebouncedSaver(
        store, delay=60, max_delay=None, on_error=lambda n, e: errors.append((n, e))
    )
    saver.mark_dirty("a", lambda: np.full((3, 3), 7, np.uint16))
    saver.flush()
    assert store.load("a")[0, 0] == 7 and saver.pending == []
    saver.mark_dirty("bad", lambda: np.zeros((2, 2), np.float64))
    with pytest.raises(DlcbError, match="integer labels"):
        saver.flush()
    saver.mark_dirty("b", lambda: np.ones((2, 2), np.uint8))
    saver.close()  # flushes
    saver.close()  # idempotent
    assert store.names() == ["a", "b"]
    with pytest.raises(DlcbError, match="closed"):
        saver.mark_dirty("c", np.ones((2, 2), np.uint8))

    failing = DebouncedSaver(store, delay=0.01, on_error=lambda n, e: errors.append((n, e)))
    failing.mark_dirty("boom", lambda: 1 / 0)
    assert _wait_until(lambda: errors)
    assert errors[0][0] == "boom" and isinstance(errors[0][1], ZeroDivisionError)
    failing.close()


def test_saver_thread_is_safe_and_exits_when_idle(tmp_path):
    store = AnnotationStore(tmp_path / "img.tif")
    saver = DebouncedSaver(store, delay=0.05)
    labels = np.zeros((64, 64), np.int32)

    def painter(k):
        for i in range(30):
            labels[k, i] = k + 1
            saver.mark_dirty(f"layer{k % 2}", lambda: labels)

    threads = [threading.Thread(target=painter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saver.flush()
    np.testing.assert_array_equal(store.load("layer0"), labels)
    np.testing.assert_array_equal(store.load("layer1"), labels)
    assert _wait_until(lambda: saver._thread is None)  # no idle thread left behind
    saver.close()


def test_pending_changes_are_saved_when_python_exits(tmp_path):
    image = tmp_path / "img.tif"
    code = textwrap.dedent(
        f"""
        import numpy as np
        from napari_dlcb.io.autosave import DebouncedSaver
        from napari_dlcb.io.project import AnnotationStore
        saver = DebouncedSaver(AnnotationStore({str(image)!r}), delay=60)
        saver.mark_dirty("scribbles", np.full((5, 5), 2, np.uint8))
        """  # exits without close(): the exit hook must save
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(AnnotationStore(image).load("scribbles"), np.full((5, 5), 2))
