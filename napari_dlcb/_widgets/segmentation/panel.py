"""The Segmentation dock's form: controls, layer choices and the model/status lines.

:class:`SegmentationPanel` is only the user interface: it lays out the
fields, keeps the image and labels combos in sync with the viewer's layers
(by identity, so renames keep the choice), and adds a scribbles layer. What
the buttons do lives in :mod:`.widget`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_dlcb._widgets._common import StatusText, check_box, combo_box, notify_error, notify_info
from napari_dlcb.data.labels import LABEL_KINDS

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["BASES", "LABEL_KINDS", "LIVE_SALIENCY_CHOICES", "OUTPUT_KEY", "SegmentationPanel"]

BASES = {
    "builtin": "Built-in nuclei U-Net",
    "saved": "Saved model folder…",
    "bioimageio": "BioImage.IO package…",
}
OUTPUT_KEY = "dlcb_output"  # layer.metadata key marking layers this dock made
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


class SegmentationPanel(QWidget):
    """The form of the Segmentation dock (no behaviour beyond keeping choices current).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers the combos list.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self._choices: dict[int, list[Layer]] = {}  # id(combo) -> layers in item order
        # the settings scroll inside the dock, so it never makes the window taller than
        # the screen (nor lays the canvas out again when a status line grows); the
        # buttons and the status line below them are always in view
        content = QWidget()
        settings = QVBoxLayout(content)
        settings.setContentsMargins(6, 6, 6, 0)
        settings.addWidget(self._data_box())
        settings.addWidget(self._model_box())
        settings.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        bar = scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(content.minimumSizeHint().width() + bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 6)
        layout.addWidget(scroll, 1)
        actions = self._actions()
        actions.setContentsMargins(6, 0, 6, 0)
        layout.addLayout(actions)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._on_layers_changed)
        ev.removed.connect(self._on_layers_changed)
        ev.moved.connect(self._on_layers_changed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layer_choices)

    # ------------------------------------------------------------------ layout
    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data and annotation")
        form = QFormLayout(box)
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
        self.kind_combo = combo_box(
            list(LABEL_KINDS),
            tooltip="scribbles: sparse strokes, 0 ignored, 1 background, 2.. classes\n"
            "classes: dense masks, every value a class\n"
            "instances: dense instance ids, 0 background",
        )
        form.addRow("Label kind", self.kind_combo)
        self.autosave_check = check_box(
            "Autosave annotation",
            tooltip="Save the labels layer (debounced) to a project store beside the image; "
            "reopening the image restores it.",
        )
        form.addRow("", self.autosave_check)
        self.new_labels_btn.clicked.connect(self.add_scribbles_layer)
        return box

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model and training")
        form = QFormLayout(box)
        self.base_combo = QComboBox()
        for key, text in BASES.items():
            self.base_combo.addItem(text, key)
        form.addRow("Start from", self.base_combo)
        path_row = QHBoxLayout()
        self.base_path = QLineEdit()
        self.base_path.setPlaceholderText("model folder or bioimage.yaml")
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
        self.lr_spin.setToolTip(
            "Learning rate of new layers. In quick mode the pretrained decoder trains\n"
            "10x slower, so a few strokes adjust what the model knew rather than\n"
            "overwrite it; in full mode every layer trains at this rate."
        )
        form.addRow("Learning rate", self.lr_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        form.addRow("Device", self.device_combo)
        self.device_label = StatusText(lines=2)
        self.device_label.setText("Device: chosen when training starts")
        form.addRow("", self.device_label)
        self.preview_check = check_box("Live prediction of the visible region")
        form.addRow("", self.preview_check)
        self.saliency_combo = combo_box(
            list(LIVE_SALIENCY_CHOICES),
            tooltip="While training, explain the foreground class on the centre of the visible\n"
            "region with the current weights (blue: against, red: for). Maps are computed\n"
            "in the training thread and take at most a third of its time.",
        )
        form.addRow("Live saliency", self.saliency_combo)
        self.base_browse.clicked.connect(self._browse_base)
        return box

    def _actions(self) -> QVBoxLayout:
        col = QVBoxLayout()
        buttons = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.train_btn.setToolTip("Start training from the chosen base model")
        self.resume_btn.setToolTip("Continue training the current model")
        for b in (self.train_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        col.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("epoch %v / %m")
        col.addWidget(self.progress)
        self.status = StatusText(lines=3)
        self.status.setText("Ready.")
        col.addWidget(self.status)
        self.model_label = StatusText(lines=2)
        self.model_label.setToolTip("The model that Predict and Save use")
        col.addWidget(self.model_label)
        more = QHBoxLayout()
        self.predict_btn = QPushButton("Predict whole image")
        self.save_btn = QPushButton("Save model…")
        self.export_btn = QPushButton("Export to BioImage.IO…")
        self.export_btn.setToolTip(
            "Write the trained model as a BioImage Model Zoo package (.zip) for Fiji/deepImageJ, "
            "ilastik or QuPath, checked by the zoo's own test"
        )
        more.addWidget(self.predict_btn)
        more.addWidget(self.save_btn)
        more.addWidget(self.export_btn)
        col.addLayout(more)
        return col

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
            self.base_path.editingFinished.emit()

    @property
    def base_choice(self) -> str:
        """What "Start from" says: "builtin" or the path typed (may be empty)."""
        if self.base_combo.currentData() == "builtin":
            return "builtin"
        return self.base_path.text().strip()

    # ------------------------------------------------------------------ layer choices
    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", "") == "inserted":
            event.value.events.name.connect(self._refresh_layer_choices)
        self._refresh_layer_choices()

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

    def _on_selection_changed(self, *args: Any) -> None:
        """Hook for subclasses: the chosen image or labels layer may have changed."""

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
        data = image.data[0] if image.multiscale else image.data
        shape = data.shape[:-1] if image.rgb else data.shape
        layer = self.viewer.add_labels(
            np.zeros(shape, np.uint8),
            name=f"{image.name} scribbles",
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

    def plane_index(self, layer: Layer) -> tuple[int, ...]:
        """Indices of the non-displayed (leading) axes at the current slice."""
        n_lead = layer.ndim - 2
        if n_lead <= 0:
            return ()
        data_pt = np.asarray(layer.world_to_data(self.viewer.dims.point))
        shape = layer.data.shape
        return tuple(
            int(np.clip(round(float(c)), 0, shape[i] - 1)) for i, c in enumerate(data_pt[:n_lead])
        )
