"""``far data synth``, ``far data prepare`` and ``far data check`` (dispatched from far/cli.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from far.data.synth import DEFAULT_FRAMES, SynthSpec


def _pair(form: str, example: str) -> Callable[[str], tuple[int, int]]:
    """An argparse type for two integers written ``AxB`` (``form`` and ``example`` name them
    in the error)."""
    def parse(text: str) -> tuple[int, int]:
        try:
            a, b = (int(v) for v in text.lower().split("x"))
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {form}, e.g. {example} (got {text!r})") from err
        return a, b
    return parse


_size = _pair("HxW", "96x128")
_views = _pair("CLIPSxCROPS", "2x3")


def _mapping(text: str) -> dict[str, Any]:
    """A YAML/JSON mapping given on the command line, e.g. '{backbone: vit_tiny_cpu}'."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not a YAML mapping: {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping like '{{key: value}}', got {text!r}")
    return value


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

    from far.cli import add_job_flags
    from far.engine.data_check import DEFAULT_FAIL_BELOW, DEFAULT_TOLERANCE, EXIT_FAIL

    c = sub.add_parser(
        "check", help="test a released fine-tuned model on the prepared val list against its published top-1",
        description="Test a released fine-tuned model (a `kind: finetuned` registry entry, or a file with "
                    "--published-top1) on a prepared validation list with `far test`'s multi-view protocol, "
                    "and compare with the published top-1. Writes REPORT (Markdown) and REPORT with .json.",
        epilog=f"Exit status: 0 pass or borderline; {EXIT_FAIL} fail (below the published top-1 by more than "
               "--fail-below; --report-only gives 0); 2 bad arguments, missing data or a checkpoint that cannot "
               "be fetched or loaded.")
    c.add_argument("--prepared", required=True, help="folder of `far data prepare --out` (val.csv, report.json)")
    c.add_argument("--checkpoint", required=True,
                   help="a fine-tuned registry name (fetched like `far fetch NAME`) or a checkpoint file")
    c.add_argument("--report", default="reports/data_check.md", help="Markdown report; JSON next to it (%(default)s)")
    c.add_argument("--out", default=None, help="folder for the test's predictions.csv/metrics.json "
                                               "(default: next to the report, data_check/<name>)")
    c.add_argument("--registry", default="params/checkpoints.yaml")
    c.add_argument("--dest", default="data/checkpoints", help="where registry checkpoints are fetched to")
    c.add_argument("--published-top1", type=float, help="published top-1 (percent); required for a file")
    c.add_argument("--published-top5", type=float)
    c.add_argument("--published-in", default="stated on the command line", help="where the numbers come from")
    c.add_argument("--views", type=_views, help="CLIPSxCROPS (default: the registry's, else 2x3 SSv2 / 5x3 K400)")
    c.add_argument("--model", type=_mapping, default={},
                   help="model keys over the registry's backbone, e.g. '{backbone: vit_tiny_cpu}' (required for a file)")
    c.add_argument("--data", type=_mapping, default={}, help="data settings over the protocol's, e.g. '{short_side: 64}'")
    c.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="points either way that pass (default %(default)s)")
    c.add_argument("--fail-below", type=float, default=DEFAULT_FAIL_BELOW,
                   help="points below the published top-1 that fail (default %(default)s)")
    c.add_argument("--known-size", type=int, action="append", default=None, metavar="N",
                   help="a validation-set size to accept instead of the known copies' (repeatable)")
    c.add_argument("--max-videos", type=int, help="test the first N videos only (a quick look, not a verdict)")
    c.add_argument("--eval-micro", type=int, default=8, help="views per forward (default %(default)s)")
    c.add_argument("--workers", type=int, default=2, help="loader workers (default %(default)s)")
    c.add_argument("--report-only", action="store_true", help="exit 0 even when the check fails")
    add_job_flags(c, trusts="the checkpoint")

    r = sub.add_parser("check-report", help="one report of several checks (the pipeline's reports/data_check.md)")
    r.add_argument("records", nargs="+", help="JSON files far data check wrote (next to its --report)")
    r.add_argument("--report", default="reports/data_check.md", help="Markdown report; JSON next to it (%(default)s)")

    e = sub.add_parser("stand-in", help="export a finished fine-tune as a released model: official layout + registry entry",
                       description="Write RUN's weights in the official fine-tuned layout ({\"module\": state_dict}) "
                                   "and a registry file with one `kind: finetuned` entry whose published numbers are "
                                   "RUN's own multi-view test (test/metrics.json): `far data check --registry` then "
                                   "tests it like a released model. The embedded default's data check uses this.")
    e.add_argument("run", help="a finished run folder (model.pth, run.yaml, test/metrics.json)")
    e.add_argument("--name", required=True, help="the registry name")
    e.add_argument("--method", required=True, choices=["videomae", "mvd"], help="its pre-training")
    e.add_argument("--backbone", required=True, choices=["vit_s", "vit_b"], help="the paper size it stands for")
    e.add_argument("--pretrain-dataset", required=True, choices=["ssv2", "k400"])
    e.add_argument("--checkpoint", required=True, help="where the weights go")
    e.add_argument("--registry", required=True, help="where the registry file goes")
    return parser


def main(argv: list[str]) -> int:
    """Entry point: returns 0 on success, 2 on missing raw data or bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return _check(args)
    if args.command == "check-report":
        from far.engine.data_check import read_records, write_report

        try:
            md, js = write_report(read_records(args.records), args.report)
        except ValueError as err:
            print(f"far data check-report: {err}", file=sys.stderr)
            return 2
        print(f"far data check-report: wrote {md} and {js}")
        return 0
    if args.command == "stand-in":
        from far.checkpoints import CheckpointError
        from far.engine.data_check import export_stand_in
        from far.fetch import RegistryError

        try:
            entry = export_stand_in(args.run, args.name, method=args.method, backbone=args.backbone,
                                    pretrain_dataset=args.pretrain_dataset, checkpoint=args.checkpoint,
                                    registry=args.registry)
        except (OSError, KeyError, ValueError, CheckpointError, RegistryError) as err:
            print(f"far data stand-in: {args.run}: {err}", file=sys.stderr)
            return 2
        print(f"far data stand-in: {args.name}: {args.checkpoint} (published top-1 {entry['published']['top1']:.2f}), "
              f"registry {args.registry}")
        return 0
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


def _check(args: argparse.Namespace) -> int:
    """``far data check``: see far/engine/data_check.py."""
    from pathlib import Path

    from far.checkpoints import CheckpointError
    from far.config import ConfigError
    from far.engine.data_check import Target, read_prepared, registry_target, run_check, write_report
    from far.fetch import PROTOCOL_VIEWS, AllSourcesFailed, FetchError

    def fail(msg: str) -> int:
        print(f"far data check: {msg}", file=sys.stderr)
        return 2

    try:
        if Path(args.checkpoint).is_file():
            if args.published_top1 is None or not args.model:
                return fail(f"{args.checkpoint} is a file: give --published-top1 and --model (its backbone)")
            dataset = read_prepared(args.prepared)["dataset"]
            clips, crops = args.views or PROTOCOL_VIEWS[dataset]
            target = Target(name=Path(args.checkpoint).name, path=Path(args.checkpoint), fmt=None, dataset=dataset,
                            top1=args.published_top1, top5=args.published_top5, clips=clips, crops=crops,
                            source=args.published_in, model={})
        else:
            target = registry_target(args.checkpoint, args.registry, args.dest)
            if args.published_top1 is not None:
                target.top1, target.top5, target.source = args.published_top1, args.published_top5, args.published_in
            if args.views:
                target.clips, target.crops = args.views
        target.model |= args.model
        known = tuple((n, "the size given with --known-size") for n in args.known_size) if args.known_size else None
        out = Path(args.out) if args.out else Path(args.report).with_suffix("") / target.name
        record = run_check(target, args.prepared, out, data=args.data, tolerance=args.tolerance,
                           fail_below=args.fail_below, known_sizes=known, max_videos=args.max_videos,
                           eval_micro=args.eval_micro, num_workers=args.workers, trust=args.trust_checkpoint,
                           progress=args.progress)
    except AllSourcesFailed as err:  # the manual-placement instructions of far fetch
        return fail(str(err))
    except (FetchError, CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        return fail(str(err))
    md, js = write_report([record], args.report)
    verdict = record["verdict"]
    print(f"far data check: {verdict['status'].upper()}: {verdict['text']}")
    for i, cause in enumerate(verdict["causes"], 1):
        print(f"  {i}. {cause}")
    print(f"far data check: wrote {md} and {js}")
    if verdict["status"] == "fail" and not args.report_only:
        from far.engine.data_check import EXIT_FAIL

        return EXIT_FAIL
    return 0
