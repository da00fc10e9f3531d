"""Kernel-level timings of the TGI convolution and of the attention backends (CUDA).

    python -m far.bench.tgi_kernels [--sizes vit_b,vit_s] [--out kernels.json]
        [--step-ab eager,compiled --rounds 5]

Per backbone, at the benchmark's batch: the Triton kernels alone (forward, input
gradient, weight gradient; median of ``triton.testing.do_bench``), the chosen autotune
configurations, the fwd+bwd of one conv through autograd next to cuDNN's Conv3d, and
SDPA fwd+bwd for the global and the head-split sparse-dense shapes with cuDNN and with
flash; with ``--step-ab``, the whole step of global attention and of FAR with each conv
kernel set, timed in turns (:func:`step_ab`). Numbers go to stdout and to ``--out``.
``far bench --microbench`` times one TGI conv per implementation, forward and forward +
backward (:func:`microbench_tgi`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys


def _bench(fn, reps=50):
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=reps, return_mode="median")) * 1e3  # us


def conv_kernels(size: str, log, old=None) -> dict:
    import torch
    import torch.nn.functional as F

    from far.bench.cases import BATCH, case_config
    from far.models.layout import TokenLayout

    K = importlib.import_module("far.models.kernels.tgi_conv")
    cfg = case_config(size, "far")
    lay = TokenLayout(*cfg.grid)
    b = BATCH[size]
    c, g = cfg.embed_dim // cfg.tgi_reduction, cfg.tgi_num_groups
    cg = c // g
    nbr = K.neighbour_table(lay.perm, lay.inv_perm, cfg.grid).cuda()
    torch.manual_seed(0)
    y = torch.randn(b, lay.num_tokens, c, device="cuda", dtype=torch.bfloat16)
    dout = torch.randn_like(y)
    w = torch.randn(c, cg, 3, 3, 3, device="cuda") * 0.1
    bias = torch.randn(c, device="cuda")
    run = K.temporal_run(nbr.cpu(), cfg.grid[0])
    res = {"run": run}
    # the general kernels (any table), the grouped order's run kernels (what the model uses)
    kernels = {"general": (K, {}), "run": (K, {"run": run})} | ({"v1": (old, {})} if old is not None else {})
    for name, (M, kw) in kernels.items():
        res[f"{name}_fwd_us"] = _bench(lambda: M._launch_conv(y, nbr, w, bias, transposed=False, **kw))
        res[f"{name}_dgrad_us"] = _bench(lambda: M._launch_conv(dout, nbr, w, None, transposed=True, **kw))
        res[f"{name}_wgrad_us"] = _bench(lambda: M._launch_wgrad(y, dout, nbr, cg, **kw))
        log(f"{size} {name:7s} kernels (incl. packing / split sum): fwd {res[f'{name}_fwd_us']:.1f} us  "
            f"dgrad {res[f'{name}_dgrad_us']:.1f} us  wgrad {res[f'{name}_wgrad_us']:.1f} us")
    res["best_fwd_config"] = str(K._conv_kernel.best_config)
    res["best_wgrad_config"] = str(K._wgrad_kernel.best_config)
    res["best_run_fwd_config"] = str(K._conv_run_kernel.best_config)
    res["best_run_wgrad_config"] = str(K._wgrad_run_kernel.best_config)
    log(f"{size} autotuned: fwd {res['best_fwd_config']}  wgrad {res['best_wgrad_config']}  "
        f"run fwd {res['best_run_fwd_config']}  run wgrad {res['best_run_wgrad_config']}")
    # the kernel alone, without the weight packing: its bytes floor
    wk = K.pack_weight(w, g, y.dtype)
    out = torch.empty_like(y)
    bc = K._conv_kernel.best_config.kwargs
    grid = (triton_cdiv(g, bc["GB"]), triton_cdiv(lay.num_tokens, bc["BLOCK_N"]), b)
    res["general_fwd_kernel_only_us"] = _bench(lambda: K._conv_kernel[grid](
        y, wk, bias, nbr, out, lay.num_tokens, c, g, HAS_BIAS=True, FP32=False, CG=cg, TRANS=False))
    bc = K._conv_run_kernel.best_config.kwargs
    grid = (triton_cdiv(g, bc["GB"]), triton_cdiv(lay.num_tokens, bc["BLOCK_N"]), b)
    res["run_fwd_kernel_only_us"] = _bench(lambda: K._conv_run_kernel[grid](
        y, wk, bias, nbr, out, lay.num_tokens, c, g, HAS_BIAS=True, FP32=False, CG=cg, TRANS=False, RUN=run))
    mb = y.numel() * 2 / 1e6
    log(f"{size} fwd kernel alone: general {res['general_fwd_kernel_only_us']:.1f} us, run "
        f"{res['run_fwd_kernel_only_us']:.1f} us; y is {mb:.1f} MB (read + write at 3 TB/s: {2 * mb / 3e6 * 1e6:.1f} us)")
    # cuDNN grouped Conv3d forward on the grid, for scale
    grid_y = y.index_select(1, torch.as_tensor(lay.inv_perm, device="cuda")).reshape(b, *cfg.grid, c).permute(0, 4, 1, 2, 3)
    grid_c = grid_y.contiguous()
    wb, bb = w.to(y.dtype), bias.to(y.dtype)
    res["cudnn_conv3d_fwd_only_us"] = _bench(lambda: F.conv3d(grid_c, wb, bb, padding=1, groups=g))
    log(f"{size} cuDNN Conv3d forward alone (channels-first grid, no permutes) {res['cudnn_conv3d_fwd_only_us']:.1f} us")
    return res


def triton_cdiv(a, b):
    return -(-a // b)


def attention(size: str, log) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from far.bench.cases import BATCH, case_config

    cfg = case_config(size, "far")
    b, n, h, d = BATCH[size], cfg.num_tokens, cfg.num_heads, cfg.embed_dim // cfg.num_heads
    shapes = {"global": (b, h, n, d), "hsda_global_half": (b, h // 2, n, d), "hsda_sparse_half": (2 * b, h // 2, n // 2, d)}
    res = {}
    for backend in ("cudnn", "flash"):
        be = dict(cudnn=SDPBackend.CUDNN_ATTENTION, flash=SDPBackend.FLASH_ATTENTION)[backend]
        for name, shp in shapes.items():
            q, k, v = (torch.randn(shp, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            go = torch.randn(shp, device="cuda", dtype=torch.bfloat16)

            def run():
                with sdpa_kernel([be]):
                    o = F.scaled_dot_product_attention(q, k, v)
                torch.autograd.grad(o, (q, k, v), go)

            try:
                res[f"{backend}_{name}_fwd_bwd_us"] = _bench(run)
            except Exception as e:  # a backend may refuse a shape
                res[f"{backend}_{name}_fwd_bwd_us"] = f"failed: {type(e).__name__}"
        hs = [res[f"{backend}_{k}_fwd_bwd_us"] for k in ("hsda_global_half", "hsda_sparse_half")]
        glob = res[f"{backend}_global_fwd_bwd_us"]
        if all(isinstance(x, float) for x in hs + [glob]):
            res[f"{backend}_hsda_sum_us"] = sum(hs)
            log(f"{size} SDPA {backend:5s} fwd+bwd per layer: global {glob:.0f} us  HSDA {sum(hs):.0f} us "
                f"(global half {hs[0]:.0f} + sparse half {hs[1]:.0f})")
        else:
            log(f"{size} SDPA {backend}: {res}")
    return res


def microbench_tgi(size: str, log, reps: int = 50) -> dict:
    """One TGI conv (bottleneck y -> conv -> back) at the benchmark's batch, forward and
    forward + backward, per implementation: cuDNN Conv3d on the grid (channels first and
    channels last) and the Triton neighbour-table kernels; median ms of CUDA-event timings."""
    import torch
    import torch.nn.functional as F

    from far.bench.cases import BATCH, case_config
    from far.bench.timing import cuda_event_times
    from far.models.kernels.tgi_conv import tgi_conv_triton
    from far.models.layout import TokenLayout
    from far.models.token_group import TokenGroupInteraction

    cfg = case_config(size, "far")
    lay = TokenLayout(*cfg.grid)
    tgi = TokenGroupInteraction(cfg, lay).cuda()
    b = BATCH[size]
    c, g = cfg.embed_dim // cfg.tgi_reduction, cfg.tgi_num_groups
    y = torch.randn(b, lay.num_tokens, c, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w, bias = tgi.conv.weight, tgi.conv.bias
    inv, perm, grid = tgi.inv_perm, tgi.perm, tgi.grid

    def conv3d(y, cl=False):
        z = y.index_select(1, inv).reshape(b, *grid, c).permute(0, 4, 1, 2, 3)
        if cl:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        z = F.conv3d(z, w.to(y.dtype), bias.to(y.dtype), padding=1, groups=g)
        return z.permute(0, 2, 3, 4, 1).reshape(b, -1, c).index_select(1, perm)

    impls = {
        "conv3d_cudnn": lambda y: conv3d(y),
        "conv3d_cudnn_channels_last": lambda y: conv3d(y, True),
        "triton_neighbour_table": lambda y: tgi_conv_triton(y, tgi.nbr, w, bias, g),
        "triton_runs": lambda y: tgi_conv_triton(y, tgi.nbr, w, bias, g, tgi.run),
    }
    gout = torch.randn_like(y)
    res = {}
    for name, fn in impls.items():
        for phase in ("fwd", "fwd_bwd"):
            def run():
                out = fn(y)
                if phase == "fwd_bwd":
                    torch.autograd.grad(out, (y, w, bias), gout)
            for _ in range(5):
                run()
            torch.cuda.synchronize()
            res[f"{name}_{phase}_ms"] = statistics.median(cuda_event_times(run, reps))
        log(f"tgi conv {size} b={b}: {name:28s} fwd {res[f'{name}_fwd_ms']:.3f} ms  fwd+bwd {res[f'{name}_fwd_bwd_ms']:.3f} ms")
    return res


def step_ab(size: str, modes: list[str], rounds: int, log, steps: int = 10) -> dict:
    """The whole fine-tuning step (far.bench.timing.TrainStep: forward, backward, AdamW,
    bf16) of global attention, FAR with the general conv kernels and FAR with the run
    kernels (as shipped), built side by side in one process and timed in turns: ``rounds``
    x ``steps`` CUDA-event-timed steps each, after warm-up. Taking turns puts the three
    under the same clocks and host, which a one-after-the-other bench does not."""
    import torch

    from far.bench.cases import BATCH, case_config
    from far.bench.timing import TrainStep, time_in_turns

    res: dict = {}
    for mode in modes:
        compile_mode = None if mode == "eager" else ("default" if mode == "compiled" else mode)
        cases = {}
        for name, variant, run in (("global", "global", None), ("far_general", "far", 0), ("far_run", "far", None)):
            step = TrainStep(case_config(size, variant), BATCH[size], compile_mode)
            # The general kernels, what FAR ran before the run kernels; set before the first
            # call, where torch.compile traces the model.
            if run == 0:
                for blk in step.model.blocks:
                    blk.tgi.run = 0
            for _ in range(4):
                step()
            cases[name] = step
        torch.cuda.synchronize()
        times = time_in_turns(cases, rounds, steps)
        med = {name: statistics.median(t) for name, t in times.items()}
        res[mode] = {name: {"median_ms": med[name], "min_ms": min(t)} for name, t in times.items()}
        log(f"{size} {mode:15s} step ms (median of {rounds}x{steps}, min): "
            + "  ".join(f"{n} {med[n]:.2f} ({min(times[n]):.2f})" for n in cases)
            + f"  FAR run / global {med['global'] / med['far_run']:.3f}x, general / global "
              f"{med['global'] / med['far_general']:.3f}x")
        for step in cases.values():
            step.close()
    return res


def copy_bandwidth(log) -> dict:
    import torch

    x = torch.empty(2**29, device="cuda", dtype=torch.bfloat16).normal_()  # 1 GiB
    y = torch.empty_like(x)
    us = _bench(lambda: y.copy_(x))
    gbs = 2 * x.numel() * 2 / (us * 1e-6) / 1e9
    log(f"device copy: {gbs:.0f} GB/s (read + write)")
    return dict(copy_gb_s=gbs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m far.bench.tgi_kernels")
    ap.add_argument("--sizes", default="vit_b,vit_s")
    ap.add_argument("--old", default="", help="module with an older kernel version to time alongside")
    ap.add_argument("--no-attention", action="store_true")
    ap.add_argument("--no-kernels", action="store_true", help="skip the conv kernels' timings")
    ap.add_argument("--step-ab", default="", help="also the whole step of global, FAR general and FAR run "
                    "kernels taking turns, in these modes (eager, compiled, reduce-overhead)")
    ap.add_argument("--rounds", type=int, default=5, help="turns of --step-ab")
    ap.add_argument("--out", default="bench-out/kernels.json")
    args = ap.parse_args(argv)
    import torch

    from pathlib import Path

    from far.bench.report import env_info

    log = lambda s: print(s, flush=True)
    result = dict(env=env_info())
    log(json.dumps(result["env"]))
    old = importlib.import_module(args.old) if args.old else None
    result["copy"] = copy_bandwidth(log)
    for size in args.sizes.split(","):
        result[size] = {} if args.no_kernels else dict(conv=conv_kernels(size, log, old))
        if args.step_ab:
            result[size]["step_ab"] = step_ab(size, args.step_ab.split(","), args.rounds, log)
        if not args.no_attention:
            result[size]["attention"] = attention(size, log)
        torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
