"""Multi-process training (``torchrun``): process group set-up and the few collectives the trainer needs.

Launch with ``torchrun --nproc_per_node N -m os2d train ...`` (or ``python -m torch.distributed.run``).
Every rank runs the same loop on its own shard of each batch; DistributedDataParallel averages gradients.
Rank 0 alone logs, evaluates and writes checkpoints; the others wait at a barrier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from os2d.detector import resolve_device
from os2d.runner.folder import Shard

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext(Shard):
    """Where this process sits in the job (rank 0 of 1 when not distributed): the :class:`~os2d.runner.folder.Shard`
    of ``os2d detect`` under torchrun, plus what the training loop asks of it."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by torchrun (absent: a single process).

    Raises:
        ValueError: values that are not integers or a rank outside ``[0, WORLD_SIZE)``.
    """
    shard = Shard.from_env()
    return DistContext(shard.rank, shard.world_size, shard.local_rank)


def setup_distributed(device: str) -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun (NCCL on CUDA, Gloo on CPU); pick this rank's device.

    ``device`` "auto"/"cuda" under torchrun becomes ``cuda:LOCAL_RANK``.
    """
    ctx = context_from_env()
    dev = resolve_device(device)
    if dev.type == "cuda" and ctx.enabled and dev.index is None:
        dev = torch.device("cuda", ctx.local_rank % max(torch.cuda.device_count(), 1))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
        logger.info("rank %d/%d joined the %s process group on %s", ctx.rank, ctx.world_size, backend, dev)
    return ctx, dev


def cleanup_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (e.g. "my loss is finite"), so all ranks skip a step together."""
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() == 0.0)


__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_true",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "context_from_env",
    "setup_distributed",
]
