"""Reading videos with decord, decoding only the frames that are asked for.

Why decord: random access with ``get_batch`` decodes only the sampled frames (and
the frames their GOPs need), several times faster than decoding whole clips
(see benchmarks/data_loading.py). Every failure is turned into
:class:`CorruptVideo` so callers can count, log and replace the file instead of
crashing a DataLoader worker.

Truncated files: decord indexes the packets that are present, so a cut-off ``.webm``
(or an ``.mp4`` whose index sits at the front) opens as a shorter, perfectly
decodable video. Opening therefore also compares the decoded frame count with the
length the container header declares (read with PyAV, ~1 ms) and rejects a video
that lost more than :data:`TRUNCATION_TOLERANCE` of its frames.

Library order: decord and PyAV each bundle their own FFmpeg and libvpx, and decord
loads its libraries with ``RTLD_GLOBAL``. When decord is loaded first, PyAV's VP9
*encoder* binds to decord's older libvpx and fails to open (``avcodec_open2 ...
returned 22``); decoding is unaffected. :func:`import_decord` therefore imports PyAV
first; every decord import in this package goes through it.
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


# A video missing more than this fraction of its declared frames is "truncated".
TRUNCATION_TOLERANCE = 0.1
# Categories of unusable videos, as written to report.json.
CATEGORIES = ("missing", "empty", "too_small", "unreadable", "undecodable", "truncated")


class CorruptVideo(Exception):
    """A video that cannot be used; ``category`` is one of :data:`CATEGORIES`."""

    def __init__(self, path: str | Path, reason: str, category: str = "undecodable") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.category = category


def import_decord():  # noqa: ANN201 - returns the decord module
    """Import decord after PyAV (see the module docstring: shared-library clash)."""
    import av  # noqa: F401  (must be loaded before decord)
    import decord

    return decord


def decode_threads(path: str | Path, requested: int = DEFAULT_THREADS) -> int:
    """Decoder threads for ``path``: ``requested``, but 1 for VP9 containers (decord bug)."""
    return 1 if Path(path).suffix.lower() in VP9_SUFFIXES else requested


def check_size(path: str | Path) -> int:
    """Size of ``path`` in bytes; raise :class:`CorruptVideo` if missing, empty or < 1 KB."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as err:
        raise CorruptVideo(path, "missing (no such file)", "missing") from err
    except OSError as err:
        raise CorruptVideo(path, f"unreadable: {err.strerror or err}", "unreadable") from err
    if size == 0:
        raise CorruptVideo(path, "empty file (0 bytes)", "empty")
    if size < MIN_BYTES:
        raise CorruptVideo(path, f"too small ({size} bytes < {MIN_BYTES})", "too_small")
    return size


def declared_frames(path: str | Path) -> int | None:
    """Frame count the container header declares for the first video stream, or None.

    mp4: the sample table (exact). webm/mkv: segment duration x frame rate (the
    muxer writes the duration into the header when it finishes, so a file cut off
    later still declares the full length). None when PyAV cannot tell.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if rate is None:
                return None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                return None
            return int(round(seconds * float(rate)))
    except Exception:  # metadata is a cross-check only; decord decides readability
        return None


class Video:
    """An opened video: ``len(video)`` frames, ``video.fps``, ``video.frames(indices)``.

    ``check_truncation`` compares the decoded length with :func:`declared_frames`.
    """

    def __init__(self, path: str | Path, num_threads: int = DEFAULT_THREADS, check_truncation: bool = True) -> None:
        decord = import_decord()

        self.path = str(path)
        check_size(path)
        self.num_threads = decode_threads(path, num_threads)
        try:
            self._reader = decord.VideoReader(self.path, num_threads=self.num_threads)
            self._len = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except Exception as err:  # decord raises DECORDError / RuntimeError with C++ text
            raise CorruptVideo(path, f"cannot open: {_short(err)}", "unreadable") from err
        if self._len <= 0:
            raise CorruptVideo(path, "no frames", "undecodable")
        if check_truncation:
            declared = declared_frames(path)
            if declared is not None and self._len < declared * (1 - TRUNCATION_TOLERANCE) - 1:
                raise CorruptVideo(path, f"truncated: {self._len} frames decodable, header declares {declared}",
                                   "truncated")

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
            raise CorruptVideo(self.path, f"cannot decode frames: {_short(err)}", "undecodable") from err
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
