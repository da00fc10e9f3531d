"""``far train``: DeepSpeed fine-tuning with the paper's recipe, resumable, tracked.

One invocation = one fine-tune into an output folder ``OUT``::

    OUT/config.yaml        the fully resolved run config (every model/data field)
    OUT/checkpoints/       resumable training states (far.engine.state; atomic, keep-last-k)
    OUT/history.csv        one row per epoch: epoch, step, train_loss, lr, clips_per_s,
                           data_wait_share, val_top1, val_top5, wall_s (also
                           OUT/metrics.jsonl, every field)
    OUT/steps.csv          one row per log point (log.every_steps): loss, lr, pace, loader wait
    OUT/model.pth          the final weights (far-finetuned-v1, read by far test)
    OUT/test/              the multi-view test, when ``test.run_at_end``
    OUT/train.json         written last: the run's summary (the pipeline's done-marker)

Started again on the same ``OUT`` it resumes from the last complete checkpoint (a
half-written one is never picked up). SIGTERM (SLURM's pre-emption warning) saves a
checkpoint at the next optimizer step and exits with 143; the next start resumes it.

Determinism: the model is initialised from ``seed``; each epoch's sample order is a
function of (seed, epoch) and each rank's augmentation of (seed, epoch, rank); the
schedule is a pure function of the step and the RNG states are checkpointed. On CPU
(fp32) a run resumed at an epoch boundary therefore ends bit-identical to an
uninterrupted one. A mid-epoch (SIGTERM) resume continues the same sample order but
draws fresh augmentations for the rest of that epoch.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from far.engine.config import ConfigError, RunConfig
from far.engine.runtime import EXIT_PREEMPTED, Preempted
from far.layout import HISTORY_COLUMNS, STEP_COLUMNS, RunFiles

log = logging.getLogger(__name__)



def _criterion(run: RunConfig, mixup_on: bool) -> torch.nn.Module:
    """timm's losses: soft targets under Mixup/CutMix (which smooth the labels themselves)."""
    import far.torchvision_compat  # noqa: F401
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_on:
        return SoftTargetCrossEntropy()
    if run.augment.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=run.augment.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def data_version(run: RunConfig) -> str:
    """A short hash of the train and val lists: which data a run saw (an MLflow tag)."""
    h = hashlib.sha1()
    dc = run.data_config()
    for f in (dc.train_list, dc.val_list):
        p = Path(f)
        h.update(p.read_bytes() if f and p.is_file() else b"")
    return h.hexdigest()[:12]


def _write_csv(path: str | Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Rewrite ``path`` whole from ``rows`` (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    tmp.replace(path)


def _write_history(files: RunFiles, history: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    """history.csv, metrics.jsonl and steps.csv, rewritten whole from the checkpointed state
    (never appended: an epoch redone after a crash must not appear twice)."""
    _write_csv(files.history, HISTORY_COLUMNS, history)
    tmp = Path(files.dir) / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    tmp.replace(files.metrics)
    _write_csv(files.steps, STEP_COLUMNS, steps)


def train(run: RunConfig, out: str | Path, *, progress: bool | None = None, resume: bool = True,
          stop_after_epoch: int | None = None, trust_checkpoint: bool = False,
          profile: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune (or resume) one run into ``out``; returns the summary written to train.json.

    ``stop_after_epoch`` ends this invocation after that many epochs, as if the job had
    been killed there (tests of resume use it with SIGKILL-free determinism).
    ``trust_checkpoint`` lets ``init`` and the resumed state use the full unpickler
    (``--trust-checkpoint``; see far.checkpoints.safe_torch_load).
    ``profile``: a folder for a torch.profiler record of steps 20-24 (far.engine.profiling).
    """

    from far.checkpoints import load_checkpoint, save_finetuned
    from far.engine import deepspeed_setup as dss
    from far.engine import state as es
    from far.data.batch_augment import ClipAugment
    from far.data.mixup import build_mixup
    from far.engine.data import EpochSampler, derived_seed, eval_dataset, seed_process, train_dataset, train_loader
    from far.engine.distributed import barrier
    from far.engine.evaluate import evaluate, run_test
    from far.engine.metrics import accuracy
    from far.engine.optim import Schedule, build_optimizer, scaled_lr
    from far.engine.profiling import StepProfiler
    from far.engine.runtime import Loop, Step, fit, run_outcome
    from far.engine.tracking import flatten, git_commit, make_tracker
    from far.models import build_model

    out = Path(out)
    files = RunFiles(str(out))
    t_start = time.perf_counter()
    d = dss.init_distributed()
    main, rank, world = d.is_main, d.rank, d.world_size
    show = run.log.show_bars(progress) and main
    batch = run.batch.resolve(world)
    dc = run.data_config()
    mc = run.model_config()

    # ---- model: identical initial weights on every rank, then per-rank RNG streams ----
    seed_process(run.seed)
    model = build_model(mc)
    init_report = None
    if run.init:
        init_report = load_checkpoint(model, run.init, trust=trust_checkpoint)  # complete or refused; logs its report
    gflops = None
    if main:
        from far.complexity import model_flops

        gflops = model_flops(mc)[0] / 1e9  # counted once per model config (cached), not traced per job
    seed_process(derived_seed(run.seed, 1, rank))  # drop path, dropout and Mixup differ per rank

    # ---- data, schedule, optimiser, engine ----
    dataset = train_dataset(run)
    sampler = EpochSampler(len(dataset), seed=run.seed, rank=rank, world_size=world)
    steps_per_epoch = (sampler.per_rank // batch.micro) // batch.accumulation
    if steps_per_epoch < 1:
        raise ConfigError("batch.total", f"{batch.total} videos per step but the training list has only "
                                         f"{len(dataset)} videos ({dc.train_list})")
    peak_lr = scaled_lr(run.optim.base_lr, batch.total)
    sched = Schedule.from_config(run.optim, peak_lr, steps_per_epoch)
    if dss.on_gpu():
        model.cuda()  # before the optimizer: its fused CUDA kernel needs the parameters there
    optimizer = build_optimizer(model, run.optim, peak_lr)
    if run.compile.active("cuda" if dss.on_gpu() else "cpu"):
        model.compile(mode=run.compile.mode, backend=run.compile.backend)  # in place: state-dict keys unchanged (no "_orig_mod.")
    clips_per_micro = batch.micro * dc.num_sample
    ds_config = dss.build_config(micro_batch=clips_per_micro, accumulation=batch.accumulation, world_size=world,
                                 settings=run.deepspeed)
    engine, ds_opt = dss.initialize(model, optimizer, ds_config)
    precision = dss.resolve_precision(run.deepspeed.precision)
    dtype = dss.input_dtype(precision)
    augment = ClipAugment(dc, "train")  # workers decode; the augmentation runs on engine.device
    mixup = build_mixup(run.augment, mc.num_classes)
    criterion = _criterion(run, mixup is not None)

    # ---- resume ----
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for p in es.clean_incomplete(out):
            log.warning("removed an incomplete checkpoint left by a crash: %s", p)
    barrier()
    trainer = es.TrainerState(world_size=world)
    latest = es.latest_checkpoint(out) if resume else None
    if latest is not None:
        trainer = es.load(engine, latest, rank=rank, trust=trust_checkpoint)
        if main:
            log.info("resuming from %s (epoch %d/%d, step %d of it)", latest.name, trainer.epoch + 1,
                     run.optim.epochs, trainer.step_in_epoch)
    resumed_from = (trainer.epoch, trainer.step_in_epoch) if latest is not None else None
    rng_at_start = es.rng_state()

    # ---- tracking (rank 0) ----
    resolved = run.resolved_dict()
    tracker = make_tracker(run.tracking.enabled, run.tracking.uri, run.tracking.experiment, run.tracking.run_name,
                           trainer.mlflow_run_id, main, out=out, description=run.tracking.description)
    trainer.mlflow_run_id = tracker.run_id if main else trainer.mlflow_run_id
    n_params = sum(p.numel() for p in model.parameters())
    if main:
        Path(files.config).write_text(yaml.safe_dump(resolved, sort_keys=False))
        derived = {"batch.resolved_total": batch.total, "batch.resolved_micro": batch.micro,
                   "batch.resolved_accumulation": batch.accumulation, "world_size": world,
                   "steps_per_epoch": steps_per_epoch, "peak_lr": peak_lr, "precision": precision,
                   "model.params": n_params, "model.gflops_per_view": round(gflops, 4)}
        tracker.log_params(flatten(resolved) | {k: str(v) for k, v in derived.items()})
        tracker.set_tags(dict(run.tracking.tags) | {"far.stage": "finetune", "seed": run.seed,
                                                    "git_commit": git_commit(Path(__file__).resolve().parent), "data_version": data_version(run),
                                                    "init": run.init or "random",
                                                    "resumed_from_epoch": resumed_from[0] if resumed_from else None})
        tracker.log_artifact(files.config)
    # Whatever the set-up above drew from the global RNGs (MLflow, config resolution) must
    # not shift training: restart from the state the checkpoint (or the seed) defines.
    es.set_rng_state(rng_at_start)

    def loader(epoch: int, skip: int):
        sampler.set_epoch(epoch, start=skip * batch.micro)
        return train_loader(dataset, sampler, batch.micro, seed=derived_seed(run.seed, epoch), epoch=epoch,
                            rank=rank, num_workers=run.batch.num_workers)

    def step(b: dict[str, Any], micro_step: int) -> Step:
        x = augment(b, engine.device)
        y = b["label"].to(engine.device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        loss = criterion(engine(x.to(dtype)).float(), y)  # bf16: the engine autocasts (deepspeed_setup)
        return Step(loss, {"loss": loss.detach()}, clips=x.shape[0], replaced=len(b["replaced"]))

    val_data = None

    def validate(epoch: int, row: dict[str, Any]) -> None:
        nonlocal val_data
        row |= {"val_top1": None, "val_top5": None}
        if (epoch + 1) % run.test.val_every and epoch + 1 != run.optim.epochs:
            return
        if val_data is None:
            val_data = eval_dataset(run, clips=1, crops=1, max_videos=run.test.val_max_videos)
        merged, _ = evaluate(engine.module, val_data, rank=rank, world_size=world, batch=run.batch.eval_micro,
                             num_workers=run.batch.num_workers, device=engine.device,
                                 dtype=dss.compute_dtype(precision), progress=False)
        acc = accuracy(merged.probs, merged.label)
        row |= {"val_top1": acc["top1"], "val_top5": acc["top5"]}

    def record(epoch: int, row: dict[str, Any]) -> None:
        if not main:
            return
        _write_history(files, trainer.history + [row], trainer.steps)
        tracker.log_metrics({"train/loss": row["train_loss"], "train/lr": row["lr"],
                             "train/clips_per_s": row["clips_per_s"], "train/data_wait_share": row["data_wait_share"],
                             "train/replaced_videos": row["replaced_videos"]}
                            | ({"val/top1": row["val_top1"], "val/top5": row["val_top5"]}
                               if row["val_top1"] is not None else {}), epoch + 1)
        msg = f"epoch {epoch + 1}/{run.optim.epochs}: loss {row['train_loss']:.4f}, {row['clips_per_s']:.1f} clips/s"
        if row["val_top1"] is not None:
            msg += f", val top-1 {row['val_top1']:.2f}"
        log.info(msg)

    loop = Loop(epochs=run.optim.epochs, steps_per_epoch=steps_per_epoch, accumulation=batch.accumulation,
                every_epochs=run.checkpoint.every_epochs, keep_last=run.checkpoint.keep_last,
                log_every=run.log.every_steps, show_bars=show, stop_after_epoch=stop_after_epoch,
                profiler=StepProfiler(profile) if profile and main else None,
                on_epoch_end=[validate, record])
    with run_outcome(lambda status: tracker.end(status)) as outcome:
        outcome["status"] = fit(engine, ds_opt, trainer, out, loop, loader=loader, step=step, lr_at=sched.lr,
                                tracker=tracker, rank=rank, world=world)
        if outcome["status"] == "KILLED":
            return {"stopped_after_epoch": trainer.epoch}

        # ---- the result ----
        if main:
            save_finetuned(engine.module, files.model, epoch=run.optim.epochs, seed=run.seed,
                           run_config=resolved, mlflow_run_id=trainer.mlflow_run_id)
        barrier()
        test_metrics = None
        if run.test.run_at_end:
            tracker.end("FINISHED")  # run_test reopens the same MLflow run for the test metrics
            test_metrics = run_test(run, files.model, files.test_dir, progress=show,
                                    mlflow_run_id=trainer.mlflow_run_id)
            tracker = make_tracker(run.tracking.enabled, run.tracking.uri, run.tracking.experiment,
                                   run.tracking.run_name, trainer.mlflow_run_id, main)
        summary = {
            "run_name": run.tracking.run_name,
            "epochs": run.optim.epochs,
            "steps": run.optim.epochs * steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
            "train_loss": trainer.history[-1]["train_loss"],
            "val_top1": trainer.history[-1]["val_top1"],
            "wall_s": time.perf_counter() - t_start,
            "train_wall_s": trainer.history[-1]["wall_s"],
            "resumed_from": list(resumed_from) if resumed_from else None,
            "world_size": world,
            "batch": {"total": batch.total, "micro": batch.micro, "accumulation": batch.accumulation},
            "precision": precision,
            "mlflow_run_id": trainer.mlflow_run_id,
            "params_m": n_params / 1e6,
            "gflops": gflops,
            "init": run.init,
            "init_report": init_report.to_dict() if init_report is not None else None,
            "test": {k: test_metrics[k] for k in ("top1", "top5", "videos")} if test_metrics else None,
        }
        if main:
            tracker.log_metrics({"final/train_loss": summary["train_loss"], "final/wall_s": summary["wall_s"]},
                                summary["steps"])
            tmp = Path(files.dir) / ".train.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(files.summary)
            for path in (files.history, files.steps, files.summary):
                tracker.log_artifact(path)
        barrier()
        return summary


def main(argv: list[str] | None = None) -> int:
    """``far train --config RUN.yaml --out DIR``."""
    from far.checkpoints import CheckpointError
    from far.cli import add_job_flags
    from far.engine.config import load_run_config

    p = argparse.ArgumentParser(prog="far train", description="Fine-tune one run with DeepSpeed (resumable).")
    p.add_argument("--config", required=True, help="the run config (e.g. from `far grid run-config`)")
    p.add_argument("--out", required=True, help="output folder; an existing one is resumed")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in OUT (start over)")
    p.add_argument("--stop-after-epoch", type=int, help="end this invocation after N epochs (as if killed)")
    p.add_argument("--profile", metavar="DIR", help="torch.profiler record of optimizer steps 20-24 into DIR "
                                                    "(trace.json, ops.txt)")
    add_job_flags(p, trusts="`init` and OUT's checkpoints")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = load_run_config(args.config)
    except ConfigError as err:
        print(f"far train: {err}", file=sys.stderr)
        return 2
    if run.init and not Path(run.init).is_file():
        print(f"far train: {args.config}: init: checkpoint {run.init} does not exist", file=sys.stderr)
        return 2
    try:
        train(run, args.out, progress=args.progress, resume=not args.no_resume, stop_after_epoch=args.stop_after_epoch,
              trust_checkpoint=args.trust_checkpoint, profile=args.profile)
    except Preempted as err:
        log.warning("%s; start the same command again to resume", err)
        return EXIT_PREEMPTED
    except ConfigError as err:  # found once the job knows its world size and data
        print(f"far train: {err.in_file(args.config)}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"far train: {err}", file=sys.stderr)
        return 2
    return 0
