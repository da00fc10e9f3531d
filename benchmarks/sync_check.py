"""Host-device synchronisations and host time of ClipAugment on CUDA (issue 16).

benchmarks/results/train_pace.md, check 12. On a GPU machine, from the repository root:

    PYTHONPATH=. python3 benchmarks/sync_check.py

A batch like the paper's SSv2 micro-batch (24 videos x 2 copies of 16 x 240 x 428 frames,
the SSv2 recipe's RandAugment and erasing) is augmented behind 20 queued large GEMMs, as a
training step leaves them: a synchronising copy inside the augmentation then makes the
host wait for them, which the profile's counts and the host time show.

It also prints the call's device time with nothing queued and its kernels by name
(``--device-time-only`` stops there). It then runs one call under ``torch.cuda.set_sync_debug_mode("warn")`` and prints where
(file:line, innermost frames of far and torchvision) each synchronising operation left
Python, and counts what the former erasing noise (a CUDA generator seeded per erased clip,
``--no-probe`` skips it) did on its own.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import traceback
import warnings

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from far.bench.timing import cuda_event_times
from far.data.batch_augment import ClipAugment
from far.data.config import DataConfig
from far.data.dataset import collate
from far.data.transforms import TrainDraw

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
COUNTED = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync",
           "Memcpy HtoD (Pageable -> Device)", "Memcpy HtoD (Pinned -> Device)")


def counts(fn) -> dict[str, int]:
    """The COUNTED profiler events of one call of ``fn``."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key: e.count for e in prof.key_averages() if e.key in COUNTED}


def sync_sites(fn) -> collections.Counter:
    """Where ``fn``'s synchronising operations come from: torch's sync debug mode warns at
    each; the Python stack at the warning, its innermost frames in far or torchvision."""
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        frames = [f for f in traceback.extract_stack()[:-1]
                  if ("/far/" in f.filename or "torchvision" in f.filename) and "sync_check" not in f.filename]
        where = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in frames[::-1][:3])
        sites[f"{str(message).splitlines()[0][:60]} at {where or f'{filename}:{lineno}'}"] += 1

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():  # restores showwarning afterwards
            warnings.simplefilter("always")
            warnings.showwarning = record
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sites


def probe_old_noise(n: int = 11) -> None:
    """The former erasing noise alone: one seeded CUDA generator per erased clip."""
    x = torch.zeros(n, 3, 16, 224, 224, device="cuda")

    def old() -> None:
        for i in range(n):
            g = torch.Generator(device="cuda").manual_seed(1000 + i)
            x[i, :, :, 10:100, 20:120] = torch.randn((3, 16, 90, 100), generator=g, device="cuda")

    def seed_only() -> None:
        for i in range(n):
            torch.Generator(device="cuda").manual_seed(1000 + i)

    def one_generator() -> None:
        g = torch.Generator(device="cuda")
        for i in range(n):
            g.manual_seed(1000 + i)
            x[i, :, :, 10:100, 20:120] = torch.randn((3, 16, 90, 100), generator=g, device="cuda")

    old(), torch.cuda.synchronize()
    for name, fn in (("former noise: new CUDA generator + manual_seed + randn per clip", old),
                     ("new CUDA generator + manual_seed only", seed_only),
                     ("one CUDA generator, manual_seed + randn per clip", one_generator)):
        print(f"probe, {n} clips, {name}: {counts(fn)}; sync sites: {dict(sync_sites(fn))}", flush=True)


def device_time(fn, calls: int = 10) -> None:
    """Print the device time of ``fn`` with nothing queued before it (CUDA events, median of
    ``calls``) and its kernels' summed time by name (one profiled call)."""
    torch.cuda.synchronize()
    times = cuda_event_times(fn, calls)
    print(f"device time of one call, nothing queued: median {statistics.median(times):.2f} ms "
          f"(min {min(times):.2f})", flush=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) / 1e3
    launches = sum(e.count for e in kernels)
    print(f"kernels: {launches} launches, {total:.2f} ms summed; the largest:")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]:
        print(f"  {e.self_device_time_total / 1e3:7.2f} ms {e.count:5d} x {e.key[:90]}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-probe", action="store_true", help="skip the former erasing noise's probe")
    p.add_argument("--device-time-only", action="store_true", help="only the call's device time and kernels")
    args = p.parse_args(argv)
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
    erased = sum(p.erase is not None for p in batch["params"])
    print(f"clips {len(batch['params'])}, ops {len(ops)}, geometric {sum(n in GEOMETRIC for n in ops)}, "
          f"erased {erased}", flush=True)
    for _ in range(3):
        augment(batch, "cuda")
    torch.cuda.synchronize()
    device_time(lambda: augment(batch, "cuda"))
    if args.device_time_only:
        return
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
    print(f"host time of the call behind 20 queued GEMMs: median {1000 * hosts[2]:.1f} ms", flush=True)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ a
    end.record()
    end.synchronize()
    print(f"the 20 GEMMs alone: {start.elapsed_time(end):.1f} ms of device time", flush=True)
    for key, count in counts(step).items():
        print(key, count)
    sites = sync_sites(lambda: augment(batch, "cuda"))
    print(f"synchronising operations in one call (sync debug mode): {sum(sites.values())}")
    for site, count in sites.most_common():
        print(f"  {count} x {site}")
    if not args.no_probe:
        probe_old_noise(erased)


if __name__ == "__main__":
    main()
