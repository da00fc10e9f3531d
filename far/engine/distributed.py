"""Distributed process set-up from whichever launcher started us.

Supported launchers, detected in this order:

1. ``torchrun`` / ``deepspeed`` / ``torch.distributed.launch``: they export ``RANK``,
   ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; we use them as is.
2. SLURM (``srun``): every task gets ``SLURM_PROCID``, ``SLURM_NTASKS``,
   ``SLURM_LOCALID`` and ``SLURM_JOB_NODELIST``. The master is the first host of the
   node list (``node[01-04]`` -> ``node01``) and the port is derived from
   ``SLURM_JOB_ID`` so that two jobs sharing a node do not collide.
3. Nothing: a single process (rank 0 of 1) on localhost.

:func:`setup_environment` *writes* the five torch variables back into ``os.environ``
because DeepSpeed reads them there (without them ``deepspeed.init_distributed``
falls back to MPI discovery and fails importing mpi4py). It is idempotent and does
not initialise the process group itself: :mod:`far.engine.deepspeed_setup` does
that through ``deepspeed.init_distributed`` so both paths share one backend choice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, MutableMapping

DEFAULT_MASTER_PORT = 29500
# SLURM job ids are arbitrary integers; fold them into the unprivileged range below
# the ephemeral ports (Linux default 32768-60999) so derived ports stay bindable.
_SLURM_PORT_BASE = 20000
_SLURM_PORT_SPAN = 10000

_TORCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" (any torch-style launcher), "slurm" or "none"

    @property
    def is_main(self) -> bool:
        """Rank 0 owns logging, tracking and the files in the output folder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def expand_first_host(nodelist: str) -> str:
    """First host of a SLURM node list, without calling ``scontrol``.

    Handles ``node01``, ``node01,node02``, ``node[01-04]``, ``node[3,5-7]``,
    ``gpu-a[08-09],gpu-b01`` and zero-padded ranges (the padding of the range's
    first number is kept, as SLURM does).
    """
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("empty SLURM node list")
    # The first comma at bracket depth 0 ends the first host expression.
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    # Expand bracket groups left to right, always taking the first element.
    while "[" in first:
        m = re.search(r"\[([^\]]*)\]", first)
        if m is None:
            raise ValueError(f"unbalanced brackets in SLURM node list {nodelist!r}")
        item = m.group(1).split(",")[0]
        item = item.split("-")[0]  # "01-04" -> "01"; the padding is kept as written
        first = first[: m.start()] + item + first[m.end() :]
    return first


def slurm_master_port(job_id: str | int | None) -> int:
    """A port every task of one SLURM job derives identically from the job id."""
    if job_id is None or str(job_id).strip() == "":
        return DEFAULT_MASTER_PORT
    digits = re.sub(r"\D", "", str(job_id))  # array jobs: "1234_5" -> 12345
    if not digits:
        return DEFAULT_MASTER_PORT
    return _SLURM_PORT_BASE + int(digits) % _SLURM_PORT_SPAN


def free_port() -> int:
    """An unused TCP port on localhost (for single-process runs only)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError as err:
        raise ValueError(f"environment variable {name}={env[name]!r} is not an integer") from err


def detect(env: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launcher's variables (``os.environ`` by default); pure, changes nothing."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        return DistEnv(
            rank=rank,
            local_rank=local,
            world_size=world,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_MASTER_PORT,
            launcher="torchrun",
        )
    # An interactive `salloc` shell also has SLURM_* but SLURM_PROCID is only set
    # inside `srun` tasks; SLURM_NTASKS alone does not mean we are one of them.
    if "SLURM_PROCID" in env and ("SLURM_NTASKS" in env or "SLURM_NPROCS" in env):
        ntasks = env.get("SLURM_NTASKS", env.get("SLURM_NPROCS"))
        nodelist = env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))
        return DistEnv(
            rank=_int(env, "SLURM_PROCID"),
            local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            world_size=int(ntasks),
            master_addr=env.get("MASTER_ADDR") or (expand_first_host(nodelist) if nodelist else "127.0.0.1"),
            master_port=(_int(env, "MASTER_PORT") if "MASTER_PORT" in env else slurm_master_port(env.get("SLURM_JOB_ID"))),
            launcher="slurm",
        )
    return DistEnv(
        rank=0,
        local_rank=0,
        world_size=1,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        # A lone process still needs a port for DeepSpeed's (trivial) gloo/nccl group.
        # Nobody else has to agree on it, so take a free one: a fixed default would make
        # two single-process runs on one machine (tests, a shared box) collide.
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port(),
        launcher="none",
    )


def setup_environment(env: MutableMapping[str, str] | None = None) -> DistEnv:
    """Detect the launcher and export RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT.

    Call before ``deepspeed.initialize``/``init_distributed``. Returns the result of
    :func:`detect`. Also sets ``DS_ACCELERATOR=cpu`` when CUDA is unavailable (DeepSpeed
    would pick it anyway, but warns) unless the user chose one.
    """
    env = os.environ if env is None else env
    d = detect(env)
    env["RANK"] = str(d.rank)
    env["LOCAL_RANK"] = str(d.local_rank)
    env["WORLD_SIZE"] = str(d.world_size)
    env["MASTER_ADDR"] = d.master_addr
    env["MASTER_PORT"] = str(d.master_port)
    if d.launcher == "slurm":
        # torch.distributed and DeepSpeed also look at these when present.
        env.setdefault("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0] or "1")
    if "DS_ACCELERATOR" not in env:
        try:
            import torch

            if not torch.cuda.is_available():
                env["DS_ACCELERATOR"] = "cpu"
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass
    return d


def current() -> DistEnv:
    """The process's position, from ``torch.distributed`` when initialised, else the env."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            d = detect()
            return DistEnv(dist.get_rank(), d.local_rank, dist.get_world_size(), d.master_addr, d.master_port, d.launcher)
    except ImportError:  # pragma: no cover
        pass
    return detect()


def barrier() -> None:
    """A barrier when a process group exists; a no-op for a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_sum(*values: float) -> list[float]:
    """Each value summed over all ranks (the values themselves without a process group)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def all_mean(total: float, count: float = 1.0) -> float:
    """``sum(total) / sum(count)`` over all ranks (the plain ratio without a process group)."""
    s, n = all_sum(total, count)
    return s / max(1.0, n)
