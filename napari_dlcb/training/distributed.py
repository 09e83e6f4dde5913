"""Data-parallel training under ``torchrun`` (DistributedDataParallel), with no code of our own for the transport.

``torchrun --nproc-per-node N napari-dlcb train ...`` starts N processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`init_from_env` joins
the process group (NCCL on GPUs, gloo on CPUs) and the engine then:

- wraps the model in :class:`torch.nn.parallel.DistributedDataParallel`
  (gradients are averaged across processes at every step);
- gives each process its own shard of the training data
  (:class:`torch.utils.data.distributed.DistributedSampler`, reshuffled each
  epoch with the run's seed);
- validates on the whole validation set in every process, so all processes
  take the same early-stopping and best-weights decisions;
- lets only rank 0 write checkpoints (and the CLI, the model folder).

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here changes anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from napari_dlcb.errors import DlcbError

__all__ = ["DistContext", "context", "init_from_env", "is_writer"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run."""

    rank: int
    local_rank: int
    world_size: int
    backend: str

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise DlcbError(f"environment variable {name} must be an integer") from None


def init_from_env(device: str = "auto") -> DistContext | None:
    """Join the ``torchrun`` process group if this process is one of several.

    Returns None for a normal (single-process) run. Safe to call twice.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return None
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and str(device) in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as err:
            raise DlcbError(f"cannot join the torchrun process group: {err}") from None
    return context()


def context() -> DistContext | None:
    """The current data-parallel context, or None outside one."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return DistContext(
        rank=dist.get_rank(),
        local_rank=_env_int("LOCAL_RANK", 0),
        world_size=dist.get_world_size(),
        backend=dist.get_backend(),
    )


def is_writer() -> bool:
    """True unless this is a data-parallel process other than rank 0."""
    ctx = context()
    return ctx is None or ctx.is_writer


def device_for(ctx: DistContext, device: Any) -> Any:
    """The device of this process: ``cuda:LOCAL_RANK`` under NCCL, else as resolved."""
    import torch

    if ctx.backend == "nccl":
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(model: Any, ctx: DistContext, device: Any) -> Any:
    """The model wrapped in DistributedDataParallel on ``device``."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if getattr(device, "type", "cpu") == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sampler(dataset: Any, ctx: DistContext, seed: int) -> Any:
    """The shard of the training data for this process (reshuffled per epoch by ``set_epoch``)."""
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
