"""VideoMAE tube masking: one random spatial mask, shared by every time step.

A mask is a bool tensor (B, N) over the tokens in natural (t, h, w) order, True =
masked (hidden from the encoder, to be predicted). Every sample masks exactly
``int(ratio * H * W)`` spatial positions (as VideoMAE's TubeMaskingGenerator), so
every sample has the same number of visible tokens and batches gather into dense
tensors. With T = 1 it is plain MAE random masking.
"""

from __future__ import annotations

import torch


def num_masked_per_frame(hw: int, ratio: float) -> int:
    """Masked spatial positions per frame: ``int(ratio * hw)``, at least one token visible."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio!r}")
    return min(int(ratio * hw), hw - 1)


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, *,
              generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, T*H*W) bool mask, True = masked; the same spatial mask at every t.

    Deterministic given the generator's state (``torch.Generator().manual_seed(s)``).
    """
    t, h, w = grid
    hw = h * w
    n_mask = num_masked_per_frame(hw, ratio)
    scores = torch.rand(batch, hw, generator=generator)
    order = scores.argsort(dim=1)
    spatial = torch.zeros(batch, hw, dtype=torch.bool)
    spatial.scatter_(1, order[:, :n_mask], True)
    mask = spatial[:, None, :].expand(batch, t, hw).reshape(batch, t * hw)
    return mask.to(device) if device is not None else mask


class TubeMaskGenerator:
    """Seeded source of tube masks (one generator per run, so resumed runs are reproducible
    given the step: :meth:`at_step` re-seeds from (seed, step))."""

    def __init__(self, grid: tuple[int, int, int], ratio: float, seed: int = 0):
        self.grid, self.ratio, self.seed = tuple(grid), float(ratio), int(seed)
        num_masked_per_frame(grid[1] * grid[2], ratio)  # validate now

    def at_step(self, step: int, batch: int, device=None) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        return tube_mask(batch, self.grid, self.ratio, generator=g, device=device)
