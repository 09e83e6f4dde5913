"""The one device resolver: ``device="auto"`` means CUDA, then Apple MPS, then CPU.

Every public function that runs a model takes ``device="auto"`` and calls
:func:`resolve_device`, so the rule (and its checks) is the same for training,
prediction, interpretation, the CLI and the widgets. torch is imported only
when a function is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_dlcb.errors import DlcbError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEVICE_CHOICES",
    "data_parallel_rank",
    "interactive_threads",
    "leave_a_core_for_the_viewer",
    "model_device",
    "resolve_device",
]

#: What users may type or pick (``cuda:1`` and friends are accepted too).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Any = "auto") -> torch.device:
    """Turn ``"auto"`` (or None) into cuda, then mps, then cpu; check the rest.

    Parameters
    ----------
    device : str or torch.device or None
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
        :class:`torch.device`.

    Returns
    -------
    torch.device

    Raises
    ------
    DlcbError
        For an unknown device, or one this machine does not have.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, TypeError, ValueError) as err:
        raise DlcbError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DlcbError("device 'cuda' was requested but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DlcbError(
                f"device {str(dev)!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps" and not _mps_available():
        raise DlcbError("device 'mps' was requested but Apple MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DlcbError(f"unsupported device {str(dev)!r}: use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def model_device(model: Any) -> torch.device | None:
    """Device of a model's first parameter or buffer; None for a stateless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def data_parallel_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in a ``torchrun`` job; ``(0, 1)`` otherwise.

    Only rank 0 writes files (model folders, checkpoints) and prints progress.
    """
    import sys

    dist = sys.modules.get("torch.distributed")  # never import torch just to ask
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return int(dist.get_rank()), int(dist.get_world_size())


def interactive_threads(cores: int | None = None, env: dict[str, str] | None = None) -> int | None:
    """How many CPU threads torch may use while a viewer is open: all cores but one.

    The viewer's event loop needs a core of its own to stay responsive while a model
    trains or predicts (on 2 cores, 2 torch threads left the GUI's redraws waiting and
    made each batch slower under load: ``benchmarks/RESULTS.md``, issue 8).
    ``NAPARI_DLCB_THREADS`` overrides the rule; with ``OMP_NUM_THREADS`` set the user's
    choice stands (``None``: leave torch as it is).

    Parameters
    ----------
    cores : int, optional
        CPU cores this process may use (default: its CPU affinity).
    env : dict, optional
        Environment (default ``os.environ``).

    Returns
    -------
    int or None
        The thread count to use, or None to change nothing.

    Raises
    ------
    DlcbError
        ``NAPARI_DLCB_THREADS`` is not a whole number >= 1.

    Examples
    --------
    >>> interactive_threads(2, {}), interactive_threads(8, {}), interactive_threads(1, {})
    (1, 7, 1)
    >>> interactive_threads(8, {"OMP_NUM_THREADS": "8"}) is None
    True
    >>> interactive_threads(8, {"NAPARI_DLCB_THREADS": "3"})
    3
    """
    import os

    env = os.environ if env is None else env
    chosen = env.get("NAPARI_DLCB_THREADS", "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise DlcbError(f"NAPARI_DLCB_THREADS must be a whole number >= 1, got {chosen!r}")
        return int(chosen)
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    return max(1, int(cores) - 1)


def leave_a_core_for_the_viewer() -> int:
    """Set torch's CPU threads by :func:`interactive_threads` (GUI jobs call this).

    Returns
    -------
    int
        torch's thread count afterwards.
    """
    import torch

    n = interactive_threads()
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
