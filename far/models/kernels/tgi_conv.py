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


def pack_weight(weight: torch.Tensor, groups: int, dtype: torch.dtype, transposed: bool = False) -> torch.Tensor:
    """Conv3d weight (C, Cg, 3, 3, 3) -> W (G, 27, Cg_in, Cg_out) contiguous in ``dtype``;
    ``transposed``: the input-gradient weight W[g, 26 - k, o, i] (mirrored taps)."""
    wk = tap_weight(weight.detach(), groups)
    if transposed:
        wk = wk.flip(1).transpose(2, 3)
    out = torch.empty(wk.shape, device=weight.device, dtype=dtype)
    return out.copy_(wk)


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
    # Block shapes are tuned per problem shape on the first call. KT taps are contracted
    # per tl.dot (K = KT*Cg): with Cg = 16 a one-tap dot is the smallest MMA there is, so
    # several taps per dot keep the tensor cores busier and cut the loop count; taps past
    # 27 are masked to zero.
    _FWD_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "KT": kt}, num_warps=nw, num_stages=ns)
        for bn, kt, nw, ns in [
            (64, 1, 4, 3), (128, 1, 4, 3), (64, 2, 4, 3), (128, 2, 8, 3), (64, 4, 4, 2), (128, 4, 8, 2), (32, 4, 2, 2),
        ]
    ]
    _WGRAD_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "KT": kt}, num_warps=nw, num_stages=ns)
        for bn, kt, nw, ns in [(64, 4, 4, 3), (128, 4, 4, 3), (64, 8, 4, 3), (128, 8, 8, 3), (64, 16, 8, 2), (32, 8, 4, 3)]
    ]

    @triton.autotune(configs=_FWD_CONFIGS, key=["N", "C", "CG"])
    @triton.jit
    def _conv_kernel(x_ptr, w_ptr, b_ptr, nbr_ptr, out_ptr, N, C,
                     HAS_BIAS: tl.constexpr, FP32: tl.constexpr, CG: tl.constexpr,
                     BLOCK_N: tl.constexpr, KT: tl.constexpr):
        # out[b, n, g*CG + o] = bias + sum_k sum_i x[b, nbr[k, n], g*CG + i] * W[g, k, i, o], W packed
        # (G, 27, CG, CG) in x's dtype (see pack_weight).
        # grid = (G, cdiv(N, BLOCK_N), B): the G programs of one token block are adjacent in
        # launch order, so the rows they gather (the same tokens, other channels) meet in L2.
        g = tl.program_id(0)
        pid_n = tl.program_id(1)
        bb = tl.program_id(2).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        offs_k = tl.arange(0, KT * CG)  # (tap within the chunk, input channel)
        ci = offs_k % CG
        offs_c = tl.arange(0, CG)
        x_base = x_ptr + bb * N * C + g * CG
        acc = tl.zeros((BLOCK_N, CG), dtype=tl.float32)
        for kc in range(0, (27 + KT - 1) // KT):
            tap = kc * KT + offs_k // CG
            # The table entry is loaded once per channel (L1 hits). Loading it once per tap
            # and broadcasting with tl.reshape was measured 4x slower on the H100 (the
            # reshape costs a layout conversion per chunk).
            nb = tl.load(nbr_ptr + tap[None, :] * N + offs_n[:, None],
                         mask=mask_n[:, None] & (tap < 27)[None, :], other=-1)  # (BLOCK_N, KT*CG)
            xt = tl.load(x_base + nb * C + ci[None, :], mask=nb >= 0, other=0.0)  # (BLOCK_N, KT*CG)
            wt = tl.load(w_ptr + ((g * 27 + tap[:, None]) * CG + ci[:, None]) * CG + offs_c[None, :],
                         mask=(tap < 27)[:, None], other=0.0)  # (KT*CG, CG), contiguous rows
            if FP32:
                acc += tl.dot(xt, wt, input_precision="ieee")
            else:
                acc += tl.dot(xt, wt)
        if HAS_BIAS:
            acc += tl.load(b_ptr + g * CG + offs_c)[None, :].to(tl.float32)
        out = out_ptr + bb * N * C + offs_n[:, None] * C + g * CG + offs_c[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_n[:, None])

    @triton.autotune(configs=_WGRAD_CONFIGS, key=["N", "C", "CG", "ROWS"])
    @triton.jit
    def _wgrad_kernel(x_ptr, dy_ptr, nbr_ptr, dw_ptr, db_ptr, N, C, ROWS, ROWS_PER_SPLIT: tl.constexpr,
                      FP32: tl.constexpr, CG: tl.constexpr, BLOCK_N: tl.constexpr, KT: tl.constexpr):
        # grid = (G, cdiv(27, KT), SPLIT). Split s of the B*N rows contributes
        #   dw[s, g*CG + o, i, k] = sum_r x[nbr[k, r]][g*CG + i] * dy[r][g*CG + o]
        # (the Conv3d weight layout), one (KT*CG x BLOCK_N) @ (BLOCK_N x CG) dot per row block
        # with the gathered x tile loaded already transposed; the tap-chunk-0 programs also
        # sum dy over their rows: the bias gradient db[s, g*CG + o].
        g = tl.program_id(0)
        kc = tl.program_id(1)
        s = tl.program_id(2)
        offs_k = tl.arange(0, KT * CG)
        tap = kc * KT + offs_k // CG
        ci = offs_k % CG
        offs_c = tl.arange(0, CG)
        acc = tl.zeros((KT * CG, CG), dtype=tl.float32)
        bacc = tl.zeros((CG,), dtype=tl.float32)
        start = s * ROWS_PER_SPLIT
        for r0 in range(0, ROWS_PER_SPLIT, BLOCK_N):
            rows = start + r0 + tl.arange(0, BLOCK_N)
            mrow = rows < ROWS  # a split is a whole number of row blocks
            bb = (rows // N).to(tl.int64)
            n = rows % N
            nb = tl.load(nbr_ptr + tap[:, None] * N + n[None, :],
                         mask=(tap < 27)[:, None] & mrow[None, :], other=-1)  # (KT*CG, BLOCK_N)
            xt = tl.load(x_ptr + (bb[None, :] * N + nb) * C + g * CG + ci[:, None], mask=nb >= 0, other=0.0)
            dyt = tl.load(dy_ptr + rows.to(tl.int64)[:, None] * C + g * CG + offs_c[None, :],
                          mask=mrow[:, None], other=0.0)
            if FP32:
                acc += tl.dot(xt, dyt, input_precision="ieee")
            else:
                acc += tl.dot(xt, dyt)
            if kc == 0:
                bacc += tl.sum(dyt.to(tl.float32), axis=0)
        dw = dw_ptr + ((s * C + g * CG + offs_c[None, :]) * CG + ci[:, None]) * 27 + tap[:, None]
        tl.store(dw, acc, mask=(tap < 27)[:, None])
        if kc == 0:
            tl.store(db_ptr + s * C + g * CG + offs_c, bacc)

    def _launch_conv(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     transposed: bool) -> torch.Tensor:
        b, n, c = y.shape
        cg = weight.shape[1]
        # One small copy packs the weight per call (0.3 MB for ViT-B) so that the kernel's
        # weight loads are contiguous Cg-wide rows instead of stride-27 scalars.
        wk = pack_weight(weight, c // cg, y.dtype, transposed)
        out = torch.empty_like(y)
        grid = lambda meta: (c // cg, triton.cdiv(n, meta["BLOCK_N"]), b)
        _conv_kernel[grid](y, wk, bias if bias is not None else wk, nbr, out, n, c,
                           HAS_BIAS=bias is not None, FP32=y.dtype == torch.float32, CG=cg)
        return out

    # Row splits of the weight-gradient reduction: enough programs to fill the GPU
    # several times over, reduced afterwards in a fixed order (deterministic, no atomics).
    _WGRAD_PROGRAMS = 16 * 132

    def _launch_wgrad(y: torch.Tensor, dout: torch.Tensor, nbr: torch.Tensor, cg: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = y.shape
        groups = c // cg
        rows = b * n
        split = max(1, min(256, triton.cdiv(_WGRAD_PROGRAMS, groups * 4)))  # ~4 tap chunks
        per = triton.cdiv(triton.cdiv(rows, split), 256) * 256  # a multiple of every BLOCK_N
        split = triton.cdiv(rows, per)
        dw = torch.empty(split, c, cg, TAPS, device=y.device, dtype=torch.float32)
        db = torch.empty(split, c, device=y.device, dtype=torch.float32)
        grid = lambda meta: (groups, triton.cdiv(TAPS, meta["KT"]), split)
        _wgrad_kernel[grid](y, dout, nbr, dw, db, n, c, rows, per, FP32=y.dtype == torch.float32, CG=cg)
        return dw.sum(0).view(c, cg, 3, 3, 3), db.sum(0)

    def _backward_impl(dout, y, nbr, weight, need_dy: bool, need_dw: bool):
        dout = dout.contiguous()
        dy = _launch_conv(dout, nbr, weight, None, transposed=True) if need_dy else None
        dw, db = _launch_wgrad(y, dout, nbr, weight.shape[1]) if need_dw else (None, None)
        return dy, dw, db

    # ---- eager: a plain autograd.Function (the least Python between launches) ----------
    class _TGIConvFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, nbr, weight, bias):
            ctx.save_for_backward(y, nbr, weight)
            ctx.has_bias = bias is not None
            return _launch_conv(y, nbr, weight, bias, transposed=False)

        @staticmethod
        def backward(ctx, dout):
            y, nbr, weight = ctx.saved_tensors
            need_dw = ctx.needs_input_grad[2] or (ctx.has_bias and ctx.needs_input_grad[3])
            dy, dw, db = _backward_impl(dout, y, nbr, weight, ctx.needs_input_grad[0], need_dw)
            return dy, None, dw, db if ctx.has_bias else None

    # ---- torch.compile: custom ops with fake implementations (opaque, no graph breaks) --
    @torch.library.custom_op("far::tgi_conv", mutates_args=())
    def _tgi_conv_op(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """y (B, N, C) contiguous, weight (C, Cg, 3, 3, 3) contiguous, bias (C,) or None."""
        return _launch_conv(y, nbr, weight, bias, transposed=False)

    @_tgi_conv_op.register_fake
    def _(y, nbr, weight, bias):
        return torch.empty_like(y)

    @torch.library.custom_op("far::tgi_conv_backward", mutates_args=())
    def _tgi_conv_bwd_op(dout: torch.Tensor, y: torch.Tensor, nbr: torch.Tensor,
                         weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input, weight, bias) gradients; the last two in float32."""
        return _backward_impl(dout, y, nbr, weight, True, True)

    @_tgi_conv_bwd_op.register_fake
    def _(dout, y, nbr, weight):
        c = y.shape[-1]
        return (torch.empty_like(y), weight.new_empty(weight.shape, dtype=torch.float32),
                weight.new_empty(c, dtype=torch.float32))

    def _setup(ctx, inputs, output):
        y, nbr, weight, bias = inputs
        ctx.save_for_backward(y, nbr, weight)
        ctx.has_bias = bias is not None

    def _backward(ctx, dout):
        y, nbr, weight = ctx.saved_tensors
        dy, dw, db = _tgi_conv_bwd_op(dout, y, nbr, weight)
        return dy, None, dw.to(weight.dtype), db.to(weight.dtype) if ctx.has_bias else None

    _tgi_conv_op.register_autograd(_backward, setup_context=_setup)


def tgi_conv_triton(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """The Triton path (CUDA tensors); differentiable w.r.t. y, weight and bias.

    The kernels read the Conv3d weight and bias as stored (float32 parameters, cast to
    y's dtype in registers, as autocast would) and write their gradients in the same
    layout, so no weight re-layout or cast runs per step. Eager calls go through a plain
    autograd.Function; under torch.compile the custom ops are used (opaque to Dynamo)."""
    assert weight.shape[0] // weight.shape[1] == groups
    y = y.contiguous()
    weight = weight.contiguous()
    if torch.compiler.is_compiling():
        return _tgi_conv_op(y, nbr, weight, bias)
    return _TGIConvFn.apply(y, nbr, weight, bias)


def triton_usable(t: torch.Tensor) -> bool:
    return HAVE_TRITON and t.is_cuda


def tgi_conv(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Grouped 3x3x3 conv on the token order of ``nbr``: Triton on CUDA, PyTorch elsewhere."""
    if triton_usable(y) and (y.shape[-1] // groups) % 16 == 0:
        return tgi_conv_triton(y, nbr, weight, bias, groups)
    return tgi_conv_gather(y, nbr, weight, bias, groups)
