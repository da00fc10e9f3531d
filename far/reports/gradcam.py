"""Figures 6 and 7 in the pipeline (``far gradcam``) and the localisation table of the report.

The paper's Figure 6 compares MVD ViT-S with FAR (MVD) ViT-S on SSv2 (Table 7's cells),
Figure 7 VideoMAE ViT-S with FAR (VideoMAE) ViT-S on K400 (Table 8's): GradCAM heat over a
clip's frames, baseline above, FAR below (:data:`FIGURES`). For one figure and one seed of
the grid, ``far gradcam``

1. finds the two runs (:func:`figure_runs`, through :meth:`far.grid.Grid.cell`);
2. chooses the videos by a stated rule (:func:`choose_videos`, :data:`CHOICE_RULE`) from the
   two runs' per-video test results (``test/predictions.csv``) and writes the choice and the
   per-class accuracies behind it to ``choice.json``;
3. runs ``far explain`` (far/explain.py) on the two runs: one figure per chosen video, the
   raw maps and, where the dataset has object masks (the synthetic datasets), the
   localisation score over its whole val list (``localisation.json``).

``far report`` then tabulates the scores over seeds (:func:`localisation_table`). Real
SSv2/K400 have no masks: there the videos are drawn but not scored (scoring tens of
thousands of videos would give null), and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from far.grid import Grid, Run
from far.layout import GRADCAM_CHOICE, GRADCAM_LOCALISATION, RESULTS, Layout, gradcam_figure

if TYPE_CHECKING:  # pandas and the report's formats are imported where used: the Snakefile imports this module
    import pandas as pd

    from far.reports.formats import Rendered


@dataclass(frozen=True)
class FigureSpec:
    """A GradCAM figure of the paper: two rows of one main table, baseline above FAR."""

    number: str  # the paper's figure number
    table: str  # the table whose cells the two runs are
    baseline: str  # row name of the baseline (drawn above)
    far: str  # row name of the FAR model (drawn below)

    @property
    def rows(self) -> tuple[str, str]:
        return (self.baseline, self.far)


FIGURES: dict[str, FigureSpec] = {
    "6": FigureSpec("6", "7", "MVD ViT-S", "FAR (MVD) ViT-S"),  # SSv2
    "7": FigureSpec("7", "8", "VideoMAE ViT-S", "FAR (VideoMAE) ViT-S"),  # K400
}
MAX_VIDEOS = 4  # videos per figure: small, for the default's time budget and a readable figure
CHOICE_RULE = ("the classes where FAR gains most over the baseline in per-class test top-1 (both runs' "
               "test/predictions.csv, the same seed; ties: the lower class index), at most "
               f"{MAX_VIDEOS}; per class, the first val video that FAR classifies correctly (else the class's "
               "first val video)")
METRIC = ("share of GradCAM heat inside the object mask (energy-based pointing game), centre view, "
          "mean over the dataset's val videos; a uniform map scores the object's area share")


def figures(grid: Grid) -> list[FigureSpec]:
    """The figures whose table the params list (Figure 6 needs Table 7, Figure 7 Table 8) and
    whose two rows are fine-tuned here: a baseline cell filled from released weights
    (``data_check.baselines_from_released``) has no run to explain, so its figure is not drawn."""
    tables = {str(t) for t in grid.params["tables"]}
    return [f for f in FIGURES.values()
            if f.table in tables and not any(grid.cell(f.table, row).released for row in f.rows)]


def figure_jobs(grid: Grid) -> list[tuple[str, int]]:
    """(figure, seed) of every ``far gradcam`` job of the grid."""
    return [(f.number, int(s)) for f in figures(grid) for s in grid.params["seeds"]]


def figure_runs(grid: Grid, spec: FigureSpec, seed: int) -> tuple[Run, Run]:
    """The baseline's and FAR's run of ``seed`` for figure ``spec``."""
    out = []
    for row in spec.rows:
        ids = [r for r in grid.cell(spec.table, row).run_ids if grid.runs[r].seed == int(seed)]
        if not ids:
            raise KeyError(f"no run of seed {seed} for table {spec.table} row {row!r}")
        out.append(grid.runs[ids[0]])
    return out[0], out[1]


# ---- the choice of videos ------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """One drawn video: its class, why the class was chosen, and the video."""

    label: int
    gain: float  # FAR's per-class top-1 minus the baseline's (points)
    baseline_top1: float  # per-class top-1 (%) over the videos both runs tested
    far_top1: float
    videos: int  # test videos of the class
    video: str  # as in test/predictions.csv (the val list's path joined to its root)
    far_correct: bool  # whether FAR classifies the drawn video correctly


def choose_videos(baseline: "pd.DataFrame", far: "pd.DataFrame", max_videos: int = MAX_VIDEOS) -> list[Choice]:
    """The videos of a GradCAM figure, by :data:`CHOICE_RULE`.

    ``baseline``, ``far``: the two runs' ``test/predictions.csv`` (columns ``video``,
    ``label``, ``correct1``; rows in val-list order, as ``far test`` writes them). Only
    videos both runs tested count. Classes are ranked by FAR's per-class top-1 minus the
    baseline's, largest first (ties: the lower class index); the first ``max_videos``
    classes each give one video, in that order.
    """
    cols = ["video", "label", "correct1"]
    # An inner merge keeps the left frame's row order: FAR's, i.e. the val list's.
    both = far[cols].merge(baseline[cols], on=["video", "label"], suffixes=("_far", "_base"))
    if both.empty:
        return []
    per_class = both.groupby("label").agg(far_top1=("correct1_far", "mean"), baseline_top1=("correct1_base", "mean"),
                                          videos=("video", "size"))
    per_class[["far_top1", "baseline_top1"]] *= 100.0
    per_class["gain"] = per_class["far_top1"] - per_class["baseline_top1"]
    ranked = per_class.reset_index().sort_values(["gain", "label"], ascending=[False, True], kind="stable")
    out = []
    for r in ranked.head(max(0, max_videos)).itertuples(index=False):
        of_class = both[both["label"] == r.label]
        right = of_class[of_class["correct1_far"].astype(bool)]
        pick = (right if len(right) else of_class).iloc[0]
        out.append(Choice(int(r.label), float(r.gain), float(r.baseline_top1), float(r.far_top1), int(r.videos),
                          str(pick["video"]), bool(pick["correct1_far"])))
    return out


# ---- far gradcam -----------------------------------------------------------------------------
def explain_args(grid: Grid, spec: FigureSpec, seed: int, chosen: Sequence[Choice], out: str | Path,
                 results: str | Path = RESULTS) -> list[str]:
    """The ``far explain`` flags of one figure and seed: baseline then FAR (rows in that
    order), named by their table rows, the chosen videos, ``--score`` where the dataset
    has object masks (a synthetic dataset)."""
    from far.reports.tables import is_synthetic

    base, far_run = figure_runs(grid, spec, seed)
    args: list[str] = []
    for run, name in ((base, spec.baseline), (far_run, spec.far)):
        files = Layout.run(run.run_id, results)
        args += ["--config", files.run_config, "--checkpoint", files.model, "--name", name]
    for c in chosen:
        args += ["--video", c.video]
    synthetic = is_synthetic(grid.params, base.dataset)
    title = f"Figure {spec.number} · {base.dataset} · seed {seed} · Table {spec.table} cells"
    if synthetic:
        title += " · synthetic data"
    args += ["--title", title, "--out", str(out), "--no-progress"]
    return args + (["--score"] if synthetic else [])


def main(argv: list[str] | None = None) -> int:
    """``far gradcam --params P --figure 6|7 --seed S --out DIR``: choose, then ``far explain``."""
    from far.config import ConfigError

    p = argparse.ArgumentParser(prog="far gradcam", description=(
        "Figures 6/7 of the pipeline: the GradCAM of a main table's baseline and FAR runs on the videos "
        f"chosen by a stated rule ({CHOICE_RULE}), and the localisation score on data with object masks."))
    p.add_argument("--params", required=True, help="the pipeline params file")
    p.add_argument("--figure", required=True, choices=sorted(FIGURES), help="6: SSv2 (Table 7), 7: K400 (Table 8)")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--results", default=RESULTS, help="folder holding runs/<run_id>/ (default %(default)s)")
    p.add_argument("--out", required=True, help="output folder (the pipeline: reports/gradcam/figure<N>/s<seed>)")
    p.add_argument("--max-videos", type=int, default=MAX_VIDEOS, help="videos drawn (default %(default)s)")
    args = p.parse_args(argv)
    try:
        grid = Grid.from_file(args.params)
    except ConfigError as err:
        print(f"far gradcam: {err}", file=sys.stderr)
        return 2
    spec = FIGURES[args.figure]
    if spec not in figures(grid) or args.seed not in [int(s) for s in grid.params["seeds"]]:
        print(f"far gradcam: {args.params} has no Table {spec.table} or no seed {args.seed}", file=sys.stderr)
        return 2
    import pandas as pd

    base, far_run = figure_runs(grid, spec, args.seed)
    preds = [pd.read_csv(Layout.run(r.run_id, args.results).test_predictions) for r in (base, far_run)]
    chosen = choose_videos(*preds, max_videos=args.max_videos)
    from far.data.prepare import read_class_names

    names = read_class_names(grid.layout.prepared(base.dataset).classes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"figure": spec.number, "table": spec.table, "dataset": base.dataset, "seed": args.seed,
           "rule": CHOICE_RULE,
           "runs": {spec.baseline: base.run_id, spec.far: far_run.run_id},
           "videos": [asdict(c) | {"class": names.get(c.label, f"class {c.label}"), "figure": gradcam_figure(c.video)}
                      for c in chosen]}
    (out / GRADCAM_CHOICE).write_text(json.dumps(doc, indent=2) + "\n")

    from far.explain import main as explain

    return explain(explain_args(grid, spec, args.seed, chosen, out, args.results))


# ---- the localisation table ------------------------------------------------------------------
def read_choice(folder: str | Path) -> dict[str, Any] | None:
    """A figure folder's ``choice.json``, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / GRADCAM_CHOICE).read_text())
    except (OSError, ValueError):
        return None


def _read_scores(folder: str | Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(folder) / GRADCAM_LOCALISATION).read_text())
    except (OSError, ValueError):
        return None
    return doc.get("models") if isinstance(doc, dict) else None


def localisation_table(grid: Grid, reports: str | Path, label: str | None = None) -> "Rendered | None":
    """Per figure, the baseline's and FAR's localisation score (% of heat inside the object
    mask) as mean ± half-range over seeds, from ``reports/gradcam/figure<N>/s<seed>/localisation.json``.
    None when the params list neither Table 7 nor Table 8."""
    import pandas as pd

    from far.reports.collect import SPREAD_TEXT, SeedStat
    from far.reports.formats import Rendered
    from far.reports.tables import fmt_diff, fmt_stat, is_synthetic

    specs = figures(grid)
    if not specs:
        return None
    seeds = [int(s) for s in grid.params["seeds"]]
    header = ["Figure", "Dataset", "Model", "Heat inside the object mask (%)", "FAR − baseline", "Videos scored",
              "Seeds", "Run ids"]
    rows, records = [], []
    for spec in specs:
        dataset = grid.runs[grid.cell(spec.table, spec.baseline).run_ids[0]].dataset
        masks = is_synthetic(grid.params, dataset)
        found = {s: _read_scores(Layout.gradcam(spec.number, s, reports)) for s in seeds}
        means: list[float | None] = []
        for role, row in (("baseline", spec.baseline), ("far", spec.far)):
            per_seed = {s: (m or {}).get(row) or {} for s, m in found.items()}
            scored = {s: v for s, v in per_seed.items() if v.get("score") is not None}
            stat = SeedStat(tuple(100.0 * float(v["score"]) for v in scored.values()), len(seeds))
            videos = sorted({int(v.get("videos", 0)) for v in scored.values()})
            if not masks:
                text, status = "no masks (real data)", "no masks"
            elif not scored and any(m is not None for m in found.values()):
                text, status = "no masks (regenerate the synthetic dataset)", "no masks"
            else:
                text = fmt_stat(stat)
                status = "ok" if stat.n == len(seeds) else ("missing" if stat.n == 0 else "partial")
            means.append(stat.mean)
            diff = means[1] - means[0] if role == "far" and None not in means else None
            run_ids = grid.cell(spec.table, row).run_ids
            rows.append([f"Figure {spec.number} (Table {spec.table})", dataset, row, text,
                         fmt_diff(diff) if role == "far" else "", "/".join(map(str, videos)) or "–",
                         f"{stat.n}/{len(seeds)}", ", ".join(f"`{r}`" for r in run_ids)])
            records.append({"figure": spec.number, "table": spec.table, "dataset": dataset, "row": row, "role": role,
                            "score_mean": stat.mean, "score_spread": stat.spread, "score_seeds": stat.n,
                            "seeds_expected": len(seeds), "far_minus_baseline": diff, "videos": videos[-1] if videos
                            else None, "status": status, "run_ids": ";".join(run_ids)})
    notes = [f"Score: {METRIC}. Cells: {SPREAD_TEXT}; FAR − baseline in points of the means.",
             f"Videos drawn in the figures: {CHOICE_RULE}. The figures: gradcam/figure<N>/s<seed>/*.png "
             "(README.md lists them with their classes).",
             "Real SSv2/K400 have no object masks: their figures are drawn, their score is not computed."]
    return Rendered("localisation", "Localisation of GradCAM (Figures 6 and 7): share of heat on the object",
                    header, rows, pd.DataFrame(records), banner=label, notes=notes)


def readme_lines(grid: Grid, reports: str | Path) -> list[str]:
    """The README's section on Figures 6/7: the localisation table, then every figure
    with its class and that class's accuracies (links relative to ``reports``)."""
    specs = figures(grid)
    if not specs:
        return []
    lines = ["## GradCAM: Figures 6 and 7", "",
             "Baseline above, FAR below, heat scaled per clip; P = softmax score of the true class "
             "(`far gradcam`, docs/reports.md). The localisation score per model and figure: "
             "[localisation.md](localisation.md) ([csv](localisation.csv)).", "",
             f"Videos: {CHOICE_RULE}.", "", "| figure | seed | class | top-1 of the class: baseline → FAR | figure |",
             "|---|---|---|---|---|"]
    for spec in specs:
        for s in grid.params["seeds"]:
            folder = Layout.gradcam(spec.number, s, reports)
            rel = Path(os.path.relpath(folder, reports)).as_posix()
            choice = read_choice(folder)
            if choice is None:
                lines.append(f"| {spec.number} | {s} | – | – | missing (`{rel}`) |")
                continue
            for v in choice["videos"]:
                link = f"[{v['figure']}]({rel}/{v['figure']})"
                lines.append(f"| {spec.number} | {s} | {v['class']} | {v['baseline_top1']:.1f} → {v['far_top1']:.1f} "
                             f"({v['gain']:+.1f}) | {link} |")
    return lines + [""]


__all__ = ["CHOICE_RULE", "FIGURES", "Choice", "FigureSpec", "choose_videos", "explain_args", "figure_jobs",
           "figure_runs", "figures", "localisation_table", "main", "readme_lines"]
