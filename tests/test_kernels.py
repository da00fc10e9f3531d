"""The TGI's neighbour-table convolution equals the Conv3d definition (CPU), and the
Triton kernels equal it on the GPU (``-m gpu``, also run by ``far bench`` before timing)."""

import pytest
import torch
import torch.nn.functional as F

from far.models import build_model
from far.models.kernels.tgi_conv import (HAVE_TRITON, neighbour_table, temporal_run, tgi_conv, tgi_conv_gather,
                                        tgi_conv_triton)
from far.models.layout import TokenLayout
from reference_defs import SMALL, conv3d_definition


@pytest.mark.parametrize("grid", [(4, 4, 4), (2, 3, 5), (3, 3, 3)])
def test_neighbour_table(grid):
    lay = TokenLayout(*grid)
    nbr = neighbour_table(lay.perm, lay.inv_perm, grid)
    assert nbr.shape == (27, lay.num_tokens) and nbr.dtype == torch.int32
    assert torch.equal(nbr[13], torch.arange(lay.num_tokens, dtype=torch.int32))  # centre tap
    # mirrored taps are inverse maps: nbr[26-k][nbr[k][n]] == n where both are inside
    for k in range(27):
        ok = nbr[k] >= 0
        back = nbr[26 - k][nbr[k][ok].long()]
        assert torch.equal(back, torch.arange(lay.num_tokens, dtype=torch.int32)[ok])
    # number of in-grid neighbours of a corner token is 8
    corner = lay.inv_perm[0]
    assert int((nbr[:, corner] >= 0).sum()) == 8


@pytest.mark.parametrize("grid", [(8, 14, 14), (8, 3, 5), (4, 4, 4), (2, 3, 5), (3, 3, 3)])
def test_temporal_run(grid):
    """The run kernels' premise, checked on the table: in grouped order tap (dt, s) reads
    the rows of tap (0, s) moved by dt inside runs of T tokens (T dividing 32); never in
    natural order."""
    lay = TokenLayout(*grid)
    t, n = grid[0], lay.num_tokens
    nbr = neighbour_table(lay.perm, lay.inv_perm, grid)
    assert temporal_run(nbr, t) == (t if 32 % t == 0 else 0)
    if temporal_run(nbr, t):  # spelled out for one tap pair: (dt=+1, dh=-1, dw=+1) vs (0, -1, +1)
        pos = torch.arange(n)
        moved = nbr[9 + 2][(pos + 1).clamp(max=n - 1)]
        assert torch.equal(nbr[18 + 2], torch.where(pos % t < t - 1, moved, -1))
    ident = torch.arange(n)
    assert temporal_run(neighbour_table(ident, ident, grid), t) == 0
    broken = nbr.clone()
    broken[0, t] = -1 if broken[0, t] >= 0 else 0
    assert temporal_run(broken, t) == 0


@pytest.mark.parametrize("groups,grid", [(6, (4, 4, 4)), (1, (4, 4, 4)), (2, (2, 3, 5))])
def test_gather_conv_equals_conv3d_forward_and_backward(groups, grid):
    torch.manual_seed(0)
    lay = TokenLayout(*grid)
    c = 24
    y = torch.randn(2, lay.num_tokens, c, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c, c // groups, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True)
    nbr = neighbour_table(lay.perm, lay.inv_perm, grid)
    got = tgi_conv_gather(y, nbr, w, b, groups)
    ref = conv3d_definition(y, lay, w, b, groups)
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(got, (y, w, b), g)
    grads_ref = torch.autograd.grad(ref, (y, w, b), g)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r)


def test_natural_order_table_equals_conv3d():
    lay = TokenLayout(3, 4, 4)
    ident = torch.arange(lay.num_tokens)
    nbr = neighbour_table(ident, ident, (3, 4, 4))
    y = torch.randn(1, lay.num_tokens, 16)
    w, b = torch.randn(16, 8, 3, 3, 3), torch.randn(16)
    ref = F.conv3d(y.transpose(1, 2).reshape(1, 16, 3, 4, 4), w, b, padding=1, groups=2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tgi_conv_gather(y, nbr, w, b, 2), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["gather", "triton", "auto"])
def test_model_tgi_impls_equal_conv3d(impl):
    """Whole FAR model: every TGI implementation computes the conv3d model's function
    (on CPU "triton" and "auto" take the PyTorch fallback), gradients included."""
    torch.manual_seed(0)
    ref = build_model(**SMALL, variant="far", tgi_impl="conv3d")
    fast = build_model(**SMALL, variant="far", tgi_impl=impl)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 64, 64)
    out, out_ref = fast(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_grad_checkpointing_same_gradients():
    torch.manual_seed(0)
    a = build_model(**SMALL, variant="far", tgi_impl="gather").train()
    b = build_model(**SMALL, variant="far", tgi_impl="gather", grad_checkpointing=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 8, 64, 64)
    a(x).sum().backward()
    b(x).sum().backward()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_TRITON), reason="needs CUDA and Triton")
@pytest.mark.parametrize("run", [False, True], ids=["general", "run"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c,groups", [(96, 6), (192, 12)], ids=["vit_s", "vit_b"])
def test_triton_conv_equals_definition(dtype, c, groups, run, record_property):
    """The Triton conv (forward; input, weight and bias gradients) against a float64 Conv3d
    at the benchmarked models' shapes (16x224x224 clips: an 8x14x14 grid, D/4 channels in
    as many groups as heads), float32 and bfloat16 inputs, the general kernels and the
    grouped order's run kernels."""
    torch.manual_seed(0)
    lay = TokenLayout(8, 14, 14)
    dev = "cuda"
    y = torch.randn(3, lay.num_tokens, c, device=dev, dtype=dtype, requires_grad=True)
    w = (torch.randn(c, c // groups, 3, 3, 3, device=dev) * 0.1).requires_grad_()
    b = torch.randn(c, device=dev, requires_grad=True)
    nbr = neighbour_table(lay.perm, lay.inv_perm, (8, 14, 14)).to(dev)
    got = tgi_conv_triton(y, nbr, w, b, groups, temporal_run(nbr.cpu(), 8) if run else 0)
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (y, w, b), g)
    y64, w64, b64 = (t.detach().double().requires_grad_() for t in (y, w, b))
    ref = conv3d_definition(y64, lay, w64, b64, groups)
    grads_ref = torch.autograd.grad(ref, (y64, w64, b64), g.double())
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    rel = lambda a, r: float((a.detach().double() - r.detach()).norm() / r.detach().norm())
    errs = [rel(got, ref)] + [rel(a, r) for a, r in zip(grads, grads_ref)]
    record_property("rel_errs_out_dy_dw_db", errs)  # for the record of a GPU run (--junitxml)
    assert max(errs) < tol, errs


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_TRITON), reason="needs CUDA and Triton")
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_down_conv_equals_composition_and_keeps_no_bottleneck(compiled):
    """conv(down(x)) as one op (bottleneck recomputed in the backward) equals
    linear + conv under bf16 autocast, eager and compiled; the compiled op keeps x, not
    the (B, N, D/4) bottleneck."""
    import torch.nn.functional as F

    from far.models.kernels.tgi_conv import tgi_down_conv_triton

    torch.manual_seed(0)
    lay, dev, d, c, groups = TokenLayout(8, 14, 14), "cuda", 384, 96, 6
    x = torch.randn(2, lay.num_tokens, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    wd = (torch.randn(c, d, device=dev) * 0.05).requires_grad_()
    bd = torch.randn(c, device=dev, requires_grad=True)
    w = (torch.randn(c, c // groups, 3, 3, 3, device=dev) * 0.1).requires_grad_()
    b = torch.randn(c, device=dev, requires_grad=True)
    nbr = neighbour_table(lay.perm, lay.inv_perm, (8, 14, 14)).to(dev)
    fused = lambda *a: tgi_down_conv_triton(*a[:3], nbr, *a[3:], groups, 8)  # the run kernels, as in the model
    if compiled:
        torch._dynamo.reset()
        fused = torch.compile(fused, fullgraph=True)
    params = (x, wd, bd, w, b)
    saved: list[tuple[int, ...]] = []
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fused(*params)  # compile outside the hooks
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
            got = fused(*params)
        ref = tgi_conv(F.linear(x, wd, bd), nbr, w, b, groups)
    g = torch.randn_like(got)
    rel = lambda a, r: float((a.double() - r.double()).norm() / r.double().norm())
    assert rel(got, ref) < 1e-2
    for a, r in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g)):
        assert a.dtype == r.dtype and rel(a, r) < 2e-2
    assert (2, lay.num_tokens, c) not in saved and (2 * lay.num_tokens, c) not in saved, saved
    torch._dynamo.reset()


_INTERPRETER_CHECK = r'''
import importlib, sys
import torch, triton
K = importlib.import_module("far.models.kernels.tgi_conv")
from far.models.layout import TokenLayout

torch.manual_seed(0)
for grid, G, dtype in [((8, 4, 4), 2, torch.float32), ((8, 3, 5), 3, torch.float32), ((4, 4, 4), 3, torch.float16)]:
    lay, cg, b = TokenLayout(*grid), 16, 2
    n, c = lay.num_tokens, G * 16
    nbr = K.neighbour_table(lay.perm, lay.inv_perm, grid)
    run = K.temporal_run(nbr, grid[0])
    assert run == grid[0]
    y, dout = torch.randn(b, n, c).to(dtype), torch.randn(b, n, c).to(dtype)
    w, bias = torch.randn(c, cg, 3, 3, 3) * 0.1, torch.randn(c)
    yy, ww, bb = (t.double().requires_grad_() for t in (y, w, bias))
    ref = K.tgi_conv_gather(yy, nbr, ww, bb, G)
    dy_ref, dw_ref, db_ref = torch.autograd.grad(ref, (yy, ww, bb), dout.double())
    rel = lambda a, r: float((a.double() - r).norm() / r.norm())
    tol, fp32, wk = (1e-5 if dtype == torch.float32 else 2e-3), dtype == torch.float32, K.pack_weight(w, G, dtype)
    fwd = [(K._conv_run_kernel, {"RUN": run}, cfg) for cfg in K._RUN_FWD_CONFIGS] + \
          [(K._conv_kernel, {}, cfg) for cfg in K._FWD_CONFIGS]
    for kernel, extra, cfg in fwd:
        g = (triton.cdiv(G, cfg.kwargs["GB"]), triton.cdiv(n, cfg.kwargs["BLOCK_N"]), b)
        for trans, src, want in ((False, y, ref), (True, dout, dy_ref)):
            out = torch.empty_like(y)
            kernel.fn[g](src, wk, wk if trans else bias, nbr, out, n, c, G, HAS_BIAS=not trans, FP32=fp32,
                         CG=cg, TRANS=trans, **extra, **cfg.kwargs)
            assert rel(out, want.detach()) < tol, (grid, G, dtype, cfg, trans, rel(out, want.detach()))
    rows = b * n
    per = triton.cdiv(triton.cdiv(rows, 2), 128) * 128
    split = triton.cdiv(rows, per)
    wgrad = [(K._wgrad_run_kernel, (G, split), {"RUN": run}, cfg) for cfg in K._RUN_WGRAD_CONFIGS] + \
            [(K._wgrad_kernel, (G, triton.cdiv(27, cfg.kwargs["TP"]), split), {}, cfg) for cfg in K._WGRAD_CONFIGS]
    for kernel, g, extra, cfg in wgrad:
        dw, db = torch.empty(split, c, cg, 27), torch.empty(split, c)
        kernel.fn[g](y, dout, nbr, dw, db, n, c, rows, per, FP32=fp32, CG=cg, **extra, **cfg.kwargs)
        assert rel(dw.sum(0).view(c, cg, 3, 3, 3), dw_ref) < 1e-5 and rel(db.sum(0), db_ref) < 1e-5, (grid, cfg)
print("ok")
'''


@pytest.mark.slow
def test_triton_kernels_in_interpreter():
    """Every autotune configuration of both kernel sets, general and run (forward, input
    gradient, weight and bias gradients), equals the gather formula, on the CPU through
    Triton's interpreter:
    whole and partial token blocks, G not a multiple of the group block, T = 8 and 4,
    float32 and float16 (the interpreter mishandles bfloat16). Needs Triton on the CPU
    (`pip install triton==3.6.0`); CI's CPU torch has none, so it is skipped there."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
