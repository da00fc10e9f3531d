"""The video ViT of VideoMAE/MVD fine-tuning, with every FAR variant (one builder).

Parameter names follow the VideoMAE fine-tuning model (``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.q_bias,attn.v_bias,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``fc_norm``, ``head``) so pre-trained weights load by name; FAR's new modules are
``blocks.N.tgi.*``. Input is (B, C, T, H, W).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import far.torchvision_compat  # noqa: F401  (must precede timm)
from timm.layers import DropPath, Mlp, trunc_normal_

from far.models.attention import Attention
from far.models.config import ModelConfig, model_config
from far.models.layout import TokenLayout
from far.models.pos_embed import position_embedding
from far.models.token_group import TokenGroupInteraction


class PatchEmbed(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch).

    Computed as what it is, a linear map of each flattened tubelet: cut the clip into
    tubelets (one copy), one GEMM with the conv weight viewed as (D, C*t*p*p). Same
    parameters (``proj`` stays the Conv3d, so checkpoints and fvcore's count are
    unchanged), same function (tested against ``F.conv3d``). cuDNN's Conv3d runs this
    shape as a generic implicit-GEMM kernel plus layout transforms, 3.7 ms of a ViT-B
    training step on an H100; as a GEMM the step is 4 ms shorter (docs/performance.md).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=self.kernel, stride=self.kernel)

    def forward(self, x: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T, H, W) -> tokens (B, N, D) in natural (t, h, w) order, or in ``order``
        (natural token indices) when given: the reordering is done on the tubelets,
        which need no gradient, rather than on the tokens."""
        b, c, t, h, w = x.shape
        kt, kp, _ = self.kernel
        if t % kt or h % kp or w % kp or c != self.proj.in_channels:
            raise ValueError(f"patch embedding: input (B, C, T, H, W) = {tuple(x.shape)} does not split into "
                             f"{self.proj.in_channels}-channel tubelets of {self.kernel}")
        tubelets = (x.reshape(b, c, t // kt, kt, h // kp, kp, w // kp, kp)
                    .permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * kt * kp * kp))
        if order is not None:
            tubelets = tubelets.index_select(1, order)
        return F.linear(tubelets, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class Block(nn.Module):
    """Pre-norm transformer block with an optional token-group interaction."""

    def __init__(self, cfg: ModelConfig, layout: TokenLayout, drop_path: float):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(cfg, layout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act_layer=nn.GELU)
        self.tgi_position = cfg.tgi
        self.tgi = TokenGroupInteraction(cfg, layout) if cfg.tgi != "none" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tgi_position == "before_attn":
            x = self.tgi(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        if self.tgi_position == "after_attn":
            x = self.tgi(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.tgi_position == "after_mlp":
            x = self.tgi(x)
        return x


class FARVisionTransformer(nn.Module):
    """ViT for video classification: the VideoMAE/MVD baseline and every FAR variant."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = TokenLayout(*cfg.grid)
        self.patch_embed = PatchEmbed(cfg)
        self.grouped = cfg.token_order == "grouped"
        if self.grouped:
            self.register_buffer("perm", self.layout.perm.clone(), persistent=False)
        self.register_buffer("pos_embed", self._pos_table(cfg.pos_embed), persistent=False)
        # stochastic depth rising linearly 0 -> drop_path (plain floats: the model may be built on 'meta')
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, self.layout, r) for r in rates)
        # Mean pooling: the encoder's final norm is replaced by fc_norm after pooling.
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(cfg.head_drop)
        concat = cfg.classifier == "group_mean" and cfg.group_combine == "concat"
        n_groups = len(self.layout.group_sizes)
        self.head = nn.Linear(cfg.embed_dim * (n_groups if concat else 1), cfg.num_classes)
        if cfg.token_order == "natural" and cfg.classifier == "group_mean":
            self.register_buffer("token_group", self.layout.natural_token_group(), persistent=False)
        self.apply(self._init_weights)
        with torch.no_grad():
            self.head.weight.mul_(cfg.head_init_scale)
            self.head.bias.mul_(cfg.head_init_scale)

    # ---- construction helpers -------------------------------------------------
    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _pos_table(self, flavour: str) -> torch.Tensor:
        table = position_embedding(flavour, *self.cfg.grid, self.cfg.embed_dim)
        return table[self.layout.perm] if self.grouped else table

    def set_pos_embed(self, flavour: str) -> None:
        """Switch the fixed position embedding to ``flavour`` ('videomae' or 'mvd')."""
        self.pos_embed.copy_(self._pos_table(flavour).to(self.pos_embed))
        self.cfg = model_config(self.cfg, pos_embed=flavour)

    # ---- timm integration (layer-wise lr decay, weight decay) ------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer ids for timm's layer-decay grouping: stem 0, block i -> i+1, head last."""
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks\.(\d+)", None)])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    # ---- forward ---------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, D) after the last block, in the model's token order."""
        x = self.patch_embed(x, self.perm if self.grouped else None)
        x = x + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: global mean (Table 4 'Global-Mean') or group means."""
        if self.cfg.classifier == "global_mean":
            return self.fc_norm(x.mean(dim=1))
        sizes = self.layout.group_sizes
        if self.grouped and len(set(sizes)) == 1:
            # Equal contiguous groups (even H*W): one reduction over a (B, G, N/G, D) view
            # and one LayerNorm call for all groups, instead of a split and one per group.
            normed = self.fc_norm(x.unflatten(1, (len(sizes), sizes[0])).mean(dim=2))  # (B, G, D)
            if self.cfg.group_combine == "concat":
                return normed.flatten(1)
            return normed.mean(dim=1)
        if self.grouped:
            means = [g.mean(dim=1) for g in x.split(sizes, dim=1)]
        else:
            means = [x[:, self.token_group == g].mean(dim=1) for g in range(len(self.layout.group_sizes))]
        tokens = [self.fc_norm(m) for m in means]
        if self.cfg.group_combine == "concat":
            return torch.cat(tokens, dim=-1)
        return torch.stack(tokens, dim=0).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.pool(self.forward_features(x))))


def build_model(spec: Mapping[str, Any] | ModelConfig | None = None, **overrides: Any) -> FARVisionTransformer:
    """Build any model of the family from a config mapping, e.g.
    ``build_model({"backbone": "vit_s", "variant": "far", "num_classes": 174})``."""
    return FARVisionTransformer(model_config(spec, **overrides))
