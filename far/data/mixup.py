"""Mixup / CutMix for the training step (timm ``Mixup``), from a validated config.

It acts on whole batches, so it belongs to the training loop, not to the dataset:
``mixup = build_mixup(cfg); if mixup: video, target = mixup(video, label)``.
With ``mode="batch"`` timm needs an even batch; repeated augmentation (num_sample 2)
always gives one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MixupConfig:
    """Reference values (Table 1): mixup 0.8, cutmix 1.0, switch prob 0.5, smoothing 0.1."""

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.cutmix_minmax, list):
            object.__setattr__(self, "cutmix_minmax", tuple(self.cutmix_minmax))
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 2:
            raise ValueError(f"MixupConfig.num_classes: must be an int >= 2 (got {self.num_classes!r})")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"MixupConfig.{name}: must be >= 0 (got {getattr(self, name)!r})")
        for name in ("prob", "switch_prob", "label_smoothing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"MixupConfig.{name}: must be in [0, 1] (got {getattr(self, name)!r})")
        if self.mode not in ("batch", "pair", "elem"):
            raise ValueError(f"MixupConfig.mode: must be batch, pair or elem (got {self.mode!r})")
        if self.cutmix_minmax is not None and len(self.cutmix_minmax) != 2:
            raise ValueError(f"MixupConfig.cutmix_minmax: need 2 numbers (got {self.cutmix_minmax!r})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MixupConfig":
        """Build from a dict; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"MixupConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None


def build_mixup(cfg: MixupConfig | dict[str, Any]):
    """timm ``Mixup`` for ``cfg`` (a MixupConfig or dict), or None when mixup/cutmix are off.

    With it, use ``timm.loss.SoftTargetCrossEntropy`` (label smoothing is folded into the
    soft targets); without it, plain cross-entropy with label smoothing.
    """
    if isinstance(cfg, dict):
        cfg = MixupConfig.from_dict(cfg)
    if not cfg.active:
        return None
    import far.torchvision_compat  # noqa: F401  (must precede timm)
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, cutmix_minmax=cfg.cutmix_minmax,
                 prob=cfg.prob, switch_prob=cfg.switch_prob, mode=cfg.mode,
                 label_smoothing=cfg.label_smoothing, num_classes=cfg.num_classes)
