"""FLOPs and parameters with fvcore, and ``far complexity``: the paper's Tables 2-8 columns.

Convention (fvcore, as in the paper): one multiply-add = one FLOP, per view of
16x224x224; softmax, GELU and additions are not counted. fvcore does not know
``aten::scaled_dot_product_attention`` and silently skips it, so a handle is
registered that counts its two matmuls as the explicit form is counted:
q·kᵀ (L·S·E multiply-adds per batch element and head) and attn·v (L·S·Ev).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count
from fvcore.nn.jit_handles import get_shape

from far.models import ModelConfig, build_model, model_config
from far.tables import DEFAULT_TABLES, load_tables

# Ops that must never be left uncounted: anything that multiplies activations.
_MUST_COUNT = ("attention", "matmul", "bmm", "baddbmm", "einsum", "conv", "linear", "addmm", "mm")


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: q·kᵀ plus attn·v MACs."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    (l, e), s, ev = q[-2:], k[-2], v[-1]
    return batch * l * s * e + batch * l * s * ev


def flop_analysis(model: torch.nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    """An fvcore analysis with the SDPA handle, refusing any uncounted multiplying op."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.total()
    missed = [op for op in analysis.unsupported_ops() if any(m in op for m in _MUST_COUNT)]
    if missed:
        raise RuntimeError(f"fvcore left multiplying ops uncounted: {missed}")
    return analysis


@lru_cache(maxsize=None)
def _count(cfg: ModelConfig) -> tuple[float, int]:
    with torch.random.fork_rng(devices=[]):  # it builds a model: the caller's RNG stays untouched
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        x = torch.zeros(1, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
        with torch.no_grad():
            flops = flop_analysis(model, x).total()
    return float(flops), int(parameter_count(model)[""])


def count_flops(cfg: ModelConfig | dict) -> tuple[float, int]:
    """(FLOPs per view, parameters) of a model config, fvcore convention."""
    cfg = cfg if isinstance(cfg, ModelConfig) else model_config(cfg)
    return _count(cfg)


def cache_dir() -> Path:
    """Where :func:`model_flops` keeps its counts: ``$FAR_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/far`` (``~/.cache/far``); never inside the repository."""
    if os.environ.get("FAR_CACHE_DIR"):
        return Path(os.environ["FAR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "far"


def _counter_digest() -> str:
    """A digest of the code that decides a count (this module and far/models), so that a
    changed model or counter never reads a stale cached number."""
    h = hashlib.sha1()
    for f in sorted([Path(__file__), *Path(__file__).with_name("models").rglob("*.py")]):
        h.update(f.read_bytes())
    return h.hexdigest()


def model_flops(cfg: ModelConfig | dict) -> tuple[float, int]:
    """:func:`count_flops` once per model config, kept on disk: a training job reads the
    number instead of tracing its model with fvcore again (seconds per job). One small
    JSON file per config and counter version, written atomically (parallel jobs are safe)."""
    cfg = cfg if isinstance(cfg, ModelConfig) else model_config(cfg)
    key = hashlib.sha1((json.dumps(cfg.to_dict(), sort_keys=True) + _counter_digest()).encode()).hexdigest()[:20]
    path = cache_dir() / "flops" / f"{key}.json"
    try:
        cached = json.loads(path.read_text())
        return float(cached["flops"]), int(cached["params"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    flops, params = count_flops(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"flops": flops, "params": params, "config": cfg.to_dict()}))
        tmp.replace(path)
    except OSError:  # a read-only home: count again next time
        pass
    return flops, params


def _tolerance(paper: float, minimum: float) -> float:
    """Half the paper's printed precision, at least ``minimum`` (57 vs 56.97 is a match)."""
    decimals = len(repr(float(paper)).split(".")[1].rstrip("0")) if float(paper) != int(paper) else 0
    return max(minimum, 0.5 * 10 ** -decimals)


def complexity_rows(tables_path=DEFAULT_TABLES, tables: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One record per row of Tables 2-8 with our GFLOPs/params and the paper's."""
    out = []
    for number, table in load_tables(tables_path).items():
        if tables and number not in tables:
            continue
        seen = set()
        for row in table.rows:
            label = row.complexity_row or row.row
            if label in seen or ("gflops" not in row.paper and "params_m" not in row.paper):
                continue
            seen.add(label)
            flops, params = count_flops(row.model_config())
            rec = dict(table=number, row=label, gflops=round(flops / 1e9, 3), params_m=round(params / 1e6, 3),
                       paper_gflops=row.paper.get("gflops"), paper_params_m=row.paper.get("params_m"))
            if rec["paper_gflops"] is not None:
                rec["gflops_tolerance"] = _tolerance(rec["paper_gflops"], 0.15)
            if rec["paper_params_m"] is not None:
                rec["params_m_tolerance"] = row.params_m_tolerance or 0.05
            out.append(rec)
    return out


def _fmt(v, spec=".2f"):
    return "" if v is None else format(v, spec)


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = f"{'table':<6}{'row':<26}{'GFLOPs':>9}{'paper':>8}{'diff':>8}{'params M':>10}{'paper':>8}{'diff':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        dg = None if r["paper_gflops"] is None else r["gflops"] - r["paper_gflops"]
        dp = None if r["paper_params_m"] is None else r["params_m"] - r["paper_params_m"]
        lines.append(f"{r['table']:<6}{r['row']:<26}{r['gflops']:>9.2f}{_fmt(r['paper_gflops'], '.1f'):>8}{_fmt(dg, '+.2f'):>8}"
                     f"{r['params_m']:>10.2f}{_fmt(r['paper_params_m'], '.1f'):>8}{_fmt(dp, '+.2f'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="far complexity", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--tables", nargs="*", help="only these table numbers (default: 2-8)")
    p.add_argument("--tables-file", default=str(DEFAULT_TABLES), help="the paper tables definition (YAML)")
    p.add_argument("--out", help="also write the JSON list to this file")
    args = p.parse_args(argv)
    rows = complexity_rows(args.tables_file, args.tables)
    text = json.dumps(rows, indent=1)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
