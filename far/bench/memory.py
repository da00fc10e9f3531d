"""What is alive at a step's memory peak, by allocation site: a replay of the CUDA
caching allocator's trace (``far bench --memory``)."""

from __future__ import annotations

import linecache
from typing import Any, Callable


def live_at_peak(trace: list[dict]) -> tuple[int, list[dict]]:
    """Replay a CUDA caching-allocator trace (``torch.cuda.memory._snapshot()``'s
    ``device_traces[i]``): the peak of allocated bytes within the trace and the blocks
    alive at that moment, each with its size and allocating Python frames."""
    live: dict[int, dict] = {}
    cur = peak = 0
    at_peak: list[dict] = []
    for ev in trace:
        action = ev.get("action")
        if action == "alloc":
            live[ev["addr"]] = ev
            cur += ev["size"]
            if cur > peak:
                peak, at_peak = cur, list(live.values())
        elif action == "free_completed" and ev["addr"] in live:
            # free_requested is not yet free: the stream may still use the block
            cur -= live.pop(ev["addr"])["size"]
    return peak, at_peak


def allocation_site(frames: list[dict]) -> str:
    """The innermost frame outside torch's own Python code (Inductor's generated module
    counts as outside), with its source line: where the block was allocated."""
    for f in frames:
        name = f.get("filename", "")
        if "/torch/" in name and "torchinductor" not in name or name.startswith("<") or "/contextlib" in name:
            continue
        line = linecache.getline(name, f.get("line", 0)).strip()
        return f"{name.rsplit('/', 1)[-1]}:{f.get('line')} {f.get('name')}: {line[:120]}"
    return "(no python frame)"


def by_site(blocks: list[dict], top: int = 25) -> dict[str, Any]:
    """Blocks summed by allocation site and by file (GiB), largest first."""
    sites: dict[str, list[int]] = {}
    files: dict[str, int] = {}
    for b in blocks:
        site = allocation_site(b.get("frames", []))
        entry = sites.setdefault(site, [0, 0])
        entry[0] += b["size"]
        entry[1] += 1
        file = site.split(":", 1)[0]
        files[file] = files.get(file, 0) + b["size"]
    ranked = sorted(sites.items(), key=lambda kv: -kv[1][0])
    return dict(by_file={k: v / 2**30 for k, v in sorted(files.items(), key=lambda kv: -kv[1])},
                sites=[dict(site=k, gib=v[0] / 2**30, blocks=v[1]) for k, v in ranked[:top]])


def memory_at_peak(step: Callable[[], Any], top: int = 25) -> dict[str, Any]:
    """Record one call of ``step``'s allocations: its peak within the step (GiB), the number
    of blocks alive then and those blocks by allocation site (Inductor's generated code
    or far's own lines)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(stacks="python", max_entries=500_000)
    try:
        step()
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    peak, blocks = live_at_peak(snap["device_traces"][torch.cuda.current_device()])
    return dict(peak_in_step_gib=peak / 2**30, live_blocks=len(blocks)) | by_site(blocks, top)
