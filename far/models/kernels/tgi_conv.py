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

On CUDA (with Triton) these are two Triton kernels (forward / input gradient, weight +
bias gradient): eager calls go through a ``torch.autograd.Function``; under
``torch.compile`` through ``torch.library.triton_op``s (``far::tgi_conv_t``,
``far::tgi_conv_backward_t``) that Inductor sees into and launches itself, without graph
breaks. Everywhere else :func:`tgi_conv_gather` computes the same formula in PyTorch (tested equal to the
Conv3d definition on CPU; the Triton kernels are tested equal to it on the GPU).
"""

from __future__ import annotations

import functools

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


def temporal_run(nbr: torch.Tensor, t: int) -> int:
    """``t`` if the table has the grouped order's temporal runs, else 0.

    In grouped order a position's T tokens are consecutive and every group starts at a
    multiple of T, so the taps (dt, dh, dw) with dt = -1 and +1 read the rows next to
    those of the tap (0, dh, dw): ``nbr[(dt, s), n] = nbr[(0, s), n + dt]`` when ``n + dt``
    is in n's run of T tokens, else -1. The run kernels gather the 9 spatial taps only
    and take the temporal ones by shifting rows inside each run (a third of the gathers).
    Also 0 unless T divides the kernels' smallest token block (32)."""
    n = nbr.shape[1]
    if t < 1 or n % t or 32 % t:
        return 0
    pos = torch.arange(n)
    tt = pos % t
    for kt, dt in enumerate((-1, 0, 1)):
        inside = (tt + dt >= 0) & (tt + dt < t)
        for s in range(9):
            base = nbr[9 + s].long()[(pos + dt).clamp(0, n - 1)]
            if not torch.equal(nbr[9 * kt + s].long(), torch.where(inside, base, torch.full_like(base, -1))):
                return 0
    return t


def tap_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Conv3d weight (C, Cg, 3, 3, 3) -> Wk (G, 27, Cg_in, Cg_out)."""
    c, cg = weight.shape[:2]
    return weight.reshape(groups, cg, cg, TAPS).permute(0, 3, 2, 1)


def pack_weight(weight: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Conv3d weight (C, Cg, 3, 3, 3) -> W (G, 27, Cg_in, Cg_out) contiguous in ``dtype``.
    The input gradient reads the same array as W[g, 26 - k, o, i] (mirrored taps,
    transposed per group)."""
    wk = tap_weight(weight.detach(), groups)
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
    # One program owns a block of BLOCK_N tokens and GB groups and loops over the 27 taps:
    # per tap it loads the table entry of each token once (a (BLOCK_N,) vector), gathers
    # the tokens' GB*Cg-channel rows as one (GB, BLOCK_N, Cg) tile with 16-byte vector
    # loads (the table entry is constant along the channels, so the row pointers are
    # contiguous), and contracts it with the tap's (GB, Cg, Cg) weights in one batched
    # dot. Groups past G (GB not dividing G) are masked off.
    #
    # The loads are software-pipelined (num_stages > 1: 16-byte cp.async, which on sm_90
    # bypasses L1). Plain L1-cached vector loads (num_stages = 1, with and without the tap
    # loop unrolled) were among the candidates on the H100 and never chosen, for either
    # kernel and backbone (measured 2026-11-24), so they are no longer tried.
    _FWD_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "GB": gb}, num_warps=nw, num_stages=ns)
        for bn, gb, nw, ns in [
            (32, 1, 2, 3), (64, 1, 4, 3), (64, 2, 4, 3), (32, 4, 4, 3), (32, 2, 2, 3), (64, 2, 4, 4), (128, 2, 8, 3),
        ]
    ]
    # Weight gradient: one program per (group, chunk of TP taps, row split); per row block it
    # loads dy once and the TP taps' gathered x tiles, one batched (TP, Cg, BLOCK_N) @
    # (TP, BLOCK_N, Cg) dot. The partial sums of the row splits are added afterwards in a
    # fixed order (deterministic).
    _WGRAD_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "TP": tp}, num_warps=nw, num_stages=ns)
        for bn, tp, nw, ns in [
            (32, 8, 4, 3), (64, 8, 4, 3), (32, 16, 4, 3), (64, 16, 8, 3), (32, 32, 8, 2),
            (16, 32, 4, 3), (64, 4, 4, 3), (128, 8, 8, 3),
        ]
    ]

    @triton.jit
    def _block(N, G, CG: tl.constexpr, TRANS: tl.constexpr, BLOCK_N: tl.constexpr, GB: tl.constexpr):
        """A forward / input-gradient program's share: its BLOCK_N tokens, its GB groups'
        channels (GB, 1, CG) and their weight tiles in the packed W (G, 27, CG, CG); TRANS
        (the input gradient) reads each tile transposed."""
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_g = tl.program_id(0) * GB + tl.arange(0, GB)
        mask_g = (offs_g < G)[:, None, None]  # (GB, 1, 1): groups past G (GB not dividing G) masked off
        offs_c = tl.arange(0, CG)
        chan = (offs_g * CG)[:, None, None] + offs_c[None, None, :]  # (GB, 1, CG)
        if TRANS:  # element (i, o) of the tile at W[.., o, i]
            w_tile = offs_g[:, None, None] * (27 * CG * CG) + offs_c[None, :, None] + offs_c[None, None, :] * CG
        else:
            w_tile = offs_g[:, None, None] * (27 * CG * CG) + offs_c[None, :, None] * CG + offs_c[None, None, :]
        return offs_n, offs_n < N, mask_g, chan, w_tile

    @triton.jit
    def _tap_dot(acc, xt, w_ptr, w_tile, k, mask_g, FP32: tl.constexpr, CG: tl.constexpr, TRANS: tl.constexpr):
        """acc (GB, BLOCK_N, CG) += the gathered rows xt @ tap k's (GB, CG, CG) weights
        (the input gradient: the mirrored tap 26 - k)."""
        wk = 26 - k if TRANS else k
        wt = tl.load(w_ptr + w_tile + wk * (CG * CG), mask=mask_g, other=0.0)
        if FP32:
            acc += tl.dot(xt, wt, input_precision="ieee")
        else:
            acc += tl.dot(xt, wt)
        return acc

    @triton.jit
    def _gather(x_base, nbr_ptr, row, offs_n, mask_n, mask_g, chan, N, C):
        """The (GB, BLOCK_N, CG) tile of the tokens' neighbours in table row ``row``, zeros
        for padding: one table entry per token, contiguous CG-wide rows (16-byte loads)."""
        nb = tl.load(nbr_ptr + row * N + offs_n, mask=mask_n, other=-1)  # (BLOCK_N,)
        return tl.load(x_base + nb[None, :, None] * C + chan, mask=(nb >= 0)[None, :, None] & mask_g, other=0.0)

    @triton.jit
    def _store_block(acc, b_ptr, out_ptr, bb, offs_n, mask_n, mask_g, chan, N, C, HAS_BIAS: tl.constexpr):
        if HAS_BIAS:
            acc += tl.load(b_ptr + chan, mask=mask_g, other=0.0).to(tl.float32)
        out = out_ptr + bb * N * C + offs_n[None, :, None] * C + chan
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_n[None, :, None] & mask_g)

    @triton.autotune(configs=_FWD_CONFIGS, key=["N", "C", "G"])
    @triton.jit
    def _conv_kernel(x_ptr, w_ptr, b_ptr, nbr_ptr, out_ptr, N, C, G,
                     HAS_BIAS: tl.constexpr, FP32: tl.constexpr, CG: tl.constexpr, TRANS: tl.constexpr,
                     BLOCK_N: tl.constexpr, GB: tl.constexpr):
        # out[b, n, g*CG + o] = bias + sum_k sum_i x[b, nbr[k, n], g*CG + i] * W[g, k, i, o],
        # W packed (G, 27, CG, CG) in x's dtype (see pack_weight); TRANS: W[g, 26 - k, o, i]
        # (the input gradient). grid = (G / GB, N / BLOCK_N, B).
        offs_n, mask_n, mask_g, chan, w_tile = _block(N, G, CG, TRANS, BLOCK_N, GB)
        bb = tl.program_id(2).to(tl.int64)
        x_base = x_ptr + bb * N * C
        acc = tl.zeros((GB, BLOCK_N, CG), dtype=tl.float32)
        for k in range(27):
            xt = _gather(x_base, nbr_ptr, k, offs_n, mask_n, mask_g, chan, N, C)
            acc = _tap_dot(acc, xt, w_ptr, w_tile, k, mask_g, FP32, CG, TRANS)
        _store_block(acc, b_ptr, out_ptr, bb, offs_n, mask_n, mask_g, chan, N, C, HAS_BIAS)

    @triton.jit
    def _wgrad_rows(x_ptr, dy_ptr, nbr_ptr, tab, mtab, r_start, g, N, C, ROWS,
                    CG: tl.constexpr, BLOCK_N: tl.constexpr):
        """One row block of a weight-gradient program (rows r_start.. of all B*N): x of
        group g gathered at the table rows ``tab`` (K, CG, BLOCK_N), zeros for padding and
        masked rows, and dy (BLOCK_N, CG)."""
        rows = r_start + tl.arange(0, BLOCK_N)
        mrow = rows < ROWS
        bb = rows // N
        n = rows - bb * N
        ci = tl.arange(0, CG)
        nb = tl.load(nbr_ptr + tab[:, None] * N + n[None, :], mask=mtab[:, None] & mrow[None, :], other=-1)
        src = (bb[None, :] * N + nb).to(tl.int64) * C  # (K, BLOCK_N)
        xt = tl.load(x_ptr + src[:, None, :] + g * CG + ci[None, :, None], mask=(nb >= 0)[:, None, :], other=0.0)
        dyt = tl.load(dy_ptr + rows.to(tl.int64)[:, None] * C + g * CG + ci[None, :], mask=mrow[:, None], other=0.0)
        return xt, dyt

    @triton.jit
    def _outer_acc(acc, xt, dy, K: tl.constexpr, BLOCK_N: tl.constexpr, CG: tl.constexpr, FP32: tl.constexpr):
        """acc (K, CG, CG) += xt (K, CG, BLOCK_N) @ dy (BLOCK_N, CG), one batched dot."""
        dyb = tl.broadcast_to(dy.to(xt.dtype)[None, :, :], (K, BLOCK_N, CG))
        if FP32:
            acc += tl.dot(xt, dyb, input_precision="ieee")
        else:
            acc += tl.dot(xt, dyb)
        return acc

    @triton.jit
    def _store_dw(dw_ptr, acc, taps, mtap, s, g, C, CG: tl.constexpr):
        """acc[k, i, o] to dw[s, g*CG + o, i, taps[k]] (the Conv3d weight layout)."""
        ci = tl.arange(0, CG)
        dw = dw_ptr + ((s * C + g * CG + ci[None, None, :]) * CG + ci[None, :, None]) * 27 + taps[:, None, None]
        tl.store(dw, acc, mask=mtap[:, None, None])

    @triton.autotune(configs=_WGRAD_CONFIGS, key=["N", "C", "CG", "ROWS"])
    @triton.jit
    def _wgrad_kernel(x_ptr, dy_ptr, nbr_ptr, dw_ptr, db_ptr, N, C, ROWS, ROWS_PER_SPLIT: tl.constexpr,
                      FP32: tl.constexpr, CG: tl.constexpr, BLOCK_N: tl.constexpr, TP: tl.constexpr):
        # grid = (G, cdiv(27, TP), SPLIT). Split s of the B*N rows contributes
        #   dw[s, g*CG + o, i, k] = sum_r x[nbr[k, r]][g*CG + i] * dy[r][g*CG + o]
        # (the Conv3d weight layout); the tap-chunk-0 programs also sum dy over their rows:
        # the bias gradient db[s, g*CG + o]. ROWS_PER_SPLIT is a multiple of BLOCK_N.
        g = tl.program_id(0)
        kc = tl.program_id(1)
        s = tl.program_id(2)
        taps = kc * TP + tl.arange(0, TP)
        mtap = taps < 27
        acc = tl.zeros((TP, CG, CG), dtype=tl.float32)
        bacc = tl.zeros((CG,), dtype=tl.float32)
        for r0 in range(0, ROWS_PER_SPLIT, BLOCK_N):
            xt, dyt = _wgrad_rows(x_ptr, dy_ptr, nbr_ptr, taps, mtap, s * ROWS_PER_SPLIT + r0, g, N, C, ROWS,
                                  CG, BLOCK_N)
            acc = _outer_acc(acc, xt, dyt, TP, BLOCK_N, CG, FP32)
            if kc == 0:
                bacc += tl.sum(dyt.to(tl.float32), axis=0)
        _store_dw(dw_ptr, acc, taps, mtap, s, g, C, CG)
        if kc == 0:
            tl.store(db_ptr + s * C + g * CG + tl.arange(0, CG), bacc)

    # ---- the run kernels (grouped order, temporal_run(nbr, T) = T): per spatial offset s
    # one gather, the rows of the tap (0, s); the taps (-1, s) and (+1, s) are the same rows
    # moved by one inside each run of T tokens (a token block holds whole runs). That is 9
    # gathers from L2 instead of 27, for the same products.
    _RUN_FWD_CONFIGS = [
        triton.Config({"BLOCK_N": bn, "GB": gb}, num_warps=nw, num_stages=ns)
        for bn, gb, nw, ns in [
            (32, 1, 2, 3), (32, 2, 2, 3), (32, 2, 4, 3), (32, 4, 4, 3), (64, 1, 4, 3), (64, 2, 4, 3), (64, 2, 8, 3),
            (128, 1, 8, 3),
        ]
    ]
    _RUN_WGRAD_CONFIGS = [
        triton.Config({"BLOCK_N": bn}, num_warps=nw, num_stages=ns)
        for bn, nw, ns in [(32, 4, 3), (32, 8, 2), (64, 4, 3), (64, 8, 3), (128, 8, 2), (128, 8, 3)]
    ]

    @triton.jit
    def _run_shift(v, axis: tl.constexpr, BLOCK_N: tl.constexpr, RUN: tl.constexpr, D: tl.constexpr):
        """Row i of ``v`` along ``axis`` (the token axis, length BLOCK_N) replaced by row
        i + D of the same run of RUN rows, or zeros where that leaves the run. A pure
        gather (no arithmetic), so bitwise the moved values."""
        i = tl.arange(0, BLOCK_N)
        src = tl.minimum(tl.maximum(i + D, 0), BLOCK_N - 1)
        ok = ((i % RUN) + D >= 0) & ((i % RUN) + D < RUN)
        if axis == 0:
            idx = tl.broadcast_to(src[:, None], v.shape)
            keep = ok[:, None]
        else:
            idx = tl.broadcast_to(src[None, :, None], v.shape)
            keep = ok[None, :, None]
        return tl.where(keep, tl.gather(v, idx, axis), 0.0)

    @triton.autotune(configs=_RUN_FWD_CONFIGS, key=["N", "C", "G"])
    @triton.jit
    def _conv_run_kernel(x_ptr, w_ptr, b_ptr, nbr_ptr, out_ptr, N, C, G,
                         HAS_BIAS: tl.constexpr, FP32: tl.constexpr, CG: tl.constexpr, TRANS: tl.constexpr,
                         RUN: tl.constexpr, BLOCK_N: tl.constexpr, GB: tl.constexpr):
        # _conv_kernel's result. With Z_dt = sum_s x[nbr[(0, s), .]] @ W[(dt, s)]:
        #   out[n] = bias + Z_0[n] + Z_-1[n - 1] + Z_+1[n + 1]   (shifts inside n's run)
        offs_n, mask_n, mask_g, chan, w_tile = _block(N, G, CG, TRANS, BLOCK_N, GB)
        bb = tl.program_id(2).to(tl.int64)
        x_base = x_ptr + bb * N * C
        z_m = tl.zeros((GB, BLOCK_N, CG), dtype=tl.float32)
        z_0 = tl.zeros((GB, BLOCK_N, CG), dtype=tl.float32)
        z_p = tl.zeros((GB, BLOCK_N, CG), dtype=tl.float32)
        for s in range(9):
            xt = _gather(x_base, nbr_ptr, 9 + s, offs_n, mask_n, mask_g, chan, N, C)  # tap (0, s)
            z_m = _tap_dot(z_m, xt, w_ptr, w_tile, s, mask_g, FP32, CG, TRANS)
            z_0 = _tap_dot(z_0, xt, w_ptr, w_tile, 9 + s, mask_g, FP32, CG, TRANS)
            z_p = _tap_dot(z_p, xt, w_ptr, w_tile, 18 + s, mask_g, FP32, CG, TRANS)
        acc = z_0 + _run_shift(z_m, 1, BLOCK_N, RUN, -1) + _run_shift(z_p, 1, BLOCK_N, RUN, 1)
        _store_block(acc, b_ptr, out_ptr, bb, offs_n, mask_n, mask_g, chan, N, C, HAS_BIAS)

    @triton.autotune(configs=_RUN_WGRAD_CONFIGS, key=["N", "C", "CG", "ROWS"])
    @triton.jit
    def _wgrad_run_kernel(x_ptr, dy_ptr, nbr_ptr, dw_ptr, db_ptr, N, C, ROWS, ROWS_PER_SPLIT: tl.constexpr,
                          FP32: tl.constexpr, CG: tl.constexpr, RUN: tl.constexpr, BLOCK_N: tl.constexpr):
        # _wgrad_kernel's result, grid = (G, SPLIT): with X_s the rows of tap (0, s),
        #   dw[(dt, s)] = sum_r X_s[r] (x) dy[r - dt]   (r - dt in r's run),
        # so dy is moved twice per row block and the 9 spatial gathers serve all 27 taps.
        g = tl.program_id(0)
        s = tl.program_id(1)
        sp = tl.arange(0, 16)  # the 9 spatial offsets, padded to a power of two
        msp = sp < 9
        acc_m = tl.zeros((16, CG, CG), dtype=tl.float32)
        acc_0 = tl.zeros((16, CG, CG), dtype=tl.float32)
        acc_p = tl.zeros((16, CG, CG), dtype=tl.float32)
        bacc = tl.zeros((CG,), dtype=tl.float32)
        for r0 in range(0, ROWS_PER_SPLIT, BLOCK_N):
            xt, dyt = _wgrad_rows(x_ptr, dy_ptr, nbr_ptr, 9 + sp, msp, s * ROWS_PER_SPLIT + r0, g, N, C, ROWS,
                                  CG, BLOCK_N)
            # tap dt = -1 pairs X_s[r] with dy[r + 1], dt = +1 with dy[r - 1]
            acc_m = _outer_acc(acc_m, xt, _run_shift(dyt, 0, BLOCK_N, RUN, 1), 16, BLOCK_N, CG, FP32)
            acc_0 = _outer_acc(acc_0, xt, dyt, 16, BLOCK_N, CG, FP32)
            acc_p = _outer_acc(acc_p, xt, _run_shift(dyt, 0, BLOCK_N, RUN, -1), 16, BLOCK_N, CG, FP32)
            bacc += tl.sum(dyt.to(tl.float32), axis=0)
        _store_dw(dw_ptr, acc_m, sp, msp, s, g, C, CG)
        _store_dw(dw_ptr, acc_0, 9 + sp, msp, s, g, C, CG)
        _store_dw(dw_ptr, acc_p, 18 + sp, msp, s, g, C, CG)
        tl.store(db_ptr + s * C + g * CG + tl.arange(0, CG), bacc)

    def _launch_conv(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     transposed: bool, wrap: bool = False, packed: torch.Tensor | None = None, run: int = 0
                     ) -> torch.Tensor:
        b, n, c = y.shape
        cg = weight.shape[1]
        groups = c // cg
        # One small copy packs the weight (0.3 MB for ViT-B) so that the kernel's weight
        # loads are contiguous Cg-wide rows instead of stride-27 scalars; the forward's
        # packed copy serves the input gradient too (``packed``).
        wk = packed if packed is not None and packed.dtype == y.dtype else pack_weight(weight, groups, y.dtype)
        out = torch.empty_like(y)
        grid = lambda meta: (triton.cdiv(groups, meta["GB"]), triton.cdiv(n, meta["BLOCK_N"]), b)
        args = (y, wk, bias if bias is not None else wk, nbr, out, n, c, groups)
        flags = dict(HAS_BIAS=bias is not None, FP32=y.dtype == torch.float32, CG=cg, TRANS=transposed)
        if run:  # temporal_run(nbr, T) == run: the run kernel (a third of the gathers)
            kernel = torch.library.wrap_triton(_conv_run_kernel) if wrap else _conv_run_kernel
            kernel[grid](*args, **flags, RUN=run)
        else:
            kernel = torch.library.wrap_triton(_conv_kernel) if wrap else _conv_kernel
            kernel[grid](*args, **flags)
        return out

    @functools.lru_cache(maxsize=None)
    def _sm_count(device: torch.device) -> int:
        return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8

    def _wgrad_split(rows: int, groups: int, device) -> tuple[int, int]:
        """(row splits, rows per split): about two programs per SM and tap chunk, each a
        whole number of the largest row block (128)."""
        sms = _sm_count(device)
        split = max(1, min(256, triton.cdiv(2 * sms, groups)))
        per = triton.cdiv(triton.cdiv(rows, split), 128) * 128
        return triton.cdiv(rows, per), per

    def _launch_wgrad(y: torch.Tensor, dout: torch.Tensor, nbr: torch.Tensor, cg: int,
                      wrap: bool = False, run: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = y.shape
        groups = c // cg
        rows = b * n
        split, per = _wgrad_split(rows, groups, y.device)
        dw = torch.empty(split, c, cg, TAPS, device=y.device, dtype=torch.float32)
        db = torch.empty(split, c, device=y.device, dtype=torch.float32)
        if run:
            kernel = torch.library.wrap_triton(_wgrad_run_kernel) if wrap else _wgrad_run_kernel
            kernel[(groups, split)](y, dout, nbr, dw, db, n, c, rows, per, FP32=y.dtype == torch.float32, CG=cg,
                                    RUN=run)
        else:
            grid = lambda meta: (groups, triton.cdiv(TAPS, meta["TP"]), split)
            kernel = torch.library.wrap_triton(_wgrad_kernel) if wrap else _wgrad_kernel
            kernel[grid](y, dout, nbr, dw, db, n, c, rows, per, FP32=y.dtype == torch.float32, CG=cg)
        return dw.sum(0).view(c, cg, 3, 3, 3), db.sum(0)

    def _backward_impl(dout, y, nbr, weight, need_dy: bool, need_dw: bool, wrap: bool = False, packed=None,
                       run: int = 0):
        dout = dout.contiguous()
        dy = (_launch_conv(dout, nbr, weight, None, transposed=True, wrap=wrap, packed=packed, run=run)
              if need_dy else None)
        dw, db = _launch_wgrad(y, dout, nbr, weight.shape[1], wrap=wrap, run=run) if need_dw else (None, None)
        return dy, dw, db

    # ---- eager: a plain autograd.Function (the least Python between launches); it keeps
    # the forward's packed weight for the input gradient ---------------------------------
    class _TGIConvFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, nbr, weight, bias, run):
            packed = pack_weight(weight, y.shape[-1] // weight.shape[1], y.dtype)
            ctx.save_for_backward(y, nbr, weight, packed)
            ctx.has_bias, ctx.run = bias is not None, run
            return _launch_conv(y, nbr, weight, bias, transposed=False, packed=packed, run=run)

        @staticmethod
        def backward(ctx, dout):
            y, nbr, weight, packed = ctx.saved_tensors
            need_dw = ctx.needs_input_grad[2] or (ctx.has_bias and ctx.needs_input_grad[3])
            dy, dw, db = _backward_impl(dout, y, nbr, weight, ctx.needs_input_grad[0], need_dw, packed=packed,
                                        run=ctx.run)
            return dy, None, dw, db if ctx.has_bias else None, None

    def _setup(ctx, inputs, output):
        y, nbr, weight, bias, run = inputs
        ctx.save_for_backward(y, nbr, weight)
        ctx.has_bias, ctx.run = bias is not None, run

    # ---- torch.compile: triton ops, which Inductor sees into: it launches the kernels
    # from its own wrapper and fuses the weight packing and the split reduction ----------
    @torch.library.triton_op("far::tgi_conv_t", mutates_args=())
    def _tgi_conv_top(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      run: int) -> torch.Tensor:
        return _launch_conv(y, nbr, weight, bias, transposed=False, wrap=True, run=run)

    @torch.library.triton_op("far::tgi_conv_backward_t", mutates_args=())
    def _tgi_conv_bwd_top(dout: torch.Tensor, y: torch.Tensor, nbr: torch.Tensor,
                          weight: torch.Tensor, run: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _backward_impl(dout, y, nbr, weight, True, True, wrap=True, run=run)

    def _backward_t(ctx, dout):
        y, nbr, weight = ctx.saved_tensors
        dy, dw, db = _tgi_conv_bwd_top(dout, y, nbr, weight, ctx.run)
        return dy, None, dw.to(weight.dtype), db.to(weight.dtype) if ctx.has_bias else None, None

    _tgi_conv_top.register_autograd(_backward_t, setup_context=_setup)

    # ---- the bottleneck projection fused in front of the conv: y = down(x) is not kept
    # for the backward but recomputed there (one narrow GEMM), since x
    # must be kept anyway for the projection's weight gradient -------------------------
    def _down(x: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor, again: bool = False) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        # ``again``: the backward's recomputation takes a fresh copy of the transposed
        # weight, so that torch.compile's CSE cannot merge it with the forward's GEMM
        # (it would, and the partitioner would then keep y: the tensor this op avoids
        # keeping). Same shapes and dtypes; only the operand layout differs.
        wt = wd.t().contiguous() if again else wd.t()
        return torch.addmm(bd, x2, wt).view(*x.shape[:-1], wd.shape[0])

    def _down_backward(dy: torch.Tensor, x: torch.Tensor, wd: torch.Tensor):
        g = dy.reshape(-1, dy.shape[-1])
        return (g @ wd).view_as(x), g.t() @ x.reshape(-1, x.shape[-1]), g.sum(0)

    class _TGIDownConvFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, wd, bd, nbr, weight, bias, run):
            y = _down(x, wd, bd)
            packed = pack_weight(weight, y.shape[-1] // weight.shape[1], y.dtype)
            ctx.save_for_backward(x, wd, bd, nbr, weight, packed)
            ctx.has_bias, ctx.run = bias is not None, run
            return _launch_conv(y, nbr, weight, bias, transposed=False, packed=packed, run=run)

        @staticmethod
        def backward(ctx, dout):
            x, wd, bd, nbr, weight, packed = ctx.saved_tensors
            y = _down(x, wd, bd)  # eager: the same GEMM as the forward's, bitwise
            dy, dw, db = _backward_impl(dout, y, nbr, weight, True, True, packed=packed, run=ctx.run)
            dx, dwd, dbd = _down_backward(dy, x, wd)
            return dx, dwd, dbd, None, dw, db if ctx.has_bias else None, None

    @torch.library.triton_op("far::tgi_down_conv_t", mutates_args=())
    def _tgi_down_conv_top(x: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor, nbr: torch.Tensor,
                           weight: torch.Tensor, bias: torch.Tensor | None, run: int) -> torch.Tensor:
        return _launch_conv(_down(x, wd, bd), nbr, weight, bias, transposed=False, wrap=True, run=run)

    @torch.library.triton_op("far::tgi_down_conv_backward_t", mutates_args=())
    def _tgi_down_conv_bwd_top(dout: torch.Tensor, x: torch.Tensor, wd: torch.Tensor, bd: torch.Tensor,
                               nbr: torch.Tensor, weight: torch.Tensor, run: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        y = _down(x, wd, bd, again=True)
        dy, dw, db = _backward_impl(dout, y, nbr, weight, True, True, wrap=True, run=run)
        dx, dwd, dbd = _down_backward(dy, x, wd)
        return dx, dwd, dbd, dw, db

    def _setup_down(ctx, inputs, output):
        x, wd, bd, nbr, weight, bias, run = inputs
        ctx.save_for_backward(x, wd, bd, nbr, weight)
        ctx.has_bias, ctx.run = bias is not None, run

    def _backward_down_t(ctx, dout):
        x, wd, bd, nbr, weight = ctx.saved_tensors
        dx, dwd, dbd, dw, db = _tgi_down_conv_bwd_top(dout, x, wd, bd, nbr, weight, ctx.run)
        return dx, dwd, dbd, None, dw.to(weight.dtype), db.to(weight.dtype) if ctx.has_bias else None, None

    _tgi_down_conv_top.register_autograd(_backward_down_t, setup_context=_setup_down)

def tgi_conv_triton(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int,
                    run: int = 0) -> torch.Tensor:
    """The Triton path (CUDA tensors); differentiable w.r.t. y, weight and bias.

    The weight is packed once per forward into (G, 27, Cg, Cg) in y's dtype (as autocast
    would cast it; the input gradient reads the same copy), the bias is read as stored,
    and the weight and bias gradients come back in the Conv3d layout in float32. Eager
    calls go through a plain autograd.Function; under torch.compile the triton_op (an opaque
    custom_op measured 0.8 ms slower per ViT-B step, docs/performance.md). ``run``: the
    table's :func:`temporal_run` (0: the general kernels, any table)."""
    assert weight.shape[0] // weight.shape[1] == groups
    y = y.contiguous()
    weight = weight.contiguous()
    if torch.compiler.is_compiling():
        return _tgi_conv_top(y, nbr, weight, bias, run)
    return _TGIConvFn.apply(y, nbr, weight, bias, run)


def tgi_down_conv_triton(x: torch.Tensor, down_weight: torch.Tensor, down_bias: torch.Tensor, nbr: torch.Tensor,
                         weight: torch.Tensor, bias: torch.Tensor | None, groups: int, run: int = 0) -> torch.Tensor:
    """conv(linear(x, down_weight, down_bias)) on CUDA: the TGI's bottleneck projection and
    grouped conv as one differentiable op that keeps x (which the projection's weight
    gradient needs anyway) instead of the bottleneck y, and recomputes y in the backward.

    Saves a (B, N, D/4) tensor per block (ViT-B batch 16: 9.6 MB) for one narrow GEMM.
    Under autocast the inputs are cast as F.linear would cast them; gradients flow back
    through the casts as they would through F.linear's. ``run`` as for :func:`tgi_conv_triton`."""
    assert weight.shape[0] // weight.shape[1] == groups and down_bias is not None
    if torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        x, down_weight, down_bias = x.to(dt), down_weight.to(dt), down_bias.to(dt)
    x = x.contiguous()
    weight = weight.contiguous()
    if torch.compiler.is_compiling():
        return _tgi_down_conv_top(x, down_weight, down_bias, nbr, weight, bias, run)
    return _TGIDownConvFn.apply(x, down_weight, down_bias, nbr, weight, bias, run)


def triton_usable(t: torch.Tensor, channels: int, groups: int) -> bool:
    """Whether the Triton kernels take a conv of ``channels`` in ``groups`` on ``t``'s
    device: Triton installed, a CUDA tensor, and a multiple of 16 channels per group
    (the kernels' ``tl.dot`` tiles)."""
    return HAVE_TRITON and t.is_cuda and (channels // groups) % 16 == 0


def tgi_conv(y: torch.Tensor, nbr: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int,
             run: int = 0) -> torch.Tensor:
    """Grouped 3x3x3 conv on the token order of ``nbr``: Triton on CUDA, PyTorch elsewhere."""
    if triton_usable(y, y.shape[-1], groups):
        return tgi_conv_triton(y, nbr, weight, bias, groups, run)
    return tgi_conv_gather(y, nbr, weight, bias, groups)
