"""Host-device synchronisations and host time of ClipAugment on CUDA (issue 16).

benchmarks/results/train_pace.md, check 12. On a GPU machine, from the repository root:

    PYTHONPATH=. python3 benchmarks/sync_check.py

A batch like the paper's SSv2 micro-batch (24 videos x 2 copies of 16 x 240 x 428 frames,
the SSv2 recipe's RandAugment and erasing) is augmented behind 20 queued large GEMMs, as a
training step leaves them: a synchronising copy inside the augmentation then makes the
host wait for them, which the profile's counts and the host time show.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from far.data.batch_augment import ClipAugment
from far.data.config import DataConfig
from far.data.dataset import collate
from far.data.transforms import TrainDraw

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
COUNTED = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync",
           "Memcpy HtoD (Pageable -> Device)", "Memcpy HtoD (Pinned -> Device)")


def main() -> None:
    cfg = DataConfig.preset("ssv2", input_size=224, short_side=240)
    draw = TrainDraw(cfg)
    rng = np.random.default_rng(0)
    items = [{"frames": torch.from_numpy(rng.integers(0, 256, (16, 240, 428, 3), dtype=np.uint8)),
              "params": [draw(240, 428, 100 * i + k) for k in range(2)],
              "label": torch.zeros(2, dtype=torch.long), "index": i, "replaced": []} for i in range(24)]
    batch = collate(items)
    batch["frames"] = batch["frames"].pin_memory()
    augment = ClipAugment(cfg)
    ops = [name for p in batch["params"] for name, _ in p.ops]
    print(f"clips {len(batch['params'])}, ops {len(ops)}, geometric {sum(n in GEOMETRIC for n in ops)}")
    for _ in range(3):
        augment(batch, "cuda")
    torch.cuda.synchronize()
    a = torch.randn(8192, 8192, device="cuda")

    def step() -> float:
        for _ in range(20):
            a @ a
        start = time.perf_counter()
        augment(batch, "cuda")
        host = time.perf_counter() - start
        torch.cuda.synchronize()
        return host

    hosts = sorted(step() for _ in range(5))
    print(f"host time of the call behind 20 queued GEMMs: median {1000 * hosts[2]:.1f} ms")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
    for event in prof.key_averages():
        if event.key in COUNTED:
            print(event.key, event.count)


if __name__ == "__main__":
    main()
