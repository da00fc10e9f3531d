"""Multi-view testing (``far test``) and the per-epoch validation of ``far train``.

Protocol (VideoMAE/MVD): ``clips x crops`` views per video (2 x 3 SSv2, 5 x 3 K400),
softmax per view, the *mean of the probabilities* per video, top-1/top-5.

Distributed: each rank takes the items ``rank, rank + W, ...`` of the view list (no
padding, uneven shards allowed), returns per-view probabilities tagged with
``(video_index, view)``; rank 0 gathers them and :func:`far.engine.metrics.merge_views`
deduplicates, so every video counts exactly once whatever the world size.

Videos that cannot be decoded are reported (``unreadable`` in metrics.json, with the
reason), never silently dropped: the dataset replaces each by the next readable video,
whose duplicated views the merge removes, so the corrupt video is simply absent from
the counted videos and listed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from far.engine.metrics import Merged, ViewRecords, accuracy, merge_views, topk_correct
from far.layout import TEST_METRICS, TEST_PREDICTIONS, RunFiles

log = logging.getLogger(__name__)


# ---- the forward pass over one rank's shard ------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, views: Any, *, device: torch.device, dtype: torch.dtype,
            progress: bool = False, desc: str = "test") -> tuple[ViewRecords, list[tuple[str, str]]]:
    """Per-view softmax probabilities of this rank's items (each a decoded temporal clip,
    cut into its spatial views on ``device`` by ``views``, a far.data.batch_augment.EvalViews),
    and the corrupt files met."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    idx, view_ids, labels, probs, replaced = [], [], [], [], []
    t0, seen = time.perf_counter(), 0
    bar = tqdm(total=len(loader), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True)
    for batch in loader:
        video, video_index, view, label = views(batch, device)
        x = video.to(dtype)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32 and device.type == "cuda"):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        idx.append(video_index.numpy())
        view_ids.append(view.numpy())
        labels.append(label.numpy())
        replaced += [tuple(r) for r in batch["replaced"]]
        seen += len(x)
        bar.update(1)
        bar.set_postfix(clips_s=f"{seen / (time.perf_counter() - t0):.1f}")
    bar.close()
    model.train(was_training)
    if not probs:
        return ViewRecords.concat([]), replaced
    return ViewRecords(np.concatenate(idx).astype(np.int64), np.concatenate(view_ids).astype(np.int64),
                       np.concatenate(labels).astype(np.int64), np.concatenate(probs).astype(np.float32)), replaced


def gather(records: ViewRecords, replaced: list[tuple[str, str]]) -> tuple[ViewRecords, list[tuple[str, str]]]:
    """All ranks' records, and the corrupt videos (one per path, sorted) on every rank."""
    import torch.distributed as dist

    from far.data.dataset import unique_videos  # one entry per video, not per view

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records, unique_videos(replaced)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (records, replaced))
    recs = ViewRecords.concat(p[0] for p in parts)
    return recs, unique_videos(r for p in parts for r in p[1])


def evaluate(model: torch.nn.Module, dataset: Any, *, rank: int, world_size: int, batch: int, num_workers: int,
             device: torch.device, dtype: torch.dtype, progress: bool = False, desc: str = "test"
             ) -> tuple[Merged, list[tuple[str, str]]]:
    """Multi-view evaluation of ``dataset`` (a test-mode VideoDataset) across all ranks.
    ``batch``: views per forward (a loader batch holds ``batch // test_crops`` clips)."""
    from far.data.batch_augment import EvalViews
    from far.engine.data import eval_loader

    loader = eval_loader(dataset, rank, world_size, max(1, batch // dataset.cfg.test_crops), num_workers)
    recs, bad = predict(model, loader, EvalViews(dataset.cfg), device=device, dtype=dtype, progress=progress,
                        desc=desc)
    recs, bad = gather(recs, bad)
    return merge_views(recs), bad


def summarise(merged: Merged, bad: list[tuple[str, str]], *, expected_videos: int, clips: int, crops: int) -> dict[str, Any]:
    """The metrics of one test: top-1/top-5 (percent), counts, unreadable videos."""
    acc = accuracy(merged.probs, merged.label) if len(merged.label) else {"top1": float("nan"), "top5": float("nan")}
    incomplete = int((merged.views != clips * crops).sum()) if len(merged.views) else 0
    return {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "videos": int(len(merged.label)),
        "expected_videos": int(expected_videos),
        "views": clips * crops,
        "clips": clips,
        "crops": crops,
        "videos_with_missing_views": incomplete,
        "unreadable": [{"path": p, "reason": r} for p, r in bad],
    }


def write_predictions(path: Path, merged: Merged, samples: list[tuple[str, int]]) -> None:
    """One row per counted video: path, label, top-1 prediction, top-5, correctness, views."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(merged.label) == 0:
        path.write_text("video,label,pred,top5,correct1,correct5,views,prob_label\n")
        return
    order = np.argsort(-merged.probs, axis=1, kind="stable")[:, :5]
    ok = topk_correct(merged.probs, merged.label)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "label", "pred", "top5", "correct1", "correct5", "views", "prob_label"])
        for i, vi in enumerate(merged.video_index):
            w.writerow([samples[vi][0], int(merged.label[i]), int(order[i, 0]), " ".join(map(str, order[i])),
                        int(ok[1][i]), int(ok[5][i]), int(merged.views[i]),
                        f"{float(merged.probs[i, merged.label[i]]):.6f}"])
    tmp.replace(path)


# ---- far test --------------------------------------------------------------------------------
def run_test(run: Any, checkpoint: str | Path, out: str | Path, *, progress: bool | None = None,
             mlflow_run_id: str | None = None, max_videos: int | None = None,
             trust_checkpoint: bool = False, complete: bool = False, fmt: str | None = None) -> dict[str, Any]:
    """Multi-view test of ``checkpoint`` with ``run``'s data and test views; writes
    ``out/predictions.csv`` and ``out/metrics.json`` (rank 0) and returns the metrics
    (``load_report``: what the load found). ``trust_checkpoint``: allow the full unpickler
    (``--trust-checkpoint``); ``complete``: refuse a checkpoint that lacks any weight of
    the model (a released model must bring its own head); ``fmt``: its key layout (None:
    detected)."""
    from far.checkpoints import load_checkpoint
    from far.engine import deepspeed_setup as dss
    from far.engine.data import eval_dataset
    from far.engine.distributed import barrier
    from far.engine.tracking import make_tracker
    from far.models import build_model

    out = Path(out)
    t0 = time.perf_counter()
    d = dss.init_distributed()
    progress = run.log.show_bars(progress) and d.is_main
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dtype = dss.compute_dtype(dss.resolve_precision(run.deepspeed.precision))
    model = build_model(run.model_config())
    report = load_checkpoint(model, checkpoint, fmt=fmt, trust=trust_checkpoint, complete=complete)  # logs a one-line report
    model.to(device)
    dataset = eval_dataset(run, clips=run.test.clips, crops=run.test.crops, max_videos=max_videos)
    merged, bad = evaluate(model, dataset, rank=d.rank, world_size=d.world_size, batch=run.batch.eval_micro,
                           num_workers=run.batch.num_workers, device=device, dtype=dtype, progress=progress,
                           desc=f"test {run.test.clips}x{run.test.crops}")
    metrics = summarise(merged, bad, expected_videos=len(dataset.samples), clips=run.test.clips, crops=run.test.crops)
    metrics |= {"checkpoint": str(checkpoint), "world_size": d.world_size, "wall_s": time.perf_counter() - t0,
                "load_report": {"format": report.format, "loaded_tensors": len(report.loaded)}}
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / TEST_PREDICTIONS, merged, dataset.samples)
        if bad:
            log.warning("%d unreadable video(s) left out of the test: %s", len(bad), ", ".join(p for p, _ in bad[:5]))
        tracker = make_tracker(run.tracking.enabled, run.tracking.uri, run.tracking.experiment,
                               run.tracking.run_name, mlflow_run_id, True)
        metrics["mlflow_run_id"] = tracker.run_id
        _write_json(out / TEST_METRICS, metrics)
        tracker.log_metrics({"test/top1": metrics["top1"], "test/top5": metrics["top5"],
                             "test/videos": metrics["videos"], "test/unreadable": len(bad)})
        tracker.log_artifact(out / TEST_METRICS, "test")
        tracker.log_artifact(out / TEST_PREDICTIONS, "test")
        tracker.end()
        log.info("test: top-1 %.2f  top-5 %.2f  (%d videos x %d views, %d unreadable)", metrics["top1"],
                 metrics["top5"], metrics["videos"], metrics["views"], len(bad))
    barrier()
    return metrics


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x).__name__)


def _mlflow_run_of(checkpoint: Path) -> str | None:
    """The MLflow run of the fine-tune that wrote ``checkpoint`` (its train.json), if any."""
    info = Path(RunFiles(str(checkpoint.parent)).summary)
    try:
        return json.loads(info.read_text()).get("mlflow_run_id")
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """``far test --config RUN.yaml --checkpoint CKPT --out DIR``."""
    from far.checkpoints import CheckpointError
    from far.cli import add_job_flags
    from far.engine.config import ConfigError, load_run_config

    p = argparse.ArgumentParser(prog="far test", description="Multi-view test of a fine-tuned model.")
    p.add_argument("--config", required=True, help="the run config (RUN.yaml) of the fine-tune")
    p.add_argument("--checkpoint", required=True, help="fine-tuned weights (OUT/model.pth of far train)")
    p.add_argument("--out", required=True, help="folder for predictions.csv and metrics.json")
    p.add_argument("--clips", type=int, help="override test.clips")
    p.add_argument("--crops", type=int, help="override test.crops")
    p.add_argument("--max-videos", type=int, help="test the first N videos only")
    p.add_argument("--mlflow-run-id", help="log into this MLflow run (default: the fine-tune's, from train.json)")
    add_job_flags(p, trusts="CKPT")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = load_run_config(args.config)
        if args.clips or args.crops:
            from far.engine.config import run_config

            d = run.to_dict()
            d["test"] |= {k: v for k, v in (("clips", args.clips), ("crops", args.crops)) if v}
            run = run_config(d)
    except ConfigError as err:
        print(f"far test: {err if err.source else err.in_file(args.config)}", file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        print(f"far test: checkpoint {ckpt} does not exist", file=sys.stderr)
        return 2
    try:
        metrics = run_test(run, ckpt, args.out, progress=args.progress, max_videos=args.max_videos,
                           mlflow_run_id=args.mlflow_run_id or _mlflow_run_of(ckpt),
                           trust_checkpoint=args.trust_checkpoint)
    except CheckpointError as err:
        print(f"far test: {err}", file=sys.stderr)
        return 2
    return 0 if math.isfinite(metrics["top1"]) else 1
