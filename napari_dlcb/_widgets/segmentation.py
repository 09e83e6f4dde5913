"""Segmentation dock widget: annotate, fine-tune a U-Net live, predict, save.

The widget is a thin adapter over
:class:`napari_dlcb.tasks.segmentation.SegmentationTrainer`:

1. it validates the chosen layers on the main thread (cheap checks; a
   :class:`~napari_dlcb.errors.DlcbError` becomes a one-line notification and no
   worker starts);
2. it builds :class:`TrainingSettings` and starts ONE ``thread_worker`` that
   constructs the trainer and drains ``trainer.fit(...)``;
3. it turns the yielded events into a status line, a learning-curve plot and a
   live prediction layer for the visible part of the image, throttled to about
   one layer refresh per second; with "Live saliency" on, some previews also
   carry a saliency map of the foreground class on the centre of the viewport
   (computed by the trainer in the training thread, at most a third of its
   time), shown as a diverging "<image> live saliency" layer.

The viewport region is computed on the main thread from the camera and handed
to the worker through a lock-guarded :class:`~._common.RegionHolder`, which is
the trainer's ``preview_region`` callable. Stop sets a ``threading.Event`` that
the engine checks after every batch; Resume calls ``fit`` again on the same
trainer (the model keeps its weights), or, if the annotation changed since
(look at the overlay, paint corrections, resume), builds a new trainer that
starts from the current weights.

Keeping the event loop free (measured with a 10 ms ``QTimer`` probe, see
``tests/widgets``): torch and the training modules are imported in a
background thread when the widget opens (imports hold the GIL); the live layer
is created when Train is pressed, then written in place and re-sliced; the
status line never triggers a relayout of the main window; the learning curve
is rendered off the GUI thread; layer updates are throttled to 1/s.

Label convention in the live and final prediction layers: ``instances`` show
instance ids; ``classes`` show the class values; ``scribbles`` show class
values 2..K with the background class (1) drawn as 0, so objects keep the
colours they were painted with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import (
    RegionHolder,
    StatusText,
    ThrottledCall,
    ViewportTracker,
    attribution_colormap,
    keep_selection,
    layer_grid,
    notify_error,
    notify_info,
    notify_warning,
    plane_shape,
)
from napari_dlcb._widgets._plot import LearningCurvePlot
from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["SegmentationWidget", "TrainingSettings"]

LABEL_KINDS = ("scribbles", "classes", "instances")
BASES = {
    "builtin": "Built-in nuclei U-Net",
    "saved": "Saved model folder…",
    "bioimageio": "BioImage.IO package…",
}
OUTPUT_KEY = "dlcb_output"  # layer.metadata key marking layers this widget made
#: choices of the "Live saliency" combo: off, or a method of
#: ``napari_dlcb.tasks.segmentation.LIVE_SALIENCY`` (same names as the Interpret dock)
LIVE_SALIENCY_CHOICES = (
    "off",
    "gradients",
    "smoothgrad",
    "gradcam",
    "integrated-gradients",
    "occlusion",
)
FULL_PLANE_PIXELS = 2048 * 2048  # live layer as large as the plane up to this size
#: Predict on a lazy (dask / zarr / multiscale) image larger than this runs block by
#: block into an OME-Zarr store in the user cache and shows the result lazily, so
#: images larger than memory can be segmented from the GUI (as the CLI does).
BLOCKWISE_PIXELS = 4096 * 4096
PYRAMID_SMALLEST = 2048  # coarsest level of a block-wise result's lazy pyramid


@dataclass
class TrainingSettings:
    """Everything the widget passes to the core, with the core's defaults.

    ``trainer_kwargs()`` and ``fit_kwargs()`` are exactly the keyword arguments of
    ``SegmentationTrainer(...)`` and ``SegmentationTrainer.fit(...)``; widget
    tests patch the trainer and assert on them.
    """

    label_kind: str = "scribbles"
    base: str = "builtin"
    mode: str = "quick"
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 4
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    patch_size: int = 256
    augment: bool = True
    preview_interval: float = 1.0
    live_saliency: str | None = None
    channel_axis: int | None = None
    extra_fit: dict[str, Any] = field(default_factory=dict)

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``SegmentationTrainer(images, labels, **kw)``."""
        return {
            "label_kind": self.label_kind,
            "base": self.base,
            "mode": self.mode,
            "channel_axis": self.channel_axis,
            "val_fraction": self.val_fraction,
            "patch_size": self.patch_size,
            "augment": self.augment,
            "seed": self.seed,
            "device": self.device,
        }

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trainer.fit(**kw)`` (without the live callables)."""
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "preview_interval": self.preview_interval,
            "preview_saliency": self.live_saliency,
            **self.extra_fit,
        }


@dataclass
class _Status:
    """Worker-side status message (not a training event)."""

    text: str


@dataclass
class _TrainerReady:
    """The worker built the trainer; the widget keeps it for Resume/Predict/Save."""

    trainer: Any


def _training_job(
    build: Callable[[], Any] | None,
    trainer: Any,
    fit_kwargs: dict[str, Any],
    stop: threading.Event,
) -> Iterator[Any]:
    """Worker body: build the trainer if needed, then drain ``trainer.fit``."""
    if trainer is None:
        assert build is not None
        yield _Status("Preparing data and model…")
        trainer = build()
        yield _TrainerReady(trainer)
        if stop.is_set():
            return
    yield from trainer.fit(stop=stop, **fit_kwargs)


def _build_trainer(images: list[np.ndarray], labels: list[np.ndarray], kwargs: dict) -> Any:
    from napari_dlcb.tasks.segmentation import SegmentationTrainer

    return SegmentationTrainer(images, labels, **kwargs)


def _predict_job(
    trainer: Any, base: str, image: Any, channel_axis: int | None, device: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Worker body of Predict: the trained model if any, else the chosen base model."""
    image = np.asarray(image)
    if trainer is not None:
        prob, labels = trainer.predict(image)
        return prob, labels, trainer.meta
    from napari_dlcb.inference.segment import load_for_inference, segment

    model, meta = load_for_inference(base, device=device)
    prob, labels = segment((model, meta), image, channel_axis=channel_axis, device=device)
    return prob, labels, meta


def _predict_blockwise_job(
    model_source: Any,
    image: Any,
    dest: str,
    channel_axis: int | None,
    device: str,
    holder: dict[str, Any],
) -> Iterator[dict]:
    """Worker body of Predict for big lazy images: block by block into an OME-Zarr store.

    Yields the progress events of :func:`napari_dlcb.inference.segment.segment_zarr`.
    The generator is kept in ``holder["gen"]``: a worker that is quit (Stop) just
    stops iterating, so the widget closes it afterwards, which cancels the run and
    leaves nothing at ``dest``.
    """
    from napari_dlcb.inference.segment import segment_zarr

    holder["gen"] = segment_zarr(
        model_source, image, dest, channel_axis=channel_axis, device=device
    )
    yield from holder["gen"]


def _display_labels(labels: np.ndarray, label_kind: str | None) -> np.ndarray:
    """Labels as drawn.

    For scribble models the background class (1) becomes 0. The result has the
    smallest unsigned dtype that holds it: napari draws uint8/uint16 labels
    without the (numba-compiled) hashing that wider integers need, which would
    otherwise stall the event loop for a second the first time.
    """
    out = np.asarray(labels)
    if label_kind == "scribbles":
        out = np.where(out == 1, 0, out)
    top = int(out.max(initial=0))
    lo = int(out.min(initial=0))
    if lo >= 0 and top < 2**8:
        return out.astype(np.uint8, copy=False)
    if lo >= 0 and top < 2**16:
        return out.astype(np.uint16, copy=False)
    return out.astype(np.int32, copy=False)


WARMUP_MODULES = (
    "torch",
    "napari_dlcb.tasks.segmentation",
    "napari_dlcb.inference.tiled",
    "napari_dlcb.inference.postprocess",
    "napari_dlcb.data.labels",
)
_warmup_thread: threading.Thread | None = None


def _warmup_imports() -> None:
    """Import the training stack and run one tiny optimiser step (background thread).

    The first optimiser step imports ``torch._dynamo`` and initialises the
    convolution backend lazily; both hold the GIL for hundreds of milliseconds.
    """
    import importlib

    try:
        for name in WARMUP_MODULES:
            importlib.import_module(name)
        import torch

        conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        opt = torch.optim.Adam(conv.parameters(), lr=1e-3)
        conv(torch.zeros(1, 1, 8, 8)).sum().backward()
        opt.step()
    except Exception:  # noqa: BLE001 - any real problem is reported when training starts
        return


def _start_warmup() -> threading.Thread:
    """Import torch and the training modules in the background, once per process.

    Importing C extensions holds the GIL for long stretches (about a second for
    torch, scipy and scikit-image on a slow machine). Doing it while the user
    is still choosing layers keeps those stalls out of the live training view
    and makes the first Train press start at once.
    """
    global _warmup_thread
    if _warmup_thread is None:
        _warmup_thread = threading.Thread(
            target=_warmup_imports, name="napari-dlcb-warmup", daemon=True
        )
        _warmup_thread.start()
    return _warmup_thread


def _alive(widget: QWidget) -> bool:
    """Whether the C++ side of a Qt widget still exists."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


class SegmentationWidget(QWidget):
    """Annotate, train a segmentation U-Net with a live overlay, predict and save.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer this dock widget belongs to.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("dlcb_segmentation")

        self.trainer: Any = None
        self.worker: Any = None
        self.predict_worker: Any = None
        self.save_worker: Any = None
        self._stop = threading.Event()
        self._region = RegionHolder()
        self._tracker: ViewportTracker | None = None
        self._autosave: Any = None
        self._trainer_signature: tuple | None = None
        self._trained_labels: list[np.ndarray] | None = None
        self._last_labels: Labels | None = None
        self._choices: dict[int, list[Layer]] = {}  # id(combo) -> layers in item order
        self._epoch_offset = 0
        self._last_epoch = -1
        self._total_epochs = 0
        self._overfit_notified = False
        self.preview_layer: Labels | None = None
        self.saliency_layer: Image | None = None
        self._pending_saliency: dict[str, Any] | None = None
        self.n_preview_updates = 0
        self.n_saliency_updates = 0
        self.region_shown: tuple[slice, slice] | None = None
        #: extra keyword arguments for ``trainer.fit`` (scripting), e.g.
        #: ``{"samples_per_epoch": 16}`` for shorter epochs and a livelier plot
        self.fit_overrides: dict[str, Any] = {}
        self.last_finished: Any = None
        self._fit_start_epoch = 0
        self._epoch_summary = ""
        self.plot = LearningCurvePlot()
        self._plot_dock: Any = None

        self._preview_throttle = ThrottledCall(self._apply_preview, 1000, self)
        self._progress_throttle = ThrottledCall(self._apply_progress, 250, self)

        self._build_ui()
        self._connect_viewer()
        self._refresh_layer_choices()
        self._set_state("idle")
        self._warmup = _start_warmup()
        # dock the learning curve beside this widget once napari has docked us
        QTimer.singleShot(0, self._show_plot)

    @property
    def warmed_up(self) -> bool:
        """Whether the background import of torch and the training modules finished."""
        return not self._warmup.is_alive()

    # ================================================================== UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)

        # ---- data
        data_box = QGroupBox("Data and annotation")
        form = QFormLayout(data_box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image to segment (2-D grey or RGB; stacks: the current plane)")
        form.addRow("Image", self.image_combo)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("Labels layer with your annotation")
        self.new_labels_btn = QPushButton("New scribbles layer")
        self.new_labels_btn.setToolTip(
            "Add an empty Labels layer on the image's grid and start painting.\n"
            "Scribbles: 1 = background, 2, 3, … = object classes, 0 = not annotated."
        )
        form.addRow("Labels", self.labels_combo)
        form.addRow("", self.new_labels_btn)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(LABEL_KINDS)
        self.kind_combo.setToolTip(
            "scribbles: sparse strokes, 0 ignored, 1 background, 2.. classes\n"
            "classes: dense masks, every value a class\n"
            "instances: dense instance ids, 0 background"
        )
        form.addRow("Label kind", self.kind_combo)
        self.autosave_check = QCheckBox("Autosave annotation")
        self.autosave_check.setChecked(True)
        self.autosave_check.setToolTip(
            "Save the labels layer (debounced) to a project store beside the image; "
            "reopening the image restores it."
        )
        form.addRow("", self.autosave_check)
        layout.addWidget(data_box)

        # ---- model
        model_box = QGroupBox("Model and training")
        form = QFormLayout(model_box)
        self.base_combo = QComboBox()
        for key, text in BASES.items():
            self.base_combo.addItem(text, key)
        form.addRow("Start from", self.base_combo)
        path_row = QHBoxLayout()
        self.base_path = QLineEdit()
        self.base_path.setPlaceholderText("model folder or bioimageio.yaml")
        self.base_browse = QPushButton("Browse…")
        path_row.addWidget(self.base_path)
        path_row.addWidget(self.base_browse)
        form.addRow("", path_row)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("quick (frozen encoder, CPU friendly)", "quick")
        self.mode_combo.addItem("full (all layers, GPU recommended)", "full")
        form.addRow("Speed", self.mode_combo)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10_000)
        self.epochs_spin.setValue(30)
        form.addRow("Epochs", self.epochs_spin)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(1e-3)
        form.addRow("Learning rate", self.lr_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        form.addRow("Device", self.device_combo)
        self.device_label = StatusText(lines=2)
        self.device_label.setText("Device: chosen when training starts")
        form.addRow("", self.device_label)
        self.preview_check = QCheckBox("Live prediction of the visible region")
        self.preview_check.setChecked(True)
        form.addRow("", self.preview_check)
        self.saliency_combo = QComboBox()
        self.saliency_combo.addItems(LIVE_SALIENCY_CHOICES)
        self.saliency_combo.setToolTip(
            "While training, explain the foreground class on the centre of the visible\n"
            "region with the current weights (blue: against, red: for). Maps are computed\n"
            "in the training thread and take at most a third of its time."
        )
        form.addRow("Live saliency", self.saliency_combo)
        layout.addWidget(model_box)

        # ---- actions
        buttons = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.train_btn.setToolTip("Start training from the chosen base model")
        self.resume_btn.setToolTip("Continue training the current model")
        for b in (self.train_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("epoch %v / %m")
        layout.addWidget(self.progress)
        self.status = StatusText(lines=3)
        self.status.setText("Ready.")
        layout.addWidget(self.status)
        more = QHBoxLayout()
        self.predict_btn = QPushButton("Predict whole image")
        self.save_btn = QPushButton("Save model…")
        more.addWidget(self.predict_btn)
        more.addWidget(self.save_btn)
        layout.addLayout(more)
        layout.addStretch(1)

        self.new_labels_btn.clicked.connect(self.add_scribbles_layer)
        self.base_combo.currentIndexChanged.connect(self._on_base_changed)
        self.base_browse.clicked.connect(self._browse_base)
        self.train_btn.clicked.connect(self.start_training)
        self.stop_btn.clicked.connect(self.stop_training)
        self.resume_btn.clicked.connect(self.resume_training)
        self.predict_btn.clicked.connect(self.predict)
        self.save_btn.clicked.connect(self._save_clicked)
        self.image_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_selection_changed)
        self.autosave_check.toggled.connect(self._on_selection_changed)
        self.kind_combo.currentIndexChanged.connect(self._on_kind_changed)
        self.preview_check.toggled.connect(self._on_preview_toggled)
        self._on_base_changed()

    def _connect_viewer(self) -> None:
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_layers_changed)
        ev.removed.connect(self._on_layers_changed)
        ev.moved.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_choices)

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()

    # ================================================================== layer choices
    @property
    def image_layer(self) -> Image | None:
        """The chosen image layer."""
        return self._layer_from(self.image_combo, Image)

    @property
    def labels_layer(self) -> Labels | None:
        """The chosen annotation layer."""
        return self._layer_from(self.labels_combo, Labels)

    def _layer_from(self, combo: QComboBox, kind: type) -> Any:
        layers = self._choices.get(id(combo), [])
        i = combo.currentIndex()
        if not 0 <= i < len(layers):
            return None
        layer = layers[i]
        return layer if isinstance(layer, kind) and layer in self.viewer.layers else None

    def _refresh_layer_choices(self, event: Any = None) -> None:
        images = [
            lay
            for lay in self.viewer.layers
            if isinstance(lay, Image) and lay.metadata.get(OUTPUT_KEY) != "live saliency"
        ]
        labels = [
            lay
            for lay in self.viewer.layers
            if isinstance(lay, Labels) and not lay.metadata.get(OUTPUT_KEY)
        ]
        preferred = next((lay for lay in labels if "scribble" in lay.name.lower()), None)
        self._fill(self.image_combo, images, None)
        self._fill(self.labels_combo, labels, preferred)
        self._on_selection_changed()

    def _fill(self, combo: QComboBox, layers: list[Layer], preferred: Layer | None) -> None:
        """Refill a combo box, keeping the chosen layer (by identity, so renames keep it)."""
        old = self._choices.get(id(combo), [])
        i = combo.currentIndex()
        current = old[i] if 0 <= i < len(old) else None
        combo.blockSignals(True)
        combo.clear()
        for lay in layers:
            combo.addItem(lay.name)
        self._choices[id(combo)] = list(layers)
        keep = current if current in layers else preferred
        if keep is not None and keep in layers:
            combo.setCurrentIndex(layers.index(keep))
        combo.blockSignals(False)

    def select_layers(self, image: str | None = None, labels: str | None = None) -> None:
        """Choose the image and labels layers by name (scripting and tests)."""
        if image is not None:
            self.image_combo.setCurrentIndex(self.image_combo.findText(image))
        if labels is not None:
            self.labels_combo.setCurrentIndex(self.labels_combo.findText(labels))
        self._on_selection_changed()

    def add_scribbles_layer(self) -> Labels | None:
        """Add an empty Labels layer on the chosen image's grid, in paint mode."""
        image = self.image_layer
        if image is None:
            notify_error("Choose or open an image first.")
            return None
        shape = image.data.shape[:-1] if image.rgb else image.data.shape
        if image.multiscale:
            shape = image.data[0].shape[:-1] if image.rgb else image.data[0].shape
        name = f"{image.name} scribbles"
        layer = self.viewer.add_labels(
            np.zeros(shape, np.uint8),
            name=name,
            scale=image.scale,
            translate=image.translate,
        )
        layer.brush_size = 8
        layer.selected_label = 2
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self._refresh_layer_choices()
        self.select_layers(labels=layer.name)
        notify_info("Paint 1 = background, 2, 3, … = objects; 0 (eraser) = not annotated.")
        return layer

    # ================================================================== autosave
    def _on_selection_changed(self, *args: Any) -> None:
        labels = self.labels_layer
        if labels is not None and labels is not self._last_labels:
            self._last_labels = labels
            kind = labels.metadata.get("label_kind")
            if kind in LABEL_KINDS and not self.is_training:
                self.kind_combo.setCurrentText(kind)  # what the layer says it holds
        self._update_autosave()

    def _flush_autosave(self) -> None:
        if self._autosave is not None:
            try:
                self._autosave.flush()
            except DlcbError as err:
                notify_error(err)

    def _on_kind_changed(self, *args: Any) -> None:
        if self._autosave is not None:
            self._autosave.label_kind = self.kind_combo.currentText()

    def _update_autosave(self) -> None:
        image, labels = self.image_layer, self.labels_layer
        current = self._autosave
        want = self.autosave_check.isChecked() and image is not None and labels is not None
        if current is not None and (
            not want or current.labels_layer is not labels or current.image_layer is not image
        ):
            current.disconnect()
            self._autosave = None
        if want and self._autosave is None:
            try:
                from napari_dlcb._widgets._autosave import enable_autosave

                self._autosave = enable_autosave(
                    image, labels, label_kind=self.kind_combo.currentText()
                )
            except DlcbError as err:
                notify_error(err)
            except ImportError:  # the io layer is not installed yet: no autosave
                self._autosave = None

    # ================================================================== settings
    def settings(self) -> TrainingSettings:
        """The current form values as :class:`TrainingSettings`."""
        key = self.base_combo.currentData()
        base = "builtin" if key == "builtin" else self.base_path.text().strip()
        image = self.image_layer
        return TrainingSettings(
            label_kind=self.kind_combo.currentText(),
            base=base,
            mode=self.mode_combo.currentData(),
            epochs=self.epochs_spin.value(),
            lr=float(self.lr_spin.value()),
            device=self.device_combo.currentText(),
            channel_axis=-1 if image is not None and image.rgb else None,
            preview_interval=1.0,
            live_saliency=(
                None
                if self.saliency_combo.currentText() == "off" or not self.preview_check.isChecked()
                else self.saliency_combo.currentText()
            ),
            extra_fit=dict(self.fit_overrides),
        )

    def _on_preview_toggled(self, *args: Any) -> None:
        # the saliency map is computed alongside the live prediction, or not at all
        self.saliency_combo.setEnabled(self.preview_check.isChecked() and not self.is_training)

    def _on_base_changed(self, *args: Any) -> None:
        builtin = self.base_combo.currentData() == "builtin"
        self.base_path.setEnabled(not builtin)
        self.base_browse.setEnabled(not builtin)

    def _browse_base(self) -> None:
        if self.base_combo.currentData() == "saved":
            path = QFileDialog.getExistingDirectory(self, "Saved napari-dlcb model folder")
        else:
            path, _ = QFileDialog.getOpenFileName(
                self,
                "BioImage.IO package",
                "",
                "BioImage.IO (bioimageio.yaml rdf.yaml *.yaml *.zip);;All files (*)",
            )
        if path:
            self.base_path.setText(path)

    # ================================================================== validation
    def _plane_index(self, layer: Layer) -> tuple[int, ...]:
        """Indices of the non-displayed (leading) axes at the current slice."""
        n_lead = layer.ndim - 2
        if n_lead <= 0:
            return ()
        data_pt = np.asarray(layer.world_to_data(self.viewer.dims.point))
        shape = layer.data.shape
        return tuple(
            int(np.clip(round(float(c)), 0, shape[i] - 1)) for i, c in enumerate(data_pt[:n_lead])
        )

    def _training_arrays(
        self, settings: TrainingSettings
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Validate the chosen layers and return (image planes, label planes, preview plane).

        For a stack whose labels layer has the same leading axes, every plane
        with annotation trains (the current one first), as a user who paints a
        few planes of a stack expects; a 2-D labels layer over a stack
        annotates the current plane. The preview plane is the one on screen.
        Cheap checks only, on the main thread: the trainer repeats the full
        validation in the worker.
        """
        image, labels = self.image_layer, self.labels_layer
        if image is None:
            raise DlcbError("Choose an image layer to train on.")
        if labels is None:
            raise DlcbError("Choose a labels layer with your annotation (or add a new one).")
        if image.multiscale:
            raise DlcbError(
                f"'{image.name}' is a multiscale image; train on a crop of it "
                "(Predict works on the whole image)."
            )
        img_plane = plane_shape(image)
        lab_shape = tuple(labels.data.shape)
        img_shape = tuple(image.data.shape[:-1] if image.rgb else image.data.shape)
        if lab_shape[-2:] != img_plane or len(lab_shape) not in (2, len(img_shape)):
            raise DlcbError(
                f"labels layer '{labels.name}' has shape {lab_shape} but image "
                f"'{image.name}' has shape {img_shape}; they must match."
            )
        img_index = self._plane_index(image)
        preview = np.asarray(image.data[img_index] if img_index else image.data)
        if len(lab_shape) > 2:  # a stack annotated plane by plane
            lab_data = np.asarray(labels.data)
            lead = lab_data.reshape(-1, *lab_shape[-2:])
            painted = [int(i) for i in np.flatnonzero(lead.reshape(len(lead), -1).any(1))]
            current = int(np.ravel_multi_index(img_index, lab_shape[:-2])) if img_index else 0
            if settings.label_kind == "classes" or not painted:
                painted = [current]
            painted.sort(key=lambda i: i != current)  # the plane on screen first
            lead_shape = lab_shape[:-2]
            imgs = [  # only the painted planes are read (the image may be lazy)
                np.asarray(image.data[tuple(int(v) for v in np.unravel_index(i, lead_shape))])
                for i in painted
            ]
            labs = [np.array(lead[i], copy=True) for i in painted]
        else:
            imgs, labs = [preview], [np.array(labels.data, copy=True)]
        if settings.label_kind != "classes" and not any(np.any(lab) for lab in labs):
            raise DlcbError(
                f"'{labels.name}' has no annotation; paint some "
                + (
                    "strokes (1 = background, 2 = objects)."
                    if settings.label_kind == "scribbles"
                    else "labels first."
                )
            )
        from napari_dlcb.data.labels import class_values_for

        class_values_for(labs, settings.label_kind)  # DlcbError: one class only
        for img in imgs:
            if np.issubdtype(img.dtype, np.floating) and not np.all(np.isfinite(img)):
                raise DlcbError(f"image '{image.name}' contains NaN or infinite values.")
            if img.size and img.min() == img.max():
                raise DlcbError(f"image '{image.name}' is constant; there is nothing to learn.")
        if settings.base != "builtin" and not settings.base:
            raise DlcbError("Choose a model folder or BioImage.IO package to start from.")
        return imgs, labs, preview

    # ================================================================== training
    @property
    def is_training(self) -> bool:
        """Whether a training worker is running."""
        return self.worker is not None

    def start_training(self) -> bool:
        """Validate, then train a new model from the chosen base (returns False on bad input)."""
        if self.is_training:
            return False
        settings = self.settings()
        try:
            imgs, labs, img = self._training_arrays(settings)
        except DlcbError as err:
            notify_error(err)
            return False
        kwargs = settings.trainer_kwargs()
        self.trainer = None
        self._trainer_signature = None
        self._trained_labels = labs
        self._epoch_offset = 0
        self._last_epoch = -1
        self.plot.reset()
        self._overfit_notified = False
        self._flush_autosave()

        def build() -> Any:
            return _build_trainer(imgs, labs, kwargs)

        self._start_worker(build, settings, img, signature=self._signature(settings))
        return True

    def resume_training(self) -> bool:
        """Continue training the current model.

        If the annotation changed since the model was built (the usual loop:
        look at the overlay, paint corrections, resume), a new trainer starts
        from the current weights with the new labels; otherwise ``fit`` is
        simply called again on the same trainer.
        """
        if self.is_training:
            return False
        if self.trainer is None:
            notify_error("Nothing to resume: press Train first.")
            return False
        settings = self.settings()
        try:
            imgs, labs, img = self._training_arrays(settings)
        except DlcbError as err:
            notify_error(err)
            return False
        build = None
        old = self._trained_labels
        same = (
            old is not None
            and len(old) == len(labs)
            and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(old, labs))
            and self._signature(settings) == self._trainer_signature
        )
        if not same:
            kwargs = settings.trainer_kwargs()
            kwargs["base"] = (self.trainer.model, self.trainer.meta)
            self._trained_labels = labs

            def build() -> Any:
                return _build_trainer(imgs, labs, kwargs)

            self.trainer = None
        self.plot.mark_resume()
        self._epoch_offset = self._last_epoch + 1
        self._start_worker(build, settings, img, signature=self._signature(settings))
        return True

    def _signature(self, settings: TrainingSettings) -> tuple:
        d = asdict(settings)
        return (
            self.image_layer.name if self.image_layer else None,
            d["label_kind"],
            d["base"],
            d["mode"],
        )

    def _start_worker(
        self,
        build: Callable[[], Any] | None,
        settings: TrainingSettings,
        img: np.ndarray,
        *,
        signature: tuple | None,
    ) -> None:
        self._stop = threading.Event()
        self._trainer_signature = signature
        self._fit_start_epoch = 0
        fit_kwargs = settings.fit_kwargs()
        self._total_epochs = settings.epochs
        image = self.image_layer
        if self.preview_check.isChecked() and image is not None:
            self._ensure_preview_layer(image)
            if settings.live_saliency:
                self._ensure_saliency_layer(image)
            self._start_tracking(image)
            fit_kwargs["preview_image"] = img
            fit_kwargs["preview_region"] = self._region
        self._show_plot()
        self.progress.setFormat("epoch %v / %m")
        self.progress.setRange(0, settings.epochs)
        self.progress.setValue(0)
        self._set_status("Starting…")
        worker = create_worker(
            _training_job,
            build,
            self.trainer,
            fit_kwargs,
            self._stop,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        self._set_state("training")
        worker.start()

    def stop_training(self) -> None:
        """Ask the worker to stop after the current batch (the best weights are kept).

        During a block-by-block prediction, Stop cancels it instead (nothing is kept).
        """
        if self.worker is None and self.predict_worker is not None:
            self._predict_cancelled = True
            self.predict_worker.quit()
            self._set_status("Prediction cancelled.")
            return
        if self.worker is None:
            return
        self._stop.set()
        self.stop_btn.setEnabled(False)
        self._set_status("Stopping after this batch…")

    def _start_tracking(self, image: Image) -> None:
        if self._tracker is not None and self._tracker.layer is image:
            self._tracker.update()
            return
        self._stop_tracking()
        self._tracker = ViewportTracker(self.viewer, image, self._region)

    def _stop_tracking(self) -> None:
        if self._tracker is not None:
            self._tracker.disconnect()
            self._tracker = None

    # ------------------------------------------------------------------ events
    def _on_event(self, ev: Any) -> None:
        from napari_dlcb.training import events as E

        if isinstance(ev, E.Progress):
            self._progress_throttle.submit(ev)
        elif isinstance(ev, E.Preview):
            if isinstance(ev.data, dict):
                if "saliency" in ev.data:
                    # only some previews carry a map: keep the newest for the next refresh
                    self._pending_saliency = ev.data
                elif "saliency_error" in ev.data:
                    notify_warning(ev.data["saliency_error"])
            self._preview_throttle.submit(ev)
        elif isinstance(ev, E.EpochEnd):
            self._on_epoch_end(ev)
        elif isinstance(ev, E.Started):
            self._on_started(ev)
        elif isinstance(ev, E.Warning):
            self._on_warning(ev)
        elif isinstance(ev, E.Finished):
            self._on_finished(ev)
        elif isinstance(ev, _TrainerReady):
            self.trainer = ev.trainer
        elif isinstance(ev, _Status):
            self._set_status(ev.text)

    def _on_started(self, ev: Any) -> None:
        self._fit_start_epoch = int(ev.start_epoch)
        mode = self.mode_combo.currentData()
        amp = ", mixed precision" if ev.amp else ""
        self.device_label.setText(
            f"Device: {ev.device}{amp} · {mode} mode\n"
            f"{ev.n_trainable / 1e6:.2f} M of {ev.n_params / 1e6:.2f} M parameters train"
        )
        self._set_status(f"Training on {ev.n_train} patches ({ev.n_val} for validation)…")

    def _apply_progress(self, ev: Any) -> None:
        if not self.is_training:
            return
        epoch = self._epoch_offset + ev.epoch - self._start_epoch_base() + 1
        self.status.setText(
            f"Epoch {epoch} · batch {ev.step + 1}/{ev.steps} · loss {ev.loss:.4f}"
            + (f"\n{self._epoch_summary}" if self._epoch_summary else "")
        )

    def _start_epoch_base(self) -> int:
        return self._fit_start_epoch

    def _on_epoch_end(self, ev: Any) -> None:
        epoch = self._epoch_offset + ev.epoch - self._start_epoch_base() + 1
        self._last_epoch = epoch - 1
        self.plot.add_epoch(epoch, ev.train_loss, ev.val_loss, is_best=ev.is_best)
        val = "n/a" if not np.isfinite(ev.val_loss) else f"{ev.val_loss:.4f}"
        self._epoch_summary = (
            f"Epoch {epoch}: train {ev.train_loss:.4f} · val {val} · "
            f"{ev.samples_per_s:.1f} samples/s · {ev.seconds:.1f} s/epoch"
        )
        done = epoch - self._epoch_offset
        self.progress.setValue(min(done, self._total_epochs))
        self._progress_throttle.cancel()
        self.status.setText(self._epoch_summary)
        if self.plot.onset is not None and not self._overfit_notified:
            self._overfit_notified = True
            notify_warning(self.plot.warning_label.text().lstrip("\u26a0 "))

    def _on_warning(self, ev: Any) -> None:
        if ev.kind == "overfitting":
            epoch = self._epoch_offset + ev.epoch - self._start_epoch_base() + 1
            self.plot.show_warning(ev.message, epoch=epoch if ev.epoch >= 0 else None)
            if not self._overfit_notified:
                self._overfit_notified = True
                notify_warning(ev.message)
        elif ev.kind == "lr_decay":
            self._set_status(ev.message)
        else:
            notify_warning(ev.message)

    def _on_finished(self, ev: Any) -> None:
        self.last_finished = ev
        best = self._epoch_offset + ev.best_epoch - self._start_epoch_base() + 1
        reasons = {
            "completed": "finished",
            "early_stopping": "stopped early (no improvement)",
            "cancelled": "stopped",
            "diverged": "stopped: the loss diverged",
            "time_limit": "stopped at the time limit",
        }
        text = reasons.get(ev.reason, ev.reason)
        score = f"{ev.best_score:.4f}" if np.isfinite(ev.best_score) else "n/a"
        summary = self._epoch_summary
        self._set_status(
            f"Training {text}; keeping epoch {best} (score {score})."
            + (f"\n{summary}" if summary else "")
        )

    def _on_worker_error(self, err: BaseException) -> None:
        notify_error(err)
        self._set_status(f"Failed: {str(err).strip().splitlines()[0] if str(err) else err!r}")

    def _on_worker_finished(self) -> None:
        self._preview_throttle.flush()
        self._progress_throttle.cancel()
        self.worker = None
        self._set_state("idle")

    # ------------------------------------------------------------------ live preview
    def _ensure_preview_layer(self, image: Image) -> Labels:
        """The live prediction layer, created (empty) when training starts.

        Creating a napari layer is the most expensive thing the GUI does here
        (vispy visuals and overlays, 0.2-1 s on a slow machine); doing it when
        Train is pressed keeps that hitch out of the running training. Planes of
        up to :data:`FULL_PLANE_PIXELS` pixels get a layer of the plane's shape,
        so each update only refreshes the texture; larger images get a layer the
        size of the viewport region, moved with ``translate``.
        """
        layer = self.preview_layer
        rows, cols = plane_shape(image)
        grid = layer_grid(image)
        full = rows * cols <= FULL_PLANE_PIXELS
        if layer is not None and layer in self.viewer.layers:
            if layer.metadata.get("dlcb_full_plane") == full and (
                not full or tuple(layer.data.shape) == (rows, cols)
            ):
                if not np.allclose(layer.scale, grid["scale"]):  # a transform update is slow
                    layer.scale = grid["scale"]
                return layer
            self.viewer.layers.remove(layer)
        shape = (rows, cols) if full else (1, 1)
        with keep_selection(self.viewer):
            layer = self.viewer.add_labels(
                np.zeros(shape, np.uint8),
                name=f"{image.name} live prediction",
                opacity=0.5,
                metadata={OUTPUT_KEY: "live", "dlcb_full_plane": full},
                **grid,
            )
        self.preview_layer = layer
        return layer

    def _apply_preview(self, ev: Any) -> None:
        image = self.image_layer
        data = ev.data
        if image is None or not isinstance(data, dict) or "labels" not in data:
            return
        kind = getattr(getattr(self.trainer, "meta", None), "label_kind", None)
        labels = _display_labels(data["labels"], kind or self.kind_combo.currentText())
        r0, c0 = (int(v) for v in data.get("offset", (0, 0)))
        layer = self._ensure_preview_layer(image)
        h, w = labels.shape
        buf = layer.data
        if (
            layer.metadata.get("dlcb_full_plane")
            and isinstance(buf, np.ndarray)
            and np.can_cast(labels.dtype, buf.dtype)
        ):
            # write in place and re-slice: no new array, no dims update, only the
            # texture is uploaded again (setting layer.data costs ~2x more)
            buf[...] = 0
            buf[r0 : r0 + h, c0 : c0 + w] = labels
            # thumbnail=False: a new thumbnail repaints the whole layer list
            layer.refresh(extent=False, highlight=False, thumbnail=False)
        elif layer.metadata.get("dlcb_full_plane"):
            canvas = np.zeros(buf.shape, labels.dtype)
            canvas[r0 : r0 + h, c0 : c0 + w] = labels
            layer.data = canvas
        else:
            grid = layer_grid(image)
            scale = np.asarray(grid["scale"])
            layer.translate = tuple(np.asarray(grid["translate"]) + scale * np.array([r0, c0]))
            layer.data = labels
        self.region_shown = (slice(r0, r0 + labels.shape[0]), slice(c0, c0 + labels.shape[1]))
        self.n_preview_updates += 1
        if self._pending_saliency is not None:
            self._apply_saliency(image, self._pending_saliency)
            self._pending_saliency = None

    def _ensure_saliency_layer(self, image: Image) -> Image:
        """The live saliency layer, created hidden when training starts (see the preview)."""
        layer = self.saliency_layer
        name = f"{image.name} live saliency"
        if layer is not None and layer in self.viewer.layers and layer.name == name:
            return layer
        with keep_selection(self.viewer):
            layer = self.viewer.add_image(
                np.zeros((1, 1), np.float32),
                name=name,
                colormap=attribution_colormap(),
                contrast_limits=(-1.0, 1.0),
                opacity=0.9,
                blending="translucent",
                visible=False,  # shown with the first map
                metadata={OUTPUT_KEY: "live saliency", "dlcb_fresh": True},
                **layer_grid(image),
            )
        self.saliency_layer = layer
        return layer

    def _apply_saliency(self, image: Image, data: dict[str, Any]) -> None:
        """Show a live saliency map on the image grid, diverging around 0."""
        smap = np.asarray(data["saliency"], np.float32)
        r0, c0 = (int(v) for v in data.get("saliency_offset", (0, 0)))
        layer = self._ensure_saliency_layer(image)
        grid = layer_grid(image)
        scale = np.asarray(grid["scale"])
        translate = np.asarray(grid["translate"]) + scale * np.array([r0, c0])
        lim = float(np.abs(smap).max()) or 1.0
        if not np.allclose(layer.scale, scale):
            layer.scale = grid["scale"]
        if not np.allclose(layer.translate, translate):
            layer.translate = tuple(translate)
        layer.data = smap
        layer.contrast_limits_range = (-lim, lim)
        layer.contrast_limits = (-lim, lim)
        method = data.get("saliency_method", "saliency")
        target = data.get("saliency_target")
        classes = getattr(getattr(self.trainer, "meta", None), "classes", None) or []
        cls = classes[target] if target is not None and 0 <= target < len(classes) else target
        layer.metadata.update(
            {"saliency": {"method": method, "target": target, "class": cls, "offset": (r0, c0)}}
        )
        if layer.metadata.pop("dlcb_fresh", False):
            layer.visible = True
        self.n_saliency_updates += 1

    # ================================================================== predict / save
    def predict(self) -> bool:
        """Segment the whole chosen image in a worker; add probability and label layers."""
        image = self.image_layer
        if image is None:
            notify_error("Choose an image layer to segment.")
            return False
        if self.predict_worker is not None:
            return False
        if self.is_training:
            notify_error("Stop training first; the live layer shows the visible region meanwhile.")
            return False
        settings = self.settings()
        if self.trainer is None and settings.base != "builtin" and not settings.base:
            notify_error("Train a model or choose a model to start from.")
            return False
        if image.multiscale:
            data = image.data[0]
        else:
            data = image.data
        index = self._plane_index(image)
        plane = data[index] if index else data
        name = image.name
        rows, cols = plane_shape(image)
        if not isinstance(plane, np.ndarray) and rows * cols > BLOCKWISE_PIXELS:
            return self._predict_blockwise(image, plane, settings)
        worker = create_worker(
            _predict_job,
            self.trainer,
            settings.base,
            plane,
            settings.channel_axis,
            settings.device,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda res: self._on_predicted(res, name))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_predict_finished)
        self.predict_worker = worker
        self.predict_btn.setEnabled(False)
        self._set_status(f"Predicting '{name}'…")
        worker.start()
        return True

    def _predict_blockwise(self, image: Image, plane: Any, settings: Any) -> bool:
        """Predict a big lazy image block by block (cancellable with Stop)."""
        import re
        import time as _time

        from napari_dlcb.io.project import user_cache_dir

        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image.name)[:60] or "image"
        dest = (
            user_cache_dir() / "predictions" / f"{safe}-{_time.strftime('%Y%m%d-%H%M%S')}.ome.zarr"
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = (
            (self.trainer.model, self.trainer.meta) if self.trainer is not None else settings.base
        )
        holder: dict[str, Any] = {}
        self._predict_cancelled = False
        worker = create_worker(
            _predict_blockwise_job,
            source,
            plane,
            str(dest),
            settings.channel_axis,
            settings.device,
            holder,
            _start_thread=False,
            _ignore_errors=True,
        )
        name = image.name
        worker.yielded.connect(lambda ev: self._on_block(ev, name))
        worker.errored.connect(self._on_worker_error)
        # a quit worker leaves its generator suspended: close it (cleans up dest)
        worker.finished.connect(lambda: holder.get("gen") and holder["gen"].close())
        worker.finished.connect(self._on_predict_finished)
        self.predict_worker = worker
        self.predict_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self.progress.setFormat("block %v / %m")
        self._set_status(f"Predicting '{name}' block by block into {dest}…")
        worker.start()
        return True

    def _on_block(self, ev: dict, name: str) -> None:
        if getattr(self, "_predict_cancelled", False):
            return  # events already queued when Stop was pressed
        total = int(ev.get("total", 0))
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(int(ev.get("done", 0)))
        if "path" not in ev:
            self._set_status(
                f"Predicting '{name}': {ev.get('stage', 'predict')} block {ev.get('done')}/{total}"
            )
            return
        if name not in self.viewer.layers:
            return
        from napari_dlcb.inference.store import open_prediction_lazy

        image = self.viewer.layers[name]
        grid = layer_grid(image)
        prob, labels = open_prediction_lazy(ev["path"], smallest=PYRAMID_SMALLEST)
        scale = 255.0 if prob[0].dtype == np.uint8 else 1.0  # uint8 storage = p * 255
        single = prob[0].shape[0] == 1  # sigmoid model: channel 0 is the foreground
        fg = [p[0] / scale if single else 1.0 - p[0] / scale for p in prob]
        for lname in (f"{name} foreground probability", f"{name} segmentation"):
            if lname in self.viewer.layers:
                self.viewer.layers.remove(lname)
        self.viewer.add_image(
            fg if len(fg) > 1 else fg[0],
            multiscale=len(fg) > 1,
            name=f"{name} foreground probability",
            colormap="magma",
            visible=False,
            contrast_limits=(0.0, 1.0),
            metadata={OUTPUT_KEY: "probability", "path": ev["path"]},
            **grid,
        )
        if labels is not None:
            self.viewer.add_labels(
                labels if len(labels) > 1 else labels[0],
                multiscale=len(labels) > 1,
                name=f"{name} segmentation",
                opacity=0.6,
                metadata={OUTPUT_KEY: "seg", "path": ev["path"]},
                **grid,
            )
        self._set_status(f"Segmented '{name}' block by block; stored in {ev['path']}.")

    def _on_predict_finished(self) -> None:
        self.predict_worker = None
        self.predict_btn.setEnabled(True)
        if not self.is_training:
            self.stop_btn.setEnabled(False)

    def _on_predicted(self, result: tuple, name: str) -> None:
        prob, labels, meta = result
        if name not in self.viewer.layers:
            return
        image = self.viewer.layers[name]
        grid = layer_grid(image)
        kind = getattr(meta, "label_kind", None)
        prob = np.asarray(prob)
        foreground = 1.0 - prob[0] if prob.shape[0] > 1 else prob[0]
        self._set_output(f"{name} foreground probability", foreground, grid, image=True)
        self._set_output(f"{name} segmentation", _display_labels(labels, kind), grid, image=False)
        shown = _display_labels(labels, kind)
        values = np.unique(shown)
        n = int((values != 0).sum())
        what = f"{n} object(s)" if kind == "instances" else f"{n} foreground class(es)"
        self._set_status(f"Segmented '{name}': {what}.")

    def _set_output(self, lname: str, data: np.ndarray, grid: dict, *, image: bool) -> None:
        if lname in self.viewer.layers:
            layer = self.viewer.layers[lname]
            layer.data = data
            layer.scale, layer.translate = grid["scale"], grid["translate"]
            return
        if image:
            self.viewer.add_image(
                data,
                name=lname,
                colormap="magma",
                visible=False,
                contrast_limits=(0.0, 1.0),
                metadata={OUTPUT_KEY: "probability"},
                **grid,
            )
        else:
            self.viewer.add_labels(
                data, name=lname, opacity=0.6, metadata={OUTPUT_KEY: "seg"}, **grid
            )

    def _save_clicked(self) -> None:
        if self.trainer is None:
            notify_error("Nothing to save yet: train a model first.")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save model as a folder", str(Path.home() / "dlcb-model"), "Model folder (*)"
        )
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> bool:
        """Save the current model to the folder ``path`` in a worker."""
        if self.trainer is None:
            notify_error("Nothing to save yet: train a model first.")
            return False
        if self.is_training:
            notify_error("Stop training before saving the model.")
            return False
        trainer = self.trainer
        worker = create_worker(trainer.save, str(path), _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda p: notify_info(f"Model saved to {p}"))
        worker.returned.connect(lambda p: self._set_status(f"Model saved to {p}"))
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_save_finished)
        self.save_worker = worker
        self.save_btn.setEnabled(False)
        worker.start()
        return True

    def _on_save_finished(self) -> None:
        self.save_worker = None
        self._set_state("training" if self.is_training else "idle")

    # ================================================================== misc
    def _show_plot(self) -> None:
        """Dock the learning curve (again, if the user closed it)."""
        window = getattr(self.viewer, "window", None)
        if window is None or not _alive(self):
            return
        dock = self._plot_dock
        if dock is not None:
            try:
                if dock.isHidden():
                    dock.show()
                return
            except RuntimeError:  # the dock (and the plot in it) was deleted
                self._plot_dock = None
        if not _alive(self.plot):
            old = self.plot  # its Python-side history survives the C++ object
            self.plot = LearningCurvePlot()
            for epoch, tr, va in zip(old.epochs, old.train_loss, old.val_loss):
                self.plot.add_epoch(epoch, tr, va, is_best=epoch == old.best_epoch)
        self._plot_dock = window.add_dock_widget(self.plot, name="Learning curve", area="right")

    def _set_status(self, text: str) -> None:
        self.status.setText(text)

    def _set_state(self, state: str) -> None:
        training = state == "training"
        self.train_btn.setEnabled(not training)
        self.stop_btn.setEnabled(training)
        self.resume_btn.setEnabled(not training and self.trainer is not None)
        self.save_btn.setEnabled(
            not training and self.trainer is not None and self.save_worker is None
        )
        for w in (
            self.image_combo,
            self.labels_combo,
            self.kind_combo,
            self.base_combo,
            self.mode_combo,
            self.device_combo,
            self.new_labels_btn,
        ):
            w.setEnabled(not training)
        self._on_preview_toggled()
        self.base_path.setEnabled(not training and self.base_combo.currentData() != "builtin")
        self.base_browse.setEnabled(self.base_path.isEnabled())
        if not training:
            self._stop_tracking()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Stop training and flush autosave when the dock closes."""
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop our workers, flush autosave and disconnect from the viewer (no blocking).

        Training ends after the current batch (the engine checks the stop event);
        prediction and saving finish on their own.
        """
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()
        self._preview_throttle.cancel()
        self._progress_throttle.cancel()
        self._stop_tracking()
        if self._autosave is not None:
            self._autosave.disconnect()
            self._autosave = None
