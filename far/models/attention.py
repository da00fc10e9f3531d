"""Multi-head self-attention with the attention patterns of Table 2, head-split or not.

Patterns per head set: ``global`` (every token), ``sparse_dense`` (tokens of the same
checkerboard group), ``temporal`` (tokens of the same spatial position). The
head-split patterns run ``global`` on the first heads and the other pattern on the
rest (ratio global:other, Table 5); outputs are concatenated before the usual output
projection.

Two token orders compute the same function (tested):
- ``grouped`` (default, fast): tokens in checkerboard-group order, so every pattern is
  plain attention over contiguous, equal chunks of the sequence, batched into a
  single SDPA call.
- ``natural``: tokens in (t, h, w) order with an explicit boolean mask: the
  mathematical definition, kept as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from far.models.config import ModelConfig
from far.models.layout import TokenLayout


def head_sets(cfg: ModelConfig) -> list[tuple[int, str]]:
    """The (number of heads, base pattern) sets of an attention pattern, in head order."""
    n_global, n_other = cfg.head_split
    return {
        "global": [(cfg.num_heads, "global")],
        "temporal": [(cfg.num_heads, "temporal")],
        "sparse_dense": [(cfg.num_heads, "sparse_dense")],
        "head_split_temporal": [(n_global, "global"), (n_other, "temporal")],
        "head_split_sparse_dense": [(n_global, "global"), (n_other, "sparse_dense")],
    }[cfg.attention]


def explicit_attention(q, k, v, attn_mask=None, dropout_p: float = 0.0):
    """softmax(q kᵀ / sqrt(d)) v written out, as the reference VideoMAE code does."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn.masked_fill(~attn_mask, float("-inf"))
    attn = attn.softmax(dim=-1)
    if dropout_p:
        attn = F.dropout(attn, dropout_p)
    return attn @ v


def chunked_attention(q, k, v, sizes: tuple[int, ...], kernel, dropout_p: float = 0.0):
    """Attention restricted to contiguous token chunks of ``sizes`` along dim -2.

    Equal chunks are folded into the batch dimension (one kernel call, views only);
    unequal chunks (odd grids) fall back to one call per chunk.
    """
    b, h, n, d = q.shape
    if len(set(sizes)) == 1:
        c = len(sizes)

        def fold(t):  # (B, h, c*L, d) -> (B*c, h, L, d); a view for q/k/v slices
            return t.unflatten(2, (c, n // c)).transpose(1, 2).flatten(0, 1)

        out = kernel(fold(q), fold(k), fold(v), dropout_p=dropout_p)
        return out.unflatten(0, (b, c)).transpose(1, 2).flatten(2, 3)
    outs = [
        kernel(qc, kc, vc, dropout_p=dropout_p)
        for qc, kc, vc in zip(q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2))
    ]
    return torch.cat(outs, dim=2)


class _CatLinear(torch.autograd.Function):
    """linear(cat(xs, -1), weight, bias), saving the xs instead of their concatenation.

    Bitwise the same forward as ``F.linear(torch.cat(xs, -1), weight, bias)`` (under
    autocast too: the weight and bias are cast to the inputs' dtype as autocast would);
    the backward rebuilds the concatenation (one copy) for the weight gradient. Measured
    alternative (kept out): one GEMM per head set accumulated with addmm needs no
    concatenation at all, but its narrow split-K weight-gradient GEMMs and the extra
    eager ops cost more (ViT-B compiled +0.75 ms of GPU time, eager CPU-bound)."""

    @staticmethod
    def forward(ctx, weight, bias, *xs):
        cat = torch.cat(xs, dim=-1)
        w = weight.to(cat.dtype)
        out = F.linear(cat, w, None if bias is None else bias.to(cat.dtype))
        ctx.save_for_backward(w, *xs)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad):
        w, *xs = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        d_cat = (g @ w).view(*xs[0].shape[:-1], w.shape[1])
        # The concatenation is rebuilt with the head sets in *reverse* order (and the
        # weight gradient's column blocks put back; a C x C copy). An identical
        # cat(xs) would be merged with the forward's by AOTAutograd's CSE under
        # torch.compile, and the partitioner would then keep that forward
        # concatenation for the backward: the very tensor this Function avoids saving
        # (ViT-B: +0.43 GiB compiled peak).
        widths = [x.shape[-1] for x in xs]
        d_w_rev = g.t() @ torch.cat(xs[::-1], dim=-1).reshape(-1, w.shape[1])
        d_w = torch.cat(d_w_rev.split(widths[::-1], dim=1)[::-1], dim=1).to(ctx.dtypes[0])
        d_b = None if ctx.dtypes[1] is None else g.sum(0).to(ctx.dtypes[1])
        return (d_w, d_b, *d_cat.split(widths, dim=-1))


class Attention(nn.Module):
    """VideoMAE attention (qkv without key bias) generalised to the FAR patterns."""

    def __init__(self, cfg: ModelConfig, layout: TokenLayout):
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if cfg.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = cfg.attn_drop
        self.sets = head_sets(cfg)
        self.token_order = cfg.token_order
        self.kernel = F.scaled_dot_product_attention if cfg.attn_impl == "sdpa" else explicit_attention
        self.layout = layout
        self._chunks = {
            "global": (layout.num_tokens,),
            "sparse_dense": layout.group_sizes,
            "temporal": (layout.t,) * (layout.h * layout.w),
        }
        if cfg.token_order == "natural":
            for _, pattern in self.sets:
                if pattern != "global":
                    self.register_buffer(f"mask_{pattern}", layout.mask(pattern), persistent=False)

    def _attend(self, q, k, v, pattern: str) -> torch.Tensor:
        """One head set's attention, returned token-major: (B, N, heads, d).

        SDPA's flash/cuDNN kernels write their output token-major already, so the
        transposes below are views and the folded sparse-dense chunks unfold for free;
        the only copy left in the layer is the head concatenation of a head split."""
        p = self.attn_drop if self.training else 0.0
        if pattern == "global":
            return self.kernel(q, k, v, dropout_p=p).transpose(1, 2)
        if self.token_order == "natural":
            return self.kernel(q, k, v, attn_mask=getattr(self, f"mask_{pattern}"), dropout_p=p).transpose(1, 2)
        b, h, n, d = q.shape
        sizes = self._chunks[pattern]
        if len(set(sizes)) == 1:
            c = len(sizes)

            def fold(t):  # (B, h, c*L, d) -> (B*c, h, L, d); a view of the qkv output
                return t.unflatten(2, (c, n // c)).transpose(1, 2).flatten(0, 1)

            out = self.kernel(fold(q), fold(k), fold(v), dropout_p=p)  # (B*c, h, L, d)
            return out.transpose(1, 2).reshape(b, n, h, d)
        outs = [
            self.kernel(qc, kc, vc, dropout_p=p).transpose(1, 2)
            for qc, kc, vc in zip(q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2))
        ]
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim)
        # Split the head sets on the qkv tensor itself, before q/k/v are taken apart: the
        # backward of a split is one concatenation, while slicing q, k and v separately
        # would make autograd zero-fill and add a full-size gradient per slice (six of
        # them for a head split) before stacking: several extra passes in eager mode.
        parts = [qkv] if len(self.sets) == 1 else qkv.split([nh for nh, _ in self.sets], dim=3)
        outs = []
        for part, (_, pattern) in zip(parts, self.sets):
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, d), views
            outs.append(self._attend(q, k, v, pattern))
        if len(outs) == 1:
            return self.proj(outs[0].reshape(b, n, c))
        if torch.jit.is_tracing() or not torch.is_grad_enabled():
            # No backward to save memory for; and FLOP counting (fvcore traces with
            # torch.jit) must see the projection as the plain linear it is.
            return self.proj(torch.cat(outs, dim=2).reshape(b, n, c))
        # Head split: proj(cat(outs)) without keeping the concatenation for the backward
        # (it is rebuilt there from the attention outputs, which SDPA keeps anyway): one
        # D-wide tensor less per block, 0.43 GiB of the ViT-B step's peak.
        return _CatLinear.apply(self.proj.weight, self.proj.bias, *(o.reshape(b, n, -1) for o in outs))
