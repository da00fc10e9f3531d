"""``PretrainConfig``: one validated, plain dataclass built from the YAML of a pre-training run.

Built by :func:`far.config.from_mapping` (unknown keys, wrong types and bad values are
refused naming the dotted field, ``decoder.width: ...``; :func:`load_config` adds the
file). Every field is documented in docs/pretraining.md. Plain Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from far.config import ConfigError, check_choice, fail, from_mapping, read_yaml, to_plain
from far.engine.config import DeepSpeedConfig, TrackingConfig
from far.models.config import ModelConfig, model_config

METHODS = ("videomae", "mvd", "image_mae")
DISTILL_LOSSES = ("mse", "smooth_l1")


def encoder_config(model: Mapping[str, Any] | ModelConfig, *, pos_embed: str, drop_path: float = 0.0,
                   image: bool = False) -> ModelConfig:
    """The pre-training encoder's ModelConfig: baseline ViT, natural token order.

    ``image=True`` makes the single-frame encoder of the image-MAE teacher
    (num_frames = tubelet_size = 1: a (1, 16, 16) Conv3d = a 2-D patch embedding).
    """
    spec = model.to_dict() if isinstance(model, ModelConfig) else dict(model)
    spec.pop("variant", None)
    over: dict[str, Any] = dict(variant="baseline", token_order="natural", pos_embed=pos_embed, drop_path=drop_path,
                                tgi="none", classifier="global_mean", attention="global")
    if image:
        over |= dict(num_frames=1, tubelet_size=1)
    return model_config(spec, **over)


@dataclass(frozen=True)
class DecoderConfig:
    """The narrow decoder (VideoMAE ViT-S: 4 blocks of width 192 = D/2, 3 heads)."""

    depth: int = 1
    width: int = 48
    heads: int = 3

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)!r}")
        if self.width % self.heads:
            fail("width", f"{self.width} is not divisible by decoder.heads {self.heads}")


@dataclass(frozen=True)
class PretrainConfig:
    """A pre-training run. Learning rates are absolute (not scaled by batch/256)."""

    method: str = "videomae"
    model: dict[str, Any] = field(default_factory=lambda: {"backbone": "vit_tiny_cpu"})
    data: dict[str, Any] = field(default_factory=dict)
    mask_ratio: float = 0.9
    # VideoMAE's --normlize_target (default on): each masked tubelet's pixels normalised
    # by their own mean/std. Off: raw [0, 1] pixels (see docs/pretraining.md for when).
    normalize_target: bool = True
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    epochs: int = 10
    batch: int = 16
    steps_per_epoch: int | None = None  # None = one pass over the data
    lr: float = 1.5e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    drop_path: float = 0.0
    distill_loss: str = "mse"  # MVD only: mse or smooth_l1
    teacher_video: str = ""  # MVD only: VideoMAE pre-training checkpoint (or --teacher-video)
    teacher_image: str = ""  # MVD only: image-MAE checkpoint (or --teacher-image)
    num_workers: int = 0
    keep_last: int = 2
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("distill_loss", self.distill_loss, DISTILL_LOSSES)
        if "backbone" not in self.model:
            fail("model", "must be a mapping with at least 'backbone' (e.g. vit_tiny_cpu)")
        try:  # the encoder config must be buildable
            encoder_config(self.model, pos_embed="mvd" if self.method == "mvd" else "videomae", drop_path=self.drop_path)
        except ConfigError as err:
            raise err.under("model") from None
        if not 0.0 <= self.mask_ratio < 1.0:
            fail("mask_ratio", f"must be a number in [0, 1), got {self.mask_ratio!r}")
        for name in ("epochs", "batch", "keep_last"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            fail("steps_per_epoch", f"must be a positive integer or null, got {self.steps_per_epoch!r}")
        for name in ("num_workers", "seed"):
            if getattr(self, name) < 0:
                fail(name, f"must be a non-negative integer, got {getattr(self, name)!r}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "drop_path"):
            if getattr(self, name) < 0:
                fail(name, f"must be a non-negative number, got {getattr(self, name)!r}")
        if self.lr <= 0:
            fail("lr", f"must be > 0, got {self.lr!r}")
        if self.min_lr > self.lr:
            fail("min_lr", f"{self.min_lr} is above lr {self.lr}")
        if self.warmup_epochs > self.epochs:
            fail("warmup_epochs", f"{self.warmup_epochs} is more than epochs {self.epochs}")
        if not 0.0 <= self.drop_path < 1.0:
            fail("drop_path", f"must be in [0, 1), got {self.drop_path!r}")
        if not all(0 <= b < 1 for b in self.betas):
            fail("betas", f"must be two numbers in [0, 1), got {list(self.betas)}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def config_from_dict(values: Mapping[str, Any]) -> PretrainConfig:
    """Build and validate a :class:`PretrainConfig` from a plain mapping (a YAML document).
    The image-MAE teacher defaults to MAE's image mask ratio, 0.75."""
    values = dict(values or {})
    if "mask_ratio" not in values and values.get("method") == "image_mae":
        values["mask_ratio"] = 0.75
    return from_mapping(PretrainConfig, values)


def load_config(path: str | Path, **overrides: Any) -> PretrainConfig:
    """Read a YAML file (optionally with top-level overrides) into a :class:`PretrainConfig`;
    errors read ``<file>: <dotted.field>: <problem>``."""
    try:
        values = read_yaml(path)
        if isinstance(values.get("pretrain"), Mapping) and len(values) == 1:  # allow a `pretrain:` section
            values = dict(values["pretrain"])
        return config_from_dict(values | {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as err:
        raise err.in_file(path) from None
