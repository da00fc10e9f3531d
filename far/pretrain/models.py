"""The asymmetric encoder–decoders of VideoMAE, MVD and image MAE (small-scale, CPU).

The encoder reuses the fine-tuning model's modules (:mod:`far.models.vit`):
``patch_embed`` and ``blocks`` of a ``variant="baseline"``, ``token_order="natural"``
:class:`~far.models.vit.FARVisionTransformer`, so its parameter names are exactly the
fine-tuning model's, plus the pre-training encoder's final LayerNorm ``norm``. It sees
the visible tokens only: patch_embed + fixed position table, gather visible, blocks, norm.

Parameter names of :class:`VideoMAEPretrainModel` are those of the official VideoMAE
pre-training checkpoint (``encoder.*``, ``encoder_to_decoder.weight``, ``mask_token``,
``decoder.{blocks,norm,head}.*``), so ``model.state_dict()`` *is* that layout.
:class:`MVDPretrainModel` holds ``encoder.*`` plus ``decoder_img/vid``, ``down_img/vid``,
``mask_token_img/vid``, ``pos_embed_img/vid``; :mod:`far.pretrain.export` strips the
``encoder.`` prefix and adds the frozen ``pos_embed`` as MVD saves it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import far.torchvision_compat  # noqa: F401  (must precede timm)
from timm.layers import trunc_normal_

from far.models.config import ModelConfig, model_config
from far.pretrain.config import encoder_config
from far.models.layout import TokenLayout
from far.models.pos_embed import position_embedding, sincos_1d_interleaved
from far.models.vit import Block, FARVisionTransformer


def _xavier_init(m: nn.Module) -> None:
    """VideoMAE pre-training init: xavier-uniform Linear, zero bias, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PretrainEncoder(nn.Module):
    """patch_embed + fixed pos_embed + blocks + norm, run on the visible tokens only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.token_order != "natural" or cfg.attention != "global" or cfg.tgi != "none":
            raise ValueError("the pre-training encoder needs a baseline config in natural token order")
        self.cfg = cfg
        vit = FARVisionTransformer(cfg)
        self.patch_embed = vit.patch_embed
        self.blocks = vit.blocks
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.register_buffer("pos_embed", position_embedding(cfg.pos_embed, *cfg.grid, cfg.embed_dim),
                             persistent=False)  # (N, D), natural order; not a parameter
        self.apply(_xavier_init)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.cfg.grid

    @property
    def num_tokens(self) -> int:
        return self.cfg.num_tokens

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T, H, W); mask (B, N) bool, True = hidden. Returns (B, N_visible, D)."""
        x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        b, n, d = x.shape
        if mask is not None:
            x = x[~mask].reshape(b, -1, d)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class Decoder(nn.Module):
    """Narrow transformer decoder: ``blocks``, ``norm``, ``head`` (VideoMAE names)."""

    def __init__(self, width: int, depth: int, heads: int, out_dim: int, grid: tuple[int, int, int]):
        super().__init__()
        cfg = model_config(embed_dim=width, depth=max(depth, 1), num_heads=heads, token_order="natural",
                           drop_path=0.0, img_size=grid[1], patch_size=1, num_frames=grid[0], tubelet_size=1)
        layout = TokenLayout(*grid)
        self.blocks = nn.ModuleList(Block(cfg, layout, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, return_last: int) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, -return_last:]))


def _decode(decoder: Decoder, proj: nn.Linear, mask_token: torch.Tensor, pos: torch.Tensor,
            visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """VideoMAE decoding: [visible + pos | mask_token + pos] -> predictions of masked tokens."""
    x = proj(visible)
    b, _, d = x.shape
    pos = pos.to(x.dtype).expand(b, -1, -1)
    pos_vis = pos[~mask].reshape(b, -1, d)
    pos_mask = pos[mask].reshape(b, -1, d)
    full = torch.cat([x + pos_vis, mask_token.to(x.dtype) + pos_mask], dim=1)
    return decoder(full, pos_mask.shape[1])


def pixel_dim(cfg: ModelConfig) -> int:
    """Pixels of one tubelet: tubelet * patch * patch * channels (2*16*16*3 = 1536)."""
    return cfg.tubelet_size * cfg.patch_size * cfg.patch_size * cfg.in_chans


class VideoMAEPretrainModel(nn.Module):
    """VideoMAE: masked tubelet reconstruction of normalised pixels.

    Also the image-MAE teacher when built on an ``image=True`` encoder config (T = 1).
    """

    def __init__(self, enc_cfg: ModelConfig, dec_width: int, dec_depth: int, dec_heads: int):
        super().__init__()
        self.encoder = PretrainEncoder(enc_cfg)
        self.encoder_to_decoder = nn.Linear(enc_cfg.embed_dim, dec_width, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_width))
        self.decoder = Decoder(dec_width, dec_depth, dec_heads, pixel_dim(enc_cfg), enc_cfg.grid)
        self.decoder.apply(_xavier_init)
        nn.init.xavier_uniform_(self.encoder_to_decoder.weight)
        trunc_normal_(self.mask_token, std=0.02)
        # Decoder position table: VideoMAE's fixed 1-D sinusoid, not saved.
        self.register_buffer("decoder_pos", sincos_1d_interleaved(enc_cfg.num_tokens, dec_width)[None],
                             persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of the masked tubelets, (B, N_masked, tubelet*p*p*C), in token order."""
        vis = self.encoder(x, mask)
        return _decode(self.decoder, self.encoder_to_decoder, self.mask_token, self.decoder_pos, vis, mask)


class MVDPretrainModel(nn.Module):
    """MVD student: one encoder (3-D sin-cos positions), two decoders regressing the
    features of a frozen image teacher (``*_img``) and video teacher (``*_vid``)."""

    def __init__(self, enc_cfg: ModelConfig, dec_width: int, dec_depth: int, dec_heads: int,
                 img_dim: int, vid_dim: int):
        super().__init__()
        self.encoder = PretrainEncoder(enc_cfg)
        d, n = enc_cfg.embed_dim, enc_cfg.num_tokens
        self.down_img = nn.Linear(d, dec_width, bias=False)
        self.down_vid = nn.Linear(d, dec_width, bias=False)
        self.mask_token_img = nn.Parameter(torch.zeros(1, 1, dec_width))
        self.mask_token_vid = nn.Parameter(torch.zeros(1, 1, dec_width))
        self.decoder_img = Decoder(dec_width, dec_depth, dec_heads, img_dim, enc_cfg.grid)
        self.decoder_vid = Decoder(dec_width, dec_depth, dec_heads, vid_dim, enc_cfg.grid)
        for m in (self.decoder_img, self.decoder_vid, self.down_img, self.down_vid):
            m.apply(_xavier_init)
        trunc_normal_(self.mask_token_img, std=0.02)
        trunc_normal_(self.mask_token_vid, std=0.02)
        table = sincos_1d_interleaved(n, dec_width)[None]
        self.register_buffer("pos_embed_img", table.clone())  # saved, as in MVD checkpoints
        self.register_buffer("pos_embed_vid", table.clone())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image-teacher, video-teacher) feature predictions at the masked tokens."""
        vis = self.encoder(x, mask)
        img = _decode(self.decoder_img, self.down_img, self.mask_token_img, self.pos_embed_img, vis, mask)
        vid = _decode(self.decoder_vid, self.down_vid, self.mask_token_vid, self.pos_embed_vid, vis, mask)
        return img, vid


# ---- teachers ---------------------------------------------------------------------------
class FrozenTeachers(nn.Module):
    """The MVD teachers, frozen, in eval mode: image encoder per frame, video encoder on all tokens.

    The image teacher sees the first frame of every tubelet, so its T'*H*W tokens line up
    with the student's tokens (as MVD feeds the image teacher ``video[:, :, ::tubelet]``).
    """

    def __init__(self, image: PretrainEncoder, video: PretrainEncoder, tubelet: int):
        super().__init__()
        self.image, self.video, self.tubelet = image, video, tubelet
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always eval
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = x.shape
        frames = x[:, :, :: self.tubelet]  # (B, C, T', H, W)
        tp = frames.shape[2]
        frames = frames.transpose(1, 2).reshape(b * tp, c, 1, h, w)
        img = self.image(frames)  # (B*T', HW, Di)
        img = img.reshape(b, tp * img.shape[1], img.shape[2])
        vid = self.video(x)  # (B, N, Dv), all tokens
        return img, vid


def encoder_from_pretrain_state(state: Mapping[str, torch.Tensor], enc_cfg: ModelConfig,
                                prefix: str = "encoder.") -> PretrainEncoder:
    """A :class:`PretrainEncoder` loaded strictly from the ``prefix``-ed keys of ``state``."""
    enc = PretrainEncoder(enc_cfg)
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = enc.load_state_dict(sub, strict=False)
    if missing or unexpected:
        raise ValueError(f"teacher encoder does not fit: missing {missing}, unexpected {unexpected}")
    return enc


def feature_targets(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token layer-normalised teacher features at the masked tokens, (B, N_masked, D)."""
    b, _, d = feat.shape
    return F.layer_norm(feat.float(), (d,))[mask].reshape(b, -1, d)
