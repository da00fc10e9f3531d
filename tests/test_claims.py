"""The claims check (far.reports.claims): verdicts, the paired bootstrap, and the report's
claims files from fake runs whose per-video results are built to reproduce, contradict or
leave open particular claims."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from far.grid import Grid
from far.reports.build import build_report
from far.reports.claims import paired_bootstrap, verdict
from far.tables import DEFAULT_TABLES, load_claims, load_tables

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params" / "default.yaml").read_text()) | {
    "tables": ["7"],
    "seeds": [0, 1],  # the paper's two (the default runs one): intervals over seeds and videos
    "backbones": {"vit_s": "vit_tiny_cpu", "vit_b": "vit_mini_cpu"},
    "recipes_file": str(ROOT / "params" / "recipes.yaml"),
    "tracking": {"uri": "sqlite:///mlruns.db"},
}
VIDEOS = 300
# Per row of Table 7: the share of test videos each run gets right.
ACCURACY = {"VideoMAE ViT-S": 0.5, "VideoMAE ViT-B": 0.25, "MVD ViT-S": 0.9, "MVD ViT-B": 0.9,
            "FAR (VideoMAE) ViT-S": 0.5, "FAR (VideoMAE) ViT-B": 0.25, "FAR (MVD) ViT-S": 0.5, "FAR (MVD) ViT-B": 0.9,
            "Scratch ViT-S": 0.3}
# Two models at chance that give the same answers on every video (what the default's
# untrained fine-tunes do): "FAR not worse" must not be called reproduced on that.
SAME_ANSWERS = {"VideoMAE ViT-B", "FAR (VideoMAE) ViT-B"}


@pytest.mark.parametrize("expect,low,high,margin,want", [
    (">", 0.1, 3.0, 1, "reproduced"), (">", -0.1, 3.0, 1, "inconclusive"), (">", -3.0, -0.1, 1, "contradicted"),
    ("<", -3.0, -0.1, 1, "reproduced"), ("<", 0.1, 3.0, 1, "contradicted"),
    (">=", -0.9, 2.0, 1, "reproduced"), (">=", -1.5, 2.0, 1, "inconclusive"), (">=", -5.0, -1.2, 1, "contradicted"),
    ("~", -0.5, 0.8, 1, "reproduced"), ("~", -0.5, 1.5, 1, "inconclusive"), ("~", 1.2, 4.0, 1, "contradicted"),
])
def test_verdicts(expect, low, high, margin, want):
    assert verdict(expect, low, high, margin) == want


def test_above_chance():
    from far.reports.claims import above_chance

    assert not above_chance(16, 64, 0.25) and not above_chance(20, 64, 0.25)  # 31 %: within the noise of 64 videos
    assert above_chance(22, 64, 0.25)  # 34 %: z = 1.73
    assert above_chance(26, 64, 0.25) and above_chance(600, 2000, 0.25)
    assert not above_chance(0, 0, 0.25)


@pytest.mark.parametrize("expect, diff, rows", [
    ("~", 3.0, ("a", "b")), (">=", -3.0, ("a", "b")),
    (">", 5.0, ("a",)), (">", -5.0, ("b",)),
    # "<": a expected lower. A verdict rests on the row that came out higher: b when a is lower.
    ("<", -20.0, ("b",)), ("<", 4.0, ("a",)),
])
def test_a_verdict_needs_the_higher_row_above_chance(expect, diff, rows):
    from far.reports.claims import _learned_rows

    assert _learned_rows(expect, diff) == rows


@pytest.mark.parametrize("expect, verdict_, steps, want", [
    (">", "reproduced", (1200, 600), "inconclusive"),  # won by the row that trained longer
    (">=", "reproduced", (1200, 600), "inconclusive"),
    ("<", "reproduced", (600, 1200), "inconclusive"),  # b expected higher and trained longer
    (">", "reproduced", (600, 1200), "reproduced"),  # won despite the shorter training
    (">", "contradicted", (1200, 600), "contradicted"),  # lost despite the longer training
    ("~", "reproduced", (1200, 600), "reproduced"),
])
def test_a_claim_won_by_the_longer_training_is_inconclusive(expect, verdict_, steps, want):
    from far.reports.claims import budget_note

    got, note = budget_note(expect, verdict_, steps)
    assert got == want and note.startswith(f"a trained {steps[0]:,} steps, b {steps[1]:,}")
    assert budget_note(">", "reproduced", (600, 600)) == ("reproduced", "")
    assert budget_note(">", "reproduced", (None, 600)) == ("reproduced", "")


def test_paired_bootstrap_is_exact_when_there_is_no_noise_and_deterministic():
    ones, zeros = np.ones(50, int), np.zeros(50, int)
    assert paired_bootstrap([(ones, zeros)], seed=0) == (100.0, 100.0, 100.0)
    rng = np.random.default_rng(1)
    a, b = rng.random(400) < 0.7, rng.random(400) < 0.5
    d, lo, hi = paired_bootstrap([(a, b)], seed=3)
    assert d == pytest.approx(100 * (a.mean() - b.mean())) and lo < d < hi
    assert 8 < hi - lo < 20  # ~ 2 x 1.96 x sd of a paired difference of 400 videos
    assert paired_bootstrap([(a, b)], seed=3) == (d, lo, hi)
    # Two seeds: the mean of the seeds' differences; the interval also spans the seeds.
    d2, lo2, hi2 = paired_bootstrap([(a, b), (ones[:400 // 8], zeros[:400 // 8])], seed=3)
    assert d2 == pytest.approx((d + 100) / 2) and lo2 < d2 < hi2


def test_claims_file_names_real_rows_and_the_paper_differences():
    tables, claims = load_tables(), load_claims()
    by_id = {c.id: c for c in claims}
    assert len(claims) >= 10 and len(by_id) == len(claims)
    assert by_id["T2-temporal-below-global"].paper_diff(tables) == -23.2
    assert by_id["T2-temporal-below-global"].expect == "<" and by_id["T2-temporal-below-global"].strong
    assert by_id["T7-far-vs-mvd-s"].expect == ">=" and by_id["T7-far-vs-mvd-s"].margin == 1.0
    assert {c.table for c in claims} == {"2", "3", "4", "5", "6", "7", "8"}


def test_a_claim_naming_a_missing_row_is_refused(tmp_path):
    raw = yaml.safe_load(DEFAULT_TABLES.read_text())
    raw["claims"] = [{"id": "x", "table": "7", "a": "FAR ViT-XL", "b": "MVD ViT-S", "text": "t"}]
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="table 7 has no row 'FAR ViT-XL'"):
        load_claims(path)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("claims")
    results = base / "results"
    grid = Grid(PARAMS)
    cells = {c.row: c for c in grid.cells if c.table == "7"}
    for row, cell in cells.items():
        for rid in cell.run_ids:
            run = grid.runs[rid]
            d = results / "runs" / rid / "test"
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([run.seed, zlib.crc32(b"same" if row in SAME_ANSWERS else row.encode())])
            correct = (rng.random(VIDEOS) < ACCURACY[row]).astype(int)
            if row == "FAR (MVD) ViT-B" and run.seed == 1:
                continue  # this run's predictions are missing: its seed drops out of the pair
            pd.DataFrame({"video": [f"v{i:03d}.webm" for i in range(VIDEOS)], "label": 0, "pred": 0, "top5": "0",
                          "correct1": correct, "correct5": 1, "views": 6, "prob_label": 0.5}).to_csv(
                d / "predictions.csv", index=False)
            (d / "metrics.json").write_text(json.dumps({"top1": 100 * correct.mean(), "top5": 100.0}))
            # ViT-B trained twice the steps of ViT-S, as the default's SSv2-like ViT-B cells do
            (d.parent / "train.json").write_text(json.dumps({"epochs": 1, "train_loss": 1.0,
                                                             "steps": 1200 if run.backbone == "vit_b" else 600}))
    out = base / "reports"
    # Figure 6's per-video heat on the object: FAR 0.6 against the baseline's 0.4, on every video
    # with a mask (one video without: nan, left out).
    from far.layout import GRADCAM_SCORES, Layout

    for seed in PARAMS["seeds"]:
        d = Path(Layout.gradcam("6", seed, out))
        d.mkdir(parents=True)
        rows = [{"model": m, "video": f"v{i:03d}.webm", "score": (v + 0.01 * (i % 7)) if i else float("nan")}
                for m, v in (("MVD ViT-S", 0.4), ("FAR (MVD) ViT-S", 0.6)) for i in range(40)]
        pd.DataFrame(rows).to_csv(d / GRADCAM_SCORES, index=False)
    build_report(PARAMS, results, out)
    return out


def test_claims_report_verdicts(report):
    df = pd.read_csv(report / "claims.csv").set_index("id")
    assert set(df["table"].astype(str)) == {"7"}  # only the grid's tables
    # MVD (90 %) vs VideoMAE (50 %): +40 points, far outside the noise.
    assert df.loc["T7-mvd-vs-videomae-s", "verdict"] == "reproduced"
    assert 30 < df.loc["T7-mvd-vs-videomae-s", "diff"] < 50
    # FAR (MVD) ViT-S at 50 % vs MVD at 90 %: worse by far more than the 1-point margin.
    assert df.loc["T7-far-vs-mvd-s", "verdict"] == "contradicted"
    # ViT-B vs ViT-S (MVD), both 90 % with independent errors: the interval spans 0.
    assert df.loc["T7-vitb-vs-vits-mvd", "verdict"] == "inconclusive"
    assert df.loc["T7-vitb-vs-vits-mvd", "ci_low"] < 0 < df.loc["T7-vitb-vs-vits-mvd", "ci_high"]
    # ViT-B (25 %) below ViT-S (50 %) from VideoMAE although it trained twice the steps: still
    # contradicted, and the note says the budgets differ.
    row = df.loc["T7-vitb-vs-vits-videomae"]
    assert row["verdict"] == "contradicted" and "a trained 1,200 steps, b 600" in row["note"]
    assert "steps" not in str(df.loc["T7-mvd-vs-videomae-s", "note"])  # same budget: nothing said
    # Two models at chance with the same answers: difference 0 [0, 0], yet no verdict.
    row = df.loc["T7-far-vs-videomae-b"]
    assert (row["diff"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
    assert row["verdict"] == "inconclusive" and "not above chance" in row["note"]
    # A seed without predictions drops out; the row says how many seeds it used.
    assert df.loc["T7-far-vs-mvd-b", "seeds"] == 1 and df.loc["T7-mvd-vs-videomae-s", "seeds"] == 2
    assert "one seed" in df.loc["T7-far-vs-mvd-b", "note"]
    assert df.loc["T7-mvd-vs-videomae-s", "paper_diff"] == 4.0
    # Figure 6's claim on the GradCAM scores: +20 points on each of 39 videos with masks, both seeds;
    # Figure 7's table is not in this grid.
    f6 = df.loc["F6-far-heat-on-object"]
    assert f6["verdict"] == "reproduced" and f6["diff"] == pytest.approx(20.0) and f6["videos_per_seed"] == 39
    assert f6["seeds"] == 2 and pd.isna(f6["paper_diff"]) and "F7-far-heat-on-object" not in df.index
    # The supplementary scratch row: no paper difference, still a verdict (MVD 90 % vs 30 %).
    assert df.loc["T7-mvd-vs-scratch", "verdict"] == "reproduced" and pd.isna(df.loc["T7-mvd-vs-scratch", "paper_diff"])


def test_table_notes_rows_trained_with_different_budgets(report):
    """ViT-B's runs trained 1,200 steps and ViT-S's 600 (the fixture): Table 7 says so, and
    its CSV carries each cell's steps."""
    md = (report / "table7.md").read_text()
    assert "Training budgets differ between rows (optimizer steps: 600: VideoMAE ViT-S" in md
    assert "1,200: VideoMAE ViT-B" in md
    df = pd.read_csv(report / "table7.csv").set_index("row")
    assert df.loc["MVD ViT-B", "train_steps"] == "1200;1200" and df.loc["MVD ViT-S", "train_steps"] == "600;600"


def test_readme_opens_with_the_claims_summary(report):
    readme = (report / "README.md").read_text()
    first_section = readme.split("\n## ")[1]
    assert first_section.startswith("Claims check")
    assert "reproduced" in first_section and "contradicted" in first_section and "[claims.md](claims.md)" in first_section
    claims_md = (report / "claims.md").read_text()
    assert "Method: " in claims_md and "paired bootstrap" in claims_md and (report / "claims.html").is_file()


def test_claims_report_is_byte_identical_on_the_same_results(report, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(report / "gradcam", again / "gradcam")  # far gradcam's outputs, which far report reads
    build_report(PARAMS, report.parent / "results", again)
    assert (again / "claims.csv").read_bytes() == (report / "claims.csv").read_bytes()
