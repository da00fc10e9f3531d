"""Targets and losses of VideoMAE (normalised pixels) and MVD (teacher features)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from far.data.config import IMAGENET_MEAN, IMAGENET_STD


def unnormalise(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Undo the ImageNet normalisation of a (B, C, T, H, W) clip."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1, 1)
    return x * s + m


def patchify(x: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet*patch*patch, C), tokens in natural (t, h, w) order."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # b, t', h', w', p0, p1, p2, c
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch, c)


def pixel_targets(x: torch.Tensor, mask: torch.Tensor, tubelet: int, patch: int,
                  mean=IMAGENET_MEAN, std=IMAGENET_STD, eps: float = 1e-6, normalize: bool = True) -> torch.Tensor:
    """VideoMAE's target: the masked tubelets' pixels, each tubelet normalised by its own
    mean and std (per channel, over the tubelet's pixels; unbiased std, as VideoMAE),
    after undoing the ImageNet normalisation of the input. (B, N_masked, p*C).
    ``normalize=False``: the raw [0, 1] pixels (VideoMAE without --normlize_target)."""
    with torch.no_grad():
        p = patchify(unnormalise(x.float(), mean, std), tubelet, patch)
        if normalize:
            p = (p - p.mean(dim=-2, keepdim=True)) / (p.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps)
        p = p.flatten(2)
        b = p.shape[0]
        return p[mask].reshape(b, -1, p.shape[-1])


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target)


def distillation_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(pred.float(), target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred.float(), target)
    raise ValueError(f"unknown distillation loss {kind!r} (mse or smooth_l1)")
