"""The fine-tuning step as the training engine runs it on a GPU, and its timer.

One step = forward + backward + fused AdamW under bf16 autocast. The step time is the
median of CUDA-event-timed steps after warm-up steps; peak memory is the allocator's peak
over the timed steps only.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Any, Callable, ContextManager, Mapping


def cuda_event_times(fn: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of ``n`` calls of ``fn``, each timed alone with CUDA events."""
    import torch

    times = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def time_in_turns(steps: Mapping[str, Callable[[], Any]], rounds: int, n: int,
                  timer: Callable[[Callable[[], Any], int], list[float]] = cuda_event_times) -> dict[str, list[float]]:
    """Milliseconds of ``rounds`` x ``n`` timed calls of each step, the steps taking turns
    (n calls of the first, n of the second, ..., then again). Steps compared this way see
    the same clocks and the same host; timed one after the other on a lent machine, rows
    that issue many launches per millisecond of GPU work scatter with the host's stalls
    (docs/performance.md, issue 19)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name] += timer(step, n)
    return times


def sdpa_backends(spec: str) -> ContextManager:
    """SDPA backends in priority order for every variant alike ('default' = torch's own),
    e.g. ``"cudnn,flash"``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if spec == "default":
        return contextlib.nullcontext()
    names = dict(cudnn=SDPBackend.CUDNN_ATTENTION, flash=SDPBackend.FLASH_ATTENTION,
                 efficient=SDPBackend.EFFICIENT_ATTENTION, math=SDPBackend.MATH)
    # math stays allowed last: the explicit reference never calls SDPA, and a shape no
    # fused kernel takes must still run rather than fail.
    order = [names[n] for n in spec.split(",")] + [SDPBackend.MATH]
    return sdpa_kernel(list(dict.fromkeys(order)), set_priority=True)


class TrainStep:
    """One model's fine-tuning step on random clips, callable: forward, backward, AdamW.

    ``compile_mode`` None runs eager; otherwise the model is wrapped in
    ``torch.compile(mode=compile_mode)``."""

    def __init__(self, cfg, batch: int, compile_mode: str | None = None):
        import torch

        from far.models import build_model

        torch.manual_seed(0)
        self.batch, self.compile_mode = batch, compile_mode
        self.model = build_model(cfg).cuda().train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
        self.x = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device="cuda")
        self.target = torch.randint(0, cfg.num_classes, (batch,), device="cuda")
        self.fwd = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model

    def forward_loss(self):
        """The loss of one forward (bf16 autocast)."""
        import torch
        import torch.nn.functional as F

        with torch.autocast("cuda", dtype=torch.bfloat16):
            return F.cross_entropy(self.fwd(self.x), self.target)

    def __call__(self) -> None:
        self.forward_loss().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Free the model, the optimizer state and the compiled graphs."""
        import torch

        del self.model, self.opt, self.fwd, self.x
        gc.collect()
        torch.cuda.empty_cache()
        torch._dynamo.reset()


def step_stats(times: list[float]) -> dict[str, float]:
    """step_ms (median), step_ms_min and step_ms_max of timed steps (milliseconds)."""
    return dict(step_ms=statistics.median(times), step_ms_min=min(times), step_ms_max=max(times))


def time_step(step: TrainStep, steps: int, warmup: int, base_bytes: int = 0) -> dict[str, Any]:
    """Warm ``step`` up, then time ``steps`` calls: times_ms, step_ms (median, min, max),
    warmup_s, peak_mem_gib over the timed steps and saved_for_backward_gib (None under CUDA
    graphs). ``base_bytes``: memory held by other steps built before this one (allocated
    before it was built), left out of its peak."""
    import torch

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    # What the forward keeps for the backward (allocated after the forward minus before),
    # to tell saved activations from backward temporaries in the peak.
    before = torch.cuda.memory_allocated()
    loss = step.forward_loss()
    saved_gib = (torch.cuda.memory_allocated() - before) / 2**30
    loss.backward()
    step.opt.step()
    step.opt.zero_grad(set_to_none=True)
    del loss
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    gc.disable()  # no Python collection pass inside a timed step (as timeit does)
    try:
        times = cuda_event_times(step, steps)
    finally:
        gc.enable()
    peak = (torch.cuda.max_memory_allocated() - base_bytes) / 2**30
    if step.compile_mode in ("reduce-overhead", "max-autotune"):
        # CUDA graphs: activations live in the graph's pool, allocated while recording in
        # the warm-up; the timed steps' peak would not show them. Not reported.
        peak = saved_gib = None
    return dict(times_ms=times, **step_stats(times),
                peak_mem_gib=peak, saved_for_backward_gib=saved_gib, warmup_s=warm_s)
