"""Resumable training checkpoints: atomic, complete-or-ignored, keep-last-k.

Layout under ``OUT/checkpoints/``::

    ckpt-e0003-s00000120/          one complete checkpoint (epoch 3 finished, step 120)
        ds/state/...               DeepSpeed engine.save_checkpoint (model, optimizer,
                                   ZeRO shards: every rank writes its part)
        rng-rank0.pt, rng-rank1.pt python/numpy/torch RNG states of each rank (tensors and
                                   plain values only: they load with weights_only=True)
        trainer.json               epoch, step_in_epoch, global_step, MLflow run id, ...
        COMPLETE                   written last, before the rename
    .tmp-ckpt-e0004-s00000160/     being written (or left by a crash): never loaded

A checkpoint is written into a ``.tmp-`` directory by all ranks; after a barrier,
rank 0 writes ``COMPLETE`` and renames the directory (an atomic ``rename(2)`` on one
file system). Discovery only considers directories with the final name *and* the
marker, so a process killed while writing leaves nothing that can be picked up.
The folder must be on a file system every rank sees (as SLURM jobs' output folders
are).

Loading never runs code from the folder: every file goes through
:func:`far.checkpoints.safe_torch_load` (DeepSpeed's own files are checked with it before
DeepSpeed unpickles them), and a file that needs the full unpickler is refused unless the
user passes ``--trust-checkpoint``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from far.checkpoints import UntrustedCheckpointError, explained_write, safe_torch_load
from far.engine.distributed import barrier

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
_NAME = re.compile(r"^ckpt-e(\d{4,})-s(\d{8,})$")
DS_TAG = "state"


@dataclass
class TrainerState:
    """Where training stands. ``epoch`` is the epoch being run (0-based);
    ``step_in_epoch`` optimizer steps of it are done (0 = it has not started)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    mlflow_run_id: str | None = None
    world_size: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch metrics so far
    steps: list[dict[str, Any]] = field(default_factory=list)  # per-log-point metrics so far (rank 0)
    # A mid-epoch (SIGTERM) checkpoint: the epoch's sums so far, over all ranks
    # (loss_sum, loss_n, replaced, seconds), so that the resumed epoch's mean covers it all.
    partial_epoch: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        return cls(**json.loads(text))


def checkpoint_name(state: TrainerState) -> str:
    return f"ckpt-e{state.epoch:04d}-s{state.global_step:08d}"


def checkpoints_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def complete_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by global step, then epoch)."""
    root = checkpoints_dir(out)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            found.append(((int(m.group(2)), int(m.group(1))), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: Path) -> Path | None:
    found = complete_checkpoints(out)
    return found[-1] if found else None


def clean_incomplete(out: Path) -> list[Path]:
    """Remove ``.tmp-`` leftovers of a crash and unmarked directories (rank 0 only)."""
    root = checkpoints_dir(out)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and (p.name.startswith(".tmp-") or (_NAME.match(p.name) and not (p / COMPLETE).is_file())):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


# ---- RNG ------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's python/numpy/torch(/cuda) RNG states as tensors and plain values.

    numpy's state is a (str, uint32 array, int, int, float) tuple; the array is kept as an
    int64 tensor so that the saved file holds no numpy object and loads with
    ``weights_only=True``. :func:`set_rng_state` restores it bit for bit.
    """
    kind, key, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of 625 ints, float | None)
        "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (or the raw numpy tuple of older checkpoints)."""
    random.setstate(st["python"])
    npst = st["numpy"]
    if isinstance(npst, dict):
        npst = (npst["kind"], npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                npst["cached_gaussian"])
    np.random.set_state(npst)
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _deepspeed_globals() -> tuple[Any, ...]:
    """Plain-data classes DeepSpeed pickles into its checkpoint files.

    Found by saving ZeRO 0/1/2 runs (fp32, bf16) and listing
    ``torch.serialization.get_unsafe_globals_in_checkpoint``: ZeRO 1/2 optimizer files
    hold the loss scaler (``DynamicLossScaler`` under fp16), the stage enum and
    ``fragment_address`` records; the model file holds none.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return (LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)


def check_deepspeed_files(ds_dir: Path, *, trust: bool = False) -> None:
    """Refuse a DeepSpeed checkpoint folder holding a file that needs the full unpickler.

    Raises :class:`far.checkpoints.UntrustedCheckpointError` naming the file and
    ``--trust-checkpoint``; with ``trust`` such a file only earns a WARNING.
    """
    extra = _deepspeed_globals()
    for f in sorted(Path(ds_dir).rglob("*.pt")):
        try:
            safe_torch_load(f, extra_globals=extra, mmap=True)  # mmap: the tensors are not read
        except UntrustedCheckpointError as err:
            if not trust:
                raise
            log.warning("%s; loading it anyway (DeepSpeed's full unpickler) because --trust-checkpoint was given", err)


# ---- save / load ------------------------------------------------------------------------
def save(engine: Any, out: Path, state: TrainerState, *, rank: int, keep_last: int) -> Path:
    """Write one checkpoint atomically (collective: every rank calls it)."""
    root = checkpoints_dir(out)
    name = checkpoint_name(state)
    tmp = root / f".tmp-{name}"
    final = root / name
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    with explained_write(tmp):
        try:
            # DeepSpeed writes the model (rank 0) and optimizer / ZeRO shards (each rank).
            engine.save_checkpoint(str(tmp / "ds"), tag=DS_TAG, save_latest=False)
            torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
            barrier()
            if rank == 0:
                (tmp / "trainer.json").write_text(state.to_json())
                (tmp / COMPLETE).write_text(name + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # never complete: give its space back for the retry
            raise
    if rank == 0:
        if final.exists():  # a re-run of the same step (should not happen): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for old in complete_checkpoints(out)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(engine: Any, path: Path, *, rank: int, trust: bool = False) -> TrainerState:
    """Restore engine (model + optimizer) and this rank's RNG; returns the trainer state.

    Files that need the full unpickler are refused unless ``trust`` (``--trust-checkpoint``).
    """
    state = TrainerState.from_json((path / "trainer.json").read_text())
    # DeepSpeed unpickles with weights_only=False: first prove each file loads without that.
    check_deepspeed_files(path / "ds", trust=trust)
    try:
        load_path, _ = engine.load_checkpoint(str(path / "ds"), tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=False)
    except RuntimeError as err:
        if "state_dict" not in str(err):
            raise
        # A state written by another model (e.g. after a change of the params' backbone
        # for an output folder named by method and backbone only): say so, not a key dump.
        first = str(err).strip().splitlines()[0][:200]
        raise RuntimeError(f"{path}: this resumable state is of another model than the one configured ({first} ...); "
                           f"delete {path.parent} to start this run again") from err
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint in {path / 'ds'}")
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(safe_torch_load(rng_file, trust=trust))
    else:  # a different world size: RNG streams cannot be matched one to one
        log.warning("no RNG state for rank %d in %s (world size changed?); continuing with fresh seeds", rank, path)
    return state
