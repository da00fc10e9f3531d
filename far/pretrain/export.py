"""Write pre-trained weights in the OFFICIAL checkpoint layouts, so fine-tuning loads
them through exactly the code path of a downloaded checkpoint
(:func:`far.checkpoints.load_checkpoint`).

- VideoMAE: ``{"model": {encoder.*, encoder_to_decoder.weight, mask_token, decoder.*}, "epoch", "args"}``
- MVD: ``{"model": {patch_embed.*, blocks.*, norm.*, pos_embed (1, N, D), decoder_img.*, decoder_vid.*,
  down_img.weight, down_vid.weight, mask_token_img, mask_token_vid, pos_embed_img, pos_embed_vid}, ...}``
- image MAE (our teacher, no official counterpart at this size): the VideoMAE layout with a
  single-frame encoder, tagged ``far_pretrain.method = "image_mae"``.

Metadata sits beside ``model`` (``epoch``, ``args``, ``far_pretrain``); never a ``format``
key, which the loader reserves for this project's fine-tuned files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from far.checkpoints import atomic_save
from far.models.pos_embed import position_embedding


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}


def videomae_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """VideoMAEPretrainModel (or image MAE) -> the official VideoMAE pre-training keys."""
    return _cpu(model.state_dict())


def mvd_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """MVDPretrainModel -> the official MVD pre-training keys (no ``encoder.`` prefix,
    plus the frozen 3-D sin-cos ``pos_embed`` of shape (1, N, D) in natural order)."""
    out = {}
    for k, v in model.state_dict().items():
        out[k[len("encoder."):] if k.startswith("encoder.") else k] = v
    cfg = model.encoder.cfg
    out["pos_embed"] = position_embedding("mvd", *cfg.grid, cfg.embed_dim)[None]
    return _cpu(out)


def save_official(state: Mapping[str, torch.Tensor], path: str | Path, *, epoch: int,
                  args: Mapping[str, Any], method: str, **extra: Any) -> Path:
    """Atomically write ``{"model": state, "epoch", "args", "far_pretrain"}`` to ``path``."""
    payload = {"model": dict(state), "epoch": int(epoch), "args": dict(args),
               "far_pretrain": {"method": method, **extra}}
    return atomic_save(payload, path)
