"""DataLoader construction: seeded, deterministic, optionally distributed.

Determinism: the loader gets a ``torch.Generator`` seeded with ``seed`` (shuffle order
and the per-epoch worker base seed come from it); :func:`seed_worker` seeds python
``random`` and ``np.random`` in each worker from torch's per-worker seed; the
datasets draw one seed per item from torch's RNG (see dataset.py). Same seed, same
``num_workers`` -> same batches. (Different ``num_workers`` give different, equally
valid, augmentations.)
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from far.data.dataset import collate


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and ``np.random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, num_workers: int = 0,
                 sampler: Sampler | None = None, pin_memory: bool = False,
                 persistent_workers: bool | None = None, drop_last: bool | None = None,
                 prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` using :func:`far.data.dataset.collate`.

    ``train``: shuffle (unless a ``sampler``, e.g. ``DistributedSampler``, is given --
    then call its ``set_epoch`` each epoch) and drop the last incomplete batch.
    ``persistent_workers`` defaults to True when there are workers. Workers of a dataset
    decoding on NVDEC (``cfg.decoder == "nvdec"``) are spawned, not forked.
    ``batch_size`` counts videos; train batches hold ``batch_size * num_sample`` clips.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (got {num_workers})")
    if hasattr(dataset, "reseed"):
        dataset.reseed(seed)  # main-process item seeds (num_workers=0) follow the loader seed
    generator = torch.Generator().manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if num_workers > 0 and getattr(getattr(dataset, "cfg", None), "decoder", "cpu") == "nvdec":
        kwargs["multiprocessing_context"] = "spawn"  # CUDA (NVDEC) cannot run in a forked worker
    if num_workers > 0:
        kwargs["persistent_workers"] = True if persistent_workers is None else persistent_workers
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=train if drop_last is None else drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        **kwargs,
    )
