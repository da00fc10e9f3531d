"""The reference clip augmentation, one clip at a time with timm's PIL RandAugment ops.

What the reference (VideoMAE / MVD fine-tuning) does frame by frame with PIL, kept as the
yardstick for the batched tensor path (:mod:`far.data.batch_augment`, which training
uses): tests/test_batch_augment.py compares the two on the same :class:`ClipParams`.
RandAugment here is timm's own op functions (``NAME_TO_OP``) with the reference's fill
colour and bicubic resampling; crop, resize, flip, normalisation and erasing are the
tensor path's own functions, so a difference between the two paths can only come from
the RandAugment ops.
"""

from __future__ import annotations

import numpy as np
import torch

from far.data.batch_augment import crop_resize, finish
from far.data.config import DataConfig
from far.data.transforms import RANDAUG_FILL, ClipParams, PretrainDraw, TrainDraw, pil_op


def apply_ops_pil(frames: np.ndarray, ops: tuple[tuple[str, tuple[float, ...]], ...]) -> np.ndarray:
    """timm's PIL ops ``ops`` on every frame of uint8 (T, H, W, 3), as the reference does."""
    if not ops:
        return frames
    from PIL import Image

    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        img = Image.fromarray(frame)
        for name, args in ops:
            img = pil_op(name)(img, *args, fillcolor=RANDAUG_FILL, resample=Image.BICUBIC)
        out[t] = np.asarray(img)
    return out


def augment_clip(frames: np.ndarray, params: ClipParams, cfg: DataConfig, antialias: bool) -> torch.Tensor:
    """One clip (C, T, S, S) from uint8 frames (T, H, W, 3) and its params, PIL RandAugment."""
    x = torch.from_numpy(np.ascontiguousarray(apply_ops_pil(frames, params.ops))).permute(0, 3, 1, 2)
    resized = crop_resize(x, params.crop, cfg.input_size, antialias)
    return finish(resized[None], [params], cfg)[0]


class TrainTransform:
    """The reference fine-tuning transform of one clip: ``TrainTransform(cfg)(frames, seed)``."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.draw = TrainDraw(cfg)

    @property
    def randaug(self):  # noqa: ANN201 - timm's RandAugment (its ``ops`` list can be narrowed in tests)
        return self.draw.randaug

    def __call__(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        """Augment uint8 frames (T, H, W, 3) into a float clip (C, T, S, S) using ``seed``."""
        return augment_clip(frames, self.draw(frames.shape[1], frames.shape[2], seed), self.cfg, antialias=False)


class PretrainTransform:
    """The reference pre-training transform: multi-scale crop, resize, normalise."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.draw = PretrainDraw(cfg)

    def __call__(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        """Uint8 frames (T, H, W, 3) -> float clip (C, T, S, S), the crop drawn from ``seed``."""
        return augment_clip(frames, self.draw(frames.shape[1], frames.shape[2], seed), self.cfg, antialias=True)
