"""The optimisation recipe (Table 1 / VideoMAE-MVD fine-tuning).

* AdamW with timm's layer-decay parameter groups: block i gets lr scale
  ``ld ** (L + 1 - (i + 1))``, the stem (patch embedding) ``ld ** (L + 1)``, the rest
  (fc_norm, head) 1; no weight decay on 1-D parameters (biases, norms), nor on the
  names in ``model.no_weight_decay()`` (the position embedding).
* lr = base_lr x total_batch / 256 (linear scaling rule, videos not clips).
* Per-optimizer-step schedule: linear warm-up from ``warmup_start_lr`` over
  ``warmup_epochs``, then half a cosine to ``min_lr``. It is a pure function of the
  step, so a resumed run recomputes it instead of restoring scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import far.torchvision_compat  # noqa: F401  (timm imports torchvision)
from far.engine.config import OptimConfig


def scaled_lr(base_lr: float, total_batch: int) -> float:
    """Peak learning rate by the linear scaling rule the reference uses."""
    return base_lr * total_batch / 256.0


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """timm's layer-decay groups; each carries ``lr_scale`` (1.0 when decay is off)."""
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    no_wd = set(getattr(model, "no_weight_decay", lambda: set())())
    if cfg.layer_decay < 1.0:
        return param_groups_layer_decay(model, weight_decay=cfg.weight_decay, no_weight_decay_list=no_wd, layer_decay=cfg.layer_decay)
    groups = param_groups_weight_decay(model, weight_decay=cfg.weight_decay, no_weight_decay_list=no_wd)
    for g in groups:
        g["lr_scale"] = 1.0
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, peak_lr: float) -> torch.optim.AdamW:
    """torch AdamW over :func:`param_groups` (DeepSpeed takes it as a client optimizer)."""
    groups = param_groups(model, cfg)
    for g in groups:
        g["lr"] = peak_lr * g.get("lr_scale", 1.0)
    # CPU: the plain per-parameter update (what the byte-identical CPU tests pin). CUDA
    # (the model moved there first): the fused kernel; the per-parameter loop launched ~12
    # kernels per tensor, 2,000+ per step for ViT-B, and the GPU waited for them.
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    impl: dict[str, bool] = {"fused": True} if on_cuda else {"foreach": False}
    return torch.optim.AdamW(groups, lr=peak_lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **impl)


@dataclass(frozen=True)
class Schedule:
    """lr(step) for step in [0, total_steps): warm-up then cosine, per optimizer step."""

    peak_lr: float
    min_lr: float
    warmup_start_lr: float
    warmup_steps: int
    total_steps: int

    @classmethod
    def from_config(cls, cfg: OptimConfig, peak_lr: float, steps_per_epoch: int) -> "Schedule":
        return cls(
            peak_lr=peak_lr,
            min_lr=cfg.min_lr,
            warmup_start_lr=cfg.warmup_start_lr,
            warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
            total_steps=cfg.epochs * steps_per_epoch,
        )

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            # np.linspace(start, peak, warmup_steps) as in the reference: the last
            # warm-up step reaches the peak exactly.
            if self.warmup_steps == 1:
                return self.peak_lr
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * step / (self.warmup_steps - 1)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        i = min(step - self.warmup_steps, decay_steps)
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + math.cos(math.pi * i / decay_steps))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr x lr_scale`` (layer decay)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
