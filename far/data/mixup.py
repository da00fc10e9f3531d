"""Mixup / CutMix for the training step: the ``augment`` config and timm's ``Mixup``.

It acts on whole batches, so it belongs to the training loop, not to the dataset:
``mixup = build_mixup(cfg, num_classes); if mixup: video, target = mixup(video, label)``.
With ``mode="batch"`` timm needs an even batch; repeated augmentation (num_sample 2)
always gives one. :class:`AugmentConfig` is the one augmentation config of a run, and
:meth:`AugmentConfig.timm_kwargs` the one place its fields become timm's arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from far.config import check_choice, fail

MIXUP_MODES = ("batch", "pair", "elem")


@dataclass(frozen=True)
class AugmentConfig:
    """Batch-level augmentation (timm Mixup/CutMix) and label smoothing (Table 1)."""

    mixup: float = 0.8  # Beta(alpha, alpha) for Mixup; 0 = off
    cutmix: float = 1.0  # Beta(alpha, alpha) for CutMix; 0 = off
    cutmix_minmax: tuple[float, float] | None = None
    mixup_prob: float = 1.0  # probability of applying either per batch
    switch_prob: float = 0.5  # probability of CutMix instead of Mixup when both are on
    mode: str = "batch"
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        for f in ("mixup", "cutmix"):
            if getattr(self, f) < 0:
                fail(f, f"must be >= 0, got {getattr(self, f)}")
        for f in ("mixup_prob", "switch_prob"):
            if not 0 <= getattr(self, f) <= 1:
                fail(f, f"must be in [0, 1], got {getattr(self, f)}")
        if not 0 <= self.label_smoothing < 1:
            fail("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        check_choice("mode", self.mode, MIXUP_MODES)
        mm = self.cutmix_minmax
        if mm is not None and not 0 < mm[0] < mm[1] <= 1:
            fail("cutmix_minmax", f"need [min, max] with 0 < min < max <= 1 or null, got {list(mm)}")

    @property
    def mixup_active(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None)

    def timm_kwargs(self, num_classes: int) -> dict[str, Any]:
        """The arguments of ``timm.data.Mixup`` for this config."""
        return dict(mixup_alpha=self.mixup, cutmix_alpha=self.cutmix, cutmix_minmax=self.cutmix_minmax,
                    prob=self.mixup_prob, switch_prob=self.switch_prob, mode=self.mode,
                    label_smoothing=self.label_smoothing, num_classes=num_classes)


class VideoMixup:
    """timm Mixup/CutMix on (B, C, T, H, W) clips.

    timm's CutMix indexes dims 2-3 as (H, W); the clip is viewed as (B, C*T, H, W) for
    the call, so the box is the same on every frame, as in the reference's image-style
    CutMix of video clips.
    """

    def __init__(self, mixup: Any):
        self.mixup = mixup

    def __call__(self, video: Any, label: Any) -> tuple[Any, Any]:
        b, c, t, h, w = video.shape
        flat = video.reshape(b, c * t, h, w)  # a view: timm mixes in place
        flat, target = self.mixup(flat, label)
        return flat.reshape(b, c, t, h, w), target


def build_mixup(cfg: AugmentConfig, num_classes: int) -> VideoMixup | None:
    """timm ``Mixup`` for ``cfg`` on video clips, or None when Mixup/CutMix are off.

    With it, use ``timm.loss.SoftTargetCrossEntropy`` (label smoothing is folded into the
    soft targets); without it, plain cross-entropy with label smoothing. timm draws λ
    and the boxes from ``np.random``: the training process seeds it
    (far.engine.data.seed_process).
    """
    if not cfg.mixup_active:
        return None
    import far.torchvision_compat  # noqa: F401  (must precede timm)
    from timm.data import Mixup

    return VideoMixup(Mixup(**cfg.timm_kwargs(num_classes)))
