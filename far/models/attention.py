"""Multi-head self-attention with the attention patterns of Table 2, head-split or not.

Patterns per head set: ``global`` (every token), ``sparse_dense`` (tokens of the same
checkerboard group), ``temporal`` (tokens of the same spatial position). The
head-split patterns run ``global`` on the first heads and the other pattern on the
rest (ratio global:other, Table 5); outputs are concatenated before the usual output
projection.

The pattern is resolved when the layer is built: :class:`Attention` holds VideoMAE's
parameters (qkv without key bias, the output projection) and one parameter-free module
per head set, chosen by :func:`pattern_attention` for the pattern and the token order.
Two token orders compute the same function (tested):

- ``grouped`` (default, fast): tokens in checkerboard-group order, so every pattern is
  plain attention over contiguous, equal chunks of the sequence, batched into a
  single SDPA call (:class:`ChunkAttention`);
- ``natural``: tokens in (t, h, w) order with an explicit boolean mask
  (:class:`MaskedAttention`): the mathematical definition, kept as the reference.
"""

from __future__ import annotations

from typing import Callable

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


# The attention kernel (``attn_impl``): (q, k, v, attn_mask=None, dropout_p=0.0) -> output.
KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "sdpa": F.scaled_dot_product_attention,
    "explicit": explicit_attention,
}


# ---- one head set's attention: (q, k, v) each (B, heads, N, d) -> token-major (B, N, heads, d).
# SDPA's flash/cuDNN kernels write their output token-major already, so the transposes
# below are views and the folded chunks unfold for free; the only copy left in the layer
# is the head concatenation of a head split.
class FullAttention(nn.Module):
    """Every token attends to every token: the ``global`` pattern, in either token order."""

    def __init__(self, kernel: Callable[..., torch.Tensor]):
        super().__init__()
        self.kernel = kernel

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        return self.kernel(q, k, v, dropout_p=dropout_p).transpose(1, 2)


class MaskedAttention(nn.Module):
    """Attention under a boolean (N, N) mask (True = attend): the natural order's definition."""

    def __init__(self, kernel: Callable[..., torch.Tensor], mask: torch.Tensor):
        super().__init__()
        self.kernel = kernel
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        return self.kernel(q, k, v, attn_mask=self.mask, dropout_p=dropout_p).transpose(1, 2)


class ChunkAttention(nn.Module):
    """Attention inside ``chunks`` equal, contiguous chunks of the sequence (grouped order),
    folded into the batch dimension: one kernel call on views of the qkv output."""

    def __init__(self, kernel: Callable[..., torch.Tensor], chunks: int):
        super().__init__()
        self.kernel = kernel
        self.chunks = chunks

    def extra_repr(self) -> str:
        return f"chunks={self.chunks}"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        b, h, n, d = q.shape
        c = self.chunks

        def fold(t):  # (B, h, c*L, d) -> (B*c, h, L, d); a view of the qkv output
            return t.unflatten(2, (c, n // c)).transpose(1, 2).flatten(0, 1)

        out = self.kernel(fold(q), fold(k), fold(v), dropout_p=dropout_p)  # (B*c, h, L, d)
        return out.transpose(1, 2).reshape(b, n, h, d)


class SplitChunkAttention(nn.Module):
    """Attention inside contiguous chunks of unequal ``sizes`` (the checkerboard groups of
    an odd H*W grid): one kernel call per chunk."""

    def __init__(self, kernel: Callable[..., torch.Tensor], sizes: tuple[int, ...]):
        super().__init__()
        self.kernel = kernel
        self.sizes = sizes

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        outs = [
            self.kernel(qc, kc, vc, dropout_p=dropout_p).transpose(1, 2)
            for qc, kc, vc in zip(q.split(self.sizes, 2), k.split(self.sizes, 2), v.split(self.sizes, 2))
        ]
        return torch.cat(outs, dim=1)


def pattern_attention(pattern: str, cfg: ModelConfig, layout: TokenLayout) -> nn.Module:
    """The parameter-free attention of one head set: ``pattern`` ('global', 'temporal' or
    'sparse_dense') for the config's token order and kernel."""
    kernel = KERNELS[cfg.attn_impl]
    if pattern == "global":
        return FullAttention(kernel)
    if cfg.token_order == "natural":
        return MaskedAttention(kernel, layout.mask(pattern))
    # grouped order: a checkerboard group, or the T frames of one position, is a contiguous chunk
    sizes = layout.group_sizes if pattern == "sparse_dense" else (layout.t,) * (layout.h * layout.w)
    if len(set(sizes)) == 1:
        return ChunkAttention(kernel, len(sizes))
    return SplitChunkAttention(kernel, sizes)


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
    """VideoMAE attention (qkv without key bias) generalised to the FAR patterns: the head
    sets of ``cfg.attention`` side by side (Table 5's ratio), one output projection."""

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
        sets = head_sets(cfg)
        self.set_heads = [nh for nh, _ in sets]
        self.patterns = nn.ModuleList(pattern_attention(pattern, cfg, layout) for _, pattern in sets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim)
        p = self.attn_drop if self.training else 0.0
        # Split the head sets on the qkv tensor itself, before q/k/v are taken apart: the
        # backward of a split is one concatenation, while slicing q, k and v separately
        # would make autograd zero-fill and add a full-size gradient per slice (six of
        # them for a head split) before stacking: several extra passes in eager mode.
        parts = [qkv] if len(self.set_heads) == 1 else qkv.split(self.set_heads, dim=3)
        outs = []
        for part, attend in zip(parts, self.patterns):
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, N, d), views
            outs.append(attend(q, k, v, dropout_p=p))
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
