"""``far report``: regenerate the paper's tables and figures from the pipeline's outputs.

    far report --params params/default.yaml --results results --complexity results/complexity.json --out reports

Missing runs are reported, not fatal (cells say ``missing``, ``reports/README.md`` and
``reports/missing.txt`` list the files); with ``--strict`` the command instead fails
before writing anything, naming every missing file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from far.config import ConfigError
from far.grid import Grid
from far.layout import load_params, project_root
from far.reports.collect import collect
from far.tables import DEFAULT_TABLES


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build the report; 0 on success, 1 when --strict finds missing inputs."""
    p = argparse.ArgumentParser(prog="far report", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", required=True, help="the pipeline params file (params/default.yaml, params/paper.yaml)")
    p.add_argument("--results", required=True, help="RESULTS folder holding runs/<run_id>/...")
    p.add_argument("--complexity", help="JSON of `far complexity --json --out FILE` (GFLOPs/params columns)")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--tables-file", default=str(DEFAULT_TABLES), help="the paper tables definition (YAML)")
    p.add_argument("--strict", action="store_true", help="fail, naming the files, if any run output or the "
                   "complexity JSON is missing")
    args = p.parse_args(argv)

    try:
        params = load_params(args.params)
    except ConfigError as err:
        print(f"far report: {err}", file=sys.stderr)
        return 2
    if args.strict:
        grid = Grid(params, args.tables_file, root=project_root(args.params))
        missing = collect(grid, args.results).missing_files()
        if args.complexity is None or not Path(args.complexity).is_file():
            missing.append(f"{args.complexity or '--complexity FILE'} (absent)")
        if missing:
            print(f"far report --strict: {len(missing)} missing input(s):", file=sys.stderr)
            for m in missing:
                print(f"  {m}", file=sys.stderr)
            return 1

    from far.reports.build import build_report  # matplotlib and the figures: only when writing

    report = build_report(params, args.results, args.out, args.complexity, args.tables_file, args.params)
    n_cells = sum(len(t.rows) for t in report.tables if t.name != "table1")
    print(f"far report: {len(report.tables)} tables ({n_cells} cells), "
          f"{1 + len(report.figures['accuracy']) + sum(p is not None for p, _ in report.figures['curves'].values())} "
          f"figures -> {args.out}/README.md", file=sys.stderr)
    if report.missing:
        print(f"far report: {len(report.missing)} run file(s) missing (see {args.out}/missing.txt)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
