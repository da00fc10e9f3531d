"""One rendered table, written as Markdown, CSV and LaTeX.

The Markdown/LaTeX forms are for reading (rounded, ``mean ± spread``); the CSV keeps
the numbers unformatted, one column per quantity, for anything that computes on them.
"""

from __future__ import annotations

import html

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Rendered:
    """A report table: display cells (Markdown/LaTeX) and the machine-readable frame (CSV)."""

    name: str  # file stem, e.g. "table2"
    title: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    banner: str | None = None  # shown above the table, e.g. the synthetic-data label
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table as a Markdown page (title, banner, table, notes)."""
        lines = [f"# {self.title}", ""]
        if self.banner:
            lines += [f"> **{self.banner}**", ""]
        lines.append("| " + " | ".join(_md(h) for h in self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
        cols = "l" * len(self.header)
        caption = _tex(self.title + (f" ({self.banner})" if self.banner else ""))
        out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{tab:{self.name}}}",
               r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
               " & ".join(_tex(h) for h in self.header) + r" \\", r"\midrule"]
        out += [" & ".join(_tex(c) for c in row) + r" \\" for row in self.rows]
        out += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        """A standalone HTML page (what Snakemake's report shows inline)."""
        e = html.escape
        out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{e(self.title)}</title>",
               "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:90%}"
               "th,td{border:1px solid #bbb;padding:3px 6px;text-align:right}th{background:#eee}"
               "td:first-child,th:first-child{text-align:left}.banner{background:#fff3cd;padding:6px;"
               "border-left:4px solid #e0a800}</style></head><body>", f"<h2>{e(self.title)}</h2>"]
        if self.banner:
            out.append(f'<p class="banner"><b>{e(self.banner)}</b></p>')
        out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in self.header) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in self.rows]
        out.append("</tbody></table>")
        if self.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``<name>.md``, ``.csv``, ``.tex`` and ``.html`` under ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {ext: folder / f"{self.name}.{ext}" for ext in ("md", "csv", "tex", "html")}
        paths["md"].write_text(self.markdown())
        self.data.to_csv(paths["csv"], index=False)
        paths["tex"].write_text(self.latex())
        paths["html"].write_text(self.html())
        return paths


def _md(text: str) -> str:
    # A literal pipe would split the cell.
    return str(text).replace("|", r"\|")


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "−": "--", "–": "--", "✓": r"$\checkmark$",
                "✗": r"$\times$", "β": r"$\beta$", "`": ""}


def _tex(text: str) -> str:
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    for sym, rep in _TEX_SYMBOLS.items():
        out = out.replace(sym, rep)
    return out
