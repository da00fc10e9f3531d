"""One resumable pre-training run: VideoMAE, MVD or the image-MAE teacher.

The loop is shared by the three methods; only :func:`compute_loss` differs. It runs
through DeepSpeed exactly as fine-tuning does (:mod:`far.engine.distributed` +
:mod:`far.engine.deepspeed_setup`: a torch AdamW passed in, lr set per step from a
warm-up + cosine schedule, fp32 on CPU), logs to MLflow (failures only warn), shows a
tqdm bar per epoch, saves a training state after every epoch (atomic, keep-last-k) and
resumes from the last complete one. The product is ``<out>/checkpoint.pth`` in the
official VideoMAE / MVD layout (see :mod:`far.pretrain.export`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from far.layout import PRETRAIN_CHECKPOINT, PRETRAIN_METRICS
from far.pretrain.config import PretrainConfig, encoder_config
from far.pretrain.export import mvd_state, save_official, videomae_state
from far.pretrain.losses import distillation_loss, pixel_targets, reconstruction_loss
from far.pretrain.masking import TubeMaskGenerator
from far.pretrain.models import (FrozenTeachers, MVDPretrainModel, PretrainEncoder, VideoMAEPretrainModel,
                                 encoder_from_pretrain_state, feature_targets)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = PRETRAIN_CHECKPOINT


@dataclass
class PretrainResult:
    """What a run produced (also written to ``<out>/metrics.json``)."""

    method: str
    checkpoint: str
    epochs: int
    steps: int
    epoch_loss: list[float] = field(default_factory=list)
    first_step_loss: float = float("nan")
    wall_s: float = 0.0  # this invocation only
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- models ------------------------------------------------------------------------------
def _teacher_encoder(path: str | Path, *, image: bool, student_model: dict, trust: bool = False) -> PretrainEncoder:
    """A frozen encoder from a VideoMAE-layout pre-training checkpoint (ours or official)."""
    from far.checkpoints import detect_format, read_checkpoint

    state, meta = read_checkpoint(path, trust=trust)
    fmt = detect_format(state, meta)
    if fmt != "videomae_pretrain":
        raise ValueError(f"teacher {path}: expected a VideoMAE pre-training layout, found {fmt}")
    info = meta.get("far_pretrain") or {}
    want = "image_mae" if image else "videomae"
    if info.get("method") not in (None, want):
        raise ValueError(f"teacher {path} was pre-trained with {info.get('method')!r}, expected {want!r}")
    spec = dict(info.get("model") or student_model)
    enc = encoder_from_pretrain_state(state, encoder_config(spec, pos_embed="videomae", image=image))
    return enc


def build_models(cfg: PretrainConfig, *, teacher_video: str | Path | None = None,
                 teacher_image: str | Path | None = None,
                 trust_checkpoint: bool = False) -> tuple[nn.Module, FrozenTeachers | None]:
    """The trainable model of ``cfg.method`` and, for MVD, the frozen teachers
    (``trust_checkpoint``: see far.checkpoints.safe_torch_load)."""
    d = cfg.decoder
    if cfg.method in ("videomae", "image_mae"):
        enc = encoder_config(cfg.model, pos_embed="videomae", drop_path=cfg.drop_path, image=cfg.method == "image_mae")
        return VideoMAEPretrainModel(enc, d.width, d.depth, d.heads), None
    teacher_video = teacher_video or cfg.teacher_video
    teacher_image = teacher_image or cfg.teacher_image
    if not teacher_video:
        raise ValueError("MVD needs a video teacher: --teacher-video PATH (a `far pretrain --method videomae` checkpoint)")
    if not teacher_image:
        raise ValueError("MVD needs an image teacher: --teacher-image PATH (a `far pretrain --method image_mae` checkpoint)")
    vid = _teacher_encoder(teacher_video, image=False, student_model=cfg.model, trust=trust_checkpoint)
    img = _teacher_encoder(teacher_image, image=True, student_model=cfg.model, trust=trust_checkpoint)
    enc = encoder_config(cfg.model, pos_embed="mvd", drop_path=cfg.drop_path)
    if img.cfg.patch_size != enc.patch_size or img.cfg.img_size != enc.img_size:
        raise ValueError("the image teacher's patch grid does not match the student's")
    teachers = FrozenTeachers(img, vid, enc.tubelet_size)
    model = MVDPretrainModel(enc, d.width, d.depth, d.heads, img.cfg.embed_dim, vid.cfg.embed_dim)
    return model, teachers


def compute_loss(cfg: PretrainConfig, model: nn.Module, teachers: FrozenTeachers | None, x: torch.Tensor,
                 masks: TubeMaskGenerator, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The method's loss on a batch of clips x (B, C, T, H, W)."""
    enc_cfg = _module(model).encoder.cfg
    if cfg.method == "image_mae":  # every tubelet's first frame is one image
        b, c, t, h, w = x.shape
        x = x[:, :, :: encoder_config(cfg.model, pos_embed="videomae").tubelet_size]
        x = x.transpose(1, 2).reshape(-1, c, 1, h, w)
    mask = masks.at_step(step, x.shape[0], device=x.device)
    if cfg.method in ("videomae", "image_mae"):
        pred = model(x, mask)
        target = pixel_targets(x, mask, enc_cfg.tubelet_size, enc_cfg.patch_size, normalize=cfg.normalize_target)
        loss = reconstruction_loss(pred, target)
        return loss, {"loss": loss.item()}
    img_feat, vid_feat = teachers(x)
    pred_img, pred_vid = model(x, mask)
    l_img = distillation_loss(pred_img, feature_targets(img_feat, mask), cfg.distill_loss)
    l_vid = distillation_loss(pred_vid, feature_targets(vid_feat, mask), cfg.distill_loss)
    loss = l_img + l_vid
    return loss, {"loss": loss.item(), "loss_img": l_img.item(), "loss_vid": l_vid.item()}


def _module(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def export_state(cfg: PretrainConfig, model: nn.Module) -> dict[str, torch.Tensor]:
    m = _module(model)
    return mvd_state(m) if cfg.method == "mvd" else videomae_state(m)


# ---- optimisation --------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, 1-D parameters and mask tokens
    (VideoMAE's no_weight_decay list: pos_embed, cls_token, mask_token)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or "mask_token" in name or "pos_embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]


def schedule(cfg: PretrainConfig, steps_per_epoch: int):
    """The fine-tuning schedule (far.engine.optim.Schedule): linear warm-up from 0 over
    ``warmup_epochs``, then cosine to ``min_lr``, per optimizer step."""
    from far.engine.optim import Schedule

    return Schedule(peak_lr=cfg.lr, min_lr=cfg.min_lr, warmup_start_lr=0.0,
                    warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
                    total_steps=cfg.epochs * steps_per_epoch)


# ---- the run --------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig, out: str | Path, *, teacher_video: str | Path | None = None,
             teacher_image: str | Path | None = None, progress: bool = True, tracking: bool = True,
             resume: bool = True, stop_after_epoch: int | None = None,
             trust_checkpoint: bool = False) -> PretrainResult:
    """Run (or resume) one pre-training; returns its result and writes ``<out>/checkpoint.pth``.

    The loop is far.engine.runtime.fit, as for fine-tuning: training states are
    far.engine.state checkpoints under ``<out>/checkpoints/`` (one per epoch, atomic,
    keep-last-k); SIGTERM saves one mid-epoch and raises Preempted (exit 143).
    ``stop_after_epoch`` ends this invocation early (tests).
    ``trust_checkpoint`` lets the teachers and the resumed state use the full unpickler.
    """
    from far.engine import deepspeed_setup as dss
    from far.engine import state as es
    from far.engine.data import EpochSampler, derived_seed, seed_process
    from far.engine.distributed import barrier
    from far.engine.runtime import Loop, Step, fit, run_outcome
    from far.engine.tracking import flatten, make_tracker
    from far.pretrain.data import build_source, clip_maker, collate, steps_per_epoch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dist_env = dss.init_distributed()
    main, rank = dist_env.is_main, dist_env.rank

    seed_process(cfg.seed)  # the one seed rule of a training process (far.engine.data)
    model, teachers = build_models(cfg, teacher_video=teacher_video, teacher_image=teacher_image,
                                   trust_checkpoint=trust_checkpoint)
    enc_cfg = model.encoder.cfg
    source = build_source(cfg.data, num_frames=encoder_config(cfg.model, pos_embed="videomae").num_frames,
                          img_size=enc_cfg.img_size, seed=cfg.seed)
    n_steps = cfg.steps_per_epoch or steps_per_epoch(len(source), cfg.batch, dist_env.world_size)
    sched = schedule(cfg, n_steps)
    copies = int(getattr(getattr(source, "cfg", None), "num_sample", 1))  # repeated augmentation
    augment = clip_maker(source)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, foreach=False)
    ds_config = dss.build_config(micro_batch=cfg.batch * copies, accumulation=1, world_size=dist_env.world_size,
                                 settings=cfg.deepspeed)
    engine, ds_opt = dss.initialize(model, optimizer, ds_config)
    precision = dss.resolve_precision(cfg.deepspeed.precision)
    dtype = dss.input_dtype(precision)
    if teachers is not None:
        teachers.to(engine.device, dtype)

    trainer = es.TrainerState(world_size=dist_env.world_size)
    if main:
        es.clean_incomplete(out)
    barrier()
    latest = es.latest_checkpoint(out) if resume else None
    if latest is not None:
        info = json.loads((latest / "trainer.json").read_text())
        if info.get("history") and info["history"][0].get("method") != cfg.method:
            raise ValueError(f"{latest}: a {info['history'][0].get('method')} run, not {cfg.method}; use another --out")
        trainer = es.load(engine, latest, rank=rank, trust=trust_checkpoint)
        if main:
            log.info("resumed from %s (epoch %d of %d)", latest, trainer.epoch, cfg.epochs)
    resumed = trainer.epoch

    # The fine-tuning engine's tracker: one MLflow run per job, continued on resume,
    # an unreachable store warned about once.
    tracker = make_tracker(tracking and cfg.tracking.enabled, cfg.tracking.uri, cfg.tracking.experiment,
                           cfg.tracking.run_name or f"pretrain-{cfg.method}-{out.name}", trainer.mlflow_run_id, main,
                           out=out, description=cfg.tracking.description)
    trainer.mlflow_run_id = tracker.run_id if main else trainer.mlflow_run_id
    if not resumed:
        tracker.log_params(flatten(cfg.to_dict() | {"steps_per_epoch": n_steps, "world_size": dist_env.world_size,
                                        "precision": precision, "out": str(out)}))
    tracker.set_tags({"far.stage": "pretrain", "far.method": cfg.method, "far.resumed_from_epoch": str(resumed)})
    masks = TubeMaskGenerator(enc_cfg.grid, cfg.mask_ratio, cfg.seed)
    result = PretrainResult(method=cfg.method, checkpoint=str(out / CHECKPOINT_NAME), epochs=cfg.epochs,
                            steps=n_steps * cfg.epochs, epoch_loss=[h["train_loss"] for h in trainer.history],
                            first_step_loss=trainer.history[0]["first_step_loss"] if trainer.history else float("nan"),
                            resumed_from_epoch=resumed)
    sampler = EpochSampler(len(source), seed=cfg.seed, rank=rank, world_size=dist_env.world_size,
                           length=n_steps * cfg.batch * dist_env.world_size)

    def loader(epoch: int, skip: int):
        sampler.set_epoch(epoch, start=skip * cfg.batch)
        if hasattr(source, "reseed"):  # far.data augmentation seeds: a function of (seed, epoch, rank)
            source.reseed(derived_seed(cfg.seed, epoch, rank))
        return torch.utils.data.DataLoader(source, batch_size=cfg.batch, sampler=sampler, drop_last=True,
                                           num_workers=cfg.num_workers, collate_fn=collate)

    def step(batch: dict[str, Any], micro_step: int) -> Step:
        x = augment(batch, engine.device).to(dtype)
        with dss.autocast(precision, engine.device):
            loss, parts = compute_loss(cfg, engine, teachers, x, masks, micro_step)
        if micro_step == 0:
            result.first_step_loss = parts["loss"]
        return Step(loss, parts, clips=x.shape[0], replaced=len(batch.get("replaced", [])))

    def record(epoch: int, row: dict[str, Any]) -> None:
        row |= {"method": cfg.method, "first_step_loss": result.first_step_loss}
        result.epoch_loss.append(row["train_loss"])
        seconds = row["wall_s"] - (trainer.history[-1]["wall_s"] if trainer.history else 0.0)
        tracker.log_metrics({"epoch/loss": row["train_loss"], "epoch/seconds": seconds,
                             "epoch/replaced_videos": row["replaced_videos"]}, epoch + 1)

    loop = Loop(epochs=cfg.epochs, steps_per_epoch=n_steps, keep_last=cfg.keep_last, log_every=5,
                desc=cfg.method, show_bars=progress, stop_after_epoch=stop_after_epoch, on_epoch_end=[record])
    with run_outcome(tracker.end) as outcome:
        outcome["status"] = fit(engine, ds_opt, trainer, out, loop, loader=loader, step=step, lr_at=sched.lr,
                                tracker=tracker, rank=rank, world=dist_env.world_size)
        if outcome["status"] == "KILLED":
            result.wall_s = time.perf_counter() - t_start
            return result
        result.wall_s = time.perf_counter() - t_start
        if main:
            info = {"model": dict(cfg.model), "decoder": cfg.decoder.__dict__, "mask_ratio": cfg.mask_ratio,
                    "epoch_loss": result.epoch_loss}
            save_official(export_state(cfg, engine), out / CHECKPOINT_NAME, epoch=cfg.epochs, args=cfg.to_dict(),
                          method=cfg.method, **info)
            (out / PRETRAIN_METRICS).write_text(json.dumps(result.to_dict(), indent=2))
            tracker.log_metrics({"final/loss": result.epoch_loss[-1], "final/wall_s": result.wall_s}, result.steps)
            tracker.log_artifact(out / PRETRAIN_METRICS)
        barrier()
        return result
