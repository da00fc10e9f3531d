"""The classifier's pooling (Table 4), resolved for the token order when the model is built.

``global_mean`` averages all tokens. ``group_mean`` averages each checkerboard group; the
shared ``fc_norm`` then normalises each group's token, and the group tokens are
concatenated (``group_combine: concat``) or averaged. The modules here have no
parameters (``fc_norm`` and ``head`` stay the model's own, as VideoMAE names them).
"""

from __future__ import annotations

import torch
from torch import nn

from far.models.config import ModelConfig
from far.models.layout import TokenLayout


class Mean(nn.Module):
    """``x.mean(dim)``: the global token mean, or the average of the group tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dim)


class GroupMean(nn.Module):
    """(B, N, D) grouped tokens in ``groups`` equal contiguous groups -> (B, G, D) group
    means: one reduction over a (B, G, N/G, D) view."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).mean(dim=2)


class SplitGroupMean(nn.Module):
    """(B, N, D) grouped tokens in contiguous groups of unequal ``sizes`` (odd H*W) ->
    (B, G, D) group means."""

    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        self.sizes = sizes

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([g.mean(dim=1) for g in x.split(self.sizes, dim=1)], dim=1)


class MaskedGroupMean(nn.Module):
    """(B, N, D) tokens in natural order -> (B, G, D) group means: the definition, each
    token's group looked up in ``token_group``."""

    def __init__(self, token_group: torch.Tensor, groups: int):
        super().__init__()
        self.groups = groups
        self.register_buffer("token_group", token_group, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, self.token_group == g].mean(dim=1) for g in range(self.groups)], dim=1)


def classifier_pooling(cfg: ModelConfig, layout: TokenLayout) -> tuple[nn.Module, nn.Module, int]:
    """(token pooling, group combination, width of the head's input) of ``cfg.classifier``:
    the classifier's input is ``combine(fc_norm(pool(tokens)))``."""
    if cfg.classifier == "global_mean":
        return Mean(dim=1), nn.Identity(), cfg.embed_dim
    sizes = layout.group_sizes
    if cfg.token_order == "natural":
        pool: nn.Module = MaskedGroupMean(layout.natural_token_group(), len(sizes))
    elif len(set(sizes)) == 1:
        pool = GroupMean(len(sizes))
    else:
        pool = SplitGroupMean(sizes)
    if cfg.group_combine == "concat":
        return pool, nn.Flatten(start_dim=1), cfg.embed_dim * len(sizes)
    return pool, Mean(dim=1), cfg.embed_dim
