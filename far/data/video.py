"""Reading videos with decord, decoding only the frames that are asked for.

Why decord: random access with ``get_batch`` decodes only the sampled frames (and
the frames their GOPs need), several times faster than decoding whole clips
(see benchmarks/data_loading.py). Every failure is turned into
:class:`CorruptVideo` so callers can count, log and replace the file instead of
crashing a DataLoader worker.

Truncated files: decord indexes the packets that are present, so a cut-off ``.webm``
opens as a shorter, perfectly decodable video; a cut-off ``.mp4`` is usually refused
(index at the end: "moov atom not found") or opens with fewer frames and fails on the
last one (index at the front); measurements in docs/data.md. Opening therefore also
compares the decoded frame count with the length the container header declares (read
with PyAV, ~1 ms) and rejects a video that lost more than :data:`TRUNCATION_TOLERANCE`
of its frames, and an mp4 that cannot be read is checked for the likely cause
(:func:`mp4_truncation`).

Reasons are stable: decord's messages carry the time of day and C++ source locations,
which :func:`error_text` removes, so the same file gives the same reason on every run.

Library order: decord and PyAV each bundle their own FFmpeg and libvpx, and decord
loads its libraries with ``RTLD_GLOBAL``. When decord is loaded first, PyAV's VP9
*encoder* binds to decord's older libvpx and fails to open (``avcodec_open2 ...
returned 22``); decoding is unaffected. :func:`import_decord` therefore imports PyAV
first; every decord import in this package goes through it.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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

    def __reduce__(self):  # pickled by its fields: raised in a loader worker process, re-raised here
        return type(self), (self.path, self.reason, self.category)


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
            raise CorruptVideo(path, _failure("cannot open", err, path), "unreadable") from err
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
        def decode(unique: list[int]) -> np.ndarray:
            try:
                return self._reader.get_batch(unique).asnumpy()
            except Exception as err:
                raise CorruptVideo(self.path, _failure("cannot decode frames", err, self.path),
                                   "undecodable") from err

        return frames_at(self.path, self._len, indices, decode)


def frames_at(path: str, length: int, indices: Sequence[int],
              decode: Callable[[list[int]], np.ndarray]) -> np.ndarray:
    """The frames at ``indices`` (any order, repeats allowed) of a ``length``-frame video,
    from ``decode`` (frames (U, H, W, 3) of the distinct indices, ascending): each frame is
    decoded once, repeats are copied here. Shared by the CPU and the NVDEC reader."""
    idx = [int(i) for i in indices]
    if any(i < 0 or i >= length for i in idx):
        raise IndexError(f"{path}: frame index out of range 0..{length - 1}: {idx}")
    unique = sorted(set(idx))
    batch = decode(unique)
    pos = {f: k for k, f in enumerate(unique)}
    return batch[[pos[i] for i in idx]]


def open_video(path: str | Path, decoder: str = "cpu") -> Any:  # noqa: ANN401 - Video or NvdecVideo
    """``path`` opened by ``decoder`` (``DataConfig.decoder``): :class:`Video` (decord) or
    :class:`far.data.nvdec.NvdecVideo`, which have the same interface."""
    if decoder == "nvdec":
        from far.data.nvdec import NvdecVideo

        return NvdecVideo(path)
    return Video(path)


# decord prefixes messages with the time of day and the C++ source line, e.g.
# "[01:10:05] /github/workspace/src/video/video_reader.cc:83: ", sometimes twice.
_TIME_OF_DAY = re.compile(r"\[\d{2}:\d{2}:\d{2}\]\s*")
_SOURCE_LINE = re.compile(r"\S+\.(?:cc|cpp|cxx|h|hpp):\d+:\s*")


def error_text(err: BaseException, path: str | Path | None = None) -> str:
    """``Type: first line`` of a decoder exception, stable from run to run.

    Drops decord's time of day and C++ source locations and the rest of its backtrace,
    and shortens ``path`` to its file name (the reason is always reported next to the
    path, and report.json must not change when the data folder moves).
    """
    lines = str(err).strip().splitlines()
    text = _SOURCE_LINE.sub("", _TIME_OF_DAY.sub("", lines[0] if lines else "")).strip()
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    return f"{type(err).__name__}: {text}"[:300]


def mp4_truncation(path: str | Path) -> str | None:
    """The likely cause when an mp4/mov file cannot be read, from its top-level boxes.

    Returns a sentence when the file ends inside a box (a cut-off download) or has no
    ``moov`` box (FFmpeg's "moov atom not found": the index, written last by most
    encoders, never arrived); None for other files or when the boxes look complete.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            if fh.read(8)[4:8] != b"ftyp":
                return None  # not an ISO media file
            seen: list[str] = []
            pos = 0
            while pos < size:
                fh.seek(pos)
                header = fh.read(16)
                if len(header) < 8:
                    return _cut_message(size, f"a box header at byte {pos}", seen)
                length, kind = struct.unpack(">I4s", header[:8])
                if length == 1 and len(header) == 16:
                    length = struct.unpack(">Q", header[8:16])[0]  # 64-bit box size
                elif length == 0:
                    length = size - pos  # "to the end of the file"
                if length < 8:
                    return None  # not a box structure we can follow
                name = kind.decode("latin-1")
                if pos + length > size:
                    return _cut_message(size, f"its '{name}' box, which needs {pos + length} bytes", seen)
                seen.append(name)
                pos += length
    except OSError:
        return None
    if "moov" not in seen:
        return "moov atom not found (the mp4 index is missing): likely an incomplete download or truncated file"
    return None


def _cut_message(size: int, where: str, seen: list[str]) -> str:
    index = "" if "moov" in seen else "moov atom not found (the mp4 index is missing); "
    return f"{index}likely an incomplete download or truncated file: it ends at byte {size}, inside {where}"


def _failure(action: str, err: BaseException, path: str | Path) -> str:
    # The likely cause first: decord's own text ("Error reading x.mp4...") rarely says it.
    cause = mp4_truncation(path)
    text = error_text(err, path)
    return f"{action}: {cause}; decord: {text}" if cause else f"{action}: {text}"


def probe(path: str | Path) -> int:
    """Open ``path`` and decode its first and last frame; return the frame count.

    Raises :class:`CorruptVideo` (with the reason) for anything unusable.
    """
    video = Video(path)
    video.frames([0, len(video) - 1])
    return len(video)
