"""What ``far bench`` prints and records: the environment, one line per timed row, the
memory-at-peak listing and the final table (ratios to global and to the reference)."""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any


def env_info() -> dict[str, Any]:
    """Date, Python, torch, CUDA, cuDNN, Triton and the GPU's name, SMs and memory."""
    import torch

    info = dict(date=_dt.date.today().isoformat(), python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= dict(device=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    return info


def row_line(r: dict[str, Any]) -> str:
    """One timed row as the log line printed when it is done."""
    mem = (f"{r['peak_mem_gib']:6.2f} GiB (saved {r['saved_for_backward_gib']:5.2f})" if r["peak_mem_gib"] is not None
           else "   n/a GiB (CUDA graphs)")
    return (f"{r['size']} {r['variant']:10s} {r['mode']:8s} ckpt={int(r['grad_checkpointing'])} {r['step_ms']:8.2f} ms  "
            f"{r['clips_per_s']:7.1f} clips/s  {mem}  MFU {r['mfu'] * 100:5.1f}%  (warm-up {r['warmup_s']:.0f} s)")


def memory_lines(title: str, mem: dict[str, Any]) -> list[str]:
    """The memory-at-peak record (:func:`far.bench.memory.memory_at_peak`) as log lines."""
    head = (f"memory at peak, {title}: {mem['peak_in_step_gib']:.2f} GiB allocated within the step "
            f"({mem['live_blocks']} blocks); by file: " + ", ".join(f"{k} {v:.2f}" for k, v in mem["by_file"].items()))
    return [head] + [f"   {s['gib']:6.3f} GiB {s['blocks']:4d}x  {s['site']}" for s in mem["sites"]]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table: step time, clips/s, × global (same size and mode),
    × the explicit reference (eager, same size), peak memory and its ratio to global, MFU."""
    base = {(r["size"], r["mode"]): r for r in rows if r["variant"] == "global" and not r["grad_checkpointing"]}
    ref = {r["size"]: r for r in rows if r["variant"] == "reference" and r["mode"] == "eager"}
    head = (f"{'model':6s} {'variant':10s} {'mode':8s} {'ckpt':4s} {'step ms':>8s} {'clips/s':>8s} {'x global':>8s} "
            f"{'x ref':>6s} {'peak GiB':>8s} {'mem/glob':>8s} {'MFU %':>6s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        g = base.get((r["size"], r["mode"]))
        rf = ref.get(r["size"])
        xg = f"{r['clips_per_s'] / g['clips_per_s']:.3f}" if g else "-"
        xm = f"{r['peak_mem_gib'] / g['peak_mem_gib']:.3f}" if g and g["peak_mem_gib"] and r["peak_mem_gib"] else "-"
        xr = f"{r['clips_per_s'] / rf['clips_per_s']:.2f}" if rf else "-"
        peak = r["peak_mem_gib"] if r["peak_mem_gib"] is not None else float("nan")
        lines.append(f"{r['size']:6s} {r['variant']:10s} {r['mode']:8s} {int(r['grad_checkpointing']):4d} {r['step_ms']:8.2f} "
                     f"{r['clips_per_s']:8.1f} {xg:>8s} {xr:>6s} {peak:8.2f} {xm:>8s} {r['mfu'] * 100:6.1f}")
    return "\n".join(lines)
