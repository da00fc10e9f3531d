"""The one training loop of far: :func:`fit` runs any step function over epochs.

Fine-tuning (far.engine.train) and pre-training (far.pretrain.train) are each a set-up
plus a step function; what every training run needs lives here once:

* the lr schedule applied at each optimizer step (gradient accumulation included);
* DeepSpeed's backward/step, a finite-loss check, the epoch's loss and counts summed
  over all ranks (a mid-epoch checkpoint carries the sums so far, so a resumed epoch's
  mean covers all of it);
* progress (a tqdm bar on terminals, log lines otherwise) and per-step MLflow metrics;
* resumable checkpoints (far.engine.state) every ``every_epochs`` epochs and at the end;
* SIGTERM (SLURM's pre-emption warning): every rank agrees at the next optimizer step,
  a checkpoint is written and :class:`Preempted` is raised (the CLI exits with 143);
* ``stop_after_epoch``: end this invocation after that epoch, as if killed (tests).

The caller owns its data: ``loader(epoch, skip)`` returns the epoch's micro-batches
after skipping ``skip`` already-trained ones, and ``step(batch, micro_step)`` returns a
:class:`Step` for one of them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

log = logging.getLogger(__name__)


# A progress line (non-interactive runs): the pace and the loader wait are those since the
# previous line. benchmarks/train_pace.py reads it (PACE_PATTERN).
LOG_LINE = "%s %d/%d step %d/%d  loss %.4f  lr %.3e  %.1f clips/s  data wait %.0f%%"
PACE_PATTERN = r"step (\d+)/(\d+)  loss \S+  lr \S+  ([\d.]+) clips/s  data wait (\d+)%"

EXIT_PREEMPTED = 143  # 128 + SIGTERM: what the CLIs return after a SIGTERM checkpoint


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written."""


class StopFlag:
    """SIGTERM -> set a flag checked at optimizer-step boundaries (all ranks agree)."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def install(self) -> None:
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. in a test harness): no handler
            self._old = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.set = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def agreed(self) -> bool:
        """True on every rank if any rank got the signal (one tiny all-reduce)."""
        from far.engine.distributed import all_sum

        return all_sum(1.0 if self.set else 0.0)[0] > 0


@contextlib.contextmanager
def run_outcome(end: Callable[[str], None]) -> Iterator[dict[str, str]]:
    """Ends a job's MLflow run with what happened: the ``status`` the block leaves in the
    yielded dict (FINISHED unless set), KILLED on :class:`Preempted`, FAILED on any other
    exception. ``end`` is called once, whatever happens (pass a lambda: the caller may
    replace its tracker inside the block)."""
    outcome = {"status": "FINISHED"}
    try:
        yield outcome
    except Preempted:
        outcome["status"] = "KILLED"
        raise
    except BaseException:
        outcome["status"] = "FAILED"
        raise
    finally:
        end(outcome["status"])


@dataclass
class Step:
    """One micro-batch's result: the loss to back-propagate, the numbers to log
    (``parts``, e.g. ``{"loss": ...}``), the clips it held and the corrupt videos replaced."""

    loss: torch.Tensor
    parts: dict[str, float]
    clips: int
    replaced: int = 0


@dataclass
class Loop:
    """How :func:`fit` runs: epochs, optimizer steps per epoch, micro-batches per step,
    checkpointing and logging."""

    epochs: int
    steps_per_epoch: int
    accumulation: int = 1
    every_epochs: int = 1  # a checkpoint every N epochs (and always at the last)
    keep_last: int = 2
    log_every: int = 20  # log line / MLflow step metrics every N optimizer steps
    desc: str = "epoch"
    show_bars: bool = False
    stop_after_epoch: int | None = None
    profiler: Any = None  # far.engine.profiling.StepProfiler (far train --profile)
    on_epoch_end: list[Callable[[int, dict[str, Any]], None]] = field(default_factory=list)


def _add_losses(pending: list[torch.Tensor], loss_sum: float, loss_n: int, epoch: int, first_step: int,
                acc: int) -> tuple[float, int]:
    """Fold the micro-batch losses kept on the device into the epoch's sums (one host
    read); a non-finite loss stops training, naming the first optimizer step it hit."""
    if not pending:
        return loss_sum, loss_n
    values = torch.stack([v.float() for v in pending]).cpu().tolist()
    for k, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at epoch {epoch + 1}, step {first_step + k // acc + 1} "
                                     "(micro-batch losses are checked at each log point)")
    return loss_sum + sum(values), loss_n + len(values)


def fit(engine: Any, optimizer: Any, trainer: Any, out: Path, loop: Loop, *,
        loader: Callable[[int, int], Iterable[Any]], step: Callable[[Any, int], Step],
        lr_at: Callable[[int], float], tracker: Any, rank: int, world: int) -> str:
    """Train from ``trainer`` (a far.engine.state.TrainerState: epoch, step, history) to
    ``loop.epochs``; returns "FINISHED" or "KILLED" (``stop_after_epoch``).

    After each epoch a history row (epoch, step, train_loss, lr, clips_per_s, wall_s,
    replaced_videos, loss_batches, data_wait_share: the share of the epoch's time spent
    waiting for the loader) is completed by the ``loop.on_epoch_end`` hooks
    (validation, files, log lines), then appended to ``trainer.history`` and checkpointed.
    """
    from tqdm import tqdm

    from far.engine import state as es
    from far.engine.distributed import all_mean, all_sum
    from far.engine.optim import apply_lr

    main = rank == 0
    n, acc = loop.steps_per_epoch, loop.accumulation
    stop = StopFlag()
    stop.install()
    try:
        for epoch in range(trainer.epoch, loop.epochs):
            start = trainer.step_in_epoch
            carried = trainer.partial_epoch if start else {}
            seconds_before, clips = carried.get("seconds", 0.0), 0
            loss_sum, loss_n, replaced = 0.0, 0, 0
            if main and carried:  # rank 0 carries the epoch's sums over all ranks so far
                loss_sum, loss_n, replaced = carried["loss_sum"], int(carried["loss_n"]), int(carried["replaced"])
            engine.train()
            bar = tqdm(total=n, initial=start, desc=f"{loop.desc} {epoch + 1}/{loop.epochs}", unit="step",
                       disable=not (loop.show_bars and main), dynamic_ncols=True)
            t_epoch = time.perf_counter()
            step_in_epoch = start
            lr = lr_at(epoch * n + step_in_epoch)
            micro_left = (n - start) * acc
            # Losses stay on the device until a log point: reading one every step would make
            # the host wait for the GPU, so the next batch's augmentation could not be
            # queued behind the current step.
            pending: list[torch.Tensor] = []
            data_wait, t_ready = 0.0, time.perf_counter()
            mark = (t_ready, 0, 0.0)  # (time, clips, data wait) at the last log point
            batches = iter(loader(epoch, start * acc))
            for i in range(micro_left):
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                data_wait += time.perf_counter() - t_ready
                if i % acc == 0:
                    lr = lr_at(epoch * n + step_in_epoch)
                    apply_lr(optimizer, lr)
                s = step(batch, (epoch * n + start) * acc + i)
                engine.backward(s.loss)
                engine.step()
                pending.append(s.loss.detach())
                clips, replaced = clips + s.clips, replaced + s.replaced
                t_ready = time.perf_counter()
                if (i + 1) % acc:
                    continue
                step_in_epoch += 1
                global_step = epoch * n + step_in_epoch
                bar.update(1)
                if loop.profiler is not None:
                    loop.profiler.after_step()
                if step_in_epoch < n and stop.agreed():  # checked at every optimizer step
                    loss_sum, loss_n = _add_losses(pending, loss_sum, loss_n, epoch,
                                                   step_in_epoch - len(pending) // acc, acc)
                    trainer.epoch, trainer.step_in_epoch, trainer.global_step = epoch, step_in_epoch, global_step
                    sums = all_sum(loss_sum, loss_n, replaced)
                    trainer.partial_epoch = {"loss_sum": sums[0], "loss_n": sums[1], "replaced": sums[2],
                                             "seconds": seconds_before + time.perf_counter() - t_epoch}
                    es.save(engine, out, trainer, rank=rank, keep_last=loop.keep_last)
                    raise Preempted(f"SIGTERM: saved epoch {epoch + 1} step {step_in_epoch}")
                if step_in_epoch % loop.log_every and step_in_epoch != n:
                    continue
                first = step_in_epoch - len(pending) // acc
                before = (loss_sum, loss_n)
                loss_sum, loss_n = _add_losses(pending, loss_sum, loss_n, epoch, first, acc)
                pending = []
                # Pace since the last log point (after the loss read: the GPU has caught up).
                now = time.perf_counter()
                window = max(1e-9, now - mark[0])
                rate, wait = (clips - mark[1]) * world / window, (data_wait - mark[2]) / window
                mark = (now, clips, data_wait)
                if main:
                    trainer.steps.append({"epoch": epoch + 1, "step": global_step, "lr": lr, "clips_per_s": rate,
                                          "data_wait_share": wait,
                                          "loss": (loss_sum - before[0]) / max(1, loss_n - before[1])})
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr:.2e}", clips_s=f"{rate:.1f}",
                                data_wait=f"{wait:.0%}")
                if main and step_in_epoch % loop.log_every == 0:
                    tracker.log_metrics({f"train/{k}_step": float(v) for k, v in s.parts.items()}
                                        | {"train/lr_step": lr, "train/clips_per_s_step": rate,
                                           "train/data_wait_share_step": wait}, global_step)
                if main and not loop.show_bars:
                    log.info(LOG_LINE, loop.desc, epoch + 1, loop.epochs, step_in_epoch, n, loss_sum / loss_n, lr,
                             rate, 100 * wait)
                t_ready = time.perf_counter()
            loss_sum, loss_n = _add_losses(pending, loss_sum, loss_n, epoch, step_in_epoch - len(pending) // acc,
                                           acc)
            bar.close()
            seconds = time.perf_counter() - t_epoch
            loss_total, loss_batches, replaced_all = all_sum(loss_sum, loss_n, replaced)
            row: dict[str, Any] = {
                "epoch": epoch + 1, "step": (epoch + 1) * n, "train_loss": loss_total / max(1.0, loss_batches),
                "lr": lr, "clips_per_s": all_mean(clips * world / max(seconds, 1e-9), 1),
                "wall_s": (trainer.history[-1]["wall_s"] if trainer.history else 0.0) + seconds_before + seconds,
                "replaced_videos": int(replaced_all), "loss_batches": int(loss_batches),
                "data_wait_share": all_mean(data_wait / max(seconds, 1e-9), 1),
            }
            for hook in loop.on_epoch_end:
                hook(epoch, row)
            trainer.history.append(row)
            trainer.epoch, trainer.step_in_epoch, trainer.global_step = epoch + 1, 0, (epoch + 1) * n
            trainer.partial_epoch = {}
            last = epoch + 1 == loop.epochs
            if main:
                if row["replaced_videos"]:
                    log.warning("epoch %d: %d corrupt video(s) were replaced by others (see the log above)",
                                epoch + 1, row["replaced_videos"])
            if (epoch + 1) % loop.every_epochs == 0 or last:
                es.save(engine, out, trainer, rank=rank, keep_last=loop.keep_last)
            if loop.stop_after_epoch is not None and epoch + 1 >= loop.stop_after_epoch and not last:
                return "KILLED"
            if not last and stop.agreed():
                raise Preempted(f"SIGTERM: saved after epoch {epoch + 1}")
        return "FINISHED"
    finally:
        stop.restore()
        if loop.profiler is not None:
            loop.profiler.close()
