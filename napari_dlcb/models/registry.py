"""Built-in pretrained models and resolution of a "base model" argument.

The built-in models ship inside the package (``napari_dlcb/models/weights/``):
a safetensors file, its :class:`~napari_dlcb.models.saved.ModelMeta` as JSON,
and a model card. Nothing is downloaded.

To add a built-in model, put its three files in ``models/weights/`` and append
one entry to :data:`BUILTIN_MODELS` (and, if it is the default for its task,
to :data:`DEFAULT_BUILTIN`); the files are named after the model::

    _entry("deepbind-ctcf", "sequence", "DeepBind CNN for CTCF ChIP-seq peaks (101 bp)"),

reads ``deepbind_ctcf.safetensors``, ``deepbind_ctcf.json`` and
``deepbind_ctcf_MODEL_CARD.md``.

Its ``architecture["name"]`` must be registered in
:data:`napari_dlcb.models.saved.ARCHITECTURES`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.saved import (
    METADATA_FILE,
    ModelMeta,
    build_model,
    load_model,
    load_weights,
)

__all__ = [
    "BuiltinModel",
    "BUILTIN_MODELS",
    "DEFAULT_BUILTIN",
    "WEIGHTS_DIR",
    "list_builtin",
    "builtin_info",
    "is_model_dir",
    "load_builtin",
    "resolve_base",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class BuiltinModel:
    """One row of the built-in model table.

    Parameters
    ----------
    name : str
        Registry name, used as ``"builtin:<name>"``.
    task : str
        ``ModelMeta.task`` of the model.
    weights : str
        Safetensors file name in :data:`WEIGHTS_DIR` (float16 storage is fine).
    metadata : str
        JSON file name in :data:`WEIGHTS_DIR` holding ``ModelMeta.to_dict()``.
    description : str
        One line for menus and ``--help``.
    card : str, optional
        Model card (markdown) file name in :data:`WEIGHTS_DIR`.
    """

    name: str
    task: str
    weights: str
    metadata: str
    description: str
    card: str | None = None

    @property
    def available(self) -> bool:
        """True if the weight and metadata files are installed."""
        return (WEIGHTS_DIR / self.weights).is_file() and (WEIGHTS_DIR / self.metadata).is_file()


def _entry(name: str, task: str, description: str, *, card: str = "") -> BuiltinModel:
    """A table row whose files are named after the model (``dna-encode``: ``dna_encode.json``...)."""
    stem = name.replace("-", "_")
    return BuiltinModel(
        name=name,
        task=task,
        weights=f"{stem}.safetensors",
        metadata=f"{stem}.json",
        card=card or f"{stem}_MODEL_CARD.md",
        description=description,
    )


#: The built-in model table: append one entry per model.
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    entry.name: entry
    for entry in (
        _entry(
            "unet2d-nuclei",
            "segmentation",
            "2-D U-Net for fluorescence nuclei: background / interior / boundary",
            card="MODEL_CARD_unet2d_nuclei.md",
        ),
        # issue 3 (DNA): made by scripts/pretrain_dna.py; architecture from napari_dlcb.models.dna
        _entry(
            "dna-multitask",
            "sequence",
            "DeepBind-style multitask DNA CNN, 8 JASPAR TFs (CTCF, GATA3, FOXA1, SPI1, SOX2, "
            "MAFK, CEBPB, POU5F1), simulated data",
        ),
        # issue 13: made by scripts/pretrain_dna_encode.py from real ChIP-seq peaks
        _entry(
            "dna-encode",
            "sequence",
            "DeepBind-style multitask DNA CNN trained on real ChIP-seq peaks: "
            "ARID3A, FOXM1, GATA3 (ENCODE), POU5F1 (Oct4), MAFK (101 bp)",
        ),
        # issue 4 (cells): made by scripts/pretrain_classifier.py
        _entry(
            "cellclf-nuclei",
            "classification",
            "compact ResNet crop classifier pretrained on synthetic nuclei (32 px)",
        ),
    )
}

#: What ``base="builtin"`` means for each task.
DEFAULT_BUILTIN: dict[str, str] = {
    "segmentation": "unet2d-nuclei",
    "classification": "cellclf-nuclei",
    "sequence": "dna-multitask",
}


def list_builtin(task: str | None = None) -> list[str]:
    """Names of the installed built-in models.

    Parameters
    ----------
    task : str, optional
        Only models for this task (``"segmentation"``, ``"sequence"``...).

    Returns
    -------
    list of str
        Sorted names, usable as ``load_builtin(name)`` or ``"builtin:<name>"``.

    Examples
    --------
    >>> "unet2d-nuclei" in list_builtin("segmentation")
    True
    """
    return sorted(
        name
        for name, entry in BUILTIN_MODELS.items()
        if entry.available and (task is None or entry.task == task)
    )


def builtin_info(name: str) -> tuple[BuiltinModel, ModelMeta]:
    """Return the table entry and metadata of a built-in model, without weights.

    Parameters
    ----------
    name : str
        A name from :func:`list_builtin`.

    Returns
    -------
    entry : BuiltinModel
    meta : ModelMeta

    Raises
    ------
    DlcbError
        If there is no such (installed) built-in model.
    """
    entry = BUILTIN_MODELS.get(name)
    if entry is None:
        known = ", ".join(list_builtin()) or "none"
        raise DlcbError(f"no built-in model named {name!r} (available: {known})")
    meta_file = WEIGHTS_DIR / entry.metadata
    if not entry.available:
        raise DlcbError(
            f"built-in model {name!r} is not installed (missing files in {WEIGHTS_DIR})"
        )
    try:
        meta = ModelMeta.from_dict(json.loads(meta_file.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as err:
        raise DlcbError(f"cannot read {meta_file}: {err}") from err
    return entry, meta


def load_builtin(
    name: str = "unet2d-nuclei", *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Load a built-in pretrained model.

    Parameters
    ----------
    name : str
        A name from :func:`list_builtin`.
    device : str or torch.device
        Where to put the model (``"auto"``: CUDA, then MPS, then CPU).

    Returns
    -------
    model : torch.nn.Module
        The network in eval mode, float32, parameters requiring gradients.
    meta : ModelMeta
        Its metadata; ``meta.extra["source"]`` is ``"builtin:<name>"``.

    Raises
    ------
    DlcbError
        If the name is unknown or the files are missing or corrupt.

    Examples
    --------
    >>> import torch
    >>> model, meta = load_builtin("unet2d-nuclei")
    >>> meta.classes
    ['background', 'interior', 'boundary']
    >>> model(torch.zeros(1, 1, 64, 48)).shape
    torch.Size([1, 3, 64, 48])
    """
    entry, meta = builtin_info(name)
    model = build_model(meta.architecture)
    load_weights(model, WEIGHTS_DIR / entry.weights)
    meta.extra["source"] = f"builtin:{name}"
    return model.to(resolve_device(device)).eval(), meta


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model :func:`resolve_base` can load, from file names only.

    Parameters
    ----------
    path : str or path-like
        A napari-dlcb model folder (with ``metadata.json``) or that file, or a
        bioimage.io package (folder, ``bioimageio.yaml``/``rdf.yaml`` or ``.zip``).

    Returns
    -------
    bool
        True for a model folder or a bioimage.io package; no weights are read.

    Examples
    --------
    >>> import tempfile
    >>> is_model_dir(tempfile.mkdtemp())
    False
    """
    from napari_dlcb.models.bioimageio_package import is_bioimageio_package

    path = Path(path).expanduser()
    return _is_saved_model(path) or is_bioimageio_package(path)


def _is_saved_model(path: Path) -> bool:
    """A napari-dlcb model folder, or its ``metadata.json``."""
    return (path / METADATA_FILE).is_file() or path.name == METADATA_FILE


def resolve_base(
    base: str | os.PathLike,
    *,
    task: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ModelMeta]:
    """Load the model that training starts from.

    Parameters
    ----------
    base : str or path-like
        ``"builtin"`` (the default built-in model of ``task``, segmentation
        if None), ``"builtin:<name>"``, a napari-dlcb model folder (with
        ``metadata.json``), or a bioimage.io package (folder,
        ``bioimageio.yaml``/``rdf.yaml`` or ``.zip``).
    task : str, optional
        Required task; a model for another task is refused.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : torch.nn.Module
        The network in eval mode.
    meta : ModelMeta
        Its metadata; ``meta.extra["source"]`` names where it came from
        (``"builtin:<name>"`` or the path), ready to become the ``parent`` of
        a fine-tuned model.

    Raises
    ------
    DlcbError
        For anything else, or an unreadable model.

    Examples
    --------
    >>> model, meta = resolve_base("builtin")
    >>> meta.extra["source"]
    'builtin:unet2d-nuclei'
    """
    if isinstance(base, str) and (base == "builtin" or base.startswith("builtin:")):
        name = base.partition(":")[2]
        if not name:
            name = DEFAULT_BUILTIN.get(task or "segmentation", "")
            if not name:
                raise DlcbError(f"there is no default built-in model for task {task!r}")
        model, meta = load_builtin(name, device=device)
    else:
        if not isinstance(base, (str, os.PathLike)) or not str(base):
            raise DlcbError(f"base model must be 'builtin' or a path, not {base!r}")
        path = Path(base).expanduser()
        if not path.exists():
            raise DlcbError(f"base model not found: {path}")
        if not is_model_dir(path):
            raise DlcbError(
                f"cannot use {str(path)!r} as a base model: expected 'builtin', "
                "'builtin:<name>', a napari-dlcb model folder or a bioimage.io package"
            )
        if _is_saved_model(path):
            model, meta = load_model(path, device=device)
        else:
            from napari_dlcb.models.bioimageio import load_bioimageio

            model, meta = load_bioimageio(path, device=device)
        meta.extra["source"] = str(path.resolve())
    if task is not None and meta.task != task:
        raise DlcbError(f"base model {base!s} is a {meta.task} model, not a {task} model")
    return model, meta
