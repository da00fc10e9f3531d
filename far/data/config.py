"""``DataConfig``: every knob of loading, sampling and augmentation in one validated place.

Built from a plain dict (a params YAML section) with ``far.config.from_mapping``; an
unknown key or a bad value raises :class:`far.config.ConfigError` naming the field, so a
typo in a config file fails loudly instead of silently falling back to a default.
The defaults below are the reference's (VideoMAE / MVD fine-tuning, Table 1 of the
paper) for SSv2; :func:`DataConfig.preset` gives the K400 differences.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from far.config import check_choice, fail, from_mapping

DATASETS = ("ssv2", "k400")
SAMPLINGS = ("segment", "dense")
SHORT_VIDEO_MODES = ("clamp", "loop")
DECODERS = ("cpu", "nvdec")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """Dataset, sampling and augmentation settings (see docs/data.md).

    ``train_list``/``val_list`` are ``path label`` files as written by ``far data
    prepare``; relative paths in them are joined to ``root`` (the ``video_root`` of
    the preparation's report.json).
    """

    dataset: str = "ssv2"
    train_list: str = ""
    val_list: str = ""
    root: str = ""
    num_classes: int = 174
    num_frames: int = 16
    sampling: str = "segment"  # "segment" (TSN, SSv2) or "dense" (stride, K400)
    stride: int = 4  # dense sampling only: frames between two sampled frames
    short_video: str = "clamp"  # dense sampling of videos shorter than the window
    input_size: int = 224
    short_side: int = 224  # test: short side is resized to this before the crops
    test_clips: int = 2
    test_crops: int = 3
    randaug_magnitude: int = 9
    randaug_std: float = 0.5
    # Ops per image: the paper gives only (m, std); 4 is the reference code's default
    # (`--aa rand-m7-n4-mstd0.5-inc1`).
    randaug_num_ops: int = 4
    flip: bool = False  # never for SSv2: "left to right" would become "right to left"
    reprob: float = 0.25
    num_sample: int = 2  # repeated augmentation: augmented copies of one decoded clip
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    # Pre-training clips (VideoDataset mode "pretrain"): VideoMAE's multi-scale crop,
    # crop sides as fractions of the short side; no RandAugment, flip or erasing.
    pretrain_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_replace_tries: int = 50  # corrupt files: how many next indices to try before giving up
    # Keep whole decoded videos in memory, up to this many MiB per process (LRU), and sample
    # from them: a small dataset trained for many epochs (the synthetic default) is decoded
    # once instead of every epoch. 0 = off (decode the sampled frames each time).
    decoded_cache_mb: int = 0
    # "cpu": decord in the loader workers; "nvdec": the GPU's video decoder (far.data.nvdec:
    # wins on VP9 such as SSv2's, loses on long-GOP H.264 such as K400's).
    decoder: str = "cpu"
    seed: int = 0  # per-item augmentation seeds when loading in the main process

    def __post_init__(self) -> None:
        # Normalise list-like fields (YAML gives lists) before validating.
        for name in ("scale", "ratio", "mean", "std", "pretrain_scales"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _validate(self)

    @classmethod
    def preset(cls, dataset: str, **overrides: Any) -> "DataConfig":
        """The reference settings for ``dataset`` ("ssv2" or "k400"), with ``overrides``."""
        check_choice("dataset", dataset, DATASETS)
        base: dict[str, Any] = {"dataset": dataset}
        if dataset == "k400":
            # K400: dense 16x4 sampling, 5 clips x 3 crops, flip allowed (Table 1).
            base.update(num_classes=400, sampling="dense", test_clips=5, flip=True)
        base.update(overrides)
        return from_mapping(cls, base)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (tuples become lists) for logging / YAML."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def num_views(self) -> int:
        """Test views per video (temporal clips x spatial crops)."""
        return self.test_clips * self.test_crops


def _validate(cfg: DataConfig) -> None:
    check_choice("dataset", cfg.dataset, DATASETS)
    check_choice("sampling", cfg.sampling, SAMPLINGS)
    check_choice("short_video", cfg.short_video, SHORT_VIDEO_MODES)
    check_choice("decoder", cfg.decoder, DECODERS)
    for name, low in (("num_classes", 1), ("num_frames", 1), ("stride", 1), ("input_size", 8),
                      ("short_side", 8), ("test_clips", 1), ("test_crops", 1), ("num_sample", 1),
                      ("randaug_magnitude", 0), ("randaug_num_ops", 0), ("max_replace_tries", 1), ("seed", 0),
                      ("decoded_cache_mb", 0)):
        if getattr(cfg, name) < low:
            fail(name, f"must be >= {low} (got {getattr(cfg, name)!r})")
    if cfg.short_side < cfg.input_size:
        fail("short_side", f"must be >= input_size ({cfg.input_size}) (got {cfg.short_side!r})")
    if cfg.test_crops not in (1, 3):
        # 1 = centre crop, 3 = left/centre/right (top/centre/bottom) as in the reference.
        fail("test_crops", f"must be 1 or 3 (got {cfg.test_crops!r})")
    if cfg.randaug_std < 0:
        fail("randaug_std", f"must be >= 0 (got {cfg.randaug_std!r})")
    if not 0.0 <= cfg.reprob <= 1.0:
        fail("reprob", f"must be in [0, 1] (got {cfg.reprob!r})")
    if cfg.flip and cfg.dataset == "ssv2":
        fail("flip", "horizontal flip changes SSv2 labels (left/right); keep it off")
    if not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        fail("scale", f"need 0 < min <= max <= 1 (got {list(cfg.scale)})")
    if not 0 < cfg.ratio[0] <= cfg.ratio[1]:
        fail("ratio", f"need 0 < min <= max (got {list(cfg.ratio)})")
    if not all(0 < v <= 1 for v in cfg.pretrain_scales):
        fail("pretrain_scales", f"expected a non-empty list of numbers in (0, 1] (got {list(cfg.pretrain_scales)})")
    if any(s <= 0 for s in cfg.std):
        fail("std", f"must be > 0 (got {list(cfg.std)})")
