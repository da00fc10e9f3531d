"""``far bench``: the fine-tuning step on a CUDA GPU, per backbone x variant x mode.

One step = forward + backward + fused AdamW under bf16 autocast, as the training
engine's GPU step does; the step time is the median of ``--steps`` CUDA-event-timed
steps after ``--warmup`` steps. The rows of one backbone and mode are built side by side
and take turns (``--turns`` rounds of steps/turns steps each), so that the rows compared
see the same clocks and host; ``--turns 0`` times each row alone, one after the other. Reported: clips/s, step ms, peak memory (allocated,
the timed steps only), and model FLOP utilisation (far/bench/mfu.py: FLOPs from
far.complexity, 790 TFLOP/s peak).

Before timing, the repository's GPU equality tests run on this GPU (far/bench/gate.py);
``--no-check`` skips them, and the JSON says so.

    far bench --sizes vit_s,vit_b --modes eager,compiled --out bench-out/bench.json

``--profile far,global`` adds every GPU kernel of three profiled steps (ViT-B) to the JSON,
``--memory far`` what is alive at the step's peak by allocation site, ``--compile-mode
reduce-overhead`` times the compiled rows under CUDA graphs. Results and their reading:
benchmarks/results/gpu_step.md, docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from far.bench.cases import BATCH, VARIANTS, case_config

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SDPA_BACKENDS = ("cudnn", "flash", "efficient", "math")


@dataclass(frozen=True)
class Row:
    """One timed configuration."""

    size: str
    variant: str
    mode: str  # eager | compiled
    checkpointing: bool = False
    profile: bool = False
    memory: bool = False


def _names(text: str, known, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``far bench``'s options; size, variant, mode and backend lists are checked here."""
    ap = argparse.ArgumentParser(prog="far bench", description=__doc__.split("\n\n")[0])
    sizes = lambda s: _names(s, BATCH, "size")
    variants = lambda s: _names(s, VARIANTS, "variant")
    ap.add_argument("--sizes", type=sizes, default="vit_s,vit_b")
    ap.add_argument("--variants", type=variants, default="reference,global,hsda,far_conv3d,far")
    ap.add_argument("--modes", type=lambda s: _names(s, ("eager", "compiled"), "mode"), default="eager,compiled")
    ap.add_argument("--compiled-variants", type=variants, default="global,hsda,far",
                    help="variants also run compiled (the explicit reference is eager only)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--turns", type=int, default=5,
                    help="rounds in which the rows of one size and mode take turns (0: one after the other)")
    ap.add_argument("--checkpointing", type=variants, default="",
                    help="variants also run with grad_checkpointing=True (eager)")
    ap.add_argument("--no-check", action="store_true",
                    help="time without running the GPU equality tests first (the JSON records it)")
    ap.add_argument("--microbench", action="store_true", help="time the TGI conv implementations alone")
    ap.add_argument("--explain", action="store_true", help="count torch.compile graph breaks of FAR")
    ap.add_argument("--profile", type=variants, default="",
                    help="variants to profile (torch.profiler, ViT-B, every mode), e.g. far,global")
    ap.add_argument("--profile-out", default="bench-out/profile.txt", help="profiler tables go here")
    ap.add_argument("--profile-top", type=int, default=40, help="GPU kernels kept per profiled row in the JSON")
    ap.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                    help="torch.compile mode of the compiled rows (reduce-overhead: CUDA graphs)")
    ap.add_argument("--memory", type=variants, default="",
                    help="variants whose allocations alive at the step's peak are listed by site (ViT-B)")
    ap.add_argument("--sdpa", default="cudnn,flash",
                    type=lambda s: s if s == "default" else ",".join(_names(s, SDPA_BACKENDS, "SDPA backend")),
                    help="SDPA backends in priority order (cudnn, flash, efficient, math) or 'default'")
    ap.add_argument("--out", default="bench-out/bench.json")
    return ap.parse_args(argv)


def plan(args: argparse.Namespace) -> list[Row]:
    """The rows to time, in order: each mode x size x variant (compiled only for
    ``--compiled-variants``), then the ``--checkpointing`` variants eager. Profiling and
    the memory listing apply to ViT-B rows of the named variants."""
    rows = [Row(size, variant, mode, profile=size == "vit_b" and variant in args.profile,
                memory=size == "vit_b" and variant in args.memory)
            for mode in args.modes for size in args.sizes for variant in args.variants
            if mode == "eager" or variant in args.compiled_variants]
    rows += [Row(size, variant, "eager", checkpointing=True) for variant in args.checkpointing for size in args.sizes]
    return rows


def turn_groups(rows: list[Row], turns: int) -> list[list[Row]]:
    """The rows in the groups that take turns: those of one size and mode (in plan order),
    each ``--checkpointing`` row alone; every row alone when ``turns`` is 0."""
    if turns <= 0:
        return [[r] for r in rows]
    groups: dict[tuple[str, str], list[Row]] = {}
    alone = []
    for r in rows:
        if r.checkpointing:
            alone.append([r])
        else:
            groups.setdefault((r.size, r.mode), []).append(r)
    return list(groups.values()) + alone


def _timing_fields(times: list[float], batch: int, fwd_macs: float) -> dict[str, Any]:
    from far.bench.mfu import mfu
    from far.bench.timing import step_stats

    stats = step_stats(times)
    ms = stats["step_ms"]
    return stats | dict(clips_per_s=batch / ms * 1e3, mfu=mfu(fwd_macs, batch, ms))


def time_group(group: list[Row], args: argparse.Namespace, macs: dict, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Time the rows of one group: each is built, warmed up and timed alone (its peak memory
    counted apart from the rows built before it), analysed if asked (memory at peak,
    profile); then, for two rows or more, all take ``args.turns`` turns and the step times
    are those of the turns (the ones timed alone stay as ``step_ms_alone``)."""
    import torch

    from far.bench.memory import memory_at_peak
    from far.bench.profiling import profile_step
    from far.bench.report import memory_lines, row_line
    from far.bench.timing import TrainStep, time_in_turns, time_step

    steps, outs = [], []
    for row in group:
        b = BATCH[row.size]
        compile_mode = args.compile_mode if row.mode == "compiled" else None
        base = torch.cuda.memory_allocated()  # the rows built before this one
        step = TrainStep(case_config(row.size, row.variant, grad_checkpointing=row.checkpointing), b, compile_mode)
        t = time_step(step, args.steps, args.warmup, base_bytes=base)
        times = t.pop("times_ms")
        out = dict(size=row.size, variant=row.variant, mode=row.mode, batch=b, grad_checkpointing=row.checkpointing,
                   compile_mode=compile_mode, fwd_gmacs_per_clip=macs[row.size, row.variant] / 1e9,
                   flops_source="far.complexity (fvcore)", timing="alone")
        out |= t | _timing_fields(times, b, macs[row.size, row.variant])  # the step statistics of step_stats
        title = f"{row.size} {row.variant} {row.mode}"
        if row.memory:
            out["memory_at_peak"] = memory_at_peak(step)
            for line in memory_lines(title, out["memory_at_peak"]):
                log(line)
        if row.profile:
            out["profile_top"] = profile_step(step, 3, args.profile_out, f"{title} batch {b}", top=args.profile_top)
            log(f"profile -> {args.profile_out}")
        if len(group) == 1:
            log(row_line(out))
        steps.append(step)
        outs.append(out)
    if len(group) > 1:
        per_turn = max(1, args.steps // args.turns)
        gc.disable()  # as in time_step: no Python collection pass inside a timed step
        try:
            times = time_in_turns(dict(enumerate(steps)), args.turns, per_turn)
        finally:
            gc.enable()
        for i, (row, out) in enumerate(zip(group, outs)):
            out["step_ms_alone"] = out["step_ms"]
            out |= _timing_fields(times[i], out["batch"], macs[row.size, row.variant])
            out["timing"] = f"turns ({args.turns} x {per_turn} steps)"
            log(row_line(out))
    for step in steps:
        step.close()
    return outs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("far bench: needs a CUDA GPU", file=sys.stderr)
        return 2
    from far.bench.gate import GateError, run_gpu_tests
    from far.bench.mfu import PEAK_TFLOPS, forward_macs
    from far.bench.report import env_info, format_table
    from far.bench.timing import sdpa_backends

    log = lambda s: print(s, flush=True)
    rows = plan(args)
    # FLOPs first (CPU, once per model config): a missing fvcore stops the run before any timing.
    macs = {(r.size, r.variant): forward_macs(case_config(r.size, r.variant)) for r in rows}
    info = env_info()
    log(json.dumps(info))
    result: dict[str, Any] = dict(env=info, peak_tflops=PEAK_TFLOPS, steps=args.steps, warmup=args.warmup, sdpa=args.sdpa,
                                  compile_mode=args.compile_mode,
                                  note="bf16 autocast, forward+backward+fused AdamW, median step, input 16x224x224",
                                  gpu_tests="not run (--no-check)", microbench={}, graph_breaks={}, rows=[])
    if not args.no_check:
        try:
            result["gpu_tests"] = run_gpu_tests()
        except GateError as e:
            print(e, file=sys.stderr)
            return 1
        log(f"GPU equality tests: {result['gpu_tests']['summary']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(result, indent=1))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    for size in args.sizes:
        if args.microbench:
            from far.bench.tgi_kernels import microbench_tgi

            result["microbench"][size] = microbench_tgi(size, log)
        if args.explain:
            from far.bench.graph_breaks import graph_breaks

            result["graph_breaks"][size] = graph_breaks(case_config(size, "far"))
            log(f"graph breaks FAR {size}: {result['graph_breaks'][size]}")
        save()
    if any(r.profile for r in rows):
        Path(args.profile_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.profile_out).write_text("")
    result["turns"] = args.turns
    with sdpa_backends(args.sdpa):
        for group in turn_groups(rows, args.turns):
            result["rows"] += time_group(group, args, macs, log)
            save()
    result["table"] = format_table(result["rows"])
    save()
    print(f"\n{info.get('device')}  torch {info['torch']}  triton {info['triton']}  {info['date']}")
    print("step times: " + (f"the rows of one size and mode taking turns ({args.turns} rounds)" if args.turns > 0
                            else "each row alone, one after the other"))
    print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
