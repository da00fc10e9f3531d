"""``far pretrain``: offline VideoMAE / MVD / image-MAE pre-training at small scale.

    far pretrain --method videomae  --config CFG.yaml --out DIR
    far pretrain --method image_mae --config CFG.yaml --out DIR
    far pretrain --method mvd       --config CFG.yaml --out DIR \\
                 --teacher-video VIDEOMAE_DIR/checkpoint.pth --teacher-image IMAGE_DIR/checkpoint.pth

Writes DIR/checkpoint.pth in the official layout of the method (see docs/pretraining.md),
DIR/metrics.json, and resumable training states under DIR/state/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="far pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=("videomae", "mvd", "image_mae"),
                   help="overrides the config's `method`")
    p.add_argument("--config", required=True, help="pre-training YAML (see docs/pretraining.md)")
    p.add_argument("--out", required=True, help="output folder (resumed when it holds a training state)")
    p.add_argument("--teacher-video", help="MVD: VideoMAE pre-training checkpoint of the video teacher")
    p.add_argument("--teacher-image", help="MVD: image-MAE checkpoint of the image teacher")
    p.add_argument("--epochs", type=int, help="override `epochs`")
    p.add_argument("--seed", type=int, help="override `seed`")
    p.add_argument("--no-resume", action="store_true", help="start over even if DIR/state holds a run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--no-tracking", action="store_true", help="no MLflow run")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load the teachers and DIR's training states even if they need Python's full "
                        "unpickler, which runs any code they contain (only for files you trust)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from far.pretrain.config import load_config

    try:
        cfg = load_config(args.config, method=args.method, epochs=args.epochs, seed=args.seed)
    except ValueError as err:
        print(f"far pretrain: {err}", file=sys.stderr)
        return 2
    from far.checkpoints import CheckpointError
    from far.engine.runtime import EXIT_PREEMPTED, Preempted
    from far.pretrain.train import pretrain

    try:
        res = pretrain(cfg, args.out, teacher_video=args.teacher_video, teacher_image=args.teacher_image,
                       progress=not args.no_progress, tracking=not args.no_tracking, resume=not args.no_resume,
                       trust_checkpoint=args.trust_checkpoint)
    except Preempted as err:
        print(f"far pretrain: {err}; start the same command again to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"far pretrain: {err}", file=sys.stderr)
        return 2
    print(f"far pretrain: {cfg.method} done in {res.wall_s:.1f} s; loss {res.first_step_loss:.4f} (first step) -> "
          f"{res.epoch_loss[-1]:.4f} (last epoch mean); checkpoint {res.checkpoint}")
    return 0
