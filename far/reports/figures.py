"""Figures: accuracy vs GFLOPs, training curves, and the paper's Figure 2 from the masks.

All drawn with matplotlib's Agg backend (no display). The attention-pattern figure is
computed from ``far.models.layout.TokenLayout.mask`` and ``far.models.attention.head_sets``
— the masks the model's reference path attends with — so it shows what the code does,
not what someone drew.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on cluster nodes or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from far.models.config import ModelConfig, model_config  # noqa: E402  (plain Python, no torch)
from far.reports.collect import CellResult, Results  # noqa: E402
from far.tables import Table  # noqa: E402

FAMILY_COLORS = {"baseline": "tab:gray", "FAR": "tab:red"}
# In the ablations "FAR" covers every non-global pattern, not only the final model.
FAMILY_LEGEND = {"baseline": "baseline (global attention)", "FAR": "FAR / its attention variants"}
PATTERNS = ("global", "temporal", "sparse_dense")  # the order of the paper's Figure 2 (a, b, c)
PATTERN_TITLES = {"global": "(a) global", "temporal": "(b) temporal", "sparse_dense": "(c) sparse-dense"}


def slug(text: str) -> str:
    """A file-name-safe form of a row or run name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def family(model: Mapping[str, Any]) -> str:
    """``baseline`` for the global-attention ViT, ``FAR`` for every FAR pattern/variant."""
    return "baseline" if model_config(model).attention == "global" else "FAR"


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---- accuracy vs GFLOPs ----------------------------------------------------------------------
def spread_labels(ys: list[float], gap: float) -> list[float]:
    """Label heights near ``ys`` (same order) at least ``gap`` apart, as close to them as
    possible: sorted, pushed apart upwards, then the block re-centred on the points."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed: list[float] = []
    for i in order:
        placed.append(ys[i] if not placed else max(ys[i], placed[-1] + gap))
    shift = (sum(placed) - sum(ys[i] for i in order)) / max(1, len(placed))
    out = [0.0] * len(ys)
    for i, y in zip(order, placed):
        out[i] = y - shift
    # re-centring may undo the gap only by a uniform shift: the spacing is kept
    return out


def _points(table: Table, cells: list[CellResult], complexity: Mapping[tuple[str, str], Mapping[str, Any]]
            ) -> list[dict[str, Any]]:
    by_row = {c.cell.row: c for c in cells}
    pts = []
    for row in table.rows:
        cell = by_row.get(row.row)
        if cell is None:
            continue
        rec = complexity.get((table.number, row.complexity_row or row.row))
        st = cell.stat("top1")
        pts.append({"row": row.row, "family": family(row.model), "paper": row.paper.get("top1"),
                    "x": rec["gflops"] if rec else row.paper.get("gflops"),  # the paper's x if not counted
                    "mean": st.mean, "spread": st.spread or 0.0})
    return pts


def _labelled_scatter(ax: plt.Axes, pts: list[dict[str, Any]], key: str, hollow: bool,
                      label_keys: tuple[str, ...] | None = None) -> None:
    """Points (x, p[key]); each row labelled once to the right, at the first of
    ``label_keys`` it has (default: ``key``; empty: no labels), spread so that no two
    labels overlap; the y range covers everything labelled or drawn."""
    for p in pts:
        if p[key] is None:
            continue
        color = FAMILY_COLORS[p["family"]]
        if hollow:
            ax.scatter([p["x"]], [p[key]], facecolors="none", edgecolors=color, marker="s", s=40)
        else:
            ax.errorbar([p["x"]], [p[key]], yerr=[[p["spread"]]], fmt="o", color=color, capsize=3, ms=5)
    label_keys = (key,) if label_keys is None else label_keys
    if not label_keys:
        return
    at = [(p, next((p[k] for k in label_keys if p[k] is not None), None)) for p in pts]
    at = [(p, y) for p, y in at if y is not None]
    if not at:
        ax.text(0.5, 0.5, "no results yet", transform=ax.transAxes, ha="center")
        return
    ys = [y for _, y in at] + [p[k] for p in pts for k in ("paper", "mean") if k in label_keys + (key,)
                               and p[k] is not None]
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, 2.0)
    ax.set_ylim(lo - 0.15 * span, hi + 0.15 * span)
    xs = [p["x"] for p, _ in at]
    width = max(max(xs) - min(xs), 1.0)
    label_x = max(xs) + 0.08 * width
    for (p, y0), y in zip(at, spread_labels([y for _, y in at], gap=span * 0.09)):
        ax.annotate(p["row"], (p["x"], y0), xytext=(label_x, y), fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
    ax.set_xlim(min(xs) - 0.08 * width, max(xs) + 0.75 * width)


def _dot_chart(ax: plt.Axes, pts: list[dict[str, Any]], label: str | None) -> None:
    """Rows on the y axis, top-1 on x: reproduced (± half-range) and the paper's value."""
    names = [p["row"] for p in pts][::-1]
    for i, p in enumerate(pts[::-1]):
        color = FAMILY_COLORS[p["family"]]
        if p["mean"] is not None:
            ax.errorbar([p["mean"]], [i + 0.12], xerr=[[p["spread"]]], fmt="o", color=color, capsize=3, ms=5,
                        label="reproduced" if i == 0 else None)
        if p["paper"] is not None:
            ax.scatter([p["paper"]], [i - 0.12], facecolors="none", edgecolors=color, marker="s", s=40,
                       label="paper" if i == 0 else None)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("Top-1 (%)" + (" (reproduced: SYNTHETIC data)" if label else ""))
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="best")


def accuracy_vs_gflops(table: Table, cells: list[CellResult], complexity: Mapping[tuple[str, str], Mapping[str, Any]],
                       out: Path, label: str | None = None) -> Path | None:
    """Top-1 against GFLOPs per view for one table, every point labelled without overlap.

    x is ``far complexity``'s count of the paper-size model for the paper's points and the
    reproduced ones alike. On synthetic data the two sit in side-by-side panels with their
    own accuracy scales (one axis would suggest they are comparable). A table whose rows
    all share one GFLOPs value is drawn as a dot chart instead. Returns None when the
    table has no GFLOPs column.
    """
    if "gflops" not in table.columns:
        return None
    pts = _points(table, cells, complexity)
    title = f"Table {table.number}: {table.title}"
    if len({p["x"] for p in pts}) <= 1:  # one GFLOPs value: accuracy is all there is to see
        fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(pts) + 1.6), layout="constrained")
        _dot_chart(ax, pts, label)
        ax.set_title(title + (f" (all at {pts[0]['x']:.1f} GFLOPs)" if pts and pts[0]["x"] else ""), fontsize=9)
        return _save(fig, out)
    panels = [("paper", True, "the paper's values")] + [("mean", False, "reproduced (SYNTHETIC data)" if label
                                                                        else "reproduced (± half-range over seeds)")]
    if label:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        axes = [ax, ax]
    for ax, (key, hollow, name) in zip(axes, panels):
        if label:  # two panels, each labelled
            _labelled_scatter(ax, pts, key, hollow)
        elif key == "paper":  # one axis: the paper's points unlabelled, ...
            _labelled_scatter(ax, pts, key, hollow, label_keys=())
        else:  # ... each row labelled once, at its reproduced point or else the paper's,
            _labelled_scatter(ax, pts, key, hollow, label_keys=("mean", "paper"))
            for p in pts:  # a dotted line ties a row's paper point to its reproduced one
                if p["mean"] is not None and p["paper"] is not None:
                    ax.plot([p["x"], p["x"]], [p["paper"], p["mean"]], ":", lw=0.8, color=FAMILY_COLORS[p["family"]])
        ax.set_xlabel("GFLOPs per view (paper-size model, fvcore)")
        ax.set_ylabel("Top-1 (%)")
        ax.grid(alpha=0.3)
        if label:
            ax.set_title(name, fontsize=9)
    handles = [plt.Line2D([], [], color=FAMILY_COLORS[f], marker="o", ls="", label=FAMILY_LEGEND[f]) for f in FAMILY_COLORS]
    handles += [plt.Line2D([], [], color="0.3", marker="s", mfc="none", ls="", label="paper"),
                plt.Line2D([], [], color="0.3", marker="o", ls="", label="reproduced")]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=len(handles))
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


# ---- training curves ------------------------------------------------------------------------
def run_group_name(cell: CellResult) -> str:
    """The name shared by a cell's runs: their run id without the seed suffix."""
    return re.sub(r"-s\d+$", "", cell.cell.run_ids[0]) if cell.cell.run_ids else slug(cell.cell.row)


def training_curves(cell: CellResult, out: Path, label: str | None = None,
                    rows: list[tuple[str, str]] | None = None) -> Path | None:
    """Training loss per log point (``steps.csv``; per epoch for runs without it) and
    validation top-1 per epoch, one line per seed; None if no history exists.

    ``rows``: the (table, row) cells these runs serve, named in the title (default: ``cell``'s).
    """
    runs = [r for r in cell.runs if r.history is not None and len(r.history)]
    if not runs:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    per_step = all(r.steps is not None and len(r.steps) for r in runs)
    for r in runs:
        h = r.history.sort_values("epoch")
        if per_step:
            st = r.steps.sort_values("step")
            ax_loss.plot(st["step"], st["loss"], marker=".", label=f"seed {r.run.seed}")
        else:
            ax_loss.plot(h["epoch"], h["train_loss"], marker=".", label=f"seed {r.run.seed}")
        v = h.dropna(subset=["val_top1"])
        ax_acc.plot(v["epoch"], v["val_top1"], marker="o", label=f"seed {r.run.seed}")
    ax_loss.set(xlabel="optimizer step" if per_step else "epoch", ylabel="train loss",
                title="training loss" + (" (mean since the previous point)" if per_step else ""))
    ax_acc.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    run0 = cell.runs[0].run
    title = f"{run_group_name(cell)}  ({run0.dataset} · {run0.pretraining} · {run0.backbone})"
    if label:
        title += " · SYNTHETIC data"
    title += "\n" + "; ".join(f"T{t} {r}" for t, r in (rows or [(cell.cell.table, cell.cell.row)]))
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)


# ---- the paper's Figure 2 from the masks ------------------------------------------------------
def pattern_frames(cfg: ModelConfig, pattern: str, query: tuple[int, int, int] | None = None,
                   frames: int = 2) -> tuple[np.ndarray, int]:
    """Which tokens the query attends to under ``pattern``, as (frames, H, W) booleans.

    Row ``query`` of ``TokenLayout.mask(pattern)`` (natural (t, h, w) order) reshaped to
    the token grid; returns that and the query's natural index. Default query: frame 0,
    near the centre.
    """
    from far.models.layout import TokenLayout  # imports torch: only when a figure is drawn

    t, h, w = cfg.grid
    layout = TokenLayout(t, h, w)
    qt, qh, qw = query if query is not None else (0, h // 2 - 1, w // 2 - 1)
    qi = (qt * h + qh) * w + qw
    row = layout.mask(pattern)[qi].numpy().reshape(t, h, w)
    return row[:frames], qi


def _draw_frames(ax: plt.Axes, attend: np.ndarray, query: tuple[int, int, int], color: str) -> None:
    """Frames side by side: query blue, attended ``color``, unused white (the paper's legend)."""
    frames, h, w = attend.shape
    gap = 1
    img = np.ones((h, frames * (w + gap) - gap, 3))
    rgb = np.array(matplotlib.colors.to_rgb(color))
    for f in range(frames):
        sl = img[:, f * (w + gap): f * (w + gap) + w]
        sl[attend[f]] = rgb
        if f == query[0]:
            sl[query[1], query[2]] = matplotlib.colors.to_rgb("tab:blue")
    ax.imshow(img, interpolation="nearest")
    for f in range(frames):  # patch grid lines
        x0 = f * (w + gap) - 0.5
        for k in range(w + 1):
            ax.plot([x0 + k, x0 + k], [-0.5, h - 0.5], color="0.75", lw=0.3)
        for k in range(h + 1):
            ax.plot([x0, x0 + w], [k - 0.5, k - 0.5], color="0.75", lw=0.3)
        ax.text(x0 + w / 2, h + 0.8, f"frame t={f}", ha="center", va="top", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # the frames' own grid lines are the border
        spine.set_visible(False)


def attention_patterns(out: Path, backbone: str = "vit_s") -> Path:
    """The paper's Figure 2 (global, temporal, sparse-dense) plus FAR's head split, from the masks.

    Top row: one panel per pattern on two adjacent frames of the ``backbone``'s token
    grid (ViT-S: 8×14×14). Bottom row: the head sets of the FAR variant
    (``head_sets``), each with its pattern's mask — the head-split sparse-dense
    attention (HSDA) the model runs.
    """
    from far.models.attention import head_sets

    cfg = model_config({"backbone": backbone})
    far_cfg = model_config({"backbone": backbone, "variant": "far"})
    sets = head_sets(far_cfg)
    t, h, w = cfg.grid
    ncols = max(len(PATTERNS), len(sets))
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 5.6))
    colors = {"global": "tab:orange", "temporal": "tab:green", "sparse_dense": "tab:purple"}
    query = (0, h // 2 - 1, w // 2 - 1)
    for ax, pattern in zip(axes[0], PATTERNS):
        attend, _ = pattern_frames(cfg, pattern, query)
        full, _ = pattern_frames(cfg, pattern, query, frames=t)
        _draw_frames(ax, attend, query, colors[pattern])
        ax.set_title(f"{PATTERN_TITLES[pattern]}: attends to {int(full.sum())} of {t * h * w} tokens", fontsize=8)
    h0 = 0
    for ax, (nh, pattern) in zip(axes[1], sets):
        attend, _ = pattern_frames(far_cfg, pattern, query)
        _draw_frames(ax, attend, query, colors[pattern])
        ax.set_title(f"FAR (HSDA) heads {h0}–{h0 + nh - 1}: {pattern.replace('_', '-')}", fontsize=8)
        h0 += nh
    for row in axes:
        for ax in row[len(PATTERNS) if row is axes[0] else len(sets):]:
            ax.axis("off")
    fig.suptitle(f"Attention patterns from TokenLayout.mask ({backbone}, token grid {t}×{h}×{w}; two adjacent "
                 "frames shown). Blue: query patch; coloured: patches it attends to; white: not used.", fontsize=9)
    return _save(fig, out)


# ---- all figures ----------------------------------------------------------------------------
def build_figures(tables: dict[str, Table], numbers: list[str], results: Results,
                  complexity: Mapping[tuple[str, str], Mapping[str, Any]], out: Path,
                  label: str | None = None) -> dict[str, Any]:
    """Write every figure under ``out``; returns an index for the README.

    ``{"attention": path, "accuracy": {table: path}, "curves": {group: (path, [(table, row)])}}``.
    One training-curve figure per distinct set of runs: cells that share runs (the same
    model in several tables) share a figure.
    """
    index: dict[str, Any] = {"accuracy": {}, "curves": {}}
    index["attention"] = attention_patterns(out / "attention_patterns.png")
    for number in numbers:
        if number == "1":
            continue
        p = accuracy_vs_gflops(tables[number], results.table_cells(number), complexity,
                               out / f"accuracy_vs_gflops_table{number}.png", label)
        if p:
            index["accuracy"][number] = p
    groups: dict[str, tuple[CellResult, list[tuple[str, str]]]] = {}
    for cell in results.cells:
        groups.setdefault(run_group_name(cell), (cell, []))[1].append((cell.cell.table, cell.cell.row))
    for group, (cell, rows) in groups.items():
        index["curves"][group] = (training_curves(cell, out / "curves" / f"{group}.png", label, rows), rows)
    return index
