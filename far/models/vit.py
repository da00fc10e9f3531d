"""The video ViT of VideoMAE/MVD fine-tuning, with every FAR variant (one builder).

Parameter names follow the VideoMAE fine-tuning model (``patch_embed.proj``,
``blocks.N.{norm1,attn.qkv,attn.q_bias,attn.v_bias,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``fc_norm``, ``head``) so pre-trained weights load by name; FAR's new modules are
``blocks.N.tgi.*``. Input is (B, C, T, H, W).

The variant is resolved when the model is built, as timm does: each block receives
its attention (one parameter-free module per head set, far.models.attention) and its
token-group interaction in the slot of its position; the token order and the
classifier's pooling are modules chosen once. ``forward`` runs them in a straight line.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import far.torchvision_compat  # noqa: F401  (must precede timm)
from timm.layers import DropPath, Mlp, trunc_normal_

from far.models.attention import Attention
from far.models.config import TGI_POSITIONS, ModelConfig, model_config
from far.models.layout import TokenLayout
from far.models.pooling import classifier_pooling
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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Block(nn.Module):
    """Pre-norm transformer block; FAR's token-group interaction sits in one of three slots
    (before attention, after attention, after the MLP: Table 6), identities elsewhere."""

    def __init__(self, cfg: ModelConfig, layout: TokenLayout, drop_path: float):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(cfg, layout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), act_layer=nn.GELU)
        self.tgi = TokenGroupInteraction(cfg, layout) if cfg.tgi != "none" else None
        # The module is registered once, as ``tgi``, so its checkpoint keys are
        # blocks.N.tgi.* at every position; the slots only refer to it (a plain tuple,
        # outside the module tree).
        self.tgi_slots = tuple(self.tgi if cfg.tgi == p else _identity for p in TGI_POSITIONS if p != "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tgi_before_attn, tgi_after_attn, tgi_after_mlp = self.tgi_slots
        x = tgi_before_attn(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = tgi_after_attn(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return tgi_after_mlp(x)


class FARVisionTransformer(nn.Module):
    """ViT for video classification: the VideoMAE/MVD baseline and every FAR variant."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = TokenLayout(*cfg.grid)
        self.patch_embed = PatchEmbed(cfg)
        # The tokens' order from the embedding on: natural index of each token (grouped
        # order), or None (natural order).
        self.register_buffer("perm", self.layout.perm.clone() if cfg.token_order == "grouped" else None,
                             persistent=False)
        self.register_buffer("pos_embed", self._pos_table(cfg.pos_embed), persistent=False)
        # stochastic depth rising linearly 0 -> drop_path (plain floats: the model may be built on 'meta')
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, self.layout, r) for r in rates)
        # Mean pooling: the encoder's final norm is replaced by fc_norm after pooling.
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(cfg.head_drop)
        self.token_pool, self.group_combine, head_width = classifier_pooling(cfg, self.layout)
        self.head = nn.Linear(head_width, cfg.num_classes)
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
        return table[self.layout.perm] if self.cfg.token_order == "grouped" else table

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
        x = self.patch_embed(x, self.perm)
        x = x + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: global mean (Table 4 'Global-Mean') or group means,
        each through fc_norm, then combined (far.models.pooling)."""
        return self.group_combine(self.fc_norm(self.token_pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.pool(self.forward_features(x))))


def build_model(spec: Mapping[str, Any] | ModelConfig | None = None, **overrides: Any) -> FARVisionTransformer:
    """Build any model of the family from a config mapping, e.g.
    ``build_model({"backbone": "vit_s", "variant": "far", "num_classes": 174})``."""
    return FARVisionTransformer(model_config(spec, **overrides))
