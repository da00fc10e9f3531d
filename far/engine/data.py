"""How the engine consumes :mod:`far.data`: datasets, per-epoch samplers, loaders, seeds.

Everything here is a thin adapter over far.data's public API (``VideoDataset``,
``build_loader``); it adds what is specific to distributed, resumable training:

* :class:`EpochSampler`: the epoch's permutation comes from ``seed + epoch`` (identical
  on every rank), is padded to a multiple of the world size and strided by rank, and can
  start part-way (a mid-epoch resume skips the batches already done).
* Per-(epoch, rank) loader seeds, so augmentation differs across ranks and epochs but is
  a pure function of (seed, epoch, rank): an epoch-boundary resume replays it exactly.
* :class:`ShardSampler` for evaluation: items ``rank, rank + W, ...``, no padding.
* :func:`seed_process`: the one seed rule of a training process.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from far.engine.config import RunConfig
from far.engine.metrics import shard_indices


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_process(seed: int) -> None:
    """Seed every global RNG the training process draws from: torch (init, drop path),
    numpy (timm's Mixup/CutMix draw lambda and boxes from ``np.random``) and python's
    ``random``. Seeding torch alone left Mixup runs irreproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """Distributed shuffling sampler with an explicit epoch and start offset.

    An epoch is ``length`` items over all ranks (default: the ``n`` items once); a
    longer epoch cycles through fresh permutations (pre-training's fixed step counts).
    """

    def __init__(self, n: int, *, seed: int, rank: int, world_size: int, epoch: int = 0, start: int = 0,
                 length: int | None = None):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch, self.start = epoch, start
        self.length = n if length is None else length
        self.per_rank = -(-self.length // world_size)  # ceil: pad by repeating the first items

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        while len(perm) < self.length:
            perm += torch.randperm(self.n, generator=g).tolist()
        perm = perm[: self.length]
        perm += perm[: self.per_rank * self.world_size - self.length]
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}


class ShardSampler(Sampler[int]):
    """Evaluation shard: every item exactly once over all ranks (uneven shards allowed)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.items = shard_indices(n, rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def train_dataset(run: RunConfig) -> Any:
    from far.data.dataset import VideoDataset

    return VideoDataset(run.data_config(), mode="train")


def eval_dataset(run: RunConfig, *, clips: int, crops: int, max_videos: int | None = None) -> Any:
    """The val list as a test dataset with ``clips x crops`` views per video."""
    from far.data.dataset import VideoDataset, read_list

    cfg = dataclasses.replace(run.data_config(), test_clips=clips, test_crops=crops)
    samples = read_list(cfg.val_list, cfg.root) if cfg.val_list else None
    if samples is not None and max_videos is not None:
        samples = samples[:max_videos]
    return VideoDataset(cfg, mode="test", samples=samples)


def train_loader(dataset: Any, sampler: EpochSampler, micro: int, *, seed: int, epoch: int, rank: int, num_workers: int) -> DataLoader:
    """The loader of one epoch (rebuilt each epoch so its seed is (seed, epoch, rank))."""
    from far.data.loader import build_loader

    return build_loader(
        dataset,
        micro,
        train=True,
        seed=derived_seed(seed, epoch, rank),
        num_workers=num_workers,
        sampler=sampler,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,  # a fresh loader per epoch: workers must not outlive it
    )


def eval_loader(dataset: Any, rank: int, world_size: int, batch: int, num_workers: int) -> DataLoader:
    from far.data.loader import build_loader

    return build_loader(
        dataset,
        batch,
        train=False,
        seed=0,  # test views are deterministic; the seed only feeds unused RNG
        num_workers=num_workers,
        sampler=ShardSampler(len(dataset), rank, world_size),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        drop_last=False,
    )
