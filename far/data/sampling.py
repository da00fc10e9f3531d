"""Which frame indices to decode: TSN segment sampling (SSv2) and dense sampling (K400).

The formulas are the reference's (VideoMAE/MVD ``ssv2.py`` and ``kinetics.py``,
``loadvideo_decord`` and the test branch of ``__getitem__``), transcribed so that the
same video length gives the same indices; tests/test_data.py checks them against an
independent transcription. Where the reference is undefined or degenerate this
module makes a documented choice instead (see each function and docs/data.md).

Training draws with a ``random.Random`` given by the caller (one per item, see
dataset.py) instead of the global ``np.random``, so results do not depend on global
random state; the distributions are the reference's. Test views are fixed.
"""

from __future__ import annotations

import random

import numpy as np


def segment_train(length: int, num_segments: int, rng: random.Random) -> np.ndarray:
    """One random frame in each of ``num_segments`` equal segments (TSN, reference SSv2 train).

    Reference: ``avg = length // n``; frame ``i * avg + randint(avg)``. For videos
    shorter than ``n`` frames the reference returns frame 0 ``n`` times (its other
    branch is unreachable), which erases all temporal order; here segment ``i`` gets
    frame ``floor(i * length / n)`` instead: every frame in order, repeated as needed.
    """
    avg = length // num_segments
    if avg > 0:
        return np.array([i * avg + rng.randrange(avg) for i in range(num_segments)], dtype=np.int64)
    return (np.arange(num_segments, dtype=np.int64) * length) // num_segments


def segment_test(length: int, num_segments: int, view: int, num_views: int) -> np.ndarray:
    """Temporal test view ``view``: the same fixed offset within every segment.

    Reference (2 views): ``tick = length / n``; view 0 takes ``int(tick * x)`` (segment
    starts), view 1 ``int(tick / 2 + tick * x)`` (segment middles). Generalised to
    ``num_views`` as offsets ``view / num_views`` of a segment (the reference's code
    only works for 2); a single view takes the segment middles (the reference has no
    single-view test).
    """
    tick = length / num_segments
    frac = 0.5 if num_views == 1 else view / num_views
    idx = np.array([int(tick * frac + tick * x) for x in range(num_segments)], dtype=np.int64)
    return np.minimum(idx, length - 1)


def dense_train(length: int, num_frames: int, stride: int, rng: random.Random, short_mode: str = "clamp") -> np.ndarray:
    """``num_frames`` frames spread over a random window of ``num_frames * stride`` frames.

    Reference (K400 train): ``window = num_frames * stride``; ``end = randint(window,
    length)`` (exclusive), ``start = end - window``, indices
    ``clip(linspace(start, end, num_frames), start, end - 1)`` -- so 16 frames span the
    whole 64-frame window (spacing 64/15, not exactly 4). Videos of at most ``window``
    frames (reference): ``length // stride`` frames spread over the video by
    ``linspace(0, length)``, then the last frame repeated (``short_mode="clamp"``).
    ``short_mode="loop"`` instead wraps around: ``(k * stride) % length``.
    """
    window = num_frames * stride
    if length <= window:
        if short_mode == "loop":
            return (np.arange(num_frames, dtype=np.int64) * stride) % length
        spread = np.linspace(0, length, num=length // stride)
        idx = np.concatenate([spread, np.full(num_frames - length // stride, float(length))])
        return np.clip(idx, 0, length - 1).astype(np.int64)
    end = rng.randrange(window, length)
    start = end - window
    return np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64)


def dense_test(length: int, num_frames: int, stride: int, view: int, num_views: int,
               short_mode: str = "clamp") -> np.ndarray:
    """Temporal test view ``view`` of ``num_views`` evenly spaced clips at exactly ``stride``.

    Reference (K400 test): every ``stride``-th frame of the whole video
    (``range(0, length, stride)``, padded with its last entry to ``num_frames``); view
    ``v`` takes ``num_frames`` consecutive entries from ``int(v * (N - num_frames) /
    (num_views - 1))``. A single view (a division by zero in the reference) takes the
    centre clip. ``short_mode="loop"`` replaces the padding of short videos by
    wrapping around.
    """
    sub = list(range(0, length, stride))
    if len(sub) < num_frames:
        if short_mode == "loop":
            return (np.arange(num_frames, dtype=np.int64) * stride) % length
        sub += [sub[-1]] * (num_frames - len(sub))
    slack = len(sub) - num_frames
    start = slack // 2 if num_views == 1 else int(view * max(slack / (num_views - 1), 0))
    return np.array(sub[start:start + num_frames], dtype=np.int64)
