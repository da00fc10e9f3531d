"""The whole report: tables, figures and ``README.md`` indexing them.

Layout of ``OUT`` (``reports/`` in the pipeline)::

    README.md                  the claims check's summary, the data checks' verdicts, then the index: tables, figures, missing results, MLflow
    claims.{md,csv}            the claims check (far.reports.claims)
    tableN.{md,csv,tex}        Tables 1-8 (those the params list)
    cells.csv                  every accuracy cell of every table, one line each
    missing.txt                absent/unreadable run files, one per line (empty when complete)
    figures/attention_patterns.png
    figures/accuracy_vs_gflops_tableN.png
    figures/curves/<run group>.png
    localisation.{md,csv,tex,html}   the localisation score of Figures 6/7 (far.reports.gradcam), from
                               gradcam/figure<N>/s<seed>/, which the `far gradcam` jobs write
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from far.grid import Grid
from far.layout import Layout, project_root
from far.reports.claims import ClaimResult, check_claims, summary_lines, write_claims
from far.reports.collect import SPREAD_TEXT, Results, collect, load_complexity
from far.reports.figures import build_figures
from far.reports.formats import Rendered
from far.reports.gradcam import localisation_table, readme_lines
from far.reports.tables import build_tables, data_label, table_classes
from far.tables import DEFAULT_TABLES, load_claims


@dataclass
class Report:
    """What ``build_report`` wrote, and what it could not find."""

    out: Path
    tables: list[Rendered]
    figures: dict[str, Any]
    missing: list[str]
    complexity_missing: bool
    claims: list[ClaimResult]
    localisation: Rendered | None = None  # None when the params list neither Table 7 nor 8


def build_report(params: Mapping[str, Any], results_dir: str | Path, out: str | Path,
                 complexity_path: str | Path | None = None, tables_path: str | Path = DEFAULT_TABLES,
                 params_path: str | Path | None = None) -> Report:
    """Write the report for ``params`` from the runs under ``results_dir`` into ``out``.

    Missing runs or a missing complexity file never raise here: cells say ``missing``
    and the README lists what is absent (``far report --strict`` refuses instead).
    """
    out = Path(out)
    grid = Grid(params, tables_path, root=project_root(params_path) if params_path else ".")
    results = collect(grid, results_dir)
    complexity = load_complexity(complexity_path)
    rendered = build_tables(grid, results, complexity)
    for r in rendered:
        r.write(out)
    _cells_csv(rendered).to_csv(out / "cells.csv", index=False)
    missing = results.missing_files()
    (out / "missing.txt").write_text("".join(m + "\n" for m in missing))
    label = data_label(grid.params)
    numbers = [str(t) for t in grid.params["tables"]]
    claims = check_claims(load_claims(tables_path), grid.tables, results, results_dir, numbers,
                          chance=_chance(grid), reports_dir=out)
    write_claims(claims, out, label)
    figures = build_figures(grid.tables, numbers, results, complexity, out / "figures", label)
    localisation = localisation_table(grid, out, label)
    if localisation is not None:
        localisation.write(out)
    report = Report(out, rendered, figures, missing, complexity_missing=not complexity, claims=claims,
                    localisation=localisation)
    (out / "README.md").write_text(_readme(report, grid, results, results_dir, complexity_path, params_path))
    return report


def _chance(grid: Grid) -> dict[str, float]:
    """Chance top-1 (a fraction) of each table, from its dataset's number of classes."""
    classes = {n: table_classes(t, grid.params) for n, t in grid.tables.items()}
    return {n: 1.0 / c for n, c in classes.items() if c}


def _cells_csv(rendered: list[Rendered]) -> pd.DataFrame:
    frames = [r.data for r in rendered if r.name != "table1" and len(r.data)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _data_check_lines(grid: Grid, results_dir: str | Path) -> list[str]:
    """Each data check's verdict (far data check; all of them in data_check.md)."""
    if not grid.data_checks:
        return []
    from far.engine.data_check import read_records

    lines = ["## Data check", "", "Released fine-tuned models tested on the prepared validation lists "
             "([data_check.md](data_check.md)):", ""]
    for c in grid.data_checks.values():
        path = Path(Layout.run(c.run_id, results_dir).data_check)
        if not path.is_file():
            lines.append(f"- `{c.name}` ({c.dataset}): not checked yet (`{path}` absent)")
            continue
        v = read_records([path])[0]["verdict"]
        lines.append(f"- `{c.name}` on {c.dataset}: **{v['status'].upper()}**: {v['text']}")
    return lines + [""]


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _readme(report: Report, grid: Grid, results: Results, results_dir: str | Path,
            complexity_path: str | Path | None, params_path: str | Path | None) -> str:
    out = report.out
    label = data_label(grid.params)
    lines = ["# Reproduction report: Fusion Attention for Action Recognition (FAR, Sensors 2024)", ""]
    if label:
        lines += [f"> **{label}**", ""]
    lines += ["## Claims check", "", "Does this reproduction show what the paper's tables claim? Method and "
              "details: [claims.md](claims.md) ([csv](claims.csv)).", ""] + summary_lines(report.claims) + [""]
    lines += _data_check_lines(grid, results_dir)
    lines += ["## About this report", "", f"Generated by `far report` from params `{params_path or '(given as a dict)'}`, results "
              f"`{results_dir}`, complexity `{complexity_path or '(none)'}`.", "",
              f"Accuracy cells: {SPREAD_TEXT}, beside the paper's value and Δ = reproduced − paper; each cell names "
              "the MLflow run(s) behind it. GFLOPs/params: `far complexity` on the paper-size models.", ""]
    n_runs = len(results.runs)
    n_ok = sum(r.has_accuracy for r in results.runs.values())
    lines += [f"Runs with test metrics: {n_ok} of {n_runs}.", ""]

    lines += ["## Tables", "", "| table | title | files |", "|---|---|---|"]
    for r in report.tables:
        files = " · ".join(f"[{ext}]({r.name}.{ext})" for ext in ("md", "csv", "tex"))
        lines.append(f"| {r.name[5:]} | {r.title.split('. ', 1)[-1]} | {files} |")
    lines += ["", "All accuracy cells in one file: [cells.csv](cells.csv).", ""]

    lines += ["## Figures", "", f"- [Attention patterns (Figure 2) from the code's masks]"
              f"({_rel(report.figures['attention'], out)})"]
    for number, p in report.figures["accuracy"].items():
        lines.append(f"- [Table {number}: top-1 vs GFLOPs, baseline and FAR]({_rel(p, out)})")
    lines += ["", "### Training curves (loss and validation top-1 per epoch, one line per seed)", "",
              "| runs | cells | figure |", "|---|---|---|"]
    for group, (p, cells) in report.figures["curves"].items():
        where = "; ".join(f"T{t} {row}" for t, row in cells)
        fig = f"[png]({_rel(p, out)})" if p else "no history yet"
        lines.append(f"| `{group}` | {where} | {fig} |")
    lines.append("")
    lines += readme_lines(grid, out)

    lines += ["## Missing", ""]
    if report.missing:
        lines += [f"{len(report.missing)} run file(s) absent or unreadable (also in [missing.txt](missing.txt)); "
                  "their cells say `missing` or show how many seeds they average:", ""]
        lines += [f"- `{m}`" for m in report.missing]
    else:
        lines.append("Nothing: every run of the grid has its train, history and test files.")
    if report.complexity_missing:
        lines += ["", "- No complexity JSON (`far complexity --json --out FILE`): GFLOPs/params columns say `missing`."]
    lines.append("")

    uri = (grid.params.get("tracking") or {}).get("uri")
    lines += ["## MLflow", "", "Every cell's MLflow run id is in its table (and in the CSVs, `mlflow_run_ids`). "
              "To browse the runs:", "", "```bash",
              f"mlflow ui --backend-store-uri {uri or '<tracking uri of the params>'}", "```", ""]
    return "\n".join(lines)
