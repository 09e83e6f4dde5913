"""The Tune dock: hyper-parameter search (optuna) for any task, from the viewer.

A thin adapter over :func:`napari_dlcb.tuning.study.tune`: the dock builds an
objective from layers (segmentation: an image and its labels layer) or files
(classification: an ImageFolder; sequence: a sequence table), starts ONE job
on the :class:`~napari_dlcb._widgets._jobs.JobRunner` (progress in the
activity dock, Stop ends the study after the running trial, which keeps what
it learnt), and shows a live table of trials and the study's pictures
(optimisation history, parallel coordinates, importances, learning curves).
"Use best model" predicts the current image with the chosen model
(segmentation) or gives the model folder's path.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb.errors import DlcbError

from ._common import notify_info, refill_combo
from ._jobs import JobRunner

if TYPE_CHECKING:
    import napari

__all__ = ["TuneWidget"]

TASKS = {
    "segmentation": "Segmentation (image + labels layers)",
    "classification": "Classification (ImageFolder)",
    "sequence": "Sequence (table file)",
}
COLUMNS = ("trial", "state", "value", "seconds", "parameters")


class _Plots:
    """What the job yields after each trial: the study pictures as RGBA bytes."""

    def __init__(self, rgba: tuple[bytes, int, int]) -> None:
        self.rgba = rgba


def _tune_job(build: Any, options: dict[str, Any], stop: Any) -> Any:
    """Worker: build the objective (reads files), run the study, draw it after each trial."""
    import optuna

    from napari_dlcb.training.events import JobProgress
    from napari_dlcb.tuning.plots import render_study, study_summary
    from napari_dlcb.tuning.records import open_storage
    from napari_dlcb.tuning.study import TrialFinished, tune

    objective = build()
    total, done = options.get("n_trials"), 0
    for ev in tune(objective, stop=stop, **options):
        yield ev
        if isinstance(ev, TrialFinished):
            done += 1
            yield JobProgress(done, total, f"{done} trial(s) finished")
            storage = open_storage(options.get("storage"), Path(options["out_dir"]))
            study = optuna.load_study(study_name=options["study_name"], storage=storage)
            yield _Plots(render_study(study_summary(study), size=(640, 520)))


class TuneWidget(QWidget):
    """Hyper-parameter search for segmentation, classification or sequence models.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers provide segmentation data.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.best_dir: str | None = None
        self.rows: dict[int, int] = {}
        self._build_ui()
        self.jobs = JobRunner(self.status.setText, on_busy=self._busy, parent=self)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._task_changed()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        form = QFormLayout()
        self.task_combo = QComboBox()
        for key, text in TASKS.items():
            self.task_combo.addItem(text, key)
        self.task_combo.currentIndexChanged.connect(self._task_changed)
        form.addRow("Task", self.task_combo)
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(["scribbles", "classes", "instances"])
        form.addRow("Image layer", self.image_combo)
        form.addRow("Labels layer", self.labels_combo)
        form.addRow("Labels are", self.kind_combo)
        self.data_edit, self.test_edit = QLineEdit(), QLineEdit()
        self.test_edit.setPlaceholderText("optional: scored once, on the chosen model")
        form.addRow("Training data", self._with_browse(self.data_edit))
        form.addRow("Test data", self._with_browse(self.test_edit))
        self.budget_spin = QDoubleSpinBox(minimum=0.5, maximum=24 * 60, value=10.0, suffix=" min")
        self.trials_spin = QSpinBox(minimum=0, maximum=10_000, value=0, specialValueText="no limit")
        self.epochs_spin = QSpinBox(minimum=0, maximum=10_000, value=0, specialValueText="default")
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(["line-random", "tpe", "random"])
        self.strategy_combo.setToolTip(
            "line-random: line search per important hyper-parameter, then random sampling "
            "of the refined space (the paper's protocol); tpe: Bayesian (optuna TPE)"
        )
        self.storage_edit = QLineEdit()
        self.storage_edit.setPlaceholderText("default: a journal file in the study folder")
        for label, w in (
            ("Budget", self.budget_spin),
            ("Trials", self.trials_spin),
            ("Epochs per trial", self.epochs_spin),
            ("Strategy", self.strategy_combo),
            ("Storage URL", self.storage_edit),
        ):
            form.addRow(label, w)
        buttons = QHBoxLayout()
        self.start_btn, self.stop_btn = QPushButton("Start study"), QPushButton("Stop")
        self.best_btn = QPushButton("Use best model")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.best_btn.clicked.connect(self.use_best)
        self.stop_btn.setEnabled(False)
        self.best_btn.setEnabled(False)
        for b in (self.start_btn, self.stop_btn, self.best_btn):
            buttons.addWidget(b)
        self.status = QLabel("Choose data, a budget and a strategy, then Start study.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.plot = QLabel()
        self.plot.setMinimumHeight(260)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.plot)

    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        btn = QPushButton("Browse…")
        btn.clicked.connect(lambda: self._browse(edit))
        row.addWidget(btn)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        if self.task == "sequence":
            path, _ = QFileDialog.getOpenFileName(self, "Sequence table")
        else:
            path = QFileDialog.getExistingDirectory(self, "Folder")
        if path:
            edit.setText(path)

    @property
    def task(self) -> str:
        """The chosen task ("segmentation", "classification" or "sequence")."""
        return str(self.task_combo.currentData())

    def _task_changed(self, *args: Any) -> None:
        seg = self.task == "segmentation"
        for w in (self.image_combo, self.labels_combo, self.kind_combo):
            w.setEnabled(seg)
        self.data_edit.setEnabled(not seg)
        self.data_edit.setPlaceholderText(
            "ImageFolder: DIR/<class>/*.png"
            if self.task == "classification"
            else "sequence table (seq and Bound columns)"
            if self.task == "sequence"
            else ""
        )

    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels

        refill_combo(
            self.image_combo, [ly.name for ly in self.viewer.layers if isinstance(ly, Image)]
        )
        refill_combo(
            self.labels_combo, [ly.name for ly in self.viewer.layers if isinstance(ly, Labels)]
        )

    def _busy(self, busy: bool) -> None:
        self.start_btn.setEnabled(not busy)
        self.stop_btn.setEnabled(busy)

    # ------------------------------------------------------------------ the study
    def objective_builder(self) -> Any:
        """A function (run in the job) that builds the objective; checks input now."""
        from napari_dlcb.tuning import objectives as O

        base: dict[str, Any] = {}
        if self.epochs_spin.value() > 0:
            base["epochs"] = int(self.epochs_spin.value())
        test = self.test_edit.text().strip() or None
        if self.task == "segmentation":
            image = (
                self.viewer.layers[self.image_combo.currentText()]
                if self.image_combo.currentText()
                else None
            )
            labels = (
                self.viewer.layers[self.labels_combo.currentText()]
                if self.labels_combo.currentText()
                else None
            )
            if image is None or labels is None:
                raise DlcbError("choose an image layer and the labels layer painted on it")
            img, lab = np.asarray(image.data), np.asarray(labels.data)
            kind = self.kind_combo.currentText()
            base.update(label_kind=kind, mode="quick" if kind == "scribbles" else "full")

            def build() -> Any:
                from napari_dlcb.tasks.segmentation import SegmentationConfig

                return O.SegmentationObjective([img], [lab], SegmentationConfig.from_dict(base))

            return build
        data = self.data_edit.text().strip()
        if not data or not Path(data).exists():
            raise DlcbError("choose the training data (Browse…)")
        if self.task == "classification":
            return lambda: O.classification_objective(images=data, base=base, test=test)
        return lambda: O.sequence_objective(
            table=data,
            base=base,
            test_table=test,
            negatives="dinucleotide-shuffle" if _all_positive(data) else "none",
        )

    def start(self) -> bool:
        """Start the study as one job (returns False if the input is not usable)."""
        from napari_dlcb.io.project import user_cache_dir

        try:
            build = self.objective_builder()
        except DlcbError as err:
            self.jobs.report(err)
            return False
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = user_cache_dir() / "studies" / f"{self.task}-{stamp}"
        options = {
            "out_dir": out,
            "strategy": self.strategy_combo.currentText(),
            "budget_minutes": float(self.budget_spin.value()),
            "n_trials": int(self.trials_spin.value()) or None,
            "storage": self.storage_edit.text().strip() or None,
            "study_name": f"napari-dlcb-{self.task}-{stamp}",
        }
        self.table.setRowCount(0)
        self.rows.clear()
        self.best_dir = None
        self.best_btn.setEnabled(False)
        job = self.jobs.run(
            "Tuning",
            _tune_job,
            build,
            options,
            kind="study",
            on_yield=self._on_event,
            status=f"Study in {out}…",
        )
        return job is not None

    def stop(self) -> None:
        """End the study after the running trial (which keeps what it learnt)."""
        if self.jobs.cancel("study"):
            self.status.setText("Stopping after the running trial…")

    # ------------------------------------------------------------------ events
    def _on_event(self, ev: Any) -> None:
        from napari_dlcb.tuning.study import StudyFinished, TrialFinished, TrialStarted

        if isinstance(ev, TrialStarted):
            self._row(ev.number, "running", math.nan, 0.0, ev.params)
        elif isinstance(ev, TrialFinished):
            self._row(ev.number, ev.state, ev.value, ev.seconds, ev.params)
        elif isinstance(ev, _Plots):
            data, w, h = ev.rgba
            image = QImage(data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
            self.plot.setPixmap(QPixmap.fromImage(image))
        elif isinstance(ev, StudyFinished):
            self._finished(ev)

    def _row(self, number: int, state: str, value: float, seconds: float, params: dict) -> None:
        row = self.rows.get(number)
        if row is None:
            row = self.rows[number] = self.table.rowCount()
            self.table.insertRow(row)
        text = "" if not math.isfinite(value) else f"{value:.4f}"
        cells = (
            str(number),
            state,
            text,
            f"{seconds:.0f}",
            ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            ),
        )
        for col, cell in enumerate(cells):
            self.table.setItem(row, col, QTableWidgetItem(cell))

    def _finished(self, ev: Any) -> None:
        if ev.best_dir is None:
            self.status.setText(f"Study {ev.reason}: no trial finished.")
            return
        self.best_dir = ev.best_dir
        self.best_btn.setEnabled(True)
        test = ""
        if ev.test:
            test = " · test (once): " + ", ".join(
                f"{k} {v:.4f}" for k, v in ev.test.items() if isinstance(v, float)
            )
        self.status.setText(
            f"Study {ev.reason}: {ev.n_complete} complete, {ev.n_pruned} pruned. Best trial "
            f"{ev.best_number}, validation {ev.best_value:.4f}{test}. Model: {ev.best_dir}"
        )

    def use_best(self) -> None:
        """Segmentation: predict the chosen image with the best model; else show its folder."""
        if self.best_dir is None:
            return
        if self.task != "segmentation" or not self.image_combo.currentText():
            notify_info(f"best model: {self.best_dir} (use it as 'Start from' or --model)")
            return
        from napari_dlcb.inference.segment import segment

        image = self.viewer.layers[self.image_combo.currentText()]
        self.jobs.run(
            "Predicting with the best model",
            segment,
            self.best_dir,
            np.asarray(image.data),
            kind="predict",
            on_return=lambda res: self.viewer.add_labels(
                np.asarray(res[1]),
                name="tuned segmentation",
                scale=image.scale,
                translate=image.translate,
            ),
        )


def _all_positive(table: str) -> bool:
    """Whether a sequence table holds only peaks (then shuffled negatives are made)."""
    from napari_dlcb.data.dna import read_sequence_table

    try:
        df = read_sequence_table(table, sequence_column="seq", label_columns=["Bound"])
    except DlcbError:
        return False
    values = df["Bound"].to_numpy(float)
    return bool(values.size and (values > 0.5).all())
