"""Clip-level augmentation (fine-tuning, pre-training) and resize + crops (test).

Random choices are made ONCE PER CLIP and applied to all its frames, as in the
reference: RandAugment's ops and magnitudes, the crop box, the flip decision and the
random-erasing rectangle. Frames with different crops or colour ops would fake motion.

Train order, as in the reference (VideoMAE / MVD fine-tuning): RandAugment on the
original-resolution frames -> random resized crop -> flip -> to float, normalise ->
random erasing. RandAugment uses the reference's settings: ``rand-m{m}-n{n}-mstd{std}-inc1``,
bicubic resampling, fill colour (128, 128, 128); its translations are fractions of the
full frame's side because it runs before the crop.

Random erasing is the reference's clip-level ("cube") erasing, reimplemented in
:func:`erase_clip`: with probability ``reprob`` per clip, one rectangle at the same
place on every frame is filled with per-pixel normal noise (fresh noise per frame).

timm's RandAugment draws from the global ``random`` / ``np.random`` state.
:func:`seeded_globals` seeds those from the clip's own seed for the duration of one
frame's call and restores them afterwards, so (a) every frame gets the identical
RandAugment draws and (b) nothing leaks into the caller's random state. Everything else
draws from generators seeded from the clip's seed.

Pre-training (:class:`PretrainTransform`) uses VideoMAE's pre-training augmentation
instead: a multi-scale crop (TSN's ``GroupMultiScaleCrop``: crop sides from
``pretrain_scales`` x the short side, aspect distortion of at most one scale step, one of
13 fixed positions) resized to the input size, then normalisation. Nothing else: the
fine-tuning RandAugment / erasing / 8 %-area crops make masked reconstruction targets
unpredictable and teach the encoder nothing (measured, docs/pretraining.md).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from far.data.config import DataConfig


# The reference's RandAugment fill colour for pixels that rotate / shear / translate expose.
RANDAUG_FILL = (128, 128, 128)
# The reference's random erasing (``--reprob``, mode "pixel", count 1): rectangle area as a
# fraction of the frame, and the smallest aspect ratio (h / w; the largest is its inverse).
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 100  # rectangle draws before giving up on a clip (the reference's count)


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed python ``random`` and ``np.random`` with ``seed`` inside the block; restore both after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                            rng: random.Random) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop (torchvision's RandomResizedCrop algorithm)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    # Fallback: central crop with the ratio clamped into range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def multi_scale_crop_box(height: int, width: int, size: int, scales: tuple[float, ...], rng: random.Random,
                         max_distort: int = 1) -> tuple[int, int, int, int]:
    """(top, left, h, w) of VideoMAE's pre-training crop (TSN ``GroupMultiScaleCrop``,
    ``fix_crop`` and ``more_fix_crop`` on).

    Candidate sides are ``int(short_side * s)`` for ``s`` in ``scales``, snapped to ``size``
    when within 3 pixels of it; (w, h) pairs whose scale indices differ by at most
    ``max_distort``; the offset is one of 13 fixed positions on a 4 x 4 step grid.
    """
    sides = [int(min(height, width) * s) for s in scales]
    sides = [size if abs(x - size) < 3 else x for x in sides]
    pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    w, h = rng.choice(pairs)
    w, h = min(w, width), min(h, height)
    ws, hs = (width - w) // 4, (height - h) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs),  # corners, centre
               (0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),  # edge centres
               (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]  # quarter points
    left, top = rng.choice(offsets)
    return top, left, h, w


def erase_clip(x: torch.Tensor, prob: float, rng: random.Random, noise: torch.Generator,
               area: tuple[float, float] = ERASE_AREA, min_aspect: float = ERASE_MIN_ASPECT
               ) -> tuple[int, int, int, int] | None:
    """Clip-level random erasing of a float clip ``x`` (C, T, H, W), in place.

    With probability ``prob`` (drawn from ``rng``), one rectangle of ``area`` x H x W
    pixels (uniform) and aspect ratio h / w log-uniform in [min_aspect, 1 / min_aspect]
    is filled on EVERY frame with standard normal noise from ``noise`` (fresh noise per
    frame and pixel). A draw that does not fit strictly inside the frame is redrawn, up to
    ``ERASE_ATTEMPTS`` times, then the clip is left alone. Returns (top, left, h, w), or None
    when nothing was erased.
    """
    if rng.random() >= prob:
        return None
    c, t, height, width = x.shape
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    for _ in range(ERASE_ATTEMPTS):
        target = rng.uniform(*area) * height * width
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if h < height and w < width:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            x[:, :, top:top + h, left:left + w] = torch.empty((c, t, h, w), dtype=x.dtype).normal_(generator=noise)
            return top, left, h, w
    return None


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 frames (T, H, W, 3) to ``size`` = (h, w), bilinear with antialiasing."""
    if frames.shape[1:3] == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_normalised_tensor(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (C, T, H, W), scaled to [0, 1] and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().contiguous().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1, 1)
    return x.sub_(m).div_(s)


def _posterize(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
    """timm's posterize with Pillow < 11 semantics for 0 bits (a black image).

    RandAugment "inc1" keeps ``4 - int(level / 10 * 4)`` bits, i.e. 0 at magnitude 10,
    which m9 with mstd 0.5 reaches a few % of the time; Pillow >= 11 refuses
    ``posterize(img, 0)`` ("bits must be between or equal to 1 and 8"), while the
    reference (older Pillow) returned the image with every bit masked off."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _allow_posterize_zero_bits() -> None:
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize


class TrainTransform:
    """Clip-consistent RandAugment (full frames), random resized crop, optional flip,
    normalise, clip-level erasing (see the module doc)."""

    def __init__(self, cfg: DataConfig) -> None:
        import far.torchvision_compat  # noqa: F401  (must precede timm)
        from timm.data.auto_augment import rand_augment_transform
        from PIL import Image

        self.cfg = cfg
        # No translate_const: the rand policy translates by fractions of the image side
        # (TranslateX/YRel, up to 45 %), never by absolute pixels.
        hparams = {
            "img_mean": RANDAUG_FILL,
            # The reference passes --train_interpolation bicubic; without it timm
            # draws bilinear or bicubic at random.
            "interpolation": Image.BICUBIC,
        }
        _allow_posterize_zero_bits()
        self.policy = f"rand-m{cfg.randaug_magnitude}-n{cfg.randaug_num_ops}-mstd{cfg.randaug_std}-inc1"
        self.randaug = rand_augment_transform(self.policy, hparams)

    def apply_randaug(self, frames: np.ndarray, seed: int) -> np.ndarray:
        """RandAugment with identical ops and magnitudes on every frame (same seed per frame)."""
        from PIL import Image

        if self.cfg.randaug_num_ops == 0:
            return frames
        out = np.empty_like(frames)
        for t, frame in enumerate(frames):
            with seeded_globals(seed):
                out[t] = np.asarray(self.randaug(Image.fromarray(frame)))
        return out

    def __call__(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        """Augment uint8 frames (T, H, W, 3) into a float clip (C, T, S, S) using ``seed``."""
        cfg = self.cfg
        rng = random.Random(seed)
        frames = self.apply_randaug(frames, rng.getrandbits(63))
        top, left, h, w = random_resized_crop_box(frames.shape[1], frames.shape[2], cfg.scale, cfg.ratio, rng)
        clip = resize_frames(frames[:, top:top + h, left:left + w], (cfg.input_size, cfg.input_size))
        if cfg.flip and rng.random() < 0.5:
            clip = clip[:, :, ::-1]
        x = to_normalised_tensor(clip, cfg.mean, cfg.std)
        if cfg.reprob > 0:
            erase_clip(x, cfg.reprob, rng, torch.Generator().manual_seed(rng.getrandbits(63)))
        return x


class PretrainTransform:
    """VideoMAE pre-training augmentation: multi-scale crop, resize, normalise (see module doc)."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def __call__(self, frames: np.ndarray, seed: int) -> torch.Tensor:
        """Uint8 frames (T, H, W, 3) -> float clip (C, T, S, S), the crop drawn from ``seed``."""
        cfg = self.cfg
        top, left, h, w = multi_scale_crop_box(frames.shape[1], frames.shape[2], cfg.input_size,
                                               cfg.pretrain_scales, random.Random(seed))
        clip = resize_frames(frames[:, top:top + h, left:left + w], (cfg.input_size, cfg.input_size))
        return to_normalised_tensor(clip, cfg.mean, cfg.std)


def eval_crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of ``crops`` square crops: left/centre/right, or top/centre/bottom if portrait.

    Reference: along the long side, crop ``k`` starts at ``int(k * (long - size) / (crops - 1))``
    (so the last crop touches the far edge); the short side is centred.
    """
    if crops == 1:
        return [((height - size) // 2, (width - size) // 2)]
    if width >= height:
        top = (height - size) // 2
        return [(top, int(i * (width - size) / (crops - 1))) for i in range(crops)]
    left = (width - size) // 2
    return [(int(i * (height - size) / (crops - 1)), left) for i in range(crops)]


class EvalTransform:
    """Resize the short side to ``cfg.short_side``, take spatial crop ``crop``, normalise."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def resize(self, frames: np.ndarray) -> np.ndarray:
        """Short side to ``cfg.short_side``, aspect ratio kept."""
        h, w = frames.shape[1:3]
        s = self.cfg.short_side
        size = (s, max(s, int(round(w * s / h)))) if h <= w else (max(s, int(round(h * s / w))), s)
        return resize_frames(frames, size)

    def __call__(self, frames: np.ndarray, crop: int) -> torch.Tensor:
        """Float clip (C, T, S, S) of spatial view ``crop`` of ``frames`` (T, H, W, 3)."""
        cfg = self.cfg
        resized = self.resize(frames)
        top, left = eval_crop_offsets(resized.shape[1], resized.shape[2], cfg.input_size, cfg.test_crops)[crop]
        clip = resized[:, top:top + cfg.input_size, left:left + cfg.input_size]
        return to_normalised_tensor(clip, cfg.mean, cfg.std)
