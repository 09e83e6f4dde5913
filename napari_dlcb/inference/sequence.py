"""Prediction with DNA sequence models: load a model, score windows, predict tracks along a region.

What ``predict sequence``, ``score-variants`` and the Genome view call::

    model, meta = load_sequence_model("builtin")
    prob = predict_sequences(model, ["ACGT..."], meta=meta)        # (N, T)
    centres, tracks = predict_track(model, region_sequence, meta=meta)

Predictions average the forward and the reverse-complement strand. A
regression model's ``meta`` maps outputs back to the label scale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_dlcb.data.onehot import one_hot
from napari_dlcb.errors import DlcbError
from napari_dlcb.models.ensemble import member_architecture
from napari_dlcb.models.saved import ModelMeta, load_model

__all__ = [
    "BUILTIN_CAVEAT",
    "check_sequence_length",
    "describe_sequence_model",
    "load_sequence_model",
    "predict_sequences",
    "predict_track",
]

#: What users must know about the built-in DNA model (measured with
#: ``../shared/data/deepbind_encode_chipseq``: GATA3 test peaks vs shuffled, 101 bp).
BUILTIN_CAVEAT = (
    "trained on simulated sequences with planted JASPAR motifs, not on a real genome "
    "(GATA3 AUROC 0.72 on real GATA3 ChIP-seq peaks, where a k-mer baseline reaches 0.90): "
    "fine-tune it on your peaks before trusting its tracks"
)


def fixed_length(architecture: dict) -> int | None:
    """Input length an architecture needs (Basset's, DeepSEA's, DanQ's flatten), or None for any.

    An ensemble's is its members'.
    """
    architecture = member_architecture(architecture)
    fixed = architecture.get("name") in ("basset", "deepsea", "danq")
    return int(architecture["length"]) if fixed else None


def load_sequence_model(
    path: str | os.PathLike, *, device: str | torch.device = "auto", trust: bool = False
) -> tuple[nn.Module, ModelMeta]:
    """Load a saved (or built-in, ``"builtin[:name]"``) DNA model; refuse other tasks.

    Parameters
    ----------
    path : str or path-like
        A model folder, ``"builtin"`` or ``"builtin:<name>"``, or a TorchScript
        (``.pt``) / ONNX (``.onnx``) file with a sidecar
        (:mod:`napari_dlcb.models.external_dna`).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    trust : bool
        Allow an external TorchScript file to run (it can run arbitrary code).

    Returns
    -------
    model : torch.nn.Module
    meta : ModelMeta
        ``meta.extra["source"]`` says where it came from.

    Examples
    --------
    >>> model, meta = load_sequence_model("builtin", device="cpu")
    >>> meta.task, len(meta.classes)
    ('sequence', 8)
    """
    import napari_dlcb.models.dna  # noqa: F401 - registers the DNA architectures
    from napari_dlcb.device import resolve_device
    from napari_dlcb.models.external_dna import is_external_model, load_external_model

    if is_external_model(path):  # TorchScript / ONNX from elsewhere, with a sidecar
        return load_external_model(path, trust=trust, device=device)
    dev = resolve_device(device)
    if isinstance(path, str) and (path == "builtin" or path.startswith("builtin:")):
        from napari_dlcb.models.registry import resolve_base

        model, meta = resolve_base(path, task="sequence", device=dev)
    else:
        model, meta = load_model(path, device=dev)
    if meta.task != "sequence":
        raise DlcbError(f"{path} is a {meta.task} model, not a DNA sequence model")
    meta.extra.setdefault("source", str(path))
    return model, meta


def describe_sequence_model(meta: ModelMeta, source: str | os.PathLike) -> str:
    """One line on which model this is and what it was trained on (for status lines).

    A built-in names itself (``"builtin"`` is the sequence task's default,
    the synthetic-genome demo model ``dna-multitask``) and says what it was
    trained on: the demo model with :data:`BUILTIN_CAVEAT`, the real-data
    ``dna-encode`` with its held-out AUROC per task.

    Examples
    --------
    >>> _, meta = load_sequence_model("builtin", device="cpu")
    >>> describe_sequence_model(meta, "builtin").startswith("built-in dna-multitask")
    True
    >>> _, meta = load_sequence_model("builtin:dna-encode", device="cpu")
    >>> print(describe_sequence_model(meta, "builtin:dna-encode"))  # doctest: +ELLIPSIS
    built-in dna-encode (deepbind; ...): trained on real ChIP-seq peaks ... GATA3 0.947...
    """
    arch = str(meta.architecture.get("name", "model"))
    if arch == "ensemble":  # k-fold training
        arch = f"ensemble of {meta.architecture.get('members')} {member_architecture(meta.architecture).get('name')}"
    tasks = ", ".join(map(str, meta.classes[:8])) + (" ..." if len(meta.classes) > 8 else "")
    source = str(source)
    extra = meta.extra or {}
    if source == "builtin" or source.startswith("builtin:"):
        from napari_dlcb.models.registry import DEFAULT_BUILTIN

        name = source.split(":", 1)[1] if ":" in source else DEFAULT_BUILTIN["sequence"]
        return f"built-in {name} ({arch}; {tasks}): {_builtin_note(extra)}"
    what = f"{extra['n_train']} training windows" if "n_train" in extra else "unknown data"
    if extra.get("trained_on"):
        what += f" from {extra['trained_on']}"
    parent = f", fine-tuned from {meta.parent}" if meta.parent else ""
    label = Path(source).name if os.sep in source or "/" in source else source
    return f"{label} ({arch}; {tasks}): trained on {what}{parent}"


def _builtin_note(extra: dict) -> str:
    """What a built-in was trained on: held-out scores if it was real data, else the caveat."""
    held_out = (extra.get("evaluation") or {}).get("test_auroc")
    if not held_out:  # the synthetic-genome demo model
        return BUILTIN_CAVEAT
    scores = ", ".join(f"{k} {float(v):.3f}" for k, v in held_out.items())
    return (
        "trained on real ChIP-seq peaks against dinucleotide-shuffled sequences "
        f"(held-out AUROC {scores}); not calibrated against genomic background"
    )


def check_sequence_length(meta: ModelMeta, length: int) -> None:
    """Raise :class:`DlcbError` if the model cannot take sequences of ``length`` bp."""
    need = fixed_length(meta.architecture)
    if need is not None and need != length:
        raise DlcbError(
            f"the model takes {need} bp windows, but the sequences are {length} bp long"
        )
    k = member_architecture(meta.architecture).get("kernel_size")
    if k is not None and length < int(k):
        raise DlcbError(f"sequences of {length} bp are shorter than the model's {k} bp filters")


@torch.no_grad()
def predict_sequences(
    model: nn.Module,
    x: np.ndarray | Sequence[str],
    *,
    meta: ModelMeta | None = None,
    batch_size: int = 256,
    device: Any = "auto",
    rc_average: bool = True,
    activation: str = "sigmoid",
) -> np.ndarray:
    """Predict ``(N, T)`` probabilities for one-hot ``(N, 4, L)`` or strings.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, 4, L)`` to logits ``(B, T)``.
    x : numpy.ndarray or list of str
        Sequences (strings are one-hot encoded; equal lengths required).
    meta : ModelMeta, optional
        If given, the sequence length is checked against the model.
    batch_size : int
        Sequences per forward pass.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``... The
        model is handed back on its own device.
    rc_average : bool
        Average the logits of both strands (a ``meta`` whose
        ``extra["rc_average"]`` is False, e.g. an external model's, turns it off).
    activation : {"sigmoid", "none"}
        Applied to the (averaged) logits. A regression model's ``meta``
        overrides it: outputs are mapped back to the label scale.

    Returns
    -------
    numpy.ndarray
        ``(N, T)`` float32: probabilities, or predicted values for a
        regression model.

    Examples
    --------
    >>> from napari_dlcb.models.dna import DeepBind
    >>> predict_sequences(DeepBind(2, kernel_size=5), ["ACGTACGTAC"], device="cpu").shape
    (1, 2)
    """
    from napari_dlcb.device import resolve_device
    from napari_dlcb.models.state import preserve_model_state

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DlcbError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    if not isinstance(x, np.ndarray):
        x = one_hot(list(x))
    rc_average, activation, scale = _meta_options(meta, x.shape[2], rc_average, activation)
    dev = resolve_device(device)
    outs = []
    with preserve_model_state(model):
        model.eval().to(dev)
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=dev)
            logit = model(xb)
            if rc_average:
                logit = (logit + model(xb.flip(1, 2))) / 2
            if logit.ndim == 1:
                logit = logit[:, None]
            outs.append(
                (torch.sigmoid(logit) if activation == "sigmoid" else logit).float().cpu().numpy()
            )
    if not outs:
        return np.zeros((0, 0), np.float32)
    out = np.concatenate(outs)
    if scale is not None:  # regression: back from the standardised training scale
        out = out * scale[1] + scale[0]
    return out


def _meta_options(
    meta: ModelMeta | None, length: int, rc_average: bool, activation: str
) -> tuple[bool, str, tuple[np.ndarray, np.ndarray] | None]:
    """Check the sequence length against ``meta`` and apply its overrides.

    Parameters
    ----------
    meta : ModelMeta or None
        The model's metadata, if known.
    length : int
        The sequence length in bp.
    rc_average, activation
        As asked of :func:`predict_sequences`.

    Returns
    -------
    rc_average, activation
        As the model allows: an external model may turn strand averaging off,
        and a regression model's outputs are not squashed.
    scale : (mean, std) or None
        A regression model's training-label scale, to map outputs back to it.
    """
    if meta is None:
        return rc_average, activation, None
    check_sequence_length(meta, length)
    if meta.extra.get("rc_average", True) is False:
        rc_average = False
    if meta.extra.get("task_type") != "regression":
        return rc_average, activation, None
    scale = (
        np.asarray(meta.extra["target_mean"], np.float32),
        np.asarray(meta.extra["target_std"], np.float32),
    )
    return rc_average, "none", scale


def predict_track(
    model: nn.Module,
    sequence: str,
    *,
    window: int = 200,
    step: int = 10,
    batch_size: int = 256,
    device: Any = "auto",
    meta: ModelMeta | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted tracks along a sequence: windows of ``window`` bp every ``step`` bp.

    The sequence is padded with ``N`` by ``window // 2`` on both sides so every
    position gets a centred window.

    Parameters
    ----------
    model : torch.nn.Module
        DNA model.
    sequence : str
        The region's sequence.
    window, step : int
        Window length and spacing of the window centres, in bp.
    batch_size, device, meta
        As for :func:`predict_sequences`.

    Returns
    -------
    centres : numpy.ndarray
        Window centres (0-based positions in ``sequence``; add the region's
        start for genome coordinates).
    prob : numpy.ndarray
        ``(n_windows, T)`` probabilities (values for a regression ``meta``).

    Examples
    --------
    >>> from napari_dlcb.models.dna import DeepBind
    >>> c, p = predict_track(DeepBind(2, kernel_size=5), "ACGT" * 30, window=20, step=10)
    >>> c.tolist()[:3], p.shape
    ([0, 10, 20], (12, 2))
    """
    if step < 1 or window < 1:
        raise DlcbError(f"window and step must be at least 1 bp, got {window} and {step}")
    half = window // 2
    padded = "N" * half + sequence + "N" * (window - half)
    centres = np.arange(0, len(sequence), step)
    x = one_hot([padded[c : c + window] for c in centres])
    return centres, predict_sequences(model, x, batch_size=batch_size, device=device, meta=meta)
