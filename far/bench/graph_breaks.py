"""Graph breaks of a model under torch.compile (``far bench --explain``)."""

from __future__ import annotations

from typing import Any


def graph_breaks(cfg) -> dict[str, Any]:
    """``torch._dynamo.explain`` of the whole model (graphs, breaks, the first reasons),
    and whether its first Block compiles with ``fullgraph=True``, forward and backward."""
    import torch

    from far.models import build_model

    m = build_model(cfg).cuda()
    x = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device="cuda")
    torch._dynamo.reset()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ex = torch._dynamo.explain(m)(x)
    res = dict(graph_count=ex.graph_count, graph_break_count=ex.graph_break_count,
               break_reasons=[str(r.reason) for r in ex.break_reasons][:5])
    torch._dynamo.reset()
    tokens = torch.randn(2, cfg.num_tokens, cfg.embed_dim, device="cuda", requires_grad=True)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = torch.compile(m.blocks[0], fullgraph=True)(tokens)
        out.float().sum().backward()
        res["block_fullgraph"] = "ok"
    except Exception as e:  # reported, not hidden: a break here is a finding
        res["block_fullgraph"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
    torch._dynamo.reset()
    return res
