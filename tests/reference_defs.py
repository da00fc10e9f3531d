"""The definitions the fast paths are tested against, shared by the CPU tests and the GPU
(``-m gpu``) tests: the TGI conv as Conv3d on the (T, H, W) grid, and a model paired with
its definitional twin (natural token order with masks) holding the same weights."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from far.models import ModelConfig, build_model
from far.models.layout import TokenLayout

# The CPU tests' model: 2 blocks of the embedded default's backbone.
SMALL = dict(backbone="vit_tiny_cpu", depth=2, drop_path=0.0, num_classes=7)


def conv3d_definition(y_grouped: torch.Tensor, lay: TokenLayout, weight: torch.Tensor, bias: torch.Tensor | None,
                      groups: int) -> torch.Tensor:
    """The TGI's grouped 3x3x3 conv by definition: tokens (grouped order) to the (T, H, W)
    grid, ``F.conv3d`` with zero padding, back to grouped order."""
    b, n, c = y_grouped.shape
    grid = y_grouped[:, lay.inv_perm].transpose(1, 2).reshape(b, c, lay.t, lay.h, lay.w)
    out = F.conv3d(grid, weight, bias, padding=1, groups=groups)
    return out.flatten(2).transpose(1, 2)[:, lay.perm]


def definition_pair(spec: Mapping[str, Any] | ModelConfig = SMALL, reference: Mapping[str, Any] | None = None,
                    **overrides: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fast, definition) in eval mode with the same weights (seed 0): ``spec`` with
    ``overrides``, and the same in natural token order with masks plus ``reference``
    (e.g. ``tgi_impl="conv3d"``)."""
    torch.manual_seed(0)
    fast = build_model(spec, **overrides).eval()
    ref = build_model(spec, **{**overrides, "token_order": "natural", **(reference or {})}).eval()
    ref.load_state_dict(fast.state_dict())
    return fast, ref
