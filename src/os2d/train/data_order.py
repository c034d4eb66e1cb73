"""Deterministic order of training batches: a pure function of (seed, rank, step).

Images are visited epoch by epoch, each epoch a fresh permutation of the whole training set (the same on
every rank); iteration ``t`` (1-based) takes the next ``world_size * batch_size`` images of that stream and
rank ``r`` keeps its own ``batch_size`` of them. All augmentation randomness of iteration ``t`` on rank ``r``
comes from ``numpy.random.default_rng([seed, STREAM_AUGMENT, rank, t])``.

Because nothing depends on what happened before, the batch of any step can be rebuilt on its own: resuming
at step N replays steps N+1, N+2, ... exactly, and DataLoader workers may build steps in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from os2d.train.sampler import MinedPatch, PatchSampler, TrainBatch

STREAM_ORDER = 0x0D  # numpy SeedSequence entropy tags keep the streams independent
STREAM_AUGMENT = 0xA6
STREAM_MINING = 0x31


@dataclass(frozen=True)
class DataOrder:
    """Epoch permutations of ``num_images`` images shared by all ranks."""

    num_images: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError("no training images")

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, STREAM_ORDER, epoch]).permutation(self.num_images)

    def position(self, stream_index: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of the ``stream_index``-th image visited (0-based)."""
        return divmod(stream_index, self.num_images)

    def images(self, start: int, count: int) -> list[int]:
        """Dataset indices of stream entries ``start .. start + count - 1`` (may span epochs)."""
        out: list[int] = []
        cached: tuple[int, np.ndarray] | None = None
        for s in range(start, start + count):
            epoch, offset = self.position(s)
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.permutation(epoch))
            out.append(int(cached[1][offset]))
        return out


def step_images(order: DataOrder, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Image indices of rank ``rank`` at iteration ``step`` (1-based)."""
    start = (step - 1) * world_size * batch_size + rank * batch_size
    return order.images(start, batch_size)


def augment_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM_AUGMENT, rank, step])


def mining_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM_MINING, rank, step])


class StepBatches(Dataset):
    """Map-style dataset whose item ``step`` is that iteration's :class:`TrainBatch` for one rank.

    ``mined`` is the current pool of hard patches (empty: random crops only); replace the object, not the
    list in place, when a new mining round ends (DataLoader workers hold copies).
    """

    def __init__(self, sampler: PatchSampler, order: DataOrder, *, seed: int, rank: int = 0, world_size: int = 1,
                 mined: Sequence[MinedPatch] = ()) -> None:
        self.sampler = sampler
        self.order = order
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.mined = list(mined)

    @property
    def batch_size(self) -> int:
        return self.sampler.config.batch_size

    def __len__(self) -> int:  # steps are open-ended; DataLoader only needs this for its default sampler
        return 2**62

    def __getitem__(self, step: int) -> TrainBatch:
        indices = step_images(self.order, int(step), self.batch_size, self.rank, self.world_size)
        return self.sampler.sample(indices, augment_rng(self.seed, self.rank, int(step)), mined=self.mined or None)

    def position(self, step: int) -> dict[str, int]:
        """Data position after ``step`` iterations (saved in checkpoints for the record)."""
        consumed = step * self.world_size * self.batch_size
        epoch, cursor = self.order.position(consumed)
        return {"step": step, "epoch": epoch, "cursor": cursor, "images_per_step": self.world_size * self.batch_size}


def no_collate(batch: TrainBatch) -> TrainBatch:
    """DataLoader ``collate_fn`` with ``batch_size=None``: items are whole batches already (picklable)."""
    return batch


__all__ = ["DataOrder", "StepBatches", "augment_rng", "mining_rng", "no_collate", "step_images"]
