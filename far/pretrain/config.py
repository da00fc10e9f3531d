"""``PretrainConfig``: one validated, plain dataclass built from the YAML of a pre-training run.

Unknown keys and bad values raise ``ValueError`` naming the field (``pretrain.decoder.width:
...``). Every field is documented in docs/pretraining.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

METHODS = ("videomae", "mvd", "image_mae")
DISTILL_LOSSES = ("mse", "smooth_l1")


def _fail(name: str, msg: str) -> None:
    raise ValueError(f"pretrain config field {name!r}: {msg}")


def _check_keys(section: str, values: Mapping[str, Any], known: set[str]) -> None:
    if not isinstance(values, Mapping):
        _fail(section, f"expected a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{section}." if section else ""
        _fail(f"{prefix}{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")


@dataclass(frozen=True)
class DecoderConfig:
    """The narrow decoder (VideoMAE ViT-S: 4 blocks of width 192 = D/2, 3 heads)."""

    depth: int = 1
    width: int = 48
    heads: int = 3

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _fail(f"decoder.{name}", f"must be a positive integer, got {v!r}")
        if self.width % self.heads:
            _fail("decoder.width", f"{self.width} is not divisible by decoder.heads {self.heads}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow, with fine-tuning's conventions (far.engine.config.TrackingConfig):
    ``MLFLOW_TRACKING_URI`` in the environment overrides ``uri``."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths are taken from the working directory
    experiment: str = "far"
    run_name: str = ""  # "" = pretrain-<method>-<out folder name>

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            _fail("tracking.enabled", f"must be true or false, got {self.enabled!r}")
        for name in ("uri", "experiment", "run_name"):
            if not isinstance(getattr(self, name), str):
                _fail(f"tracking.{name}", f"must be a string, got {getattr(self, name)!r}")
        for name in ("uri", "experiment"):
            if not getattr(self, name):
                _fail(f"tracking.{name}", "must not be empty")


@dataclass(frozen=True)
class PretrainConfig:
    """A pre-training run. Learning rates are absolute (not scaled by batch/256)."""

    method: str = "videomae"
    model: dict = field(default_factory=lambda: {"backbone": "vit_tiny_cpu"})
    data: dict = field(default_factory=dict)
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
    deepspeed: dict = field(default_factory=dict)  # far.engine.deepspeed_setup.DeepSpeedSettings fields
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def model_spec(self) -> dict[str, Any]:
        return dict(self.model)


_TOP = {f.name for f in dataclasses.fields(PretrainConfig)}


def _validate(c: PretrainConfig) -> None:
    if c.method not in METHODS:
        _fail("method", f"{c.method!r} is not one of {', '.join(METHODS)}")
    if c.distill_loss not in DISTILL_LOSSES:
        _fail("distill_loss", f"{c.distill_loss!r} is not one of {', '.join(DISTILL_LOSSES)}")
    if not isinstance(c.model, Mapping) or "backbone" not in c.model:
        _fail("model", "must be a mapping with at least 'backbone' (e.g. vit_tiny_cpu)")
    try:  # the encoder config must be buildable
        from far.pretrain.models import encoder_config

        encoder_config(c.model, pos_embed="mvd" if c.method == "mvd" else "videomae", drop_path=c.drop_path)
    except ValueError as err:
        _fail("model", str(err))
    if not isinstance(c.data, Mapping):
        _fail("data", "must be a mapping of far.data DataConfig fields (or {random_clips: N})")
    num = (int, float)
    if not isinstance(c.normalize_target, bool):
        _fail("normalize_target", f"must be true or false, got {c.normalize_target!r}")
    if isinstance(c.mask_ratio, bool) or not isinstance(c.mask_ratio, num) or not 0.0 <= c.mask_ratio < 1.0:
        _fail("mask_ratio", f"must be a number in [0, 1), got {c.mask_ratio!r}")
    for name in ("epochs", "batch"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _fail(name, f"must be a positive integer, got {v!r}")
    if c.steps_per_epoch is not None and (isinstance(c.steps_per_epoch, bool) or not isinstance(c.steps_per_epoch, int)
                                          or c.steps_per_epoch < 1):
        _fail("steps_per_epoch", f"must be a positive integer or null, got {c.steps_per_epoch!r}")
    for name in ("num_workers", "seed"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            _fail(name, f"must be a non-negative integer, got {v!r}")
    if isinstance(c.keep_last, bool) or not isinstance(c.keep_last, int) or c.keep_last < 1:
        _fail("keep_last", f"must be a positive integer, got {c.keep_last!r}")
    for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "drop_path"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, num) or v < 0:
            _fail(name, f"must be a non-negative number, got {v!r}")
    if c.lr <= 0:
        _fail("lr", f"must be > 0, got {c.lr!r}")
    if c.min_lr > c.lr:
        _fail("min_lr", f"{c.min_lr} is above lr {c.lr}")
    if c.warmup_epochs > c.epochs:
        _fail("warmup_epochs", f"{c.warmup_epochs} is more than epochs {c.epochs}")
    if not 0.0 <= c.drop_path < 1.0:
        _fail("drop_path", f"must be in [0, 1), got {c.drop_path!r}")
    if (not isinstance(c.betas, tuple) or len(c.betas) != 2
            or not all(isinstance(b, num) and not isinstance(b, bool) and 0 <= b < 1 for b in c.betas)):
        _fail("betas", f"must be two numbers in [0, 1), got {c.betas!r}")
    for name in ("teacher_video", "teacher_image"):
        if not isinstance(getattr(c, name), str):
            _fail(name, f"must be a path string, got {getattr(c, name)!r}")
    if not isinstance(c.deepspeed, Mapping):
        _fail("deepspeed", "must be a mapping (zero_stage, precision, grad_clip)")
    try:
        from far.engine.deepspeed_setup import DeepSpeedSettings

        _check_keys("deepspeed", c.deepspeed, {f.name for f in dataclasses.fields(DeepSpeedSettings)})
        DeepSpeedSettings(**c.deepspeed)
    except ImportError:  # engine not installed: validated when training starts
        pass
    except ValueError as err:
        if str(err).startswith("pretrain config"):
            raise
        _fail("deepspeed", str(err))


def config_from_dict(values: Mapping[str, Any]) -> PretrainConfig:
    """Build and validate a :class:`PretrainConfig` from a plain mapping (a YAML document)."""
    values = dict(values or {})
    _check_keys("", values, _TOP)
    if "decoder" in values:
        _check_keys("decoder", values["decoder"], {f.name for f in dataclasses.fields(DecoderConfig)})
        values["decoder"] = DecoderConfig(**values["decoder"])
    if "tracking" in values:
        _check_keys("tracking", values["tracking"], {f.name for f in dataclasses.fields(TrackingConfig)})
        values["tracking"] = TrackingConfig(**values["tracking"])
    if "model" in values and isinstance(values["model"], Mapping):
        values["model"] = dict(values["model"])
    if "data" in values and isinstance(values["data"], Mapping):
        values["data"] = dict(values["data"])
    if "mask_ratio" not in values and values.get("method") == "image_mae":
        values["mask_ratio"] = 0.75  # MAE's image ratio
    return PretrainConfig(**values)


def load_config(path: str | Path, **overrides: Any) -> PretrainConfig:
    """Read a YAML file (optionally with top-level overrides) into a :class:`PretrainConfig`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrain config {path}: no such file")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"pretrain config {path}: expected a mapping at the top level")
    if isinstance(values.get("pretrain"), Mapping) and len(values) == 1:  # allow a `pretrain:` section
        values = values["pretrain"]
    return config_from_dict(dict(values) | {k: v for k, v in overrides.items() if v is not None})
