"""Reading the pipeline's outputs: per-run results, per-cell statistics over seeds.

Every fine-tuning run of the grid leaves, under ``RESULTS/runs/<run_id>/``:

- ``train.json``: epochs, steps, final train loss, wall time, MLflow run id, model size;
- ``history.csv``: one line per epoch (loss, lr, throughput, validation top-1/top-5);
- ``steps.csv``: the training loss (and pace) at every log point, for the curves;
- ``test/metrics.json``: the multi-view test (top-1/top-5 in percent, views, unreadable
  videos, MLflow run id).

A released model's data check (``data_check.baselines_from_released``) leaves only
``test/`` in ``RESULTS/runs/released-<name>/``: its cells take their accuracy from there, one
test for every seed.

A table cell is one row of one table over the seeds' runs. A run whose files are
absent (or unreadable) is *missing*: the cell is computed from the seeds that are there
and says so, or is ``missing`` when none is; the caller decides whether that is fatal
(``far report --strict``).

Spread over seeds is the **half-range**, (max - min) / 2: with the paper's two seeds,
``mean ± half-range`` is exactly the interval spanned by the two results, which a
standard deviation of two numbers is not.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from far.grid import Cell, Grid, Run
from far.layout import Layout

SPREAD_NAME = "half-range"
SPREAD_TEXT = "mean ± half-range over seeds, half-range = (max − min) / 2"
ACCURACY_METRICS = ("top1", "top5")


def run_files(results_dir: str | Path, run_id: str) -> dict[str, Path]:
    """The files a finished run leaves, by role (train, history, steps, test)."""
    f = Layout.run(run_id, results_dir)
    return {"train": Path(f.summary), "history": Path(f.history), "steps": Path(f.steps), "test": Path(f.test_metrics)}


@dataclass
class RunResult:
    """What one run left on disk; ``missing`` names the files absent or unreadable."""

    run: Run
    train: dict[str, Any] | None = None
    history: pd.DataFrame | None = None
    steps: pd.DataFrame | None = None  # per log point; runs made before steps.csv existed have none
    test: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)  # "path (reason)"

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def has_accuracy(self) -> bool:
        """Accuracy comes from the test metrics alone."""
        return self.test is not None

    @property
    def train_steps(self) -> int | None:
        """The optimizer steps the run trained (train.json); None when unknown (a released model)."""
        n = (self.train or {}).get("steps")
        return None if n is None else int(n)

    @property
    def mlflow_run_ids(self) -> list[str]:
        """The MLflow run(s) this run logged to (fine-tune and test; usually one)."""
        ids = [d.get("mlflow_run_id") for d in (self.train, self.test) if d]
        return list(dict.fromkeys(i for i in ids if i))


def _read_json(path: Path, required: tuple[str, ...]) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, "absent"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"unreadable: {err}"
    if not isinstance(data, dict):
        return None, "unreadable: not a JSON object"
    lacking = [k for k in required if k not in data]
    if lacking:
        return None, f"lacks {', '.join(lacking)}"
    return data, None


def _read_history(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    if not path.is_file():
        return None, "absent"
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        return None, f"unreadable: {err}"
    lacking = [c for c in ("epoch", "train_loss", "val_top1") if c not in df.columns]
    if lacking:
        return None, f"lacks column(s) {', '.join(lacking)}"
    return df, None


def load_run(results_dir: str | Path, run: Run) -> RunResult:
    """Read one run's outputs; never raises for absent or malformed files."""
    files = run_files(results_dir, run.run_id)
    res = RunResult(run)
    res.test, why_test = _read_json(files["test"], ACCURACY_METRICS)
    if run.released:  # tested, never trained here
        if why_test:
            res.missing.append(f"{files['test']} ({why_test})")
        return res
    res.train, why_train = _read_json(files["train"], ("epochs", "train_loss"))
    res.history, why_hist = _read_history(files["history"])
    if files["steps"].is_file():
        try:
            res.steps = pd.read_csv(files["steps"])
        except (OSError, ValueError):
            res.steps = None
    for role, why in (("train", why_train), ("history", why_hist), ("test", why_test)):
        if why:
            res.missing.append(f"{files[role]} ({why})")
    return res


@dataclass(frozen=True)
class SeedStat:
    """One metric of one cell over the seeds that have it."""

    values: tuple[float, ...]
    expected: int

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def spread(self) -> float | None:
        """Half-range (max - min) / 2; None with fewer than two seeds (no spread to speak of)."""
        return (max(self.values) - min(self.values)) / 2 if self.n >= 2 else None


@dataclass
class CellResult:
    """A table cell with its runs' results."""

    cell: Cell
    runs: list[RunResult]

    @property
    def status(self) -> str:
        """``ok`` (every seed), ``partial`` (some seeds) or ``missing`` (none)."""
        have = sum(r.has_accuracy for r in self.runs)
        return "ok" if have == len(self.runs) else ("missing" if have == 0 else "partial")

    def stat(self, metric: str) -> SeedStat:
        """``metric`` (top1/top5) over the seeds whose test metrics exist."""
        vals = tuple(float(r.test[metric]) for r in self.runs if r.has_accuracy and _finite(r.test[metric]))
        return SeedStat(vals, len(self.runs))

    def diff(self, metric: str) -> float | None:
        """Reproduced mean minus the paper's value."""
        mean, paper = self.stat(metric).mean, self.cell.paper.get(metric)
        return None if mean is None or paper is None else mean - paper

    @property
    def mlflow_run_ids(self) -> list[str]:
        return list(dict.fromkeys(i for r in self.runs for i in r.mlflow_run_ids))

    def run_for_seed(self, seed: int) -> RunResult | None:
        """The run of ``seed``; a released model's test serves every seed."""
        return next((r for r in self.runs if r.run.seed == seed or r.run.released), None)

    @property
    def missing_runs(self) -> list[str]:
        return [r.run_id for r in self.runs if not r.has_accuracy]

    def views(self) -> list[str]:
        """Test views actually used (``clips×crops``), distinct, from the metrics files."""
        out = []
        for r in self.runs:
            if r.test and "clips" in r.test and "crops" in r.test:
                out.append(f"{r.test['clips']}×{r.test['crops']}")
        return list(dict.fromkeys(out))

    def unreadable(self) -> int:
        """Videos the test could not decode, summed over seeds (they count as wrong)."""
        return sum(len(r.test.get("unreadable") or []) for r in self.runs if r.test)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass
class Results:
    """Everything the report needs from the results folder."""

    runs: dict[str, RunResult]
    cells: list[CellResult]

    def missing_files(self) -> list[str]:
        """Every absent or unreadable file of every run of the grid, in run order."""
        return [m for r in self.runs.values() for m in r.missing]

    def table_cells(self, number: str) -> list[CellResult]:
        return [c for c in self.cells if c.cell.table == number]


def collect(grid: Grid, results_dir: str | Path) -> Results:
    """Read every run of ``grid`` under ``results_dir`` and group them into cells."""
    runs = {rid: load_run(results_dir, run) for rid, run in (grid.runs | grid.released_runs).items()}
    cells = [CellResult(c, [runs[i] for i in c.run_ids]) for c in grid.cells]
    return Results(runs, cells)


def load_complexity(path: str | Path | None) -> dict[tuple[str, str], dict[str, Any]]:
    """``far complexity --json`` records keyed by (table, complexity row label).

    The label is the row name, or the row's ``complexity_row`` in Tables 7/8 (one
    record per model size there). ``None`` or an absent file gives an empty mapping:
    the FLOP/param columns then say ``missing``.
    """
    if path is None or not Path(path).is_file():
        return {}
    records = json.loads(Path(path).read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected the JSON list written by `far complexity --json`")
    return {(str(r["table"]), str(r["row"])): r for r in records}
