"""The ``far`` command line: one sub-command per stage of the pipeline.

Sub-commands live in the module that implements them (each exposes
``main(argv) -> int``) and are imported only when called, so ``far --help`` and
the Snakemake rules do not pay for importing torch where they do not need it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). The module's ``main(argv)`` parses its own flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "complexity": ("far.complexity", "FLOPs/params of the paper's models (Tables 2-8) with fvcore"),
    "data": ("far.data.cli", "generate synthetic datasets, prepare SSv2/K400 lists, check them against released fine-tuned models"),
    "fetch": ("far.fetch", "download and verify an official pre-trained checkpoint"),
    "pretrain": ("far.pretrain.cli", "offline VideoMAE / MVD pre-training at small scale"),
    "grid": ("far.grid", "list the pipeline's runs, write one run's resolved config"),
    "train": ("far.engine.train", "fine-tune a model with DeepSpeed (resumable)"),
    "test": ("far.engine.evaluate", "multi-view test of a fine-tuned model"),
    "explain": ("far.explain", "GradCAM figures (Figures 6/7) and the localisation score of fine-tuned models"),
    "gradcam": ("far.reports.gradcam", "Figures 6/7 of the pipeline: far explain on a table's baseline and FAR runs"),
    "report": ("far.reports.cli", "regenerate the paper's tables and figures"),
    "bench": ("far.bench.cli", "GPU fine-tuning step benchmark"),
}


def add_job_flags(parser: "argparse.ArgumentParser", trusts: str) -> None:
    """The flags every training-family command shares: ``--trust-checkpoint`` (``trusts``
    says which files it lets the full unpickler read) and ``--progress/--no-progress``."""
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help=f"load {trusts} even when a file needs Python's full unpickler, which runs any "
                             "code in it (only for files from a source you trust)")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None)
    bar.add_argument("--no-progress", dest="progress", action="store_false")


def _usage() -> str:
    lines = ["usage: far COMMAND [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`far COMMAND --help` shows the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``far COMMAND ...`` to the module implementing COMMAND."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"far: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
