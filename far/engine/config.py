"""``RunConfig``: one fully resolved fine-tuning run, validated before any work starts.

A run config is a YAML mapping (written by the Snakemake pipeline) with the sections
below; docs/training.md documents every field. Every section is a frozen dataclass
built by :func:`far.config.from_mapping`, which refuses unknown keys, missing required
keys and values of the wrong type; each section's ``__post_init__`` checks its values.
Errors name the dotted field (``optim.layer_decay: must be in (0, 1], got 1.5``), and
:func:`load_run_config` adds the file.

``model`` and ``data`` stay plain mappings here and are checked by their owners
(:func:`far.models.model_config`, :class:`far.data.config.DataConfig`), with their
errors placed under ``model.`` / ``data.``.

Defaults are the paper's Table 1 recipe for ViT-S on SSv2 where one exists; every
default lives here and nowhere else. Plain Python: importing it loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from far.config import ConfigError, check_choice, fail, from_mapping, read_yaml, to_plain
from far.data.mixup import AugmentConfig

__all__ = ["ConfigError", "RunConfig", "load_run_config", "AugmentConfig", "OptimConfig", "BatchConfig",
           "DeepSpeedConfig", "CheckpointConfig", "TestConfig", "TrackingConfig", "LogConfig"]


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

    def __post_init__(self) -> None:
        if self.epochs < 1:
            fail("epochs", f"must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            fail("warmup_epochs", f"must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if not self.base_lr > 0:
            fail("base_lr", f"must be > 0, got {self.base_lr}")
        for f in ("min_lr", "warmup_start_lr", "weight_decay", "eps"):
            if getattr(self, f) < 0:
                fail(f, f"must be >= 0, got {getattr(self, f)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            fail("betas", f"need two numbers in [0, 1), got {list(self.betas)}")
        if not 0 < self.layer_decay <= 1:
            fail("layer_decay", f"must be in (0, 1], got {self.layer_decay}")


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

    def __post_init__(self) -> None:
        check_choice("derive", self.derive, BATCH_DERIVE)
        for f in ("total", "micro", "accumulation"):
            v = getattr(self, f)
            if v is None and f != self.derive:
                fail(f, f"required when derive is {self.derive!r}")
            if v is not None and v < 1:
                fail(f, f"must be >= 1, got {v}")
        if self.eval_micro < 1:
            fail("eval_micro", f"must be >= 1, got {self.eval_micro}")
        if self.num_workers < 0:
            fail("num_workers", f"must be >= 0, got {self.num_workers}")

    def resolve(self, world_size: int) -> "ResolvedBatch":
        """The three numbers for ``world_size`` ranks; ConfigError if they do not fit."""
        t, m, a = self.total, self.micro, self.accumulation
        if self.derive == "accumulation":
            derived, ok = divmod(t, m * world_size)
            if ok or derived < 1:
                fail("batch.total", f"{t} is not micro ({m}) x world size ({world_size}) x an integer accumulation")
            a_new = derived
            if a is not None and a != a_new:
                fail("batch.accumulation", f"given {a} but total/(micro x world size) = {t}/({m}x{world_size}) = {a_new}")
            a = a_new
        elif self.derive == "micro":
            derived, ok = divmod(t, a * world_size)
            if ok or derived < 1:
                fail("batch.total", f"{t} is not accumulation ({a}) x world size ({world_size}) x an integer micro-batch")
            if m is not None and m != derived:
                fail("batch.micro", f"given {m} but total/(accumulation x world size) = {derived}")
            m = derived
        else:
            derived = m * a * world_size
            if t is not None and t != derived:
                fail("batch.total", f"given {t} but micro x accumulation x world size = {m}x{a}x{world_size} = {derived}")
            t = derived
        return ResolvedBatch(total=t, micro=m, accumulation=a, world_size=world_size)


@dataclass(frozen=True)
class ResolvedBatch:
    total: int
    micro: int
    accumulation: int
    world_size: int


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class DeepSpeedConfig:
    """The ``deepspeed`` section of fine-tuning and pre-training runs
    (far.engine.deepspeed_setup turns it into DeepSpeed's config dict)."""

    zero_stage: int = 0
    precision: str = "auto"  # auto = bf16 (or fp16) on GPU; CPU is always fp32
    grad_clip: float | None = None  # max global grad norm; null = off (reference)

    def __post_init__(self) -> None:
        check_choice("zero_stage", self.zero_stage, ZERO_STAGES)
        check_choice("precision", self.precision, PRECISIONS)
        if self.grad_clip is not None and not self.grad_clip > 0:
            fail("grad_clip", f"must be > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class CompileConfig:
    """``torch.compile`` of the model inside the DeepSpeed engine (far train).

    ``enabled``: false, true, or "cuda" (only when the run has a GPU: what params/paper.yaml
    uses; compiling on the CPU costs more start-up than the short default runs gain).
    ``mode``: torch.compile's mode (null = its default); ``backend``: its backend
    ("inductor" generates kernels; "aot_eager" traces without code generation, what the CPU
    tests use). The model is compiled in place (``nn.Module.compile``), so its weights keep
    their names in every checkpoint."""

    enabled: bool | str = False
    mode: str | None = None
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if not (self.enabled is True or self.enabled is False or self.enabled == "cuda"):
            fail("enabled", f"must be one of false, true, 'cuda'; got {self.enabled!r}")
        check_choice("backend", self.backend, ("inductor", "aot_eager", "eager", "cudagraphs"))
        check_choice("mode", self.mode, (None, "default", "reduce-overhead", "max-autotune",
                                         "max-autotune-no-cudagraphs"))

    def active(self, device_type: str) -> bool:
        """Whether to compile on a device of ``device_type`` ("cuda", "cpu")."""
        return self.enabled is True or (self.enabled == "cuda" and device_type == "cuda")


@dataclass(frozen=True)
class CheckpointConfig:
    keep_last: int = 2  # complete training checkpoints kept in OUT/checkpoints
    every_epochs: int = 1

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            fail("keep_last", f"must be >= 1, got {self.keep_last}")
        if self.every_epochs < 1:
            fail("every_epochs", f"must be >= 1, got {self.every_epochs}")


@dataclass(frozen=True)
class TestConfig:
    """Multi-view test (end of training and ``far test``) and per-epoch validation."""

    clips: int = 2  # temporal views: 2 SSv2, 5 K400
    crops: int = 3  # spatial crops: 3 (or 1)
    val_every: int = 1  # single-view validation every N epochs (and always at the last)
    val_max_videos: int | None = None  # validate on the first N videos only (null = all)
    run_at_end: bool = True  # run the multi-view test when training finishes

    def __post_init__(self) -> None:
        if self.clips < 1:
            fail("clips", f"must be >= 1, got {self.clips}")
        if self.crops not in (1, 3):
            fail("crops", f"must be 1 or 3, got {self.crops}")
        if self.val_every < 1:
            fail("val_every", f"must be >= 1, got {self.val_every}")
        if self.val_max_videos is not None and self.val_max_videos < 1:
            fail("val_max_videos", f"must be >= 1 or null, got {self.val_max_videos}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow, for fine-tuning and pre-training alike. ``MLFLOW_TRACKING_URI`` in the
    environment overrides ``uri``."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # relative sqlite paths are taken from the working directory
    experiment: str = "far"
    run_name: str | None = None  # None: the job names it (pre-training: pretrain-<method>-<folder>)
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None  # the experiment's description, set when a job creates it

    def __post_init__(self) -> None:
        if not self.uri:
            fail("uri", "must not be empty")
        if not self.experiment:
            fail("experiment", "must not be empty")
        for k, v in self.tags.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
                fail("tags", f"tags are string keys to scalar values, got {k!r}: {v!r}")


@dataclass(frozen=True)
class LogConfig:
    every_steps: int = 20  # a log line every N optimizer steps (non-interactive runs)
    progress_bar: str = "auto"  # auto = only when stderr is a terminal; "on"/"off"

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            fail("every_steps", f"must be >= 1, got {self.every_steps}")
        check_choice("progress_bar", self.progress_bar, ("auto", "on", "off"))

    def show_bars(self, requested: bool | None = None) -> bool:
        """Whether to draw progress bars: ``--progress/--no-progress`` if given, else the setting."""
        if requested is not None:
            return requested
        import sys

        return sys.stderr.isatty() if self.progress_bar == "auto" else self.progress_bar == "on"


# ---- the run ------------------------------------------------------------------------
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
    compile: CompileConfig = field(default_factory=CompileConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    test: TestConfig = field(default_factory=TestConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        """Cross-checks, and the delegated sections (model, data) built once to check them."""
        if self.seed < 0:
            fail("seed", f"must be >= 0, got {self.seed}")
        if self.init is not None and not self.init:
            fail("init", "expected a checkpoint path or null, got ''")
        for key in ("test_clips", "test_crops"):
            if key in self.data:
                fail(f"data.{key}", "set the test views in test.clips / test.crops (one place only)")
        mc = self.model_config()
        dc = self.data_config()
        if mc.num_classes != dc.num_classes:
            fail("model.num_classes", f"{mc.num_classes} differs from data.num_classes {dc.num_classes}")
        if mc.num_frames != dc.num_frames:
            fail("model.num_frames", f"{mc.num_frames} differs from data.num_frames {dc.num_frames}")
        if mc.img_size != dc.input_size:
            fail("model.img_size", f"{mc.img_size} differs from data.input_size {dc.input_size}")
        if self.augment.mixup_active and self.batch.micro is not None and (self.batch.micro * dc.num_sample) % 2:
            fail("batch.micro", f"Mixup/CutMix needs an even per-rank batch; micro x data.num_sample = "
                                f"{self.batch.micro}x{dc.num_sample} is odd")

    def model_config(self) -> Any:
        from far.models import model_config

        try:
            return model_config(self.model)
        except ConfigError as err:
            raise err.under("model") from None

    def data_config(self) -> Any:
        """The DataConfig, with the test views taken from the ``test`` section."""
        from far.data.config import DataConfig

        values = dict(self.data)
        values.setdefault("test_clips", self.test.clips)
        values.setdefault("test_crops", self.test.crops)
        values.setdefault("seed", self.seed)
        return from_mapping(DataConfig, values, "data")

    # -- output --
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict (tuples become lists); round-trips through from_mapping."""
        return to_plain(self)

    def resolved_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with the model and data sections fully expanded (every field
        of ModelConfig / DataConfig), as logged to MLflow and written to OUT."""
        out = self.to_dict()
        out["model"] = to_plain(self.model_config().to_dict())
        out["data"] = to_plain(self.data_config().to_dict())
        return out


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a RUN.yaml; errors read ``<file>: <dotted.field>: <problem>``."""
    try:
        return from_mapping(RunConfig, read_yaml(path))
    except ConfigError as err:
        raise err.in_file(path) from None


def run_config(values: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a plain mapping (e.g. :meth:`far.grid.Grid.run_config`)."""
    return from_mapping(RunConfig, values)
