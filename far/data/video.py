"""Reading videos with decord, decoding only the frames that are asked for.

Why decord: random access with ``get_batch`` decodes only the sampled frames (and
the frames their GOPs need), several times faster than decoding whole clips
(see benchmarks/data_loading.py). Every failure is turned into
:class:`CorruptVideo` so callers can count, log and replace the file instead of
crashing a DataLoader worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIN_BYTES = 1024  # the reference treats < 1 KB files as broken downloads
# decord fails on VP9 .webm with more than one decode thread
# ("avcodec_send_packet ... -11"), so containers that usually hold VP9 get one thread.
VP9_SUFFIXES = frozenset({".webm", ".mkv"})
# One thread everywhere by default: DataLoader workers provide the parallelism, and
# per-reader thread pools would oversubscribe the cores.
DEFAULT_THREADS = 1


class CorruptVideo(Exception):
    """A video that cannot be used: missing, empty, too small, unreadable or undecodable."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def decode_threads(path: str | Path, requested: int = DEFAULT_THREADS) -> int:
    """Decoder threads for ``path``: ``requested``, but 1 for VP9 containers (decord bug)."""
    return 1 if Path(path).suffix.lower() in VP9_SUFFIXES else requested


def check_size(path: str | Path) -> int:
    """Size of ``path`` in bytes; raise :class:`CorruptVideo` if missing, empty or < 1 KB."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise CorruptVideo(path, f"unreadable: {err.strerror or err}") from err
    if size == 0:
        raise CorruptVideo(path, "empty file (0 bytes)")
    if size < MIN_BYTES:
        raise CorruptVideo(path, f"too small ({size} bytes < {MIN_BYTES})")
    return size


class Video:
    """An opened video: ``len(video)`` frames, ``video.fps``, ``video.frames(indices)``."""

    def __init__(self, path: str | Path, num_threads: int = DEFAULT_THREADS) -> None:
        import decord

        self.path = str(path)
        check_size(path)
        try:
            self._reader = decord.VideoReader(self.path, num_threads=decode_threads(path, num_threads))
            self._len = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as err:  # decord raises DECORDError / RuntimeError with C++ text
            raise CorruptVideo(path, f"cannot open: {_short(err)}") from err
        if self._len <= 0:
            raise CorruptVideo(path, "no frames")

    def __len__(self) -> int:
        return self._len

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """RGB uint8 frames (T, H, W, 3) at ``indices`` (any order, repeats allowed)."""
        idx = [int(i) for i in indices]
        if any(i < 0 or i >= self._len for i in idx):
            raise IndexError(f"{self.path}: frame index out of range 0..{self._len - 1}: {idx}")
        # decord decodes each distinct frame once; repeated indices are copied here.
        unique = sorted(set(idx))
        try:
            batch = self._reader.get_batch(unique).asnumpy()
        except Exception as err:
            raise CorruptVideo(self.path, f"cannot decode frames: {_short(err)}") from err
        pos = {f: k for k, f in enumerate(unique)}
        return batch[[pos[i] for i in idx]]


def _short(err: BaseException) -> str:
    # decord's messages carry a long C++ backtrace; keep the first line.
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def probe(path: str | Path) -> int:
    """Open ``path`` and decode its first and last frame; return the frame count.

    Raises :class:`CorruptVideo` (with the reason) for anything unusable.
    """
    video = Video(path)
    video.frames([0, len(video) - 1])
    return len(video)
