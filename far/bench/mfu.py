"""Model FLOP utilisation of a timed step.

The forward's multiply-adds per clip come from the project's one FLOP counter,
:func:`far.complexity.count_flops` (fvcore, the convention of the paper's tables; counted
once per model config and process). A training step does 3 forwards' worth of work
(backward = 2 forwards) and a multiply-add is 2 FLOPs, so

    MFU = 3 x 2 x forward MACs x batch / step time / peak.
"""

from __future__ import annotations

# bf16 dense peak: an 8192^3 bf16 matmul ran at 790 TFLOP/s on the lent H100.
PEAK_TFLOPS = 790.0


def forward_macs(cfg) -> float:
    """Forward multiply-adds per clip of a model config, as ``far complexity`` counts them."""
    try:
        from far.complexity import count_flops
    except ModuleNotFoundError as e:  # GPU images often lack fvcore, a declared dependency of far
        raise RuntimeError(
            f"far bench takes FLOPs from far.complexity, which needs {e.name}: install far's "
            "dependencies (pip install fvcore; offline, carry its wheels and those of iopath, "
            "yacs and termcolor)") from e
    return count_flops(cfg)[0]


def mfu(fwd_macs_per_clip: float, batch: int, step_ms: float, peak_tflops: float = PEAK_TFLOPS) -> float:
    """Model FLOP utilisation (a fraction) of a training step of ``batch`` clips."""
    return 6 * fwd_macs_per_clip * batch / (step_ms * 1e-3) / (peak_tflops * 1e12)
