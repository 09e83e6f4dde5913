"""Live training in a real napari window, as a user does it, on real nuclei.

Run under a virtual display: ``xvfb-run -a python benchmarks/bench_gui_training.py``
(``--hog N`` runs N busy-loop processes beside it, like a laptop doing other work).

The StarDist sample image (512 x 512, 125 nuclei) with ~18 thin strokes drawn
from its ground truth (:func:`napari_dlcb.data.strokes.simulate_strokes`, seed
0: 10 through nuclei, 8 through background), the built-in U-Net, quick mode,
CPU. The Segmentation dock trains for ``--seconds`` (90), then Stop, Predict
and Save are pressed. Reported: time from the Train click to the first live
overlay, median interval between overlay refreshes, the longest event-loop
stall (a 10 ms re-armed timer, from just before the click to the end), how long
the click itself took, Stop latency (click to idle dock), epochs on the
learning curve, whether Save worked and the saved weights differ from the
base, foreground IoU of Predict against the ground truth (the untouched
built-in model scores 0.857), and every traceback logged meanwhile.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import record, shared_data


def _wait(app, predicate, timeout: float, step_ms: int = 20) -> bool:
    """Run the Qt event loop until ``predicate()`` or ``timeout`` seconds (no busy wait)."""
    from qtpy.QtCore import QEventLoop, QTimer

    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            return False
        loop = QEventLoop()
        QTimer.singleShot(step_ms, loop.quit)
        loop.exec()
    return True


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(f"{record.name}: {record.getMessage()}")


def _hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _open(viewer, data_dir: Path):
    from napari_dlcb.data.strokes import simulate_strokes
    from napari_dlcb.io.images import read_image

    img = read_image(data_dir / "img2d.tif")
    truth = read_image(data_dir / "mask2d.tif").astype(np.int32)
    strokes = simulate_strokes(truth, seed=0)
    viewer.add_image(img, name="nuclei")
    viewer.add_labels(strokes, name="scribbles")
    return truth, strokes


def _weights_differ(folder: Path) -> bool:
    from napari_dlcb.models.registry import resolve_base
    from napari_dlcb.models.saved import load_model

    base, _ = resolve_base("builtin")
    saved, _ = load_model(folder)
    ref = base.state_dict()
    return any(not np.array_equal(v.numpy(), ref[k].numpy()) for k, v in saved.state_dict().items())


class _StallSampler:
    """A thread that records the main thread's stack whenever the event loop is late.

    The probe's ``_last`` timestamp is the last time the loop served its timer; when it is
    more than ``after_ms`` old, the main thread's innermost frames are recorded (at most
    once per stall), so that the longest stalls can be attributed to code.
    """

    def __init__(self, probe, *, after_ms: float = 120.0) -> None:
        import threading

        self.probe = probe
        self.after_s = after_ms / 1000
        self.main = threading.main_thread().ident
        self.t0 = time.perf_counter()
        self.stacks: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)

    def _run(self) -> None:
        import traceback

        seen = None
        while not self._stop.wait(0.02):
            last = self.probe._last
            if last is None or last == seen:
                continue
            late = time.perf_counter() - last
            if late > self.after_s:
                frame = sys._current_frames().get(self.main)
                if frame is not None:
                    lines = [ln.strip() for ln in traceback.format_stack(frame)[-6:]]
                    ev = frame.f_locals.get("e") if frame.f_code.co_name == "event" else None
                    if ev is not None:  # which Qt event the main window was handling
                        lines.append(f"Qt event {type(ev).__name__} type {int(ev.type())}")
                    self.stacks.append((round(late * 1000), round(last - self.t0, 1), lines))
                seen = last


def _train(app, widget, seconds: float) -> dict:
    from napari_dlcb._widgets._common import EventLoopProbe

    times: list[float] = []
    apply = widget.live.apply_preview

    def recorded(*args, **kwargs):
        apply(*args, **kwargs)
        times.append(time.perf_counter())

    widget.live.apply_preview = recorded
    epochs: list[float] = []
    add_epoch = widget.plot.add_epoch

    def epoch_recorded(*args, **kwargs):
        add_epoch(*args, **kwargs)
        epochs.append(time.perf_counter())

    widget.plot.add_epoch = epoch_recorded
    marks: dict[str, float] = {}
    on_event = widget._on_event

    def event_recorded(ev):
        marks.setdefault(type(ev).__name__, time.perf_counter())
        if type(ev).__name__ == "Finished":
            marks["Finished"] = time.perf_counter()
        on_event(ev)

    widget._on_event = event_recorded
    probe = EventLoopProbe(interval_ms=10)
    probe.start()
    sampler = _StallSampler(probe)
    sampler.start()
    probe_t0 = time.perf_counter()
    t0 = time.perf_counter()
    widget.train_btn.click()
    click = time.perf_counter() - t0
    _wait(app, lambda: time.perf_counter() - t0 > seconds or not widget.is_training, seconds + 5)
    t_stop = time.perf_counter()
    widget.stop_btn.click()
    stopped = _wait(app, lambda: not widget.is_training, 60)
    stop_latency = time.perf_counter() - t_stop
    probe.stop()
    sampler.stop()
    gaps = np.diff(times) if len(times) > 1 else np.array([np.nan])
    # when the longest stalls happened (s after the click), to set beside the overlays
    ends = np.cumsum(probe.gaps_ms) / 1000 - (t0 - probe_t0)
    worst = np.argsort(probe.gaps_ms)[-5:][::-1]
    return {
        "train_click_ms": round(click * 1000, 1),
        "first_overlay_s": round(times[0] - t0, 2) if times else None,
        "overlays": len(times),
        "median_refresh_s": round(float(np.median(gaps)), 2),
        "max_stall_ms": round(probe.max_stall_ms, 1),
        "longest_gaps_ms_at_s": [
            (round(probe.gaps_ms[i]), round(float(ends[i]), 1)) for i in worst
        ],
        "overlays_at_s": [round(t - t0, 1) for t in times[:12]],
        # main-thread stacks seen while the loop was > 120 ms late (where the stalls are)
        "stall_stacks": sampler.stacks[:40],
        "epochs_at_s": [round(t - t0, 1) for t in epochs[:12]],
        "stop_latency_s": round(stop_latency, 2) if stopped else None,
        "epochs_on_curve": len(widget.plot.epochs),
        "first_epoch_s": round(epochs[0] - t0, 2) if epochs else None,
        # when the worker had read the model and built the task, and the engine started
        "task_ready_s": round(marks.get("TrainerReady", np.nan) - t0, 2),
        "engine_started_s": round(marks.get("Started", np.nan) - t0, 2),
        "stop_to_finished_event_s": round(marks.get("Finished", np.nan) - t_stop, 2),
        "status_after_stop": widget.status.text().splitlines()[0],
    }


def _reference(app, viewer, widget, truth: np.ndarray, seconds: float) -> dict:
    """The stall floor of this window on this machine: the same redraws, no training.

    Once a second a labels layer the size of the image is rewritten in place and refreshed
    (as a live preview is) and the dock's status line changes, while nothing trains. The
    largest stall measured here is what the display itself costs (software OpenGL under
    Xvfb); a training run's stalls are compared with it.
    """
    from qtpy.QtCore import QTimer

    from napari_dlcb._widgets._common import EventLoopProbe

    buf = (truth > 0).astype(np.int32)
    layer = viewer.add_labels(np.zeros_like(buf), name="reference preview", opacity=0.5)
    n = [0]

    def tick() -> None:
        n[0] += 1
        layer.data[...] = np.roll(buf, n[0], axis=1)
        layer.refresh(extent=False, highlight=False, thumbnail=False)
        widget.status.setText(f"reference redraw {n[0]}")

    timer = QTimer()
    timer.timeout.connect(tick)
    probe = EventLoopProbe(interval_ms=10)
    probe.start()
    sampler = _StallSampler(probe)
    sampler.start()
    timer.start(1000)
    _wait(app, lambda: False, seconds)
    timer.stop()
    probe.stop()
    sampler.stop()
    return {
        "reference_redraws": n[0],
        "max_stall_ms": round(probe.max_stall_ms, 1),
        "p99_gap_ms": round(float(np.percentile(probe.gaps_ms, 99)), 1),
        "stall_stacks": sampler.stacks[:6],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--hog", type=int, default=0, help="busy-loop processes beside it")
    ap.add_argument(
        "--reference",
        action="store_true",
        help="no training: measure the stalls of the same redraws alone (the display's floor)",
    )
    args = ap.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dlcb._widgets.segmentation import SegmentationWidget
    from napari_dlcb.inference.metrics import foreground_iou

    catcher = _Tracebacks()
    logging.getLogger().addHandler(catcher)
    hogs = _hogs(args.hog)
    load_before = os.getloadavg()
    try:
        viewer = napari.Viewer(show=True)
        viewer.window.resize(1024, 720)
        app = QApplication.instance()
        truth, strokes = _open(viewer, shared_data() / "stardist_sample_nuclei_2d")
        widget = SegmentationWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segmentation", area="right")
        widget.select_layers(image="nuclei", labels="scribbles")
        widget.device_combo.setCurrentText("cpu")
        widget.epochs_spin.setValue(10_000)  # stopped by the benchmark
        _wait(app, lambda: widget.warmed_up, 120)
        _wait(app, lambda: False, 1.0)  # let the window settle
        if args.reference:
            result = _reference(app, viewer, widget, truth, min(args.seconds, 60.0))
            viewer.close()
            return _record(args, strokes, load_before, result, "gui_reference")
        result = _train(app, widget, args.seconds)
        result["kept"] = widget.last_finished.kept if widget.last_finished else None
        t = time.perf_counter()
        widget.predict()
        _wait(app, lambda: widget.predict_worker is None, 300)
        result["predict_s"] = round(time.perf_counter() - t, 1)
        seg = np.asarray(viewer.layers["nuclei segmentation"].data)
        result["foreground_iou"] = round(float(foreground_iou(seg > 0, truth > 0)), 4)
        with tempfile.TemporaryDirectory() as tmp:
            widget.save_model(Path(tmp) / "model")
            _wait(app, lambda: not widget.jobs.busy("save"), 120)
            saved = widget.saved_path
            result["save_ok"] = saved is not None and (saved / "metadata.json").is_file()
            result["saved_weights_differ"] = bool(result["save_ok"] and _weights_differ(saved))
        result["tracebacks"] = catcher.seen
        viewer.close()
    finally:
        for p in hogs:
            p.kill()
    _record(args, strokes, load_before, result, "gui_training")


def _record(args, strokes, load_before, result: dict, name: str) -> None:
    record(
        f"{name}{'_hog' + str(args.hog) if args.hog else ''}",
        {
            "protocol": __doc__.strip().splitlines()[5:9],
            "seconds": args.seconds,
            "hog_processes": args.hog,
            "strokes": {
                "background_px": int((strokes == 1).sum()),
                "object_px": int((strokes == 2).sum()),
            },
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()],
            **result,
        },
    )


if __name__ == "__main__":
    main()
