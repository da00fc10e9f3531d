"""The paper's tables as data: rows, the model each row is, and the paper's printed values.

Read from ``params/paper_tables.yaml`` — the one place where the rows of Tables 2-8 are
defined — by ``far complexity``, the pipeline's grids and the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from far.models.config import ModelConfig, model_config

DEFAULT_TABLES = Path(__file__).resolve().parent.parent / "params" / "paper_tables.yaml"


@dataclass(frozen=True)
class Row:
    """One row of a paper table."""

    table: str
    row: str
    model: dict[str, Any]
    paper: dict[str, float]
    pretraining: str | None = None
    complexity_row: str | None = None
    params_m_tolerance: float | None = None

    def model_config(self, **overrides: Any) -> ModelConfig:
        """The paper-size model of this row (overrides e.g. for the CPU-sized default)."""
        return model_config(self.model, **overrides)


@dataclass(frozen=True)
class Table:
    """A paper table: title, kind (ablation or main), columns and rows."""

    number: str
    title: str
    kind: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    dataset: str | None = None


def load_tables(path: str | Path = DEFAULT_TABLES) -> dict[str, Table]:
    """Parse and validate the tables file (every row's model config is checked here)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    out: dict[str, Table] = {}
    for number, t in raw["tables"].items():
        where = f"{path}: tables.{number}"
        for key in ("title", "kind", "columns", "rows"):
            if key not in t:
                raise ValueError(f"{where}: missing field {key!r}")
        rows = []
        for i, r in enumerate(t["rows"]):
            model = dict(t.get("base", {})) | dict(r.get("model", {}))
            try:
                model_config(model)
            except ValueError as err:
                raise ValueError(f"{where}.rows[{i}] ({r.get('row')}): {err}") from err
            unknown = set(r) - {"row", "model", "paper", "pretraining", "complexity_row", "params_m_tolerance"}
            if unknown:
                raise ValueError(f"{where}.rows[{i}]: unknown field {sorted(unknown)[0]!r}")
            rows.append(Row(table=str(number), row=r["row"], model=model, paper=dict(r.get("paper", {})),
                            pretraining=r.get("pretraining"), complexity_row=r.get("complexity_row"),
                            params_m_tolerance=r.get("params_m_tolerance")))
        out[str(number)] = Table(number=str(number), title=t["title"], kind=t["kind"], columns=list(t["columns"]),
                                 rows=rows, dataset=t.get("dataset"))
    return out
