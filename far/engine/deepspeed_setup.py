"""DeepSpeed: the config dict for one run and ``deepspeed.initialize`` around it.

Shared by fine-tuning (:mod:`far.engine.train`) and offline pre-training
(``far.pretrain``), so it takes plain arguments rather than a whole run config.

Choices, and why:

* The optimizer is a ``torch.optim.AdamW`` built by the caller (with timm's layer-decay
  parameter groups) and *passed in*. DeepSpeed's own Adam would JIT-compile FusedAdam
  (~40 s on CPU) and re-derive the groups itself.
* The learning rate is set per optimizer step by the caller (:mod:`far.engine.optim`),
  not by a DeepSpeed scheduler, so the schedule is one pure function of the step that a
  resumed run recomputes exactly.
* Precision: ``auto`` is bf16 on a GPU that supports it, else fp16 (with the reference's
  dynamic loss scale: initial power 7, window 128); CPU runs are always fp32, as the
  CPU accelerator has no mixed-precision path worth using and fp32 keeps CPU runs
  bit-reproducible.
* bf16 is PyTorch's autocast around the forward with fp32 weights and optimizer
  (DeepSpeed's ``torch_autocast`` section, which the engine's forward applies; without it
  the engine switches an outer autocast off), not DeepSpeed's ``bf16`` section: at ZeRO
  stage 0 that section wraps the optimizer in DeepSpeed's unfused mixed-precision
  optimizer, which checks every gradient tensor for inf/NaN with one host
  synchronisation each (234 per step for ViT-B FAR, measured with ``far train
  --profile``), so the GPU idled a third of the time. Gradients are all-reduced in fp32
  (no ``lower_precision_safe_modules``). fp16 keeps DeepSpeed's loss scaling, which
  needs those checks.
* ZeRO stage 0 by default, as in the reference. Stages 1-2 accept a client optimizer only
  with ``zero_allow_untested_optimizer``; we set it because torch AdamW is fine there.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

import torch

import far.torchvision_compat  # noqa: F401  (before anything that may import timm/torchvision)
from far.engine.config import DeepSpeedConfig
from far.engine.distributed import DistEnv, setup_environment

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS_DIR = Path("~/.cache/far/torch_extensions").expanduser()


def on_gpu() -> bool:
    return torch.cuda.is_available()


def resolve_precision(precision: str, gpu: bool | None = None) -> str:
    """The precision actually used: fp32 on CPU whatever was asked, bf16/fp16 on GPU."""
    gpu = on_gpu() if gpu is None else gpu
    if not gpu:
        if precision in ("bf16", "fp16"):
            log.info("precision %s requested but running on CPU: using fp32", precision)
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def build_config(
    *,
    micro_batch: int,
    accumulation: int,
    world_size: int,
    settings: DeepSpeedConfig,
    gpu: bool | None = None,
) -> dict[str, Any]:
    """The DeepSpeed JSON config.

    ``micro_batch`` is the number of samples one rank feeds per forward pass, *after*
    repeated augmentation (DeepSpeed only uses it for throughput reporting and the
    batch-size consistency check, never to build a loader: we pass none).
    """
    precision = resolve_precision(settings.precision, gpu)
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": int(accumulation),
        "train_batch_size": int(micro_batch) * int(accumulation) * int(world_size),
        "zero_optimization": {"stage": int(settings.zero_stage)},
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": float(settings.grad_clip) if settings.grad_clip else 0.0,
        "steps_per_print": 10**9,  # we log ourselves (rank 0, tqdm + logging)
        "wall_clock_breakdown": False,
        # far measures its own pace; DeepSpeed's throughput timer synchronised the device at
        # every forward and step (42 ms a step for ViT-B FAR on an H200, far train --profile).
        "timers": {"throughput": {"enabled": False, "synchronized": False}},
    }
    if precision == "bf16":
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    elif precision == "fp16":
        # The reference's dynamic loss scale (initial 2^7, window 128).
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 7, "loss_scale_window": 128, "hysteresis": 2, "min_loss_scale": 1}
    return cfg


def input_dtype(precision: str) -> torch.dtype:
    """The dtype inputs must be cast to for the engine's model: half for DeepSpeed's fp16
    model, float32 otherwise (bf16 casts inside :func:`autocast`)."""
    return torch.float16 if precision == "fp16" else torch.float32


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the model computes in (evaluation casts its inputs to it and autocasts)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def autocast(precision: str, device: torch.device | str) -> Any:
    """bf16 autocast for bf16 runs on a GPU, else nothing: for what runs outside the
    engine (pre-training's teachers); the engine's own forward autocasts itself."""
    import contextlib

    device_type = torch.device(device).type
    if precision == "bf16" and device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def init_distributed(dist_env: DistEnv | None = None) -> DistEnv:
    """Export the launcher's variables and initialise the process group once.

    Works with no launcher (world size 1), torchrun/deepspeed and SLURM ``srun``.
    DeepSpeed picks nccl on GPU and gloo on CPU through its accelerator.
    """
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(DEFAULT_EXTENSIONS_DIR))
    d = setup_environment() if dist_env is None else dist_env
    import deepspeed

    if on_gpu():
        torch.cuda.set_device(d.local_rank % max(1, torch.cuda.device_count()))
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(auto_mpi_discovery=False, verbose=False, distributed_port=d.master_port)
        # Torn down when the process ends, not after each command: tests run several in one
        # process and DeepSpeed keeps its communication backend global.
        atexit.register(_destroy_process_group)
    return d


def _destroy_process_group() -> None:
    """The process group's orderly end (torch warns at exit without it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def initialize(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ds_config: dict[str, Any],
) -> tuple[Any, torch.optim.Optimizer]:
    """``deepspeed.initialize`` with a client optimizer; returns (engine, optimizer).

    Call :func:`init_distributed` first. The returned optimizer is DeepSpeed's wrapper
    (for fp16/ZeRO) or the torch one; its ``param_groups`` are the caller's, so setting
    ``group["lr"]`` each step works in every mode.
    """
    import deepspeed

    engine, ds_optimizer, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        config=ds_config,
        dist_init_required=False,
    )
    return engine, ds_optimizer
