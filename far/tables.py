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
    # False: a supplementary row (e.g. a fine-tune from scratch), run only where the params
    # configure its pre-training and shown as not the paper's.
    in_paper: bool = True

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
            unknown = set(r) - {"row", "model", "paper", "pretraining", "complexity_row", "params_m_tolerance",
                                "in_paper"}
            if unknown:
                raise ValueError(f"{where}.rows[{i}]: unknown field {sorted(unknown)[0]!r}")
            rows.append(Row(table=str(number), row=r["row"], model=model, paper=dict(r.get("paper", {})),
                            pretraining=r.get("pretraining"), complexity_row=r.get("complexity_row"),
                            params_m_tolerance=r.get("params_m_tolerance"), in_paper=bool(r.get("in_paper", True))))
        out[str(number)] = Table(number=str(number), title=t["title"], kind=t["kind"], columns=list(t["columns"]),
                                 rows=rows, dataset=t.get("dataset"))
    return out


EXPECTS = (">", "<", ">=", "~")


@dataclass(frozen=True)
class Claim:
    """A comparison the paper's tables support: row ``a`` minus row ``b`` of ``table``
    (top-1). ``expect``: ">" / "<" (a above / below b), ">=" (a not worse than b by more
    than ``margin`` points) or "~" (on par within ``margin``); see params/paper_tables.yaml."""

    id: str
    table: str
    a: str
    b: str
    text: str
    expect: str
    margin: float = 1.0
    strong: bool = False
    # A GradCAM figure (6 or 7): the claim is on the share of heat inside the object
    # (far explain --score, per video), not on top-1; the paper shows it, it prints no number.
    figure: str | None = None

    def paper_diff(self, tables: dict[str, Table], metric: str = "top1") -> float | None:
        """The paper's difference, a - b (points); None when a row is not the paper's or the
        claim is on a figure."""
        if self.figure:
            return None
        rows = {r.row: r for r in tables[self.table].rows}
        a, b = rows[self.a].paper.get(metric), rows[self.b].paper.get(metric)
        return None if a is None or b is None else round(a - b, 4)


def load_claims(path: str | Path = DEFAULT_TABLES) -> list[Claim]:
    """The ``claims`` of the tables file; every row they name must exist in its table."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    tables = load_tables(path)
    out = []
    for i, c in enumerate(raw.get("claims", [])):
        where = f"{path}: claims[{i}]"
        unknown = set(c) - {"id", "table", "a", "b", "text", "strong", "expect", "margin", "figure"}
        if unknown:
            raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        table = str(c["table"])
        if table not in tables:
            raise ValueError(f"{where} ({c['id']}): no table {table!r}")
        rows = {r.row: r for r in tables[table].rows}
        for side in (c["a"], c["b"]):
            if side not in rows:
                raise ValueError(f"{where} ({c['id']}): table {table} has no row {side!r}")
        paper = [rows[c[side]].paper.get("top1") for side in ("a", "b")]
        if "expect" not in c and (None in paper or "figure" in c):
            raise ValueError(f"{where} ({c['id']}): a row has no paper top-1 or the claim is on a figure; "
                             "give `expect`")
        expect = c.get("expect") or (">" if paper[0] >= paper[1] else "<")
        if expect not in EXPECTS:
            raise ValueError(f"{where} ({c['id']}): expect must be one of {EXPECTS}, got {expect!r}")
        out.append(Claim(id=str(c["id"]), table=table, a=str(c["a"]), b=str(c["b"]), text=str(c["text"]),
                         expect=expect, margin=float(c.get("margin", 1.0)), strong=bool(c.get("strong", False)),
                         figure=str(c["figure"]) if "figure" in c else None))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: claims: duplicate id")
    return out
