"""Launcher detection (torchrun/deepspeed, SLURM, none) and the DeepSpeed config."""

from __future__ import annotations

import pytest

from far.engine.distributed import detect, expand_first_host, setup_environment, slurm_master_port


@pytest.mark.parametrize(
    "nodelist, first",
    [("node01", "node01"), ("node[01-04]", "node01"), ("node[3,5-7]", "node3"), ("gpu-a[08-09],gpu-b01", "gpu-a08"), ("n1,n2", "n1"), ("r[3-4]n[2-4]", "r3n2")],
)
def test_first_host(nodelist: str, first: str) -> None:
    assert expand_first_host(nodelist) == first


def test_torchrun_env_wins() -> None:
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1234", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    d = detect(env)
    assert (d.rank, d.local_rank, d.world_size, d.master_addr, d.master_port, d.launcher) == (1, 1, 2, "h", 1234, "torchrun")


def test_slurm_env_exports_torch_vars() -> None:
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "node[07-10]", "SLURM_JOB_ID": "4242", "DS_ACCELERATOR": "cpu"}
    d = setup_environment(env)
    assert d.launcher == "slurm" and d.rank == 5 and d.world_size == 8 and d.local_rank == 1
    assert env["RANK"] == "5" and env["WORLD_SIZE"] == "8" and env["LOCAL_RANK"] == "1"
    assert env["MASTER_ADDR"] == "node07"
    assert env["MASTER_PORT"] == str(slurm_master_port("4242"))
    # Every task of the job derives the same port; different jobs usually differ.
    assert slurm_master_port("4242") == slurm_master_port(4242) != slurm_master_port("4243")


def test_salloc_shell_without_srun_is_single_process() -> None:
    d = detect({"SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "node[1-2]"})
    assert d.launcher == "none" and d.world_size == 1 and d.rank == 0


def test_no_launcher() -> None:
    env: dict[str, str] = {}
    d = setup_environment(env)
    assert d.world_size == 1 and d.rank == 0 and d.is_main and not d.distributed
    assert {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= set(env)


def test_deepspeed_config_cpu_is_fp32() -> None:
    from far.engine.config import DeepSpeedConfig
    from far.engine.deepspeed_setup import build_config

    cfg = build_config(micro_batch=12, accumulation=8, world_size=4, settings=DeepSpeedConfig(precision="bf16", grad_clip=1.0), gpu=False)
    assert cfg["train_batch_size"] == 384 and cfg["gradient_accumulation_steps"] == 8
    assert "bf16" not in cfg and "fp16" not in cfg and cfg["gradient_clipping"] == 1.0
    gpu = build_config(micro_batch=1, accumulation=1, world_size=1, settings=DeepSpeedConfig(precision="fp16"), gpu=True)
    assert gpu["fp16"]["enabled"] and gpu["fp16"]["initial_scale_power"] == 7 and gpu["gradient_clipping"] == 0.0
    # bf16 on a GPU: fp32 weights and optimizer in DeepSpeed, autocast in the step (no
    # DeepSpeed bf16 wrapper: it synchronises once per gradient tensor at ZeRO 0).
    bf16 = build_config(micro_batch=1, accumulation=1, world_size=1, settings=DeepSpeedConfig(precision="bf16"), gpu=True)
    assert "bf16" not in bf16 and "fp16" not in bf16
    assert bf16["torch_autocast"] == {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    # No device synchronisation from DeepSpeed's throughput timer (far logs its own pace).
    assert bf16["timers"] == {"throughput": {"enabled": False, "synchronized": False}}
    with pytest.raises(ValueError, match="^zero_stage: 5 is not one of"):
        DeepSpeedConfig(zero_stage=5)


def test_epoch_sampler_cycles_to_its_length() -> None:
    """Pre-training's fixed step counts: an epoch longer than the data cycles through
    fresh permutations; every item is drawn before any is drawn again."""
    from collections import Counter

    from far.engine.data import EpochSampler

    ranks = [EpochSampler(5, seed=1, rank=r, world_size=2, length=12) for r in (0, 1)]
    both = ranks[0].indices() + ranks[1].indices()
    assert len(both) == 12 and sorted(Counter(both).values()) == [2, 2, 2, 3, 3]
    first_cycle = EpochSampler(5, seed=1, rank=0, world_size=1, length=12).indices()[:5]
    assert sorted(first_cycle) == [0, 1, 2, 3, 4]
    assert EpochSampler(5, seed=1, rank=0, world_size=1).indices() == first_cycle  # length n: one permutation
