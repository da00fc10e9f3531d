"""``far data synth`` and ``far data prepare`` (dispatched from far/cli.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from far.data.synth import DEFAULT_FRAMES, SynthSpec


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 96x128 (got {text!r})") from err
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``far data``."""
    defaults = SynthSpec()
    parser = argparse.ArgumentParser(prog="far data", description="Synthetic datasets and SSv2/K400 preparation.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic dataset in the official SSv2 or K400 layout")
    s.add_argument("--kind", choices=["ssv2", "k400"], required=True)
    s.add_argument("--out", required=True, help="output folder (the raw root for `far data prepare`)")
    s.add_argument("--classes", type=int, default=defaults.classes)
    s.add_argument("--videos-per-class-train", type=int, default=defaults.videos_per_class_train)
    s.add_argument("--videos-per-class-val", type=int, default=defaults.videos_per_class_val)
    s.add_argument("--size", type=_size, default=(defaults.height, defaults.width), help="HxW (default %(default)s)")
    s.add_argument("--frames", type=int, default=None,
                   help=f"frames per video (default: {DEFAULT_FRAMES['ssv2']} for ssv2, {DEFAULT_FRAMES['k400']} for k400)")
    s.add_argument("--fps", type=int, default=defaults.fps)
    s.add_argument("--seed", type=int, default=defaults.seed)
    s.add_argument("--object-scale", type=float, default=defaults.object_scale,
                   help="object radius as a fraction of the short side (default %(default)s)")
    s.add_argument("--background-contrast", type=float, default=defaults.background_contrast,
                   help="background texture contrast, 0-1; 1 = full range (default %(default)s)")
    s.add_argument("--motion-amplitude", type=float, default=defaults.motion_amplitude,
                   help="motion amplitude as a fraction of the frame (default %(default)s)")
    s.add_argument("--motion-period", type=float, default=defaults.motion_period,
                   help="k400: frames per motion cycle (default %(default)s)")
    s.add_argument("--workers", type=int, default=1, help="encoding processes (same files for any number)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("prepare", help="check a raw SSv2/K400 download and write path-label lists")
    p.add_argument("--dataset", choices=["ssv2", "k400"], required=True)
    p.add_argument("--root", required=True, help="raw dataset folder (official layout)")
    p.add_argument("--out", required=True, help="folder for train.csv, val.csv, classes.json, report.json")
    p.add_argument("--reencode-short-side", type=int, default=None, metavar="PX",
                   help="re-encode to H.264 with this short side (e.g. 320) into OUT/videos")
    p.add_argument("--workers", type=int, default=1, help="processes for checking/re-encoding")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Entry point: returns 0 on success, 2 on missing raw data or bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "synth":
        from far.data.encode import EncoderUnavailable
        from far.data.synth import generate

        try:
            spec = SynthSpec(kind=args.kind, classes=args.classes,
                             videos_per_class_train=args.videos_per_class_train,
                             videos_per_class_val=args.videos_per_class_val, height=args.size[0],
                             width=args.size[1], frames=args.frames, fps=args.fps, seed=args.seed,
                             object_scale=args.object_scale, background_contrast=args.background_contrast,
                             motion_amplitude=args.motion_amplitude, motion_period=args.motion_period)
            info = generate(spec, args.out, progress=not args.quiet, workers=args.workers)
        except (ValueError, EncoderUnavailable) as err:
            print(f"far data synth: {err}", file=sys.stderr)
            return 2
        print(f"wrote synthetic-{info['kind']} to {args.out}: {len(info['classes'])} classes, "
              f"{info['videos']['train']} train / {info['videos']['val']} val videos ({info['codec']})")
        return 0

    from far.data.layouts import MissingRawData
    from far.data.prepare import prepare, summary

    if args.workers < 1:
        print("far data prepare: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        report = prepare(args.dataset, args.root, args.out, args.reencode_short_side, args.workers,
                         progress=not args.quiet)
    except MissingRawData as err:
        print(f"far data prepare: raw data missing.\n{err}", file=sys.stderr)
        return 2
    for line in summary(report):
        print(line)
    return 0
