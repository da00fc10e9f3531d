"""Token layout: the checkerboard groups of sparse-dense attention and the token order.

Tokens come out of the patch embedding in (t, h, w) order. Sparse-dense attention
groups spatial positions in a checkerboard, group = (h + w) mod 2, each group holding
all T frames of its positions. FAR keeps tokens in *grouped order* from the embedding
on: group 0 first, then group 1; inside a group by spatial position, then time. Then

- sparse-dense attention is plain attention over the contiguous groups,
- temporal attention is plain attention over contiguous runs of T tokens,
- the group-averaged classifier is a mean over each contiguous group,

with no masks and no gathers inside attention. Only the token-group interaction needs
the (t, h, w) grid back.

Index arithmetic is done in numpy so the layout can be built under any default torch
device (models are built on ``meta`` for FLOP counting); tensors are made on access,
on the current default device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class TokenLayout:
    """The token grid (T, H, W) and the permutation into grouped order."""

    t: int
    h: int
    w: int

    @property
    def num_tokens(self) -> int:
        return self.t * self.h * self.w

    @cached_property
    def _spatial_group(self) -> np.ndarray:
        hh, ww = np.meshgrid(np.arange(self.h), np.arange(self.w), indexing="ij")
        return ((hh + ww) % 2).reshape(-1)

    @cached_property
    def _perm(self) -> np.ndarray:
        p = np.argsort(self._spatial_group * self.h * self.w + np.arange(self.h * self.w), kind="stable")
        # grouped index runs over (position in group order, t); natural index = t * P + p
        return (np.arange(self.t)[None, :] * (self.h * self.w) + p[:, None]).reshape(-1)

    @cached_property
    def group_sizes(self) -> tuple[int, ...]:
        """Number of tokens in each checkerboard group (equal when H*W is even)."""
        counts = np.bincount(self._spatial_group, minlength=2) * self.t
        return tuple(int(c) for c in counts if c > 0)

    @property
    def perm(self) -> torch.Tensor:
        """``grouped = natural[:, perm]``: natural (t, h, w) index of each grouped token."""
        return torch.as_tensor(self._perm)

    @property
    def inv_perm(self) -> torch.Tensor:
        """``natural = grouped[:, inv_perm]``."""
        return torch.as_tensor(np.argsort(self._perm, kind="stable"))

    # ---- definitions in the natural order (used by the reference path and tests) ----
    def natural_token_group(self) -> torch.Tensor:
        """Checkerboard group of each token in natural (t, h, w) order."""
        return torch.as_tensor(np.tile(self._spatial_group, self.t))

    def natural_token_position(self) -> torch.Tensor:
        """Spatial position p of each token in natural (t, h, w) order."""
        return torch.as_tensor(np.tile(np.arange(self.h * self.w), self.t))

    def mask(self, pattern: str) -> torch.Tensor:
        """Boolean (N, N) attention mask of ``pattern`` in natural order (True = attend)."""
        n = self.num_tokens
        if pattern == "global":
            return torch.ones(n, n, dtype=torch.bool)
        if pattern == "sparse_dense":
            g = self.natural_token_group()
            return g[:, None] == g[None, :]
        if pattern == "temporal":
            p = self.natural_token_position()
            return p[:, None] == p[None, :]
        raise ValueError(f"no mask for attention pattern {pattern!r}")
