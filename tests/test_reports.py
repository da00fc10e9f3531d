"""far report: tables and figures from fake run outputs (two seeds, missing runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from far.grid import Grid
from far.reports import cli
from far.reports.collect import SeedStat
from far.reports.tables import SYNTHETIC_BANNER, data_label

ROOT = Path(__file__).resolve().parent.parent
# A valid params file (far report checks it against the schema): the default's, with
# Tables 1, 3 and 7 only and its own recipe shortening.
PARAMS = yaml.safe_load((ROOT / "params" / "default.yaml").read_text()) | {
    "tables": ["1", "3", "7"],
    "seeds": [0, 1],  # the paper's two (the default runs one): cells with a spread
    "backbones": {"vit_s": "vit_tiny_cpu", "vit_b": "vit_mini_cpu"},
    "recipes_file": str(ROOT / "params" / "recipes.yaml"),
    "recipe_overrides": {"optim": {"epochs": 2, "warmup_epochs": 1}},
    "tracking": {"uri": "sqlite:///mlruns.db"},
}
# Hand-written `far complexity --json` records (only Table 3's and Table 7's ViT-S rows).
COMPLEXITY = [
    {"table": "3", "row": "w/o Bottleneck", "gflops": 51.30, "params_m": 21.97, "paper_gflops": 51.3,
     "paper_params_m": 22.0, "gflops_tolerance": 0.15, "params_m_tolerance": 0.05},
    {"table": "3", "row": "Bottleneck w Group", "gflops": 53.48, "params_m": 23.40, "paper_gflops": 53.5,
     "paper_params_m": 23.4, "gflops_tolerance": 0.15, "params_m_tolerance": 0.05},
    {"table": "7", "row": "ViT-S", "gflops": 56.97, "params_m": 21.94, "paper_gflops": 57, "paper_params_m": None,
     "gflops_tolerance": 0.5},
]
PARTIAL = ("3", "w/o Bottleneck")  # seed 1's run missing
MISSING = ("3", "Bottleneck w/o Group")  # both seeds' runs missing


def fake_top1(j: int, seed: int) -> float:
    return 40.0 + j + 1.5 * seed


def fake_top5(j: int, seed: int) -> float:
    return 80.0 + j - 0.5 * seed


def write_run(results: Path, run_id: str, j: int, seed: int) -> None:
    d = results / "runs" / run_id
    (d / "test").mkdir(parents=True)
    mlflow = f"mlf{j:03d}s{seed}"
    (d / "train.json").write_text(json.dumps({"epochs": 2, "steps": 8, "train_loss": 1.0, "wall_s": 3.0,
                                              "mlflow_run_id": mlflow, "params_m": 0.5, "gflops": 0.1}))
    pd.DataFrame({"epoch": [0, 1], "step": [4, 8], "train_loss": [1.4, 1.0], "lr": [1e-3, 5e-4],
                  "clips_per_s": [10.0, 11.0], "val_top1": [20.0, 30.0 + seed], "val_top5": [60.0, 70.0],
                  "wall_s": [1.5, 3.0]}).to_csv(d / "history.csv", index=False)
    pd.DataFrame({"epoch": [1, 1, 2, 2], "step": [2, 4, 6, 8], "loss": [1.5, 1.3, 1.1, 1.0], "lr": 1e-3,
                  "clips_per_s": 10.0, "data_wait_share": 0.1}).to_csv(d / "steps.csv", index=False)
    (d / "test" / "metrics.json").write_text(json.dumps({
        "top1": fake_top1(j, seed), "top5": fake_top5(j, seed), "videos": 24, "views": 6, "clips": 2, "crops": 3,
        "unreadable": ["bad.webm"] if (j, seed) == (0, 0) else [], "mlflow_run_id": mlflow}))


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid(PARAMS)


def run_index(grid: Grid) -> dict[str, int]:
    """The fake values of a run are a function of its position in the grid (runs are shared by cells)."""
    groups = list(dict.fromkeys(rid.rsplit("-s", 1)[0] for rid in grid.runs))  # the run minus its seed
    return {rid: groups.index(rid.rsplit("-s", 1)[0]) for rid in grid.runs}


@pytest.fixture(scope="module")
def fake(tmp_path_factory, grid):
    """Results for every run but PARTIAL's seed 1 and both of MISSING's; params and complexity files."""
    base = tmp_path_factory.mktemp("report")
    results = base / "results"
    cells = {(c.table, c.row): c for c in grid.cells}
    skipped = set(cells[MISSING].run_ids) | {cells[PARTIAL].run_ids[1]}
    for rid, j in run_index(grid).items():
        if rid not in skipped:
            write_run(results, rid, j, grid.runs[rid].seed)
    params_file = base / "params.yaml"
    params_file.write_text(yaml.safe_dump(PARAMS))
    comp = base / "complexity.json"
    comp.write_text(json.dumps(COMPLEXITY))
    write_gradcam(base / "reports", grid)
    return {"base": base, "results": results, "params": params_file, "complexity": comp, "skipped": skipped}


# Fake `far gradcam` outputs of Figure 6 (Table 7's MVD ViT-S vs FAR (MVD) ViT-S): share of
# heat in the mask per seed, as `far explain --score` writes it.
LOCALISATION = {0: {"MVD ViT-S": 0.20, "FAR (MVD) ViT-S": 0.30}, 1: {"MVD ViT-S": 0.24, "FAR (MVD) ViT-S": 0.36}}


def write_gradcam(reports: Path, grid: Grid) -> None:
    from far.layout import Layout

    for seed, scores in LOCALISATION.items():
        d = Path(Layout.gradcam("6", seed, reports))
        d.mkdir(parents=True)
        (d / "localisation.json").write_text(json.dumps({"models": {
            name: {"score": v, "videos": 16, "videos_without_masks_or_heat": 0} for name, v in scores.items()}}))
        (d / "choice.json").write_text(json.dumps({"videos": [
            {"label": 2, "class": "Moving something up", "gain": 25.0, "baseline_top1": 50.0, "far_top1": 75.0,
             "video": "x/500003.webm", "figure": "500003.png", "far_correct": True}]}))


@pytest.fixture(scope="module")
def report(fake):
    out = fake["base"] / "reports"
    assert cli.main(["--params", str(fake["params"]), "--results", str(fake["results"]),
                     "--complexity", str(fake["complexity"]), "--out", str(out)]) == 0
    return out


def _cell(grid: Grid, table: str, row: str):
    return next(c for c in grid.cells if (c.table, c.row) == (table, row))


@pytest.mark.parametrize("row", ["FAR (MVD) ViT-S", "MVD ViT-B"])
def test_complete_cell_mean_spread_diff(report, grid, row):
    cell, idx = _cell(grid, "7", row), run_index(grid)
    runs = [(idx[r], grid.runs[r].seed) for r in cell.run_ids]
    top1 = [fake_top1(j, s) for j, s in runs]
    mean, half = sum(top1) / 2, (max(top1) - min(top1)) / 2
    rec = pd.read_csv(report / "table7.csv").set_index("row").loc[row]
    assert rec["status"] == "ok" and rec["seeds_found"] == 2
    assert rec["top1_mean"] == pytest.approx(mean)
    assert rec["top1_spread"] == pytest.approx(half) == pytest.approx(0.75)
    assert rec["top1_paper"] == cell.paper["top1"]
    # Synthetic data (4 classes): no difference to the paper's accuracy, no top-5.
    assert "top1_diff" not in rec.index and "top5_mean" not in rec.index
    ids = [f"mlf{j:03d}s{s}" for j, s in runs]
    assert rec["mlflow_run_ids"] == ";".join(ids)
    md = (report / "table7.md").read_text()
    method, backbone = row.rsplit(" ", 1)
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {method} | {backbone} |"))
    assert f"| {mean:.2f} ± 0.75 | {cell.paper['top1']} | " in line and f"{mean - cell.paper['top1']:+.2f}" not in line
    assert "chance top-1 = 25.0 % (4 classes); test set: 24 videos (one video = 4.17 points of accuracy)" in md
    assert "top-5 not shown" in md and "Top-5" not in md.split("\n\n")[2]
    assert ", ".join(f"`{i}`" for i in ids) in line
    assert "| 2×3 | 2×3 |" in line  # views used (from metrics.json) and the paper's (from the title)


def test_shared_runs_give_equal_cells(report, grid):
    """Cells of one model in two tables (e.g. T3 'Bottleneck w Group' = T7 'FAR (MVD) ViT-S') share
    their runs, so they must show the same numbers and MLflow ids."""
    pairs = [(a, b) for a in grid.cells for b in grid.cells if a.table < b.table and a.run_ids == b.run_ids]
    if not pairs:
        pytest.skip("this grid shares no runs between tables")
    csv = pd.read_csv(report / "cells.csv").set_index(["table", "row"])
    for a, b in pairs:
        ra, rb = csv.loc[(int(a.table), a.row)], csv.loc[(int(b.table), b.row)]
        assert ra["top1_mean"] == rb["top1_mean"] and ra["mlflow_run_ids"] == rb["mlflow_run_ids"]


def test_complexity_columns(report):
    t7 = pd.read_csv(report / "table7.csv").set_index("row")
    assert t7.loc["MVD ViT-S", "gflops"] == pytest.approx(56.97)
    assert t7.loc["MVD ViT-S", "gflops_diff"] == pytest.approx(-0.03)
    assert bool(t7.loc["MVD ViT-S", "gflops_within_tolerance"])
    assert pd.isna(t7.loc["FAR (MVD) ViT-S", "gflops"])  # not in the hand-written JSON
    t3 = pd.read_csv(report / "table3.csv").set_index("row")
    assert t3.loc["w/o Bottleneck", "params_m_diff"] == pytest.approx(-0.03)
    md = (report / "table3.md").read_text()
    assert "| 53.48 | 53.5 | -0.02 ✓ | 23.40 | 23.4 | +0.00 ✓ |" in md
    assert "| Bottleneck w/o Group | missing | 71.0 | missing | 57.4 | – |" in md


def test_partial_and_missing_cells(report, grid, fake):
    cell = _cell(grid, *PARTIAL)
    j = run_index(grid)[cell.run_ids[0]]
    t3 = pd.read_csv(report / "table3.csv").set_index("row")
    assert t3.loc[PARTIAL[1], "status"] == "partial"
    assert t3.loc[PARTIAL[1], "top1_mean"] == pytest.approx(fake_top1(j, 0))
    assert pd.isna(t3.loc[PARTIAL[1], "top1_spread"])
    assert t3.loc[PARTIAL[1], "unreadable_videos"] == (1 if j == 0 else 0)
    assert t3.loc[MISSING[1], "status"] == "missing"
    assert pd.isna(t3.loc[MISSING[1], "top1_mean"])
    md = (report / "table3.md").read_text()
    assert f"| {fake_top1(j, 0):.2f} (1/2 seeds) | 70.6 |" in md
    missing = (report / "missing.txt").read_text().splitlines()
    assert len(missing) == 3 * len(fake["skipped"])  # train, history and test of each absent run
    readme = (report / "README.md").read_text()
    for rid in fake["skipped"]:
        assert f"{rid}/test/metrics.json (absent)" in readme


def test_paper_data_tables_keep_the_difference_and_top5(fake, grid, tmp_path):
    """With the paper's datasets (no `synth`, 174 / 400 classes) every accuracy column has
    its difference to the paper, and top-5 is shown."""
    from far.reports.collect import collect
    from far.reports.tables import accuracy_table

    real = json.loads(json.dumps(PARAMS))
    for name, n in (("ssv2", 174), ("k400", 400)):
        real["datasets"][name].pop("synth")
        real["datasets"][name]["num_classes"] = n
    results = collect(grid, fake["results"])  # the fake runs, rendered as if on the paper's data
    rendered = accuracy_table(grid.tables["7"], results.table_cells("7"), {}, real)
    cell, idx = _cell(grid, "7", "MVD ViT-B"), run_index(grid)
    runs = [(idx[r], grid.runs[r].seed) for r in cell.run_ids]
    mean = sum(fake_top1(j, s) for j, s in runs) / 2
    rec = rendered.data.set_index("row").loc["MVD ViT-B"]
    assert rec["top1_diff"] == pytest.approx(mean - cell.paper["top1"], abs=1e-4)
    assert rec["top5_mean"] == pytest.approx(sum(fake_top5(j, s) for j, s in runs) / 2)
    assert rec["top5_spread"] == pytest.approx(0.25)
    assert "Top-1 (%) Δ" in rendered.header and "Top-5 (%)" in rendered.header
    assert rendered.banner is None and any("chance top-1 = 0.6 % (174 classes)" in n for n in rendered.notes)


def test_synthetic_label_and_table1(report):
    for n in (3, 7):
        assert SYNTHETIC_BANNER in (report / f"table{n}.md").read_text()
        page = (report / f"table{n}.html").read_text()  # what Snakemake's HTML report shows inline
        assert page.startswith("<!DOCTYPE html>") and "<table>" in page and f"Table {n}." in page
        assert "SYNTHETIC DATA" in page
    assert SYNTHETIC_BANNER in (report / "README.md").read_text()
    assert (pd.read_csv(report / "cells.csv")["data_label"] == "synthetic").all()
    t1 = (report / "table1.md").read_text()
    assert "| learning rate | 1e-3 (S), 5e-4 (B) | 1e-3 | 1e-3 (S), 5e-4 (B) | 1e-3 |" in t1
    assert "| accumulation step | 8 (S), 16 (B) | 6 (S), 16 (B) | 6 (S), 4 (B) | 6 (S), 16 (B) |" in t1
    assert "| flip augmentation | no | yes | no | yes |" in t1
    assert "optim.epochs = 2" in t1  # the params' override is stated
    assert (report / "table1.tex").read_text().startswith(r"\begin{table}")


def test_data_label():
    assert data_label({"datasets": {"ssv2": {"num_classes": 174}}}) is None
    assert data_label({"datasets": {"ssv2": {"synthetic": True}}}) == SYNTHETIC_BANNER
    mixed = {"datasets": {"ssv2": {"synth": {"classes": 4}}, "k400": {"num_classes": 400}}}
    assert data_label(mixed, "ssv2") == SYNTHETIC_BANNER and data_label(mixed, "k400") is None
    assert data_label({"mode": "synthetic", "datasets": {}}) == SYNTHETIC_BANNER
    assert data_label({"label": "toy run"}) == "toy run"


def test_figures_written(report, grid, fake):
    readme = (report / "README.md").read_text()
    figs = report / "figures"
    assert (figs / "attention_patterns.png").stat().st_size > 10_000
    for n in (3, 7):
        assert (figs / f"accuracy_vs_gflops_table{n}.png").stat().st_size > 5_000
        assert f"figures/accuracy_vs_gflops_table{n}.png" in readme
    curves = sorted((figs / "curves").glob("*.png"))
    # one figure per distinct set of runs that has any history; the fully missing cell has none
    groups = {c.run_ids[0].rsplit("-s", 1)[0] for c in grid.cells if (c.table, c.row) != MISSING}
    assert {p.stem for p in curves} == groups
    assert "no history yet" in readme


def test_pattern_frames_follow_the_masks():
    from far.models.config import model_config
    from far.reports.figures import pattern_frames

    cfg = model_config({"backbone": "vit_s"})
    t, h, w = cfg.grid
    glob, _ = pattern_frames(cfg, "global", frames=t)
    temp, _ = pattern_frames(cfg, "temporal", (0, 3, 4), frames=t)
    sd, _ = pattern_frames(cfg, "sparse_dense", (0, 3, 4), frames=t)
    assert glob.all()
    assert temp.sum() == t and temp[:, 3, 4].all()  # the same position in every frame
    assert sd.sum() == t * h * w // 2 and sd[:, 3, 4].all() and not sd[:, 3, 5].any()  # the checkerboard


def test_strict_names_missing_files(fake, capsys):
    out = fake["base"] / "strict"
    rc = cli.main(["--params", str(fake["params"]), "--results", str(fake["results"]),
                   "--complexity", str(fake["complexity"]), "--out", str(out), "--strict"])
    assert rc == 1 and not out.exists()
    err = capsys.readouterr().err
    for rid in fake["skipped"]:
        assert f"{rid}/test/metrics.json" in err


def test_seedstat_half_range():
    s = SeedStat((70.0, 71.0, 73.0), 3)
    assert s.mean == pytest.approx(71.3333333) and s.spread == 1.5
    assert SeedStat((70.0,), 2).spread is None and SeedStat((), 2).mean is None


# ---- Figures 6/7: the choice of videos, the localisation table ------------------------------
def _predictions(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video", "label", "correct1"])


def test_choose_videos_ranks_classes_by_far_gain():
    from far.reports.gradcam import choose_videos

    # class 0: both 50 % (gain 0); class 1: FAR 100 vs 0 (gain 100); class 2: FAR 50 vs 0
    # (gain 50); class 3: FAR 0 vs 50 (gain -50); class 4: gain 0, tied with class 0.
    base = _predictions([("a0", 0, 1), ("b0", 0, 0), ("a1", 1, 0), ("b1", 1, 0), ("a2", 2, 0), ("b2", 2, 0),
                         ("a3", 3, 1), ("b3", 3, 0), ("a4", 4, 0), ("x", 9, 1)])
    far = _predictions([("a0", 0, 0), ("b0", 0, 1), ("a1", 1, 1), ("b1", 1, 1), ("a2", 2, 0), ("b2", 2, 1),
                        ("a3", 3, 0), ("b3", 3, 0), ("a4", 4, 0)])  # "x": not tested by FAR, not counted
    chosen = choose_videos(base, far, max_videos=4)
    assert [c.label for c in chosen] == [1, 2, 0, 4]  # by gain, the tie by class index
    assert [c.gain for c in chosen] == [100.0, 50.0, 0.0, 0.0]
    assert (chosen[1].baseline_top1, chosen[1].far_top1, chosen[1].videos) == (0.0, 50.0, 2)
    # the first val video FAR gets right; none right: the class's first video
    assert [c.video for c in chosen] == ["a1", "b2", "b0", "a4"]
    assert [c.far_correct for c in chosen] == [True, True, True, False]
    assert [c.label for c in choose_videos(base, far, max_videos=2)] == [1, 2]
    assert choose_videos(base.iloc[:0], far) == []


def test_figure_runs_and_explain_flags(grid, tmp_path):
    from far.reports.gradcam import FIGURES, choose_videos, explain_args, figure_jobs, figure_runs, figures

    assert [f.number for f in figures(grid)] == ["6"]  # PARAMS list Table 7, not Table 8
    assert figure_jobs(grid) == [("6", 0), ("6", 1)]
    base, far = figure_runs(grid, FIGURES["6"], 1)
    assert base.run_id in grid.cell("7", "MVD ViT-S").run_ids and far.run_id in grid.cell("7", "FAR (MVD) ViT-S").run_ids
    assert base.seed == far.seed == 1 and base.dataset == "ssv2"
    chosen = choose_videos(_predictions([("v1", 0, 0)]), _predictions([("v1", 0, 1)]))
    args = explain_args(grid, FIGURES["6"], 1, chosen, tmp_path, "res")
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs == [f"res/runs/{base.run_id}/run.yaml", f"res/runs/{far.run_id}/run.yaml"]  # baseline first
    assert [args[i + 1] for i, a in enumerate(args) if a == "--name"] == ["MVD ViT-S", "FAR (MVD) ViT-S"]
    assert args[args.index("--video") + 1] == "v1" and "--score" in args  # synthetic data: scored
    real = json.loads(json.dumps(PARAMS))
    real["datasets"]["ssv2"].pop("synth")
    assert "--score" not in explain_args(Grid(real), FIGURES["6"], 1, chosen, tmp_path)
    with pytest.raises(KeyError, match="table 8"):
        grid.cell("8", "VideoMAE ViT-S")


def test_localisation_table_from_seed_files(report, grid):
    md = (report / "localisation.md").read_text()
    rec = pd.read_csv(report / "localisation.csv").set_index("row")
    # mean ± half-range over the two seeds, in percent
    assert rec.loc["MVD ViT-S", "score_mean"] == pytest.approx(22.0)
    assert rec.loc["MVD ViT-S", "score_spread"] == pytest.approx(2.0)
    assert rec.loc["FAR (MVD) ViT-S", "score_mean"] == pytest.approx(33.0)
    assert rec.loc["FAR (MVD) ViT-S", "far_minus_baseline"] == pytest.approx(11.0)
    assert (rec["videos"] == 16).all() and (rec["status"] == "ok").all()
    assert "| Figure 6 (Table 7) | ssv2 | MVD ViT-S | 22.00 ± 2.00 |  | 16 | 2/2 |" in md
    assert "| FAR (MVD) ViT-S | 33.00 ± 3.00 | +11.00 | 16 | 2/2 |" in md
    assert SYNTHETIC_BANNER in md and "classes where FAR gains most" in md
    assert (report / "localisation.html").read_text().startswith("<!DOCTYPE html>")
    readme = (report / "README.md").read_text()
    assert "[localisation.md](localisation.md)" in readme
    assert "| 6 | 1 | Moving something up | 50.0 → 75.0 (+25.0) | [500003.png](gradcam/figure6/s1/500003.png) |" in readme


def test_localisation_table_without_masks(grid, tmp_path):
    from far.reports.gradcam import localisation_table

    real = json.loads(json.dumps(PARAMS))
    real["datasets"]["ssv2"].pop("synth")
    table = localisation_table(Grid(real), tmp_path)  # real data: no files, no masks
    assert [r[3] for r in table.rows] == ["no masks (real data)"] * 2
    assert table.data["status"].tolist() == ["no masks", "no masks"]
    # synthetic data, a seed's score missing; a dataset generated before the masks: null scores
    write_gradcam(tmp_path / "a", grid)
    (tmp_path / "a" / "gradcam" / "figure6" / "s1" / "localisation.json").unlink()
    rows = localisation_table(grid, tmp_path / "a").rows
    assert rows[0][3] == "20.00 (1/2 seeds)"
    for seed in (0, 1):
        d = tmp_path / "b" / "gradcam" / "figure6" / f"s{seed}"
        d.mkdir(parents=True)
        (d / "localisation.json").write_text(json.dumps({"models": {"MVD ViT-S": {"score": None, "videos": 0}}}))
    assert localisation_table(grid, tmp_path / "b").rows[0][3] == "no masks (regenerate the synthetic dataset)"
    assert localisation_table(grid, tmp_path / "c").rows[0][3] == "missing"
    assert localisation_table(Grid(PARAMS | {"tables": ["1", "3"]}), tmp_path) is None
