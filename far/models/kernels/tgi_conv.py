"""The TGI's grouped 3x3x3 convolution directly on the grouped token order.

The token-group interaction convolves the narrow bottleneck y (B, N, C), C = D/4, over
the (T, H, W) grid with ``groups`` groups of ``C // groups`` channels. The plain
definition (``TokenGroupInteraction`` with ``tgi_impl="conv3d"``) moves y to the grid
(index_select with inv_perm, permute to channels-first), runs cuDNN's grouped Conv3d
and moves the result back (permute, index_select with perm). Here the permutation is
folded into a precomputed neighbour table instead:

    nbr[k, n] = grouped index of the token at offset k = (dt, dh, dw) in {-1, 0, 1}^3
                from grouped token n, or -1 outside the grid (zero padding),

so, with Wk[g, k, i, o] = conv.weight[g*Cg + o, i, kt, kh, kw] (k = 9 kt + 3 kh + kw),

    out[b, n, g*Cg + o] = bias[g*Cg + o] + sum_k sum_i y[b, nbr[k, n], g*Cg + i] Wk[g, k, i, o]

which reads y in the model's own (grouped, channels-last) layout and writes the output
in it: no gathers, no permutes, no copies. The input gradient is the same operation
with the taps mirrored (nbr[26 - k] is the inverse offset of nbr[k]) and each group's
weight transposed; the weight gradient is, per group and tap, a (Cg x P) @ (P x Cg)
reduction over all P = B*N positions.

On CUDA (with Triton) these three are Triton kernels behind ``torch.library`` custom
ops (``far::tgi_conv``, ``far::tgi_conv_wgrad``) with autograd and fake
implementations, so ``torch.compile`` traces through without graph breaks. Everywhere
else :func:`tgi_conv_gather` computes the same formula in PyTorch (tested equal to the
Conv3d definition on CPU; the Triton kernels are tested equal to it on the GPU).
"""

from __future__ import annotations

import torch

try:  # Triton is optional: CPU-only installs run the PyTorch formulation.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except Exception:  # pragma: no cover - depends on the install
    HAVE_TRITON = False

TAPS = 27


def neighbour_table(perm: torch.Tensor, inv_perm: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(27, N) int32: grouped index of each grouped token's 3x3x3 neighbours, -1 = padding.

    ``perm``/``inv_perm`` map grouped -> natural and natural -> grouped token indices
    (identity for the natural order)."""
    t, h, w = grid
    nat = perm.long()
    tt, rem = nat // (h * w), nat % (h * w)
    hh, ww = rem // w, rem % w
    rows = []
    for dt in (-1, 0, 1):
        for dh in (-1, 0, 1):
            for dw in (-1, 0, 1):
                t2, h2, w2 = tt + dt, hh + dh, ww + dw
                ok = (t2 >= 0) & (t2 < t) & (h2 >= 0) & (h2 < h) & (w2 >= 0) & (w2 < w)
                idx = (t2.clamp(0, t - 1) * h + h2.clamp(0, h - 1)) * w + w2.clamp(0, w - 1)
                rows.append(torch.where(ok, inv_perm.long()[idx], torch.full_like(idx, -1)))
    return torch.stack(rows).to(torch.int32).contiguous()


def tap_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Conv3d weight (C, Cg, 3, 3, 3) -> Wk (G, 27, Cg_in, Cg_out)."""
    c, cg = weight.shape[:2]
    return weight.reshape(groups, cg, cg, TAPS).permute(0, 3, 2, 1)


def tgi_conv_gather(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """The neighbour-table formula in plain PyTorch (any device; the CPU fallback)."""
    b, n, c = y.shape
    cg = c // groups
    pad = torch.cat([y, y.new_zeros(b, 1, c)], dim=1)  # row n = zero padding
    idx = torch.where(nbr < 0, torch.full_like(nbr, n), nbr).long()  # (27, N)
    gathered = pad[:, idx.flatten()].view(b, TAPS, n, groups, cg)  # (B, 27, N, G, Cg)
    wk = tap_weight(weight, groups).to(y.dtype)  # (G, 27, Cg_in, Cg_out)
    out = torch.einsum("bknGi,Gkio->bnGo", gathered, wk).reshape(b, n, c)
    return out if bias is None else out + bias.to(out.dtype)


if HAVE_TRITON:

    @triton.jit
    def _conv_kernel(x_ptr, w_ptr, b_ptr, nbr_ptr, out_ptr, N, C,
                     HAS_BIAS: tl.constexpr, FP32: tl.constexpr, CG: tl.constexpr, BLOCK_N: tl.constexpr):
        # grid = (G, cdiv(N, BLOCK_N), B): the G programs of one token block run together (L2 reuse).
        g = tl.program_id(0)
        pid_n = tl.program_id(1)
        bb = tl.program_id(2).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        offs_c = tl.arange(0, CG)
        x_base = x_ptr + bb * N * C + g * CG
        w_base = w_ptr + g * (27 * CG * CG)
        acc = tl.zeros((BLOCK_N, CG), dtype=tl.float32)
        for k in tl.static_range(27):
            nb = tl.load(nbr_ptr + k * N + offs_n, mask=mask_n, other=-1)
            ok = nb >= 0
            xt = tl.load(x_base + nb[:, None] * C + offs_c[None, :], mask=ok[:, None], other=0.0)
            wt = tl.load(w_base + k * CG * CG + offs_c[:, None] * CG + offs_c[None, :])
            if FP32:
                acc += tl.dot(xt, wt, input_precision="ieee")
            else:
                acc += tl.dot(xt, wt)
        if HAS_BIAS:
            acc += tl.load(b_ptr + g * CG + offs_c)[None, :].to(tl.float32)
        out = out_ptr + bb * N * C + offs_n[:, None] * C + g * CG + offs_c[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_n[:, None])

    @triton.jit
    def _wgrad_kernel(x_ptr, dy_ptr, nbr_ptr, out_ptr, N, C, ROWS, ROWS_PER_SPLIT,
                      FP32: tl.constexpr, CG: tl.constexpr, BLOCK_N: tl.constexpr):
        # grid = (G, 27, SPLIT); out[s, g, k] = sum over rows r of split s of x[nbr]ᵀ dy.
        g = tl.program_id(0)
        k = tl.program_id(1)
        s = tl.program_id(2)
        offs_c = tl.arange(0, CG)
        acc = tl.zeros((CG, CG), dtype=tl.float32)
        start = s * ROWS_PER_SPLIT
        for r0 in range(start, start + ROWS_PER_SPLIT, BLOCK_N):
            rows = r0 + tl.arange(0, BLOCK_N)
            mrow = (rows < ROWS) & (rows < start + ROWS_PER_SPLIT)
            bb = (rows // N).to(tl.int64)
            n = rows % N
            nb = tl.load(nbr_ptr + k * N + n, mask=mrow, other=-1)
            ok = nb >= 0
            xt = tl.load(x_ptr + (bb * N + nb)[:, None] * C + g * CG + offs_c[None, :], mask=ok[:, None], other=0.0)
            dyt = tl.load(dy_ptr + rows.to(tl.int64)[:, None] * C + g * CG + offs_c[None, :], mask=mrow[:, None], other=0.0)
            if FP32:
                acc += tl.dot(tl.trans(xt), dyt, input_precision="ieee")
            else:
                acc += tl.dot(tl.trans(xt), dyt)
        out = out_ptr + ((s * tl.num_programs(0) + g) * 27 + k) * CG * CG + offs_c[:, None] * CG + offs_c[None, :]
        tl.store(out, acc)

    def _launch_conv(y: torch.Tensor, nbr: torch.Tensor, wk: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, n, c = y.shape
        g, _, cg, _ = wk.shape
        out = torch.empty_like(y)
        block_n = 64
        grid = (g, triton.cdiv(n, block_n), b)
        _conv_kernel[grid](y, wk, bias if bias is not None else y, nbr, out, n, c,
                           HAS_BIAS=bias is not None, FP32=y.dtype == torch.float32, CG=cg, BLOCK_N=block_n,
                           num_warps=4, num_stages=2)
        return out

    @torch.library.custom_op("far::tgi_conv", mutates_args=())
    def _tgi_conv_op(y: torch.Tensor, nbr: torch.Tensor, wk: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """y (B, N, C) contiguous, wk (G, 27, Cg, Cg) contiguous in y's dtype, bias (C,)."""
        return _launch_conv(y, nbr, wk, bias)

    @_tgi_conv_op.register_fake
    def _(y, nbr, wk, bias):
        return torch.empty_like(y)

    @torch.library.custom_op("far::tgi_conv_wgrad", mutates_args=())
    def _tgi_wgrad_op(y: torch.Tensor, dy: torch.Tensor, nbr: torch.Tensor, groups: int) -> torch.Tensor:
        """dWk (G, 27, Cg, Cg) float32 = sum over positions of y[nbr]ᵀ dy."""
        b, n, c = y.shape
        cg = c // groups
        rows = b * n
        block_n = 128
        split = max(1, min(64, triton.cdiv(8 * 132, groups * TAPS)))
        per = triton.cdiv(triton.cdiv(rows, split), block_n) * block_n
        split = triton.cdiv(rows, per)
        part = torch.empty(split, groups, TAPS, cg, cg, device=y.device, dtype=torch.float32)
        _wgrad_kernel[(groups, TAPS, split)](y, dy, nbr, part, n, c, rows, per,
                                             FP32=y.dtype == torch.float32, CG=cg, BLOCK_N=block_n,
                                             num_warps=4, num_stages=2)
        return part.sum(0)

    @_tgi_wgrad_op.register_fake
    def _(y, dy, nbr, groups):
        c = y.shape[-1]
        return y.new_empty(groups, TAPS, c // groups, c // groups, dtype=torch.float32)

    def _setup(ctx, inputs, output):
        y, nbr, wk, bias = inputs
        ctx.save_for_backward(y, nbr, wk)

    def _backward(ctx, dout):
        y, nbr, wk = ctx.saved_tensors
        dout = dout.contiguous()
        dy = dwk = None
        if ctx.needs_input_grad[0]:
            # mirrored taps, transposed per-group weight: dx = conv(dout, Wk[:, ::-1]ᵀ)
            wd = wk.flip(1).transpose(2, 3).contiguous()
            dy = _tgi_conv_op(dout, nbr, wd, torch.zeros_like(dout[0, 0]))
        if ctx.needs_input_grad[2]:
            dwk = _tgi_wgrad_op(y, dout, nbr, wk.shape[0]).to(wk.dtype)
        dbias = dout.sum((0, 1)) if ctx.needs_input_grad[3] else None
        return dy, None, dwk, dbias

    _tgi_conv_op.register_autograd(_backward, setup_context=_setup)


def tgi_conv_triton(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """The Triton path (CUDA tensors); differentiable w.r.t. y, weight and bias."""
    wk = tap_weight(weight, groups).to(y.dtype).contiguous()
    if bias is None:
        bias = torch.zeros(y.shape[-1], device=y.device, dtype=y.dtype)
    return _tgi_conv_op(y.contiguous(), nbr, wk, bias.to(y.dtype))


def triton_usable(t: torch.Tensor) -> bool:
    return HAVE_TRITON and t.is_cuda


def tgi_conv(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Grouped 3x3x3 conv on the token order of ``nbr``: Triton on CUDA, PyTorch elsewhere."""
    if triton_usable(y) and (y.shape[-1] // groups) % 16 == 0:
        return tgi_conv_triton(y, nbr, weight, bias, groups)
    return tgi_conv_gather(y, nbr, weight, bias, groups)
