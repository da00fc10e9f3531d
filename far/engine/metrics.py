"""Multi-view merging and top-k accuracy.

The reference averaged *logits* over views (and once lost ~0.5% top-1 to it) and,
with a padded distributed sampler, counted some videos twice. Here every rank
returns per-view softmax probabilities tagged with their ``(video_index, view)`` id;
:func:`merge_views` drops duplicate ids, averages the probabilities of each video
and reports how many views each video got, so every video counts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class ViewRecords:
    """Per-view results of one rank (or all ranks, concatenated)."""

    video_index: np.ndarray  # (n,) int64
    view: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n, classes) float32, softmax of each view

    @staticmethod
    def concat(parts: Iterable["ViewRecords"]) -> "ViewRecords":
        parts = [p for p in parts if len(p.video_index)]
        if not parts:
            return ViewRecords(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        return ViewRecords(
            np.concatenate([p.video_index for p in parts]),
            np.concatenate([p.view for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.probs for p in parts]),
        )


@dataclass(frozen=True)
class Merged:
    """One row per video, sorted by video index."""

    video_index: np.ndarray  # (V,)
    label: np.ndarray  # (V,)
    probs: np.ndarray  # (V, classes): mean of the views' probabilities
    views: np.ndarray  # (V,) number of distinct views merged


def merge_views(rec: ViewRecords) -> Merged:
    """Deduplicate by (video_index, view) and average probabilities per video."""
    if len(rec.video_index) == 0:
        return Merged(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
    ids = np.stack([rec.video_index, rec.view], axis=1)
    _, first = np.unique(ids, axis=0, return_index=True)
    first = np.sort(first)
    vi, lab, pr = rec.video_index[first], rec.label[first], rec.probs[first].astype(np.float64)
    videos, inverse, counts = np.unique(vi, return_inverse=True, return_counts=True)
    sums = np.zeros((len(videos), pr.shape[1]), np.float64)
    np.add.at(sums, inverse, pr)
    labels = np.zeros(len(videos), np.int64)
    labels[inverse] = lab
    return Merged(videos.astype(np.int64), labels, (sums / counts[:, None]).astype(np.float32), counts.astype(np.int64))


def topk_correct(probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, np.ndarray]:
    """Boolean per row: is the label among the k most probable classes (ties: lower index)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    return {k: (order[:, : min(k, probs.shape[1])] == labels[:, None]).any(axis=1) for k in ks}


def accuracy(probs: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent."""
    if len(labels) == 0:
        return {f"top{k}": float("nan") for k in ks}
    return {f"top{k}": float(100.0 * c.mean()) for k, c in topk_correct(probs, labels, ks).items()}


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Items ``rank, rank + W, ...``: disjoint, covering, no padding (uneven is fine)."""
    return list(range(rank, n, world_size))
