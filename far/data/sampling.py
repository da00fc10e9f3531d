"""Which frame indices to decode: TSN segment sampling (SSv2) and dense strided sampling (K400).

Training draws with a ``random.Random`` given by the caller (one per item, see
dataset.py) so results do not depend on global random state; test views are fixed.
Formulas follow the reference (VideoMAE ``ssv2.py`` / ``kinetics.py``).
"""

from __future__ import annotations

import random

import numpy as np


def segment_train(length: int, num_segments: int, rng: random.Random) -> np.ndarray:
    """One random frame in each of ``num_segments`` equal segments (TSN)."""
    seg = (length - 1) / num_segments
    out = []
    for i in range(num_segments):
        start, end = int(round(seg * i)), int(round(seg * (i + 1)))
        out.append(rng.randint(start, max(start, end)))
    return np.clip(np.array(out, dtype=np.int64), 0, length - 1)


def segment_test(length: int, num_segments: int, view: int, num_views: int) -> np.ndarray:
    """Temporal test view ``view``: the same fixed offset within every segment.

    Offsets are ``view / num_views`` of a segment (the reference's 2 views: segment
    start and segment middle); with a single view, the segment middle.
    """
    tick = length / num_segments
    frac = 0.5 if num_views == 1 else view / num_views
    idx = np.array([int(tick * x + tick * frac) for x in range(num_segments)], dtype=np.int64)
    return np.clip(idx, 0, length - 1)


def _short_window(length: int, num_frames: int, stride: int, mode: str) -> np.ndarray:
    idx = np.arange(num_frames, dtype=np.int64) * stride
    # "clamp" repeats the last frame (the reference pads with it); "loop" wraps around.
    return np.minimum(idx, length - 1) if mode == "clamp" else idx % length


def dense_train(length: int, num_frames: int, stride: int, rng: random.Random, short_mode: str = "clamp") -> np.ndarray:
    """``num_frames`` frames ``stride`` apart from a random window of the video."""
    window = num_frames * stride
    if length < window:
        return _short_window(length, num_frames, stride, short_mode)
    start = rng.randint(0, length - window)
    return start + np.arange(num_frames, dtype=np.int64) * stride


def dense_test(length: int, num_frames: int, stride: int, view: int, num_views: int,
               short_mode: str = "clamp") -> np.ndarray:
    """Temporal test view ``view`` of ``num_views`` evenly spaced windows (centre if one)."""
    window = num_frames * stride
    if length < window:
        return _short_window(length, num_frames, stride, short_mode)
    slack = length - window
    start = slack // 2 if num_views == 1 else int(round(view * slack / (num_views - 1)))
    return start + np.arange(num_frames, dtype=np.int64) * stride
