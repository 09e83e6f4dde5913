"""The napari-dlcb saved-model format: save and load a model folder.

A saved model is a folder::

    MODEL_DIR/metadata.json        ModelMeta as JSON (plus "format_version")
    MODEL_DIR/weights.safetensors  the state dict (no pickle)
    MODEL_DIR/model.pt             TorchScript: (B, C, Y, X) normalised float -> logits

:func:`load_model` rebuilds the eager network from ``metadata.json`` with
:func:`~napari_dlcb.models.architectures.build_model` and loads
``weights.safetensors`` into it, so a loaded model is ordinary, trainable
PyTorch. ``model.pt`` is the portable export for other tools (Fiji/deepImageJ,
bioimage.io, plain ``torch.jit.load``). For models whose architecture is
``{"name": "torchscript"}`` (for example an imported BioImage Model Zoo network
being fine-tuned) there is no Python class to rebuild: ``model.pt`` *is* the
network and the safetensors state dict is loaded into it.

This module is the format's one entry point: it also gives the metadata
(:mod:`~napari_dlcb.models.meta`), the architecture registry
(:mod:`~napari_dlcb.models.architectures`) and the weight files
(:mod:`~napari_dlcb.models.weights`) under their usual names.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_dlcb.device import resolve_device
from napari_dlcb.errors import DlcbError
from napari_dlcb.io.atomic import PendingDir, fsync_tree
from napari_dlcb.io.jsonable import json_default
from napari_dlcb.models.architectures import ARCHITECTURES, build_model, register_architecture
from napari_dlcb.models.meta import (
    FORMAT_VERSION,
    METADATA_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    ModelMeta,
    load_meta,
    model_dir,
    one_line,
)
from napari_dlcb.models.weights import load_weights, save_weights

__all__ = [
    "ARCHITECTURES",
    "METADATA_FILE",
    "TORCHSCRIPT_FILE",
    "WEIGHTS_FILE",
    "ModelMeta",
    "build_model",
    "export_torchscript",
    "load_meta",
    "load_model",
    "load_weights",
    "register_architecture",
    "save_model",
    "save_weights",
]


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    meta: ModelMeta,
    *,
    example_input: torch.Tensor | None = None,
) -> Path:
    """Save a model folder: ``metadata.json``, ``weights.safetensors``, ``model.pt``.

    The model is handed back unchanged (mode, device, parameters). ``model.pt``
    is made with ``torch.jit.script`` (shape-generic); if the network cannot be
    scripted it is traced with ``example_input``. When ``example_input`` is
    given, the exported module is checked against the eager model on it.

    Parameters
    ----------
    model : torch.nn.Module
        A network of a registered architecture, or a TorchScript module when
        ``meta.architecture == {"name": "torchscript"}``.
    path : str or path-like
        The model folder (created if needed; the three files are replaced).
    meta : ModelMeta
        Its metadata. For registered architectures, ``meta.architecture`` must
        build a network with the same tensor names and shapes.
    example_input : torch.Tensor, optional
        A typical normalised input, e.g. shape (1, C, 64, 64).

    Returns
    -------
    pathlib.Path
        The model folder.

    Raises
    ------
    DlcbError
        If the metadata does not describe the model or the export fails.

    Examples
    --------
    >>> import tempfile
    >>> from napari_dlcb.models.unet import UNet2D
    >>> net = UNet2D(1, 2, base=4, depth=2)
    >>> meta = ModelMeta("segmentation", net.architecture(), ["background", "nuclei"])
    >>> folder = save_model(net, tempfile.mkdtemp(), meta)
    >>> sorted(p.name for p in folder.iterdir())
    ['metadata.json', 'model.pt', 'weights.safetensors']
    """
    from napari_dlcb.device import data_parallel_rank

    meta.validate()
    folder = Path(path)
    rank, world = data_parallel_rank()
    if rank > 0:  # data-parallel training (torchrun): rank 0 writes the one model folder
        return folder
    if world > 1:
        meta.extra["world_size"] = world
    _check_destination(folder)
    name = meta.architecture["name"]
    if name != "torchscript":
        _check_architecture(model, meta.architecture)
    exported = export_torchscript(model, example_input)
    text = json.dumps(
        {"format_version": FORMAT_VERSION, **meta.to_dict()}, indent=2, default=json_default
    )
    _write_folder(folder, model, exported, text)
    if name == "torchscript":  # a program the user already agreed to run, now ours
        from napari_dlcb.models.trust import trust

        trust(folder / TORCHSCRIPT_FILE, note="written by napari-dlcb")
    return folder


def _check_destination(folder: Path) -> None:
    """Refuse a file, or a folder with other files in it, as the place of a model folder.

    Parameters
    ----------
    folder : pathlib.Path
        Where :func:`save_model` is asked to write.
    """
    if folder.exists() and not folder.is_dir():
        raise DlcbError(f"cannot save a model to {folder}: it is a file")
    if folder.is_dir() and not (folder / METADATA_FILE).is_file() and _extra_files(folder, True):
        raise DlcbError(
            f"cannot save a model to {folder}: it is a folder with other files in it "
            "(choose a new or empty folder, or an earlier model folder to replace)"
        )


def _write_folder(folder: Path, model: nn.Module, exported: Any, text: str) -> None:
    """Write the model folder's three files (keeping its other entries), all at once.

    The whole folder is built beside its destination and renamed into place at once,
    so a kill or a full disk leaves the previous model or the new one, never a mix
    of both.

    Parameters
    ----------
    folder : pathlib.Path
        The model folder.
    model : torch.nn.Module
        The network whose weights are saved.
    exported : torch.jit.ScriptModule
        Its TorchScript export.
    text : str
        The ``metadata.json`` text.
    """
    pending = PendingDir(folder, overwrite=True, zarr_only=False)
    try:
        pending.path.mkdir(parents=True)
        save_weights(model, pending.path / WEIGHTS_FILE)
        torch.jit.save(exported, str(pending.path / TORCHSCRIPT_FILE))
        (pending.path / METADATA_FILE).write_text(text, encoding="utf-8")
        for extra in _extra_files(folder):  # checkpoints, notes, a model card... are kept
            if extra.is_dir():
                shutil.copytree(extra, pending.path / extra.name, symlinks=True)
            else:
                shutil.copy2(extra, pending.path / extra.name)
        fsync_tree(pending.path)
        pending.commit()
    except OSError as err:
        raise DlcbError(f"cannot save the model to {folder}: {err.strerror or err}") from None
    finally:
        pending.discard()


def _extra_files(folder: Path, foreign_only: bool = False) -> list[Path]:
    """Entries of an existing model folder that are not the model itself (kept on replace).

    With ``foreign_only``, training checkpoints do not count (a folder holding only
    them is where a model is about to be saved).
    """
    if not folder.is_dir():
        return []
    ours = {WEIGHTS_FILE, TORCHSCRIPT_FILE, METADATA_FILE}
    if foreign_only:
        ours |= {"checkpoints"}
    return [f for f in folder.iterdir() if f.name not in ours and not f.name.startswith(".")]


def _check_architecture(model: nn.Module, architecture: Mapping[str, Any]) -> None:
    fresh = build_model(architecture)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise DlcbError(
            f"meta.architecture {dict(architecture)} does not describe this model "
            f"({len(diff)} tensor names/shapes differ, e.g. {diff[0][0]})"
        )


def export_torchscript(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Return a CPU, eval-mode TorchScript copy of ``model``; ``model`` is untouched.

    Scripted (shape-generic) where possible, else traced with ``example_input``;
    checked against the eager model on ``example_input`` when it is given.

    Parameters
    ----------
    model : torch.nn.Module
        An eager network or a TorchScript module.
    example_input : torch.Tensor, optional
        A typical normalised input.

    Returns
    -------
    torch.jit.ScriptModule

    Raises
    ------
    DlcbError
        If the network can be neither scripted nor traced, or the export
        does not reproduce it.
    """
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        exported = torch.jit.load(buf, map_location="cpu")
        exported.eval()
        eager = exported
    else:
        eager = copy.deepcopy(model).to("cpu").eval()
        try:
            exported = torch.jit.script(eager)
        except Exception as err:  # TorchScript frontend errors have many types
            if example_input is None:
                raise DlcbError(
                    f"{type(model).__name__} cannot be scripted ({one_line(err)}); "
                    "pass example_input to export it by tracing"
                ) from err
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                exported = torch.jit.trace(eager, example_input.detach().to("cpu"))
    if example_input is not None:
        x = example_input.detach().to("cpu")
        with torch.no_grad():
            want, got = eager(x), exported(x)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
            raise DlcbError(
                f"the TorchScript export of {type(model).__name__} does not reproduce "
                "the model on example_input"
            )
    return exported


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Load a saved model folder.

    Parameters
    ----------
    path : str or path-like
        The model folder (or its ``metadata.json``).
    device : str or torch.device
        Where to put the model; ``"auto"`` picks CUDA, then MPS, then CPU.

    Returns
    -------
    model : torch.nn.Module
        The network in eval mode: the eager class for registered
        architectures, a ``torch.jit.ScriptModule`` for ``"torchscript"``.
        Its parameters require gradients, so it can be fine-tuned.
    meta : ModelMeta
        Its metadata.

    Raises
    ------
    DlcbError
        If the folder or a file is missing, corrupt or truncated, or the
        weights do not match the architecture.

    Examples
    --------
    >>> import tempfile, torch
    >>> from napari_dlcb.models.unet import UNet2D
    >>> net = UNet2D(1, 2, base=4, depth=2).eval()
    >>> folder = save_model(net, tempfile.mkdtemp(),
    ...                     ModelMeta("segmentation", net.architecture(), ["bg", "fg"]))
    >>> loaded, meta = load_model(folder)
    >>> x = torch.rand(1, 1, 20, 30)
    >>> bool(torch.equal(loaded(x), net(x)))
    True
    """
    folder = model_dir(path)
    meta = load_meta(folder)
    dev = resolve_device(device)
    if meta.architecture["name"] == "torchscript":
        ts = folder / TORCHSCRIPT_FILE
        if not ts.is_file():
            raise DlcbError(f"TorchScript model not found: {ts}")
        from napari_dlcb.models.trust import require_trust

        require_trust(ts, what="the TorchScript model")
        try:
            model = torch.jit.load(str(ts), map_location="cpu")
        except Exception as err:  # torch raises RuntimeError or zip errors for bad files
            raise DlcbError(f"cannot read {ts} (corrupt or truncated?): {one_line(err)}") from err
    else:
        model = build_model(meta.architecture)
    load_weights(model, folder / WEIGHTS_FILE)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.to(dev).eval(), meta
