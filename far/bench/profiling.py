"""Where a step's GPU time goes: torch.profiler over a few steps, kernels by device time."""

from __future__ import annotations

from typing import Any, Callable


def profile_step(step: Callable[[], Any], n: int, path: str, title: str, top: int = 40) -> list[dict]:
    """torch.profiler over ``n`` calls of ``step``: append the table to ``path`` and return
    the ``top`` GPU kernels by self device time (microseconds per step), then the total."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    sort = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
    with open(path, "a") as f:
        f.write(f"# {title}, {n} steps\n{ka.table(sort_by=sort, row_limit=40, max_name_column_width=90)}\n\n")
    kernels = [e for e in ka if str(getattr(e, "device_type", "")).endswith("CUDA")]
    kernels.sort(key=lambda e: getattr(e, sort), reverse=True)
    total = sum(getattr(e, sort) for e in kernels)
    out = [dict(name=e.key[:160], us_per_step=getattr(e, sort) / n, calls_per_step=e.count / n) for e in kernels[:top]]
    out.append(dict(name="TOTAL (all kernels)", us_per_step=total / n, calls_per_step=sum(e.count for e in kernels) / n))
    return out
