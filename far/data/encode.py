"""Video writing with PyAV: H.264 ``.mp4`` and VP9 ``.webm`` encoders, and re-encoding.

Used by the synthetic datasets (which must look like the official files: SSv2 is
VP9/webm, K400 is H.264/mp4) and by ``far data prepare --reencode-short-side``.
Every output is written to a temporary name in the same folder and renamed, so an
interrupted run never leaves a half-written video under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

# codec name -> (container format, encoder options).
# Why these options: deterministic, fast, small. One x264 thread is not enough: with its
# macroblock tree, 30 encodes of the same 64x80 frames gave 7 different outputs, with
# ``mbtree=0`` one (PyAV 18.1, AVX-512 CPU; also one with ``asm=0``, so most likely its
# SIMD code reads unset memory). VP9 in realtime mode with one thread gives identical
# bytes. Measurements: docs/data.md, "Determinism".
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "libx264": ("mp4", {"preset": "veryfast", "crf": "23", "threads": "1",
                         "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"}),
    "libvpx-vp9": ("webm", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                            "crf": "32", "b": "0", "threads": "1"}),
}

# Muxer flag: without it the webm muxer writes random track/segment UIDs, so the same
# frames would give different bytes on every run.
BITEXACT = {"fflags": "+bitexact"}


class EncoderUnavailable(RuntimeError):
    """The PyAV/FFmpeg build lacks an encoder this project needs."""


@functools.lru_cache(maxsize=None)  # opening an encoder costs ~20 ms; once per process
def check_encoder(codec: str) -> None:
    """Raise :class:`EncoderUnavailable` with a clear message if ``codec`` cannot encode.

    The encoder is really opened (on a 64x64 stream with this project's options): a
    codec that exists but fails to open would otherwise only fail on the first frame.
    """
    import sys

    decord_first = "decord" in sys.modules and "av" not in sys.modules
    import av

    try:
        ctx = av.codec.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
        ctx.time_base = Fraction(1, 12)
        ctx.options = dict(CODECS[codec][1]) if codec in CODECS else {}
        ctx.open()
    except Exception as err:  # av raises UnknownCodecError (a ValueError subclass) or others
        hint = "install a PyAV wheel built with libx264/libvpx (the PyPI `av` wheels include both)"
        if decord_first or (codec == "libvpx-vp9" and "decord" in sys.modules):
            # See far/data/video.py: decord's bundled libvpx shadows PyAV's when decord is loaded first.
            hint = ("decord was imported before PyAV and its bundled libvpx shadows PyAV's; import av "
                    "before decord (far.data.video.import_decord does) or encode in a fresh process")
        raise EncoderUnavailable(f"PyAV {av.__version__} cannot open the {codec!r} encoder ({err}); {hint}") from err


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path``: renamed to ``path`` when the block succeeds,
    removed when it fails, so a half-written video never has the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _flush(stream, container, empty: str) -> None:
    """Drain the encoder into the container; ``empty`` is the error when no frame came."""
    if stream is None:
        raise ValueError(empty)
    for packet in stream.encode():
        container.mux(packet)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "libx264") -> Path:
    """Encode RGB uint8 frames (H, W, 3; H and W even) to ``path`` atomically.

    ``codec`` is a key of :data:`CODECS`; the container follows from the file suffix.
    """
    import av

    if codec not in CODECS:
        raise ValueError(f"codec {codec!r} not in {sorted(CODECS)}")
    check_encoder(codec)
    path = Path(path)
    fmt, options = CODECS[codec]
    with _atomic_target(path) as tmp:
        with av.open(str(tmp), "w", format=fmt, options=BITEXACT) as container:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = container.add_stream(codec, rate=Fraction(fps))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = dict(options)
                    # No encoder/muxer version strings or times: same frames -> same bytes.
                    container.metadata.clear()
                # Convert to yuv420p here, not implicitly inside encode(): measured, the
                # implicit path occasionally gave x264 different input for equal frames.
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="yuv420p")
                for packet in stream.encode(vf):
                    container.mux(packet)
            _flush(stream, container, f"no frames given for {path}")
    return path


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side set to ``short_side``, both even (yuv420p)."""
    if width <= height:
        new_w, new_h = short_side, round(height * short_side / width)
    else:
        new_w, new_h = round(width * short_side / height), short_side
    return new_w + new_w % 2, new_h + new_h % 2


def quarter_turns(frame: object, src: str | Path) -> int:
    """Counter-clockwise quarter turns that make a decoded PyAV ``frame`` upright.

    Phone videos store landscape pictures plus a display rotation (the container's
    display matrix); players and decord apply it, PyAV's decoder does not. Rotations
    that are not a multiple of 90 degrees are refused (``ValueError`` naming ``src``).
    """
    if not hasattr(frame, "rotation"):
        import av

        raise EncoderUnavailable(f"PyAV {av.__version__} cannot read the display rotation of {src} "
                                 "(VideoFrame.rotation needs PyAV >= 14); upgrade PyAV to re-encode")
    degrees = int(frame.rotation)
    if degrees % 90:
        raise ValueError(f"{src}: display rotation of {degrees} degrees is not a multiple of 90")
    return (degrees // 90) % 4


def reencode(src: str | Path, dst: str | Path, short_side: int) -> Path:
    """Re-encode ``src`` to H.264 ``dst`` with its short side resized to ``short_side``.

    The display rotation of ``src`` (phone videos) is applied to the pixels and not
    written to ``dst``: the output is upright as decord shows the source, and the short
    side is that of the upright picture. Skips the work when ``dst`` already exists (it
    can only exist complete, since it is written atomically). Frame rate is preserved.
    """
    import av

    dst = Path(dst)
    if dst.exists():
        return dst
    check_encoder("libx264")
    with _atomic_target(dst) as tmp:
        with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4", options=BITEXACT) as out:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            vout = None
            n = 0
            for frame in inp.decode(vin):
                if vout is None:  # the rotation is known from the first decoded frame
                    turns = quarter_turns(frame, src)
                    upright = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
                    w, h = scaled_size(*upright, short_side)
                    vout = out.add_stream("libx264", rate=rate)
                    vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
                    vout.options = dict(CODECS["libx264"][1])
                if turns:
                    # Scale in the stored orientation, then turn the small RGB picture.
                    stored = (h, w) if turns % 2 else (w, h)
                    rgb = frame.reformat(width=stored[0], height=stored[1], format="rgb24").to_ndarray()
                    small = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(rgb, turns)),
                                                       format="rgb24").reformat(format="yuv420p")
                else:
                    small = frame.reformat(width=w, height=h, format="yuv420p")
                # Re-timestamp: sources with odd time bases (webm ms) confuse the mp4 muxer.
                small.pts = n
                small.time_base = Fraction(1) / rate
                n += 1
                for packet in vout.encode(small):
                    out.mux(packet)
            _flush(vout, out, f"{src}: no decodable frames")
    return dst
