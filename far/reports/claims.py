"""The claims check: does the reproduction show what the paper's tables claim?

Each claim (``params/paper_tables.yaml``, ``claims``) is "row a minus row b" of one table,
top-1. For each, the report gives the paper's difference, the reproduced difference with
a 95 % confidence interval, and a verdict.

Method (also written into ``claims.md``):

- The reproduced difference is the mean over seeds of ``top1(a) - top1(b)``, each seed's
  pair of runs tested on the same test videos (``test/predictions.csv``: per-video
  correctness after averaging the views).
- The interval is a **paired bootstrap**: 2,000 resamples; each draws the seeds with
  replacement (when there are two or more) and, within each drawn seed, the test videos
  with replacement, the same videos for a and b. The 2.5 and 97.5 percentiles are the
  interval. It covers test-set sampling and, with several seeds, seed-to-seed spread; with
  one seed it covers test-set sampling only (said in the row).
- Verdicts, by the claim's ``expect``:
  ``>``: reproduced if the interval is above 0, contradicted if below 0;
  ``<``: the mirror image;
  ``>=`` (not worse by more than ``margin``): reproduced if the interval's low end is
  above ``-margin``, contradicted if its high end is below ``-margin``;
  ``~`` (on par within ``margin``): reproduced if the interval lies inside
  ``[-margin, margin]``, contradicted if it lies wholly outside;
  anything else is inconclusive. A claim whose runs are not all there is "not run".
- Models that learned nothing prove nothing: two models at chance that give the same
  answers are "on par" with an interval of [0, 0]. So a verdict needs the rows it rests
  on above chance (one-sided binomial test at 5 % on all their test answers, normal
  approximation): both rows for ``~`` and ``>=``, the row that came out higher for ``>``
  and ``<``. Otherwise the claim is inconclusive, with the row named.

A claim on a GradCAM figure (``figure: 6|7``) compares the two models' per-video share of
heat inside the object mask (``reports/gradcam/figure<N>/s<seed>/localisation.csv``) the
same way; it needs data with object masks (the synthetic sets) and has no chance test.

The bootstrap's generator is seeded from the claim's id, so the same results give the
same report byte for byte.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from far.layout import Layout
from far.reports.collect import Results
from far.tables import Claim, Table

RESAMPLES = 2000
LEVEL = 0.95
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
METHOD = (f"Reproduced difference: mean over seeds of top-1(a) − top-1(b), the two runs of a seed tested on the "
          f"same videos. Interval: {LEVEL:.0%} paired bootstrap ({RESAMPLES:,} resamples; seeds drawn with "
          "replacement when there are two or more, then test videos with replacement within each seed, the same "
          "videos for a and b). Verdicts: `>` reproduced when the interval is above 0, contradicted when below; "
          "`<` the mirror image; `>=` reproduced when the interval's low end is above −margin, contradicted when "
          "its high end is below −margin; `~` reproduced when the interval lies inside ±margin, contradicted when "
          "wholly outside; otherwise inconclusive. A claim reproduced in favour of the row that trained more "
          "optimizer steps than the other is inconclusive (the longer training alone could explain it); "
          "differing steps are noted. Claims on Figures 6/7: the same on each test video's share of "
          "GradCAM heat inside the object mask (`far explain --score`, in points), where the data have masks; "
          "no chance test.")


@dataclass
class ClaimResult:
    """One claim's numbers and verdict."""

    claim: Claim
    paper_diff: float
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    seeds: int = 0
    videos: int = 0
    verdict: str = "not run"
    note: str = ""

    def row(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "table": c.table, "figure": c.figure, "claim": c.text, "a": c.a, "b": c.b, "expect": c.expect,
                "margin": c.margin if c.expect in (">=", "~") else None, "strong": c.strong,
                "paper_diff": self.paper_diff, "diff": _r(self.diff), "ci_low": _r(self.low),
                "ci_high": _r(self.high), "seeds": self.seeds, "videos_per_seed": self.videos,
                "verdict": self.verdict, "note": self.note}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def verdict(expect: str, low: float, high: float, margin: float) -> str:
    """The verdict of an interval [low, high] (points) for a claim's ``expect``."""
    if expect == ">":
        return "reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive"
    if expect == "<":
        return "reproduced" if high < 0 else "contradicted" if low > 0 else "inconclusive"
    if expect == ">=":
        return "reproduced" if low > -margin else "contradicted" if high < -margin else "inconclusive"
    if expect == "~":
        if -margin < low and high < margin:
            return "reproduced"
        return "contradicted" if high < -margin or low > margin else "inconclusive"
    raise ValueError(f"unknown expect {expect!r}")


def above_chance(correct: int, total: int, chance: float) -> bool:
    """Whether ``correct`` of ``total`` answers beat guessing at ``chance`` (one-sided
    binomial test at 5 %, normal approximation)."""
    if total == 0:
        return False
    sd = math.sqrt(total * chance * (1 - chance))
    return sd > 0 and (correct - total * chance) / sd > 1.645


def _learned_rows(expect: str, diff: float) -> tuple[str, ...]:
    """Which sides ("a", "b") must be above chance for a verdict on ``expect``: both for
    ``~`` and ``>=``; for ``>`` and ``<`` the row that came out higher (``diff`` = a - b),
    since a verdict either way rests on that row having learned something."""
    if expect in ("~", ">="):
        return ("a", "b")
    return ("a",) if diff >= 0 else ("b",)


def paired_bootstrap(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int, resamples: int = RESAMPLES
                     ) -> tuple[float, float, float]:
    """(difference, low, high) in points for per-seed paired 0/1 arrays (a, b) over the
    same videos: the mean over seeds of mean(a) - mean(b), and its bootstrap interval."""
    rng = np.random.default_rng(seed)
    diffs = [a.astype(float) - b.astype(float) for a, b in pairs]  # per-video a - b, per seed
    estimate = 100 * float(np.mean([d.mean() for d in diffs]))
    stats = np.empty(resamples)
    n_seeds = len(diffs)
    for r in range(resamples):
        chosen = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        stats[r] = np.mean([diffs[s][rng.integers(0, len(diffs[s]), len(diffs[s]))].mean() for s in chosen])
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(100 * stats, [tail, 100 - tail])
    return estimate, float(low), float(high)


def _correct(results_dir: str | Path, run_id: str) -> pd.Series | None:
    path = Path(Layout.run(run_id, results_dir).test_predictions)
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    return df.set_index("video")["correct1"] if len(df) else None


def budget_note(expect: str, verdict_: str, steps: tuple[int | None, int | None]) -> tuple[str, str]:
    """(verdict, note) once the two sides' training steps (a, b) are known: a difference
    in steps is noted; a claim reproduced in favour of the side that trained longer is
    inconclusive, since the budget alone could explain it."""
    sa, sb = steps
    if sa is None or sb is None or sa == sb:
        return verdict_, ""
    note = f"a trained {sa:,} steps, b {sb:,}"
    favoured = {">": sa > sb, ">=": sa > sb, "<": sb > sa}.get(expect, False)
    if verdict_ == "reproduced" and favoured:
        return "inconclusive", note + ": the difference includes the longer training"
    return verdict_, note


def _heat_on_object(reports_dir: str | Path | None, figure: str, seed: int, model: str) -> pd.Series | None:
    """Per-video share of GradCAM heat inside the object (0-1) of ``model`` in figure
    ``figure``'s seed ``seed`` (``far explain --score``'s per-video file); None without it.
    Videos without masks (score nan) are left out."""
    from far.layout import GRADCAM_SCORES

    if reports_dir is None:
        return None
    path = Path(Layout.gradcam(figure, seed, reports_dir)) / GRADCAM_SCORES
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    df = df[(df["model"] == model) & df["score"].notna()]
    return df.set_index("video")["score"] if len(df) else None


def check_claims(claims: list[Claim], tables: dict[str, Table], results: Results, results_dir: str | Path,
                 table_numbers: list[str], chance: dict[str, float] | None = None,
                 reports_dir: str | Path | None = None) -> list[ClaimResult]:
    """Every claim of the tables in ``table_numbers``, from the runs' predictions (a figure's
    claims: from the GradCAM scores under ``reports_dir``). ``chance``: each table's chance
    top-1 (a fraction); without it no row is tested against chance."""
    cells = {(c.cell.table, c.cell.row): c for c in results.cells}
    out = []
    for claim in claims:
        if claim.table not in table_numbers:
            continue
        res = ClaimResult(claim, claim.paper_diff(tables))
        out.append(res)
        ca, cb = cells.get((claim.table, claim.a)), cells.get((claim.table, claim.b))
        if ca is None or cb is None:
            res.note = "a row is not in this grid"
            continue
        # Pairs within seeds; a released model's one test pairs with every seed of the other row.
        seeds = sorted({r.run.seed for r in ca.runs + cb.runs if not r.run.released}) or [-1]
        pairs = []
        for seed in seeds:
            ra, rb = ca.run_for_seed(seed), cb.run_for_seed(seed)
            if ra is None or rb is None:
                continue
            if claim.figure:
                a, b = (_heat_on_object(reports_dir, claim.figure, seed, row) for row in (claim.a, claim.b))
            else:
                a, b = _correct(results_dir, ra.run_id), _correct(results_dir, rb.run_id)
            if a is None or b is None:
                continue
            common = a.index.intersection(b.index)
            if len(common):
                pairs.append((a.loc[common].to_numpy(), b.loc[common].to_numpy()))
        if not pairs:
            res.note = ("no seed with both models' scores on object masks (the data have none, or the figure "
                        "was not drawn)" if claim.figure else "no seed with both runs' predictions")
            continue
        seed = int(hashlib.sha256(claim.id.encode()).hexdigest()[:8], 16)
        res.diff, res.low, res.high = paired_bootstrap(pairs, seed)
        res.seeds, res.videos = len(pairs), min(len(p[0]) for p in pairs)
        res.verdict = verdict(claim.expect, res.low, res.high, claim.margin)
        notes = ["one seed: the interval covers test-set sampling only"] if len(pairs) == 1 else []
        if claim.figure:
            notes.append("share of GradCAM heat on the object, per video (far explain --score)")
        p = None if claim.figure else (chance or {}).get(claim.table)
        if p is not None:
            sides = {"a": (claim.a, [x for x, _ in pairs]), "b": (claim.b, [y for _, y in pairs])}
            for side in _learned_rows(claim.expect, res.diff):
                row, arrays = sides[side]
                k, n = int(sum(int(x.sum()) for x in arrays)), sum(len(x) for x in arrays)
                if not above_chance(k, n, p):
                    notes.append(f"{row} is not above chance ({100 * k / n:.1f} % vs {100 * p:.1f} %)")
                    if res.verdict != "inconclusive":
                        res.verdict = "inconclusive"
        if not claim.figure:
            budgets = [(ra.train_steps, rb.train_steps)
                       for ra, rb in ((ca.run_for_seed(s), cb.run_for_seed(s)) for s in seeds) if ra and rb]
            if budgets:
                res.verdict, note = budget_note(claim.expect, res.verdict, budgets[0])
                notes += [note] if note else []
        res.note = "; ".join(notes)
    return out


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results])


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


HEADER = ["claim", "table", "expect", "paper Δ", "reproduced Δ [95 % CI]", "seeds × videos", "verdict"]


def _display_row(r: ClaimResult) -> list[str]:
    c = r.claim
    expect = c.expect + (f" (±{c.margin:g})" if c.expect in (">=", "~") else "")
    ci = "–" if r.diff is None else f"{_fmt(r.diff)} [{_fmt(r.low)}, {_fmt(r.high)}]"
    size = f"{r.seeds} × {r.videos}" if r.seeds else "–"
    name = ("strong: " if c.strong else "") + f"{c.text} ({c.a} − {c.b})"
    return [name, c.table, expect, _fmt(r.paper_diff), ci, size, r.verdict + (f" ({r.note})" if r.note else "")]


def counts_line(results: list[ClaimResult]) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" of {len(results)} claims."


def summary_lines(results: list[ClaimResult]) -> list[str]:
    """The claims table in Markdown, with counts by verdict first (the report's README)."""
    lines = [counts_line(results), "", "| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(c.replace("|", r"\|") for c in _display_row(r)) + " |" for r in results]
    return lines


def write_claims(results: list[ClaimResult], out: str | Path, label: str | None) -> None:
    """``claims.{md,csv,tex,html}`` in ``out``."""
    from far.reports.formats import Rendered

    Rendered("claims", "Claims check: what the paper's tables claim, and whether this reproduction shows it",
             HEADER, [_display_row(r) for r in results], claims_frame(results), banner=label,
             notes=[counts_line(results), "Method: " + METHOD]).write(out)
