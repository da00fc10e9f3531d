"""``far bench``: the fine-tuning step on a CUDA GPU, per backbone x variant x mode.

One step = forward + backward + fused AdamW under bf16 autocast, as the training
engine's GPU step does; the step time is the median of ``--steps`` CUDA-event-timed
steps after ``--warmup`` steps. Reported: clips/s, step ms, peak memory (allocated,
the timed steps only), and model FLOP utilisation = 3 x 2 x forward MACs x batch /
step time / peak (790 TFLOP/s: an 8192^3 bf16 matmul on the lent H100).

Before timing, ``--check`` asserts on the GPU that the fast FAR path (grouped token
order, Triton TGI kernel) equals the plain definition (natural order with masks,
cuDNN Conv3d), in fp32 and under bf16 autocast, forward and gradients.

    far bench --sizes vit_s,vit_b --modes eager,compiled --out bench-out/bench.json

``--profile far,global`` adds every GPU kernel of three profiled steps (ViT-B) to the JSON,
``--memory far`` what is alive at the step's peak by allocation site, ``--compile-mode
reduce-overhead`` times the compiled rows under CUDA graphs. Results and their reading:
benchmarks/results/gpu_step.md, docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PEAK_TFLOPS = 790.0
BATCH = {"vit_s": 32, "vit_b": 16}
# variant name -> model config overrides (on top of the backbone)
VARIANTS = {
    "reference": dict(variant="baseline", attn_impl="explicit"),
    "global": dict(variant="baseline"),
    "hsda": dict(variant="far", tgi="none"),
    "far_conv3d": dict(variant="far", tgi_impl="conv3d"),
    "far": dict(variant="far"),
}


def forward_macs(cfg) -> float:
    """Forward multiply-adds per clip, fvcore-style (linear/conv/attention matmuls)."""
    from far.models.attention import head_sets

    n, d = cfg.num_tokens, cfg.embed_dim
    t, h, w = cfg.grid
    per_head = d // cfg.num_heads
    embed = n * d * cfg.in_chans * cfg.tubelet_size * cfg.patch_size**2
    linear = n * d * d * (4 + 2 * cfg.mlp_ratio)
    attn = 0.0
    for nh, pattern in head_sets(cfg):
        keys = {"global": n, "sparse_dense": n / 2, "temporal": t}[pattern]
        attn += 2 * n * keys * nh * per_head
    tgi = 0.0
    if cfg.tgi != "none":
        width = d // cfg.tgi_reduction
        tgi = 2 * n * d * width + n * width * (width // cfg.tgi_num_groups) * 27
    head = d * 2 * cfg.num_classes
    return embed + cfg.depth * (linear + attn + tgi) + head


FLOPS_TABLE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fvcore_gmacs.json"


def fvcore_gmacs(size: str, variant: str) -> tuple[float, str]:
    """Forward GMACs per clip as ``far complexity`` counts them (fvcore), and the source.

    fvcore is not installed on the GPU machine, so the counts are also stored in
    ``benchmarks/results/fvcore_gmacs.json`` (``far bench --write-flops`` on any machine);
    the analytic count :func:`forward_macs` is the last resort (within 0.1 % of fvcore)."""
    key = f"{size}/{variant}"
    try:
        from far.complexity import count_flops

        return count_flops(_cfg(size, variant))[0] / 1e9, "fvcore"
    except ImportError:
        pass
    if FLOPS_TABLE.exists():
        table = json.loads(FLOPS_TABLE.read_text())["gmacs"]
        if key in table:
            return float(table[key]), "fvcore (stored)"
    return forward_macs(_cfg(size, variant)) / 1e9, "analytic"


def write_flops_table(path: Path = FLOPS_TABLE) -> dict:
    """Count every benchmarked model with fvcore and store the table (CPU, minutes)."""
    from far.complexity import count_flops

    gmacs = {f"{s}/{v}": count_flops(_cfg(s, v))[0] / 1e9 for s in BATCH for v in VARIANTS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(note="fvcore forward multiply-adds per clip (16x224x224), "
                                         "far.complexity.count_flops", gmacs=gmacs), indent=1) + "\n")
    return gmacs


def _cfg(size: str, variant: str, **extra):
    from far.models import model_config

    return model_config(backbone=size, num_classes=174, **VARIANTS[variant], **extra)


# ---- correctness on the GPU -------------------------------------------------------
def _rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def check_fast_path(size: str, log) -> dict:
    """FAR fast path (grouped, Triton TGI) vs the definition (natural masks, Conv3d)."""
    import torch

    from far.models import build_model

    torch.manual_seed(0)
    dev = "cuda"
    fast = build_model(_cfg(size, "far", drop_path=0.0)).to(dev)
    ref = build_model(_cfg(size, "far", drop_path=0.0, token_order="natural", tgi_impl="conv3d")).to(dev)
    with torch.no_grad():  # non-trivial classifier so the gradients are not all tiny
        fast.head.weight.normal_(0, 0.02)
    ref.load_state_dict(fast.state_dict())  # the same weights in both, classifier included
    fast.eval(), ref.eval()  # no dropout / stochastic depth: the same function, still differentiable
    x = torch.randn(2, 3, 16, 224, 224, device=dev)
    res = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for name, ctx_dtype, tol in [("fp32", None, 1e-4), ("bf16", torch.bfloat16, 3e-2)]:
            outs, grads = [], []
            for m in (fast, ref):
                m.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=ctx_dtype or torch.float32, enabled=ctx_dtype is not None):
                    out = m(x)
                out.float().square().mean().backward()
                outs.append(out.float())
                grads.append({k: p.grad for k, p in m.named_parameters()})
            err_out = _rel(outs[0], outs[1])
            err_grad = max(_rel(grads[0][k], grads[1][k]) for k in grads[1] if grads[1][k].abs().sum() > 0)
            tgi_keys = [k for k in grads[1] if ".tgi." in k]
            err_tgi = max(_rel(grads[0][k], grads[1][k]) for k in tgi_keys)
            res[name] = dict(out_rel_err=err_out, max_grad_rel_err=err_grad, tgi_grad_rel_err=err_tgi, tol=tol)
            log(f"check {size} {name}: out {err_out:.2e}  grads max {err_grad:.2e} (tgi {err_tgi:.2e})  tol {tol:.0e}")
            assert err_out < tol and err_grad < tol * 10 and err_tgi < tol * 10, f"fast path differs ({name})"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    del fast, ref
    return res


def check_kernel(size: str, log) -> dict:
    """Triton TGI conv (the custom op) vs cuDNN F.conv3d on the (T, H, W) grid, at the
    model's shape (batch 2): forward and the gradients of input, weight and bias, in
    float32 (tf32 off) and bfloat16 inputs; errors relative to a float64 conv3d."""
    import torch
    import torch.nn.functional as F

    from far.models.kernels.tgi_conv import tgi_conv_triton
    from far.models.layout import TokenLayout
    from far.models.token_group import TokenGroupInteraction

    cfg = _cfg(size, "far")
    lay = TokenLayout(*cfg.grid)
    tgi = TokenGroupInteraction(cfg, lay).cuda()
    c, g = cfg.embed_dim // cfg.tgi_reduction, cfg.tgi_num_groups
    res = {}
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)]:
        torch.manual_seed(1)
        y = torch.randn(2, lay.num_tokens, c, device="cuda", dtype=dtype, requires_grad=True)
        w = (torch.randn(c, c // g, 3, 3, 3, device="cuda") * 0.1).to(dtype).requires_grad_()
        bias = torch.randn(c, device="cuda", dtype=dtype, requires_grad=True)
        out = tgi_conv_triton(y, tgi.nbr, w, bias, g)
        gout = torch.randn_like(out)
        grads = torch.autograd.grad(out, (y, w, bias), gout)
        y64, w64, b64 = (t.detach().double().requires_grad_() for t in (y, w, bias))
        grid = y64.index_select(1, tgi.inv_perm).reshape(2, *tgi.grid, c).permute(0, 4, 1, 2, 3)
        ref = F.conv3d(grid, w64, b64, padding=1, groups=g).permute(0, 2, 3, 4, 1).reshape(2, -1, c)
        ref = ref.index_select(1, tgi.perm)
        refs = torch.autograd.grad(ref, (y64, w64, b64), gout.double())
        errs = dict(out=_rel(out, ref), grad_input=_rel(grads[0], refs[0]),
                    grad_weight=_rel(grads[1], refs[1]), grad_bias=_rel(grads[2], refs[2]))
        name = str(dtype).split(".")[-1]
        res[name] = dict(errs, tol=tol, ok=all(e < tol for e in errs.values()))
        log(f"check triton tgi_conv {size} {name}: " + "  ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f"  tol {tol:.0e}")
        assert res[name]["ok"], f"Triton TGI conv differs from conv3d ({name}): {errs}"
    return res


# ---- TGI micro-benchmark -----------------------------------------------------------
def cuda_event_times(fn, n: int) -> list[float]:
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


def microbench_tgi(size: str, log, reps: int = 50) -> dict:
    """One TGI conv (bottleneck y -> conv -> back), forward + backward, per implementation."""
    import torch
    import torch.nn.functional as F

    from far.models.kernels.tgi_conv import tgi_conv_triton
    from far.models.layout import TokenLayout
    from far.models.token_group import TokenGroupInteraction

    cfg = _cfg(size, "far")
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


# ---- the step ----------------------------------------------------------------------
def graph_breaks(size: str, log) -> dict:
    """Graph breaks of FAR under torch.compile: ``torch._dynamo.explain`` of the whole
    model, and one Block compiled with ``fullgraph=True`` run forward and backward
    (fails loudly on any break)."""
    import torch

    from far.models import build_model

    m = build_model(_cfg(size, "far")).cuda()
    x = torch.randn(2, 3, 16, 224, 224, device="cuda")
    torch._dynamo.reset()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ex = torch._dynamo.explain(m)(x)
    res = dict(graph_count=ex.graph_count, graph_break_count=ex.graph_break_count,
               break_reasons=[str(r.reason) for r in ex.break_reasons][:5])
    torch._dynamo.reset()
    blk = m.blocks[0]
    tokens = torch.randn(2, m.cfg.num_tokens, m.cfg.embed_dim, device="cuda", requires_grad=True)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = torch.compile(blk, fullgraph=True)(tokens)
        out.float().sum().backward()
        res["block_fullgraph"] = "ok"
    except Exception as e:  # reported, not hidden: a break here is a finding
        res["block_fullgraph"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    torch._dynamo.reset()
    log(f"graph breaks FAR {size}: {res}")
    return res


def time_step(size: str, variant: str, mode: str, steps: int, warmup: int, log, checkpointing=False, profile_path=None,
              profile_top: int = 40, memory: bool = False, compile_mode: str = "default") -> dict:
    import torch
    import torch.nn.functional as F

    from far.models import build_model

    torch.manual_seed(0)
    cfg = _cfg(size, variant, grad_checkpointing=checkpointing)
    b = BATCH[size]
    model = build_model(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    x = torch.randn(b, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device="cuda")
    target = torch.randint(0, cfg.num_classes, (b,), device="cuda")
    fwd = torch.compile(model, mode=compile_mode) if mode == "compiled" else model

    def forward_loss():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return F.cross_entropy(fwd(x), target)

    def step():
        forward_loss().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    # What the forward keeps for the backward (allocated after the forward minus before),
    # to tell saved activations from backward temporaries in the peak.
    before = torch.cuda.memory_allocated()
    loss = forward_loss()
    saved_gib = (torch.cuda.memory_allocated() - before) / 2**30
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    del loss
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    gc.disable()  # no Python collection pass inside a timed step (as timeit does)
    try:
        times = cuda_event_times(step, steps)
    finally:
        gc.enable()
    peak = torch.cuda.max_memory_allocated() / 2**30
    if mode == "compiled" and compile_mode in ("reduce-overhead", "max-autotune"):
        # CUDA graphs: activations live in the graph's pool, allocated while recording in
        # the warm-up; the timed steps' peak would not show them. Not reported.
        peak = saved_gib = None
    ms = statistics.median(times)
    gmacs, flops_source = fvcore_gmacs(size, variant)
    macs = gmacs * 1e9
    row = dict(size=size, variant=variant, mode=mode, batch=b, grad_checkpointing=checkpointing,
               compile_mode=compile_mode if mode == "compiled" else None,
               step_ms=ms, step_ms_min=min(times), step_ms_max=max(times), clips_per_s=b / ms * 1e3,
               peak_mem_gib=peak, saved_for_backward_gib=saved_gib, fwd_gmacs_per_clip=gmacs, flops_source=flops_source,
               mfu=6 * macs * b / (ms * 1e-3) / (PEAK_TFLOPS * 1e12), warmup_s=warm_s)
    log(f"{size} {variant:10s} {mode:8s} ckpt={int(checkpointing)} {ms:8.2f} ms  {row['clips_per_s']:7.1f} clips/s  "
        + (f"{peak:6.2f} GiB (saved {saved_gib:5.2f})" if peak is not None else "   n/a GiB (CUDA graphs)") + f"  MFU {row['mfu'] * 100:5.1f}%  (warm-up {warm_s:.0f} s)")
    if memory:
        row["memory_at_peak"] = memory_at_peak(step, f"{size} {variant} {mode}", log)
    if profile_path:
        row["profile_top"] = profile_step(step, 3, profile_path, f"{size} {variant} {mode} batch {b}", top=profile_top)
        log(f"profile -> {profile_path}")
    del model, opt, fwd, x
    gc.collect()
    torch.cuda.empty_cache()
    torch._dynamo.reset()
    return row


def profile_step(step, n: int, path: str, title: str, top: int = 40) -> list[dict]:
    """torch.profiler over ``n`` steps: append the table to ``path`` and return the
    ``top`` GPU kernels by self device time (microseconds per step)."""
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
            cur -= live.pop(ev["addr"])["size"]
    return peak, at_peak


def _site(frames: list[dict]) -> str:
    """The innermost frame outside torch's own Python code (Inductor's generated module
    counts as outside), with its source line: where the block was allocated."""
    import linecache

    for f in frames:
        name = f.get("filename", "")
        if "/torch/" in name and "torchinductor" not in name or name.startswith("<") or "/contextlib" in name:
            continue
        line = linecache.getline(name, f.get("line", 0)).strip()
        return f"{name.rsplit('/', 1)[-1]}:{f.get('line')} {f.get('name')}: {line[:120]}"
    return "(no python frame)"


def memory_at_peak(step, title: str, log, top: int = 25) -> dict:
    """Record one step's allocations and report what is alive at its peak, summed by
    allocation site (Inductor's generated code or far's own lines)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(stacks="python", max_entries=500_000)
    try:
        step()
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    trace = snap["device_traces"][torch.cuda.current_device()]
    peak, blocks = live_at_peak(trace)
    sites: dict[str, list[int]] = {}
    files: dict[str, int] = {}
    for b in blocks:
        site = _site(b.get("frames", []))
        entry = sites.setdefault(site, [0, 0])
        entry[0] += b["size"]
        entry[1] += 1
        files[site.split(":", 1)[0]] = files.get(site.split(":", 1)[0], 0) + b["size"]
    ranked = sorted(sites.items(), key=lambda kv: -kv[1][0])
    out = dict(peak_in_step_gib=peak / 2**30, live_blocks=len(blocks),
               by_file={k: v / 2**30 for k, v in sorted(files.items(), key=lambda kv: -kv[1])},
               sites=[dict(site=k, gib=v[0] / 2**30, blocks=v[1]) for k, v in ranked[:top]])
    log(f"memory at peak, {title}: {peak / 2**30:.2f} GiB allocated within the step ({len(blocks)} blocks); "
        "by file: " + ", ".join(f"{k} {v:.2f}" for k, v in out["by_file"].items()))
    for r in out["sites"][:top]:
        log(f"   {r['gib']:6.3f} GiB {r['blocks']:4d}x  {r['site']}")
    return out


def env_info() -> dict:
    import torch

    info = dict(date=_dt.date.today().isoformat(), python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= dict(device=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    return info


def format_table(rows: list[dict]) -> str:
    base = {(r["size"], r["mode"]): r for r in rows if r["variant"] == "global" and not r["grad_checkpointing"]}
    ref = {r["size"]: r for r in rows if r["variant"] == "reference" and r["mode"] == "eager"}
    head = f"{'model':6s} {'variant':10s} {'mode':8s} {'ckpt':4s} {'step ms':>8s} {'clips/s':>8s} {'x global':>8s} {'x ref':>6s} {'peak GiB':>8s} {'mem/glob':>8s} {'MFU %':>6s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        g = base.get((r["size"], r["mode"]))
        rf = ref.get(r["size"])
        xg = f"{r['clips_per_s'] / g['clips_per_s']:.3f}" if g else "-"
        xm = f"{r['peak_mem_gib'] / g['peak_mem_gib']:.3f}" if g and g["peak_mem_gib"] and r["peak_mem_gib"] else "-"
        xr = f"{r['clips_per_s'] / rf['clips_per_s']:.2f}" if rf else "-"
        lines.append(f"{r['size']:6s} {r['variant']:10s} {r['mode']:8s} {int(r['grad_checkpointing']):4d} {r['step_ms']:8.2f} "
                     f"{r['clips_per_s']:8.1f} {xg:>8s} {xr:>6s} {r['peak_mem_gib'] or float('nan'):8.2f} {xm:>8s} {r['mfu'] * 100:6.1f}")
    return "\n".join(lines)


def sdpa_backends(spec: str):
    """Context: SDPA backends in priority order for every variant alike ('default' = torch's own)."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    if spec == "default":
        return contextlib.nullcontext()
    names = dict(cudnn=SDPBackend.CUDNN_ATTENTION, flash=SDPBackend.FLASH_ATTENTION,
                 efficient=SDPBackend.EFFICIENT_ATTENTION, math=SDPBackend.MATH)
    # math stays allowed last: the explicit reference never calls SDPA, and a shape no
    # fused kernel takes must still run rather than fail.
    order = [names[n] for n in spec.split(",")] + [SDPBackend.MATH]
    return sdpa_kernel(list(dict.fromkeys(order)), set_priority=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="far bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="vit_s,vit_b")
    ap.add_argument("--variants", default="reference,global,hsda,far_conv3d,far")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--compiled-variants", default="global,hsda,far",
                    help="variants also run compiled (the explicit reference is eager only)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--checkpointing", default="", help="variants also run with grad_checkpointing=True (eager)")
    ap.add_argument("--no-check", action="store_true", help="skip the GPU equality check")
    ap.add_argument("--microbench", action="store_true", help="time the TGI conv implementations alone")
    ap.add_argument("--explain", action="store_true", help="count torch.compile graph breaks of FAR")
    ap.add_argument("--profile", default="", help="variants to profile (torch.profiler, ViT-B, every mode), e.g. far,global")
    ap.add_argument("--profile-out", default="bench-out/profile.txt", help="profiler tables go here")
    ap.add_argument("--profile-top", type=int, default=40, help="GPU kernels kept per profiled row in the JSON")
    ap.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="torch.compile mode of the compiled rows (reduce-overhead: CUDA graphs)")
    ap.add_argument("--memory", default="", help="variants whose allocations alive at the step's peak are listed by site (ViT-B)")
    ap.add_argument("--sdpa", default="cudnn,flash", help="SDPA backends in priority order (cudnn, flash, efficient, math) or 'default'")
    ap.add_argument("--write-flops", action="store_true", help="count the models with fvcore into benchmarks/results/fvcore_gmacs.json and exit (CPU)")
    ap.add_argument("--out", default="bench-out/bench.json")
    args = ap.parse_args(argv)

    import torch

    if args.write_flops:
        print(json.dumps(write_flops_table(), indent=1))
        return 0
    if not torch.cuda.is_available():
        print("far bench: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log = lambda s: print(s, flush=True)
    info = env_info()
    log(json.dumps(info))
    sizes = [s for s in args.sizes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    modes = [m for m in args.modes.split(",") if m]
    compiled_variants = set(args.compiled_variants.split(","))
    result: dict = dict(env=info, peak_tflops=PEAK_TFLOPS, steps=args.steps, warmup=args.warmup, sdpa=args.sdpa,
                        compile_mode=args.compile_mode,
                        note="bf16 autocast, forward+backward+fused AdamW, median step, input 16x224x224",
                        checks={}, microbench={}, graph_breaks={}, rows=[])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(result, indent=1))

    for size in sizes:
        if not args.no_check:
            result["checks"][size] = dict(kernel=check_kernel(size, log), model=check_fast_path(size, log))
        if args.microbench:
            result["microbench"][size] = microbench_tgi(size, log)
        if args.explain:
            result["graph_breaks"][size] = graph_breaks(size, log)
        save()
    profiled = {v for v in args.profile.split(",") if v}
    memory_variants = {v for v in args.memory.split(",") if v}
    if profiled:
        Path(args.profile_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.profile_out).write_text("")
    with sdpa_backends(args.sdpa):
        for mode in modes:
            for size in sizes:
                for variant in variants:
                    if mode == "compiled" and variant not in compiled_variants:
                        continue
                    pp = args.profile_out if size == "vit_b" and variant in profiled else None
                    mem = size == "vit_b" and variant in memory_variants
                    result["rows"].append(time_step(size, variant, mode, args.steps, args.warmup, log, profile_path=pp,
                                                    profile_top=args.profile_top, memory=mem,
                                                    compile_mode=args.compile_mode))
                    save()
        for variant in [v for v in args.checkpointing.split(",") if v]:
            for size in sizes:
                result["rows"].append(time_step(size, variant, "eager", args.steps, args.warmup, log, checkpointing=True))
                save()
    table = format_table(result["rows"])
    result["table"] = table
    save()
    print()
    print(f"{info.get('device')}  torch {info['torch']}  triton {info['triton']}  {info['date']}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
