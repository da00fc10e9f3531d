"""``DataConfig``: every knob of loading, sampling and augmentation in one validated place.

Built from a plain dict (a params YAML section) with :meth:`DataConfig.from_dict`; an
unknown key or a bad value raises ``ValueError`` naming the field, so a typo in a
config file fails loudly instead of silently falling back to a default.
The defaults below are the reference's (VideoMAE / MVD fine-tuning, Table 1 of the
paper) for SSv2; :func:`DataConfig.preset` gives the K400 differences.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

DATASETS = ("ssv2", "k400")
SAMPLINGS = ("segment", "dense")
SHORT_VIDEO_MODES = ("clamp", "loop")

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
    seed: int = 0  # per-item augmentation seeds when loading in the main process

    def __post_init__(self) -> None:
        # Normalise list-like fields (YAML gives lists) before validating.
        for name in ("scale", "ratio", "mean", "std", "pretrain_scales"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        _validate(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataConfig":
        """Build from a dict; unknown keys or bad values raise ``ValueError`` naming the field."""
        if not isinstance(values, dict):
            raise ValueError(f"DataConfig: expected a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"DataConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def preset(cls, dataset: str, **overrides: Any) -> "DataConfig":
        """The reference settings for ``dataset`` ("ssv2" or "k400"), with ``overrides``."""
        if dataset not in DATASETS:
            raise ValueError(f"DataConfig.dataset: {dataset!r} not in {DATASETS}")
        base: dict[str, Any] = {"dataset": dataset}
        if dataset == "k400":
            # K400: dense 16x4 sampling, 5 clips x 3 crops, flip allowed (Table 1).
            base.update(num_classes=400, sampling="dense", test_clips=5, flip=True)
        base.update(overrides)
        return cls.from_dict(base)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (tuples become lists) for logging / YAML."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def num_views(self) -> int:
        """Test views per video (temporal clips x spatial crops)."""
        return self.test_clips * self.test_crops


def _fail(name: str, value: Any, why: str) -> None:
    raise ValueError(f"DataConfig.{name}: {why} (got {value!r})")


def _validate(cfg: DataConfig) -> None:
    def check_type(name: str, types: type | tuple[type, ...]) -> Any:
        value = getattr(cfg, name)
        # bool is an int subclass: refuse True where a count is expected.
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            _fail(name, value, f"expected {types}")
        if not isinstance(value, types):
            _fail(name, value, f"expected {types}")
        return value

    if check_type("dataset", str) not in DATASETS:
        _fail("dataset", cfg.dataset, f"must be one of {DATASETS}")
    if check_type("sampling", str) not in SAMPLINGS:
        _fail("sampling", cfg.sampling, f"must be one of {SAMPLINGS}")
    if check_type("short_video", str) not in SHORT_VIDEO_MODES:
        _fail("short_video", cfg.short_video, f"must be one of {SHORT_VIDEO_MODES}")
    for name in ("train_list", "val_list", "root"):
        check_type(name, str)
    for name, low in (("num_classes", 1), ("num_frames", 1), ("stride", 1), ("input_size", 8),
                      ("short_side", 8), ("test_clips", 1), ("test_crops", 1), ("num_sample", 1),
                      ("randaug_magnitude", 0), ("randaug_num_ops", 0), ("max_replace_tries", 1), ("seed", 0)):
        if check_type(name, int) < low:
            _fail(name, getattr(cfg, name), f"must be >= {low}")
    if cfg.short_side < cfg.input_size:
        _fail("short_side", cfg.short_side, f"must be >= input_size ({cfg.input_size})")
    if cfg.test_crops not in (1, 3):
        # 1 = centre crop, 3 = left/centre/right (top/centre/bottom) as in the reference.
        _fail("test_crops", cfg.test_crops, "must be 1 or 3")
    if check_type("randaug_std", (int, float)) < 0:
        _fail("randaug_std", cfg.randaug_std, "must be >= 0")
    if not 0.0 <= check_type("reprob", (int, float)) <= 1.0:
        _fail("reprob", cfg.reprob, "must be in [0, 1]")
    check_type("flip", bool)
    if cfg.flip and cfg.dataset == "ssv2":
        _fail("flip", cfg.flip, "horizontal flip changes SSv2 labels (left/right); keep it off")
    for name, n in (("scale", 2), ("ratio", 2), ("mean", 3), ("std", 3)):
        value = getattr(cfg, name)
        if not isinstance(value, tuple) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            _fail(name, value, f"expected {n} numbers")
    if not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        _fail("scale", cfg.scale, "need 0 < min <= max <= 1")
    if not 0 < cfg.ratio[0] <= cfg.ratio[1]:
        _fail("ratio", cfg.ratio, "need 0 < min <= max")
    ps = cfg.pretrain_scales
    if not isinstance(ps, tuple) or not ps or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in ps
    ):
        _fail("pretrain_scales", ps, "expected a non-empty list of numbers in (0, 1]")
    if any(s <= 0 for s in cfg.std):
        _fail("std", cfg.std, "must be > 0")

