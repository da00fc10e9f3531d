"""``far bench``: the fine-tuning step on a CUDA GPU, per backbone x variant x mode.

One step = forward + backward + fused AdamW under bf16 autocast, as the training
engine's GPU step does; the step time is the median of ``--steps`` CUDA-event-timed
steps after ``--warmup`` steps. Reported: clips/s, step ms, peak memory (allocated,
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


def time_row(row: Row, args: argparse.Namespace, fwd_macs: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Time one row; with its MFU and, if asked, its memory at peak and its profile."""
    from far.bench.memory import memory_at_peak
    from far.bench.mfu import mfu
    from far.bench.profiling import profile_step
    from far.bench.report import memory_lines, row_line
    from far.bench.timing import TrainStep, time_step

    b = BATCH[row.size]
    compile_mode = args.compile_mode if row.mode == "compiled" else None
    step = TrainStep(case_config(row.size, row.variant, grad_checkpointing=row.checkpointing), b, compile_mode)
    t = time_step(step, args.steps, args.warmup)
    out = dict(size=row.size, variant=row.variant, mode=row.mode, batch=b, grad_checkpointing=row.checkpointing,
               compile_mode=compile_mode, **t, clips_per_s=b / t["step_ms"] * 1e3,
               fwd_gmacs_per_clip=fwd_macs / 1e9, flops_source="far.complexity (fvcore)",
               mfu=mfu(fwd_macs, b, t["step_ms"]))
    log(row_line(out))
    title = f"{row.size} {row.variant} {row.mode}"
    if row.memory:
        out["memory_at_peak"] = memory_at_peak(step)
        for line in memory_lines(title, out["memory_at_peak"]):
            log(line)
    if row.profile:
        out["profile_top"] = profile_step(step, 3, args.profile_out, f"{title} batch {b}", top=args.profile_top)
        log(f"profile -> {args.profile_out}")
    step.close()
    return out


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
    with sdpa_backends(args.sdpa):
        for row in rows:
            result["rows"].append(time_row(row, args, macs[row.size, row.variant], log))
            save()
    result["table"] = format_table(result["rows"])
    save()
    print(f"\n{info.get('device')}  torch {info['torch']}  triton {info['triton']}  {info['date']}")
    print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
