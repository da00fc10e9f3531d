"""Fixed sin-cos position embeddings of VideoMAE (1-D) and MVD (3-D). Not parameters."""

from __future__ import annotations

import torch


def sincos_1d_interleaved(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's table: angle = pos / 10000^(2*(j//2)/dim); sin on even j, cos on odd j."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def _sincos_1d_halves(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE-style 1-D table: omega = 1/10000^(i/(dim/2)); [sin(pos*omega), cos(pos*omega)]."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.double().flatten()[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_3d_mvd(t: int, h: int, w: int, dim: int) -> torch.Tensor:
    """MVD's table, laid out [T, H*W]: the first dim/4 channels a 1-D sin-cos over t,
    the remaining 3*dim/4 a 2-D sin-cos over the spatial grid.

    The 2-D part follows MAE's convention: its first half encodes the column (w) and
    its second half the row (h) — MAE builds the grid with ``meshgrid(w, h)``.
    """
    d_t, d_s = dim // 4, dim // 4 * 3
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    spatial = torch.cat([_sincos_1d_halves(d_s // 2, ww), _sincos_1d_halves(d_s // 2, hh)], dim=1)  # (HW, d_s)
    temporal = _sincos_1d_halves(d_t, torch.arange(t))  # (T, d_t)
    table = torch.cat(
        [temporal[:, None, :].expand(t, h * w, d_t), spatial[None, :, :].expand(t, h * w, d_s)], dim=2
    )
    return table.reshape(t * h * w, dim).float()


def position_embedding(flavour: str, t: int, h: int, w: int, dim: int) -> torch.Tensor:
    """(T*H*W, dim) table in natural (t, h, w) order for ``flavour`` 'videomae' or 'mvd'."""
    if flavour == "videomae":
        return sincos_1d_interleaved(t * h * w, dim)
    if flavour == "mvd":
        return sincos_3d_mvd(t, h, w, dim)
    raise ValueError(f"unknown position-embedding flavour {flavour!r} (videomae or mvd)")
