"""Model metadata (:class:`ModelMeta`) and the saved-model folder's file names.

Reading metadata needs neither torch nor the weights: :func:`load_meta` reads
``metadata.json`` of a saved model folder (see :mod:`napari_dlcb.models.saved`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_dlcb.errors import DlcbError
from napari_dlcb.io.jsonable import json_default

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "TORCHSCRIPT_FILE",
    "WEIGHTS_FILE",
    "ModelMeta",
    "load_meta",
    "model_dir",
    "one_line",
]

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "weights.safetensors"
TORCHSCRIPT_FILE = "model.pt"
FORMAT_VERSION = 1
#: the largest ``metadata.json`` read (real ones are a few kB)
MAX_METADATA_BYTES = 16 * 2**20

_ACTIVATIONS = ("softmax", "sigmoid", "none")


@dataclass
class ModelMeta:
    """Everything needed to use a trained model besides its weights.

    Parameters
    ----------
    task : str
        ``"segmentation"``, ``"classification"`` or ``"sequence"``.
    architecture : dict
        ``{"name": <registered architecture>, **init kwargs}`` or
        ``{"name": "torchscript"}``.
    classes : list of str
        Output class names; index = output channel. A single-channel sigmoid
        model lists ``["background", "foreground"]``: its one logit channel is
        the foreground.
    label_kind : str, optional
        ``"scribbles"``, ``"classes"``, ``"instances"`` or None.
    class_values : list of int, optional
        Label value written for each output class.
    normalization : dict
        Input normalisation (``Normalizer.to_dict()`` of
        :mod:`napari_dlcb.data.normalize`), e.g. ``{"mode": "per_image_zscore"}``.
    input_axes : str
        ``"bcyx"`` for images, ``"bcl"`` for one-hot DNA.
    in_channels : int
        Number of input channels.
    output_activation : str
        ``"softmax"``, ``"sigmoid"`` or ``"none"`` (outputs are already
        probabilities/values), applied to the logits of ``model.pt``.
    parent : str, optional
        What this model was fine-tuned from: ``"builtin:unet2d-nuclei"``, a
        path, or None.
    extra : dict
        Task-specific, JSON-serialisable information (halo, window length,
        training log, provenance...).

    Examples
    --------
    >>> meta = ModelMeta("segmentation", {"name": "unet2d"}, ["bg", "fg"])
    >>> ModelMeta.from_dict(meta.to_dict()) == meta
    True
    """

    task: str
    architecture: dict
    classes: list[str]
    label_kind: str | None = None
    class_values: list[int] | None = None
    normalization: dict = field(default_factory=dict)
    input_axes: str = "bcyx"
    in_channels: int = 1
    output_activation: str = "softmax"
    parent: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary of all fields.

        Returns
        -------
        dict
        """
        return json.loads(json.dumps(dataclasses.asdict(self), default=json_default))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        """Create and validate a ModelMeta from :meth:`to_dict` output.

        Parameters
        ----------
        d : mapping
            The dictionary (``metadata.json`` content). ``format_version`` is
            accepted and dropped; other unknown keys are ignored with a warning.

        Returns
        -------
        ModelMeta

        Raises
        ------
        DlcbError
            If a required field is missing or has the wrong type.
        """
        if not isinstance(d, Mapping):
            raise DlcbError("model metadata must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"format_version"})
        if unknown:
            warnings.warn(f"ignoring unknown model metadata keys: {unknown}", stacklevel=2)
        missing = [k for k in ("task", "architecture", "classes") if k not in d]
        if missing:
            raise DlcbError(f"model metadata is missing {', '.join(missing)}")
        kwargs = {k: copy.deepcopy(v) for k, v in d.items() if k in names}
        meta = cls(**kwargs)
        meta.validate()
        return meta

    def validate(self) -> None:
        """Check field types and values.

        Raises
        ------
        DlcbError
            With a one-line description of the first problem found.
        """
        if not isinstance(self.task, str) or not self.task:
            raise DlcbError("model metadata: 'task' must be a non-empty string")
        arch = self.architecture
        if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
            raise DlcbError("model metadata: 'architecture' must be a dict with a 'name'")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise DlcbError("model metadata: 'classes' must be a list of strings")
        self._check_class_values()
        if not isinstance(self.normalization, dict) or not isinstance(self.extra, dict):
            raise DlcbError("model metadata: 'normalization' and 'extra' must be dicts")
        if not isinstance(self.in_channels, int) or not 1 <= self.in_channels <= 4096:
            raise DlcbError("model metadata: 'in_channels' must be an integer from 1 to 4096")
        if len(self.classes) > 100_000:
            raise DlcbError("model metadata: 'classes' names more than 100000 outputs")
        if not isinstance(self.input_axes, str) or not self.input_axes:
            raise DlcbError("model metadata: 'input_axes' must be a string such as 'bcyx'")
        if self.output_activation not in _ACTIVATIONS:
            raise DlcbError(
                f"model metadata: 'output_activation' must be one of {_ACTIVATIONS}, "
                f"not {self.output_activation!r}"
            )

    def _check_class_values(self) -> None:
        values = self.class_values
        if values is None:
            return
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise DlcbError(
                f"model metadata: 'class_values' must be a list of integers, not {values!r}"
            )
        if len(values) != len(self.classes):
            raise DlcbError(
                f"model metadata: 'class_values' {values} has {len(values)} value(s) but "
                f"'classes' {self.classes} has {len(self.classes)}; give one label value per class"
            )


def load_meta(path: str | os.PathLike) -> ModelMeta:
    """Read ``metadata.json`` of a saved model without loading any weights.

    Parameters
    ----------
    path : str or path-like
        The model folder or its ``metadata.json``.

    Returns
    -------
    ModelMeta

    Raises
    ------
    DlcbError
        If the folder or file is missing or not valid metadata.
    """
    folder = model_dir(path)
    file = folder / METADATA_FILE
    if not file.is_file():
        raise DlcbError(f"not a napari-dlcb model folder (no {METADATA_FILE}): {folder}")
    if file.stat().st_size > MAX_METADATA_BYTES:
        raise DlcbError(
            f"cannot read {file}: {file.stat().st_size:,} bytes is not model metadata "
            f"(at most {MAX_METADATA_BYTES:,})"
        )
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise DlcbError(f"cannot read {file}: {one_line(err)}") from err
    version = d.get("format_version", FORMAT_VERSION) if isinstance(d, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DlcbError(
            f"{file} has format version {version}; this napari-dlcb reads up to "
            f"{FORMAT_VERSION}, please upgrade"
        )
    return ModelMeta.from_dict(d)


def model_dir(path: str | os.PathLike) -> Path:
    """The model folder of ``path`` (a folder, or one of its three files), checked to exist."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (METADATA_FILE, WEIGHTS_FILE, TORCHSCRIPT_FILE):
        p = p.parent
    if not p.exists():
        raise DlcbError(f"model folder not found: {p}")
    if not p.is_dir():
        raise DlcbError(f"not a napari-dlcb model folder: {p}")
    return p


def one_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(err).strip().splitlines()
    msg = text[0] if text else type(err).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."
