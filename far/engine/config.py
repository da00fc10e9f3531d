"""``RunConfig``: one fully resolved fine-tuning run, validated before any work starts.

A run config is a YAML mapping (written by the Snakemake pipeline) with the sections
below; docs/training.md documents every field. Every section is a frozen dataclass;
:func:`load_run_config` / :meth:`RunConfig.from_dict` refuse unknown keys, missing
required keys and bad values with a message naming the dotted field
(``optim.layer_decay: must be in (0, 1], got 1.5``).

Sections delegated to other packages are validated by them, with their errors
re-raised under the section name: ``model`` by :func:`far.models.model_config`,
``data`` by :meth:`far.data.config.DataConfig.from_dict`.

Defaults are the paper's Table 1 recipe for ViT-S on SSv2 where one exists; every
default lives here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from far.engine.deepspeed_setup import PRECISIONS, ZERO_STAGES, DeepSpeedSettings


class ConfigError(ValueError):
    """A run config problem; the message starts with the dotted field name."""


def _fail(name: str, msg: str) -> None:
    raise ConfigError(f"{name}: {msg}")


# ---- sections -------------------------------------------------------------------
@dataclass(frozen=True)
class OptimConfig:
    """AdamW + layer-wise lr decay + per-step warm-up/cosine (Table 1)."""

    epochs: int = 40
    warmup_epochs: float = 5.0
    base_lr: float = 1e-3  # per 256 videos: lr = base_lr * batch.total / 256
    min_lr: float = 1e-6  # end of the cosine
    warmup_start_lr: float = 0.0  # linear warm-up starts here (reference: 0)
    weight_decay: float = 0.05  # never on biases, norms (1-D) or the position embedding
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 0.7  # 0.7 ViT-S / 0.75 ViT-B on SSv2; 1.0 = off

    def validate(self, name: str) -> None:
        if self.epochs < 1:
            _fail(f"{name}.epochs", f"must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            _fail(f"{name}.warmup_epochs", f"must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        for f in ("base_lr",):
            if not getattr(self, f) > 0:
                _fail(f"{name}.{f}", f"must be > 0, got {getattr(self, f)}")
        for f in ("min_lr", "warmup_start_lr", "weight_decay", "eps"):
            if getattr(self, f) < 0:
                _fail(f"{name}.{f}", f"must be >= 0, got {getattr(self, f)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail(f"{name}.betas", f"need two numbers in [0, 1), got {list(self.betas)}")
        if not 0 < self.layer_decay <= 1:
            _fail(f"{name}.layer_decay", f"must be in (0, 1], got {self.layer_decay}")


BATCH_DERIVE = ("accumulation", "micro", "total")


@dataclass(frozen=True)
class BatchConfig:
    """Batch sizes, in *videos* (as the paper counts them).

    ``total = micro x accumulation x world_size``. The config gives two of the three
    and names the third in ``derive``; the derived value may also be written (it is
    then checked). The world size is only known when the job starts, so
    :meth:`resolve` does the arithmetic then and refuses a remainder.
    With repeated augmentation (``data.num_sample`` = n) each rank forwards
    ``micro x n`` clips per step; the lr scaling uses ``total`` (videos), as the
    reference does.
    """

    derive: str = "accumulation"
    total: int | None = None
    micro: int | None = None
    accumulation: int | None = None
    eval_micro: int = 8  # clips per forward at validation/test time (one rank)
    num_workers: int = 4  # DataLoader workers per rank (0 = load in the main process)

    def validate(self, name: str) -> None:
        if self.derive not in BATCH_DERIVE:
            _fail(f"{name}.derive", f"must be one of {BATCH_DERIVE}, got {self.derive!r}")
        for f in ("total", "micro", "accumulation"):
            v = getattr(self, f)
            if v is None and f != self.derive:
                _fail(f"{name}.{f}", f"required when derive is {self.derive!r}")
            if v is not None and v < 1:
                _fail(f"{name}.{f}", f"must be >= 1, got {v}")
        if self.eval_micro < 1:
            _fail(f"{name}.eval_micro", f"must be >= 1, got {self.eval_micro}")
        if self.num_workers < 0:
            _fail(f"{name}.num_workers", f"must be >= 0, got {self.num_workers}")

    def resolve(self, world_size: int) -> "ResolvedBatch":
        """The three numbers for ``world_size`` ranks; ConfigError if they do not fit."""
        t, m, a = self.total, self.micro, self.accumulation
        if self.derive == "accumulation":
            derived, ok = divmod(t, m * world_size)
            if ok or derived < 1:
                _fail("batch.total", f"{t} is not micro ({m}) x world size ({world_size}) x an integer accumulation")
            a_new = derived
            if a is not None and a != a_new:
                _fail("batch.accumulation", f"given {a} but total/(micro x world size) = {t}/({m}x{world_size}) = {a_new}")
            a = a_new
        elif self.derive == "micro":
            derived, ok = divmod(t, a * world_size)
            if ok or derived < 1:
                _fail("batch.total", f"{t} is not accumulation ({a}) x world size ({world_size}) x an integer micro-batch")
            if m is not None and m != derived:
                _fail("batch.micro", f"given {m} but total/(accumulation x world size) = {derived}")
            m = derived
        else:
            derived = m * a * world_size
            if t is not None and t != derived:
                _fail("batch.total", f"given {t} but micro x accumulation x world size = {m}x{a}x{world_size} = {derived}")
            t = derived
        return ResolvedBatch(total=t, micro=m, accumulation=a, world_size=world_size)


@dataclass(frozen=True)
class ResolvedBatch:
    total: int
    micro: int
    accumulation: int
    world_size: int


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

    def validate(self, name: str) -> None:
        for f in ("mixup", "cutmix"):
            if getattr(self, f) < 0:
                _fail(f"{name}.{f}", f"must be >= 0, got {getattr(self, f)}")
        for f in ("mixup_prob", "switch_prob"):
            if not 0 <= getattr(self, f) <= 1:
                _fail(f"{name}.{f}", f"must be in [0, 1], got {getattr(self, f)}")
        if not 0 <= self.label_smoothing < 1:
            _fail(f"{name}.label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.mode not in MIXUP_MODES:
            _fail(f"{name}.mode", f"must be one of {MIXUP_MODES}, got {self.mode!r}")
        if self.cutmix_minmax is not None and (len(self.cutmix_minmax) != 2 or not 0 < self.cutmix_minmax[0] < self.cutmix_minmax[1] <= 1):
            _fail(f"{name}.cutmix_minmax", f"need [min, max] with 0 < min < max <= 1 or null, got {self.cutmix_minmax}")

    @property
    def mixup_active(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None)


@dataclass(frozen=True)
class DeepSpeedConfig:
    zero_stage: int = 0
    precision: str = "auto"  # auto = bf16 (or fp16) on GPU; CPU is always fp32
    grad_clip: float | None = None  # max global grad norm; null = off (reference)

    def validate(self, name: str) -> None:
        if self.zero_stage not in ZERO_STAGES:
            _fail(f"{name}.zero_stage", f"must be one of {ZERO_STAGES}, got {self.zero_stage}")
        if self.precision not in PRECISIONS:
            _fail(f"{name}.precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            _fail(f"{name}.grad_clip", f"must be > 0 or null, got {self.grad_clip}")

    def settings(self) -> DeepSpeedSettings:
        return DeepSpeedSettings(zero_stage=self.zero_stage, precision=self.precision, grad_clip=self.grad_clip)


@dataclass(frozen=True)
class CheckpointConfig:
    keep_last: int = 2  # complete training checkpoints kept in OUT/checkpoints
    every_epochs: int = 1

    def validate(self, name: str) -> None:
        if self.keep_last < 1:
            _fail(f"{name}.keep_last", f"must be >= 1, got {self.keep_last}")
        if self.every_epochs < 1:
            _fail(f"{name}.every_epochs", f"must be >= 1, got {self.every_epochs}")


@dataclass(frozen=True)
class TestConfig:
    """Multi-view test (end of training and ``far test``) and per-epoch validation."""

    clips: int = 2  # temporal views: 2 SSv2, 5 K400
    crops: int = 3  # spatial crops: 3 (or 1)
    val_every: int = 1  # single-view validation every N epochs (and always at the last)
    val_max_videos: int | None = None  # validate on the first N videos only (null = all)
    run_at_end: bool = True  # run the multi-view test when training finishes

    def validate(self, name: str) -> None:
        if self.clips < 1:
            _fail(f"{name}.clips", f"must be >= 1, got {self.clips}")
        if self.crops not in (1, 3):
            _fail(f"{name}.crops", f"must be 1 or 3, got {self.crops}")
        if self.val_every < 1:
            _fail(f"{name}.val_every", f"must be >= 1, got {self.val_every}")
        if self.val_max_videos is not None and self.val_max_videos < 1:
            _fail(f"{name}.val_max_videos", f"must be >= 1 or null, got {self.val_max_videos}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. ``MLFLOW_TRACKING_URI`` in the environment overrides ``uri``."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths are taken from the working directory
    experiment: str = "far"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self, name: str) -> None:
        if not self.uri:
            _fail(f"{name}.uri", "must not be empty")
        if not self.experiment:
            _fail(f"{name}.experiment", "must not be empty")
        for k, v in self.tags.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
                _fail(f"{name}.tags", f"tags are string keys to scalar values, got {k!r}: {v!r}")


@dataclass(frozen=True)
class LogConfig:
    every_steps: int = 20  # a log line every N optimizer steps (non-interactive runs)
    progress_bar: str = "auto"  # auto = only when stderr is a terminal; "on"/"off"

    def validate(self, name: str) -> None:
        if self.every_steps < 1:
            _fail(f"{name}.every_steps", f"must be >= 1, got {self.every_steps}")
        if self.progress_bar not in ("auto", "on", "off"):
            _fail(f"{name}.progress_bar", f"must be auto, on or off, got {self.progress_bar!r}")

    def show_bars(self, requested: bool | None = None) -> bool:
        """Whether to draw progress bars: ``--progress/--no-progress`` if given, else the setting."""
        if requested is not None:
            return requested
        import sys

        return sys.stderr.isatty() if self.progress_bar == "auto" else self.progress_bar == "on"


# ---- the run ------------------------------------------------------------------------
SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "batch": BatchConfig,
    "augment": AugmentConfig,
    "deepspeed": DeepSpeedConfig,
    "checkpoint": CheckpointConfig,
    "test": TestConfig,
    "tracking": TrackingConfig,
    "log": LogConfig,
}
REQUIRED_TOP = ("model", "data", "seed")


@dataclass(frozen=True)
class RunConfig:
    """A complete fine-tuning run. ``model``/``data`` stay plain dicts here (their own
    packages own their schema); :meth:`model_config`/:meth:`data_config` build them."""

    model: dict[str, Any]
    data: dict[str, Any]
    seed: int
    init: str | None = None  # pre-trained checkpoint (any format far.checkpoints reads) or null
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=lambda: BatchConfig(total=384, micro=12))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    test: TestConfig = field(default_factory=TestConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # -- construction --
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        if not isinstance(values, Mapping):
            raise ConfigError(f"run config: expected a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            _fail(unknown[0], f"unknown key (known top-level keys: {sorted(known)})")
        for k in REQUIRED_TOP:
            if k not in values:
                _fail(k, "required")
        kwargs: dict[str, Any] = {}
        for name in ("model", "data"):
            if not isinstance(values[name], Mapping):
                _fail(name, f"expected a mapping, got {type(values[name]).__name__}")
            kwargs[name] = dict(values[name])
        seed = values["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            _fail("seed", f"expected a non-negative integer, got {seed!r}")
        kwargs["seed"] = seed
        init = values.get("init")
        if init is not None and (not isinstance(init, str) or not init):
            _fail("init", f"expected a checkpoint path or null, got {init!r}")
        kwargs["init"] = init
        for name, section in SECTIONS.items():
            if name in values:
                sub = values[name]
                if sub is None:
                    sub = {}
                kwargs[name] = _section(section, sub, name)
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Cross-checks plus the delegated sections (model, data)."""
        for name in SECTIONS:
            getattr(self, name).validate(name)
        mc = self.model_config()
        dc = self.data_config()
        if mc.num_classes != dc.num_classes:
            _fail("model.num_classes", f"{mc.num_classes} differs from data.num_classes {dc.num_classes}")
        if mc.num_frames != dc.num_frames:
            _fail("model.num_frames", f"{mc.num_frames} differs from data.num_frames {dc.num_frames}")
        if mc.img_size != dc.input_size:
            _fail("model.img_size", f"{mc.img_size} differs from data.input_size {dc.input_size}")
        for key in ("test_clips", "test_crops"):
            if key in self.data:
                _fail(f"data.{key}", "set the test views in test.clips / test.crops (one place only)")
        if self.augment.mixup_active and self.batch.micro is not None and (self.batch.micro * dc.num_sample) % 2:
            _fail("batch.micro", f"Mixup/CutMix needs an even per-rank batch; micro x data.num_sample = {self.batch.micro}x{dc.num_sample} is odd")

    def model_config(self) -> Any:
        from far.models import model_config

        try:
            return model_config(self.model)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model: {err}") from err

    def data_config(self) -> Any:
        """The DataConfig, with the test views taken from the ``test`` section."""
        from far.data.config import DataConfig

        values = dict(self.data)
        values.setdefault("test_clips", self.test.clips)
        values.setdefault("test_crops", self.test.crops)
        values.setdefault("seed", self.seed)
        try:
            return DataConfig.from_dict(values)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"data: {err}") from err

    # -- output --
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict (tuples become lists); round-trips through from_dict."""
        out: dict[str, Any] = {"seed": self.seed, "init": self.init, "model": dict(self.model), "data": dict(self.data)}
        for name in SECTIONS:
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        return out

    def resolved_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with the model and data sections fully expanded (every field
        of ModelConfig / DataConfig), as logged to MLflow and written to OUT."""
        out = self.to_dict()
        out["model"] = _plain(self.model_config().to_dict())
        out["data"] = _plain(self.data_config().to_dict())
        return out


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---- generic typed construction of a section ---------------------------------------
def _section(cls: type, values: Any, name: str) -> Any:
    if not isinstance(values, Mapping):
        _fail(name, f"expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in known:
            _fail(f"{name}.{k}", f"unknown key (known: {sorted(known)})")
    kwargs = {k: _coerce(hints[k], v, f"{name}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _coerce(tp: Any, v: Any, name: str) -> Any:
    """Check ``v`` against the annotation ``tp``; YAML lists become tuples where needed.

    Ints are accepted where floats are expected (``base_lr: 1``); bools never count as
    numbers; YAML's ``1e-3`` (read as a string by PyYAML's YAML 1.1 resolver) is parsed.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            if type(None) in args:
                return None
            _fail(name, "must not be null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: expected {tp}, got {v!r}")
    if v is None:
        _fail(name, "must not be null")
    if tp is Any:
        return v
    if tp is bool:
        if not isinstance(v, bool):
            _fail(name, f"expected true/false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(name, f"expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                _fail(name, f"expected a number, got {v!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            _fail(name, f"expected a finite number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            _fail(name, f"expected a string, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)) or len(v) != len(args):
            _fail(name, f"expected a list of {len(args)}, got {v!r}")
        return tuple(_coerce(a, x, f"{name}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if origin is dict:
        if not isinstance(v, Mapping):
            _fail(name, f"expected a mapping, got {v!r}")
        return dict(v)
    raise ConfigError(f"{name}: unsupported annotation {tp}")  # pragma: no cover - schema bug


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a RUN.yaml."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"run config {path}: {err}") from err
    return RunConfig.from_dict(values if values is not None else {})
