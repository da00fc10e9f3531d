"""Token-group interaction (TGI): a residual 3-D convolution bottleneck over the token grid.

From Table 3's parameter and FLOP columns: 1x1x1 conv D -> D/4, 3x3x3 conv D/4 -> D/4
with ``groups = heads`` (Table 3's "w/o Group": groups = 1), 1x1x1 conv D/4 -> D, all
with biases, added residually. The 1x1x1 convolutions are applied as linear layers on
the tokens (the same function and parameter count), so only the narrow D/4 bottleneck
is moved to the (t, h, w) grid and back.

How the 3x3x3 conv runs (``tgi_impl``) is chosen when the module is built; only the
Triton kernels' test (a CUDA tensor, far.models.kernels.tgi_conv.triton_usable) waits for
the input, since it depends on the tensor's device.
"""

from __future__ import annotations

import torch
from torch import nn

from far.models.config import ModelConfig
from far.models.kernels.tgi_conv import (neighbour_table, temporal_run, tgi_conv_gather, tgi_down_conv_triton,
                                        triton_usable)
from far.models.layout import TokenLayout


class TokenGroupInteraction(nn.Module):
    """x + up(act(conv3x3x3(down(x)))) with the 3x3x3 conv on the (T, H, W) token grid."""

    def __init__(self, cfg: ModelConfig, layout: TokenLayout):
        super().__init__()
        width = cfg.embed_dim // cfg.tgi_reduction
        self.down = nn.Linear(cfg.embed_dim, width)
        self.conv = nn.Conv3d(width, width, kernel_size=3, padding=1, groups=cfg.tgi_num_groups)
        self.act = nn.GELU() if cfg.tgi_act == "gelu" else nn.Identity()
        self.up = nn.Linear(width, cfg.embed_dim)
        self.grid = (layout.t, layout.h, layout.w)
        self.groups = cfg.tgi_num_groups
        # perm: natural index of each token of the model's order; inv_perm the inverse
        # (the identity in natural order)
        orders = lambda: ((layout.perm, layout.inv_perm) if cfg.token_order == "grouped"
                          else (torch.arange(layout.num_tokens),) * 2)
        perm, inv = orders()
        self.register_buffer("perm", perm.clone(), persistent=False)
        self.register_buffer("inv_perm", inv.clone(), persistent=False)
        # (27, N) neighbour table in the model's token order (far.models.kernels.tgi_conv)
        self.register_buffer("nbr", neighbour_table(perm, inv, self.grid), persistent=False)
        # The grouped order's runs of T tokens let the Triton kernels gather a third as much
        # (far.models.kernels.tgi_conv.temporal_run; 0 in natural order). Checked on values,
        # so on the CPU also when the model is built on 'meta' (FLOP counting).
        with torch.device("cpu"):
            self.run = temporal_run(neighbour_table(*orders(), self.grid), layout.t)
        # "auto"/"triton": the fused Triton op where the input allows it (CUDA); otherwise
        # "auto" falls back to the plain definition, "triton" to the same formula in PyTorch.
        self.fused = cfg.tgi_impl in ("auto", "triton")
        self.conv_act = self.conv_on_table if cfg.tgi_impl in ("gather", "triton") else self.conv_on_grid

    def conv_on_grid(self, y: torch.Tensor) -> torch.Tensor:
        """act(conv(y)) by definition: the bottleneck (B, N, w) to the (T, H, W) grid,
        cuDNN's grouped Conv3d, back to the model's token order."""
        b, n, w = y.shape
        y = y.index_select(1, self.inv_perm).reshape(b, *self.grid, w).permute(0, 4, 1, 2, 3)  # (B, w, T, H, W)
        y = self.act(self.conv(y))
        return y.permute(0, 2, 3, 4, 1).reshape(b, n, w).index_select(1, self.perm)

    def conv_on_table(self, y: torch.Tensor) -> torch.Tensor:
        """act(conv(y)) with the neighbour-table formula on the model's token order (PyTorch)."""
        return self.act(tgi_conv_gather(y, self.nbr, self.conv.weight, self.conv.bias, self.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and triton_usable(x, self.down.out_features, self.groups):
            # CUDA: down projection + conv as one op that recomputes the bottleneck in the
            # backward instead of keeping it (far.models.kernels.tgi_conv)
            y = tgi_down_conv_triton(x, self.down.weight, self.down.bias, self.nbr, self.conv.weight,
                                     self.conv.bias, self.groups, self.run)
            return x + self.up(self.act(y))
        return x + self.up(self.conv_act(self.down(x)))
