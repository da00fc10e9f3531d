"""Decoding on the GPU's video decoder (NVDEC) with PyNvVideoCodec: ``data.decoder: nvdec``.

When it pays (benchmarks/results/decode_pace.md, one H200, 16 cores): SSv2-like VP9 240p
files decode at 380 videos/s on NVDEC with 8 streams against 192 videos/s with 14 decord
processes, so with ``nvdec`` a ViT-S fine-tune on such files is no longer held back by
the CPU. Long-GOP H.264 (K400-like 340x256, a keyframe every 250 frames) is the
opposite: 104 videos/s on NVDEC against 125 on the CPU, because a random 16-frame
window is decoded from the keyframe before it, so K400 keeps ``cpu``.

How: each DataLoader worker process owns one decoder session (:class:`NvdecVideo`
reconfigures it for every file) and returns the sampled frames as uint8 host arrays,
exactly like :class:`far.data.video.Video`, so sampling, corrupt-file replacement, the
decoded cache and the GPU augmentation are unchanged (a copy of ~5 MB a clip over PCIe).
The loader starts such workers with ``spawn`` (:func:`far.data.loader.build_loader`):
CUDA cannot be used in a forked child. A worker never loads decord or PyAV, whose
bundled FFmpeg libraries share symbol names with PyNvVideoCodec's (in a process that had
loaded both, the NVDEC decoder died without a message on the H200; in a fresh process it
ran). NVDEC's RGB conversion differs from FFmpeg's by a rounding: mean 0.64 and at most 2
grey levels on the measured files (tests/test_nvdec.py checks the bound on a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from far.config import fail
from far.data.video import CorruptVideo, check_size, frames_at

_SESSION: dict[str, Any] = {}  # this process's decoder, reconfigured per file


def _library() -> Any:  # noqa: ANN401 - the PyNvVideoCodec module
    import PyNvVideoCodec

    return PyNvVideoCodec


def check_available() -> None:
    """Refuse ``decoder: nvdec`` before any work starts where it cannot run."""
    try:
        _library()
    except ImportError as err:
        fail("decoder", f"'nvdec' needs PyNvVideoCodec ({err}); install it (docs/training.md, "
                        "'Decoding on the GPU') or use 'cpu'")
    import torch

    if not torch.cuda.is_available():
        fail("decoder", "'nvdec' needs a CUDA device; this process has none (use 'cpu')")


def _gpu() -> int:
    # The rank's GPU: torchrun/srun give each training process its LOCAL_RANK.
    return int(os.environ.get("LOCAL_RANK", "0"))


class NvdecVideo:
    """An opened video decoded by NVDEC: ``len(video)`` frames, ``video.frames(indices)``
    (RGB uint8 (T, H, W, 3) on the host), the interface of :class:`far.data.video.Video`.

    Errors name the file (:class:`far.data.video.CorruptVideo`), so a corrupt video is
    reported and replaced as with the CPU decoder. A truncated file is found when its
    missing frames are asked for (the container's frame count is not cross-checked)."""

    def __init__(self, path: str | Path) -> None:
        nvc = _library()
        self.path = str(path)
        check_size(path)
        try:
            decoder = _SESSION.get("decoder")
            if decoder is None:
                decoder = _SESSION["decoder"] = nvc.SimpleDecoder(
                    self.path, gpu_id=_gpu(), use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
            else:
                decoder.reconfigure_decoder(self.path)
            self._decoder = decoder
            self._len = len(decoder)
        except Exception as err:  # PyNvVideoCodec raises plain Exception / RuntimeError
            _SESSION.pop("decoder", None)  # a failed reconfiguration leaves it unusable
            raise CorruptVideo(path, f"cannot open on NVDEC: {str(err).splitlines()[0] if str(err) else err!r}",
                               "unreadable") from err
        if self._len <= 0:
            raise CorruptVideo(path, "no frames", "undecodable")

    def __len__(self) -> int:
        return self._len

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """RGB uint8 frames (T, H, W, 3) at ``indices`` (any order, repeats allowed)."""
        import torch

        def decode(unique: list[int]) -> np.ndarray:
            try:
                decoded = self._decoder.get_batch_frames_by_index(unique)
                if len(decoded) != len(unique):
                    raise RuntimeError(f"{len(decoded)} of {len(unique)} frames decoded")
                return torch.stack([torch.from_dlpack(f) for f in decoded]).cpu().numpy()
            except Exception as err:
                _SESSION.pop("decoder", None)
                raise CorruptVideo(self.path, f"cannot decode frames on NVDEC: {err}", "undecodable") from err

        return frames_at(self.path, self._len, indices, decode)
