"""Clip augmentation: each clip's random choices (:class:`ClipParams`), the reference
(PIL) fine-tuning and pre-training transforms, and the test-time resize + crops.

Random choices are made ONCE PER CLIP and applied to all its frames, as in the
reference: RandAugment's ops and magnitudes, the crop box, the flip decision and the
random-erasing rectangle. Frames with different crops or colour ops would fake motion.

Two halves, so that training can draw on the CPU and apply on the GPU:

* **Drawing** (:class:`TrainDraw`, :class:`PretrainDraw`): a clip's :class:`ClipParams`
  are a pure function of its seed and its frame size; no pixels are needed. DataLoader
  workers draw them next to decoding.
* **Applying**: :mod:`far.data.batch_augment` applies a batch's params with batched
  tensor ops on the model's device (what ``far train`` and ``far pretrain`` use);
  :class:`TrainTransform` / :class:`PretrainTransform` here apply one clip's params with
  timm's PIL RandAugment ops, as the reference does: the reference the tensor path is
  tested against (tests/test_batch_augment.py).

Train order, as in the reference (VideoMAE / MVD fine-tuning): RandAugment on the
original-resolution frames -> random resized crop resized to the input size (bilinear on
floats, no antialiasing, as the reference's ``F.interpolate``) -> flip -> normalise ->
random erasing. RandAugment uses the reference's settings: ``rand-m{m}-n{n}-mstd{std}-inc1``,
bicubic resampling, fill colour (128, 128, 128); its translations are fractions of the
full frame's side because it runs before the crop.

Random erasing is the reference's clip-level ("cube") erasing: with probability
``reprob`` per clip, one rectangle at the same place on every frame is filled with
per-pixel normal noise (fresh noise per frame), drawn from the clip's ``noise_seed``.

timm's RandAugment draws from the global ``random`` / ``np.random`` state.
:func:`draw_randaug` replays its draws (op choice, skip probability, magnitude noise,
sign) with those seeded from the clip's own seed by :func:`seeded_globals`, which
restores them afterwards, so nothing leaks into the caller's random state.

Pre-training (:class:`PretrainDraw`) uses VideoMAE's pre-training augmentation
instead: a multi-scale crop (TSN's ``GroupMultiScaleCrop``: crop sides from
``pretrain_scales`` x the short side, aspect distortion of at most one scale step, one of
13 fixed positions) resized to the input size (PIL's bilinear resize there, which
antialiases), then normalisation. Nothing else: the fine-tuning RandAugment / erasing /
8 %-area crops make masked reconstruction targets unpredictable and teach the encoder
nothing (measured, docs/pretraining.md).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

Box = tuple[int, int, int, int]  # (top, left, height, width)


@dataclass(frozen=True)
class ClipParams:
    """One clip's random choices; every frame of the clip gets the same ones.

    ``ops``: RandAugment, in order: (timm op name, the op's arguments after timm's level
    function, e.g. ``("Rotate", (-27.3,))``). ``crop``: the box cut from the (augmented)
    decoded frame and resized to the input size. ``erase``: the random-erasing box in the
    resized clip, or None; its noise comes from ``noise_seed``.
    """

    crop: Box
    ops: tuple[tuple[str, tuple[float, ...]], ...] = ()
    flip: bool = False
    erase: Box | None = None
    noise_seed: int = 0


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


def erase_box(height: int, width: int, prob: float, rng: random.Random,
              area: tuple[float, float] = ERASE_AREA, min_aspect: float = ERASE_MIN_ASPECT) -> Box | None:
    """The clip-level random-erasing rectangle (top, left, h, w) in a ``height`` x ``width``
    clip, or None.

    With probability ``prob`` (drawn from ``rng``), a rectangle of ``area`` x H x W pixels
    (uniform) and aspect ratio h / w log-uniform in [min_aspect, 1 / min_aspect]. A draw
    that does not fit strictly inside the frame is redrawn, up to ``ERASE_ATTEMPTS`` times,
    then the clip is left alone (the reference's rule).
    """
    if rng.random() >= prob:
        return None
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    for _ in range(ERASE_ATTEMPTS):
        target = rng.uniform(*area) * height * width
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if h < height and w < width:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return None


def fill_noise(x: torch.Tensor, box: Box, generator: torch.Generator) -> None:
    """Fill ``box`` of the float clip ``x`` (C, T, H, W) on every frame with standard normal
    noise from ``generator`` (fresh per frame and pixel), in place."""
    top, left, h, w = box
    c, t = x.shape[:2]
    x[:, :, top:top + h, left:left + w] = torch.randn((c, t, h, w), generator=generator, dtype=x.dtype,
                                                      device=x.device)


def erase_clip(x: torch.Tensor, prob: float, rng: random.Random, noise: torch.Generator,
               area: tuple[float, float] = ERASE_AREA, min_aspect: float = ERASE_MIN_ASPECT) -> Box | None:
    """Clip-level random erasing of a float clip ``x`` (C, T, H, W), in place: the box of
    :func:`erase_box` filled by :func:`fill_noise`. Returns the box, or None."""
    box = erase_box(x.shape[2], x.shape[3], prob, rng, area, min_aspect)
    if box is not None:
        fill_noise(x, box, noise)
    return box


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 frames (T, H, W, 3) to ``size`` = (h, w): the test-time short-side
    resize. Bilinear without antialiasing, as the reference's ``cv2.resize(...,
    INTER_LINEAR)`` (``video_transforms.Resize``)."""
    if frames.shape[1:3] == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_normalised_tensor(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (C, T, H, W), scaled to [0, 1] and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().contiguous().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1, 1)
    return x.sub_(m).div_(s)


# ---- RandAugment: timm's op table and draws ------------------------------------------------------
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


def pil_op(name: str) -> Any:
    """timm's PIL function of RandAugment op ``name`` (posterize with 0 bits allowed)."""
    import far.torchvision_compat  # noqa: F401  (must precede timm)
    from timm.data.auto_augment import NAME_TO_OP

    return _posterize if name.startswith("Posterize") else NAME_TO_OP[name]


def randaug_policy(cfg: DataConfig) -> str:
    """timm's policy string of ``cfg``: ``rand-m{m}-n{n}-mstd{std}-inc1``."""
    return f"rand-m{cfg.randaug_magnitude}-n{cfg.randaug_num_ops}-mstd{cfg.randaug_std}-inc1"


def build_randaug(cfg: DataConfig) -> Any:
    """timm's RandAugment for ``cfg`` with the reference's hyper-parameters: fill colour
    (128, 128, 128) and bicubic resampling (without it timm draws bilinear or bicubic at
    random). No ``translate_const``: the rand policy translates by fractions of the image
    side (TranslateX/YRel, up to 45 %), never by absolute pixels."""
    import far.torchvision_compat  # noqa: F401  (must precede timm)
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    _allow_posterize_zero_bits()
    return rand_augment_transform(randaug_policy(cfg), {"img_mean": RANDAUG_FILL, "interpolation": Image.BICUBIC})


def draw_randaug(randaug: Any, seed: int) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The ops timm's ``randaug`` (a ``timm.data.auto_augment.RandAugment``) would apply
    with the global RNGs seeded from ``seed``: the same draws in the same order as its
    ``__call__`` and ``AugmentOp.__call__`` (op choice, skip with probability 1 - p,
    Gaussian magnitude noise clamped to [0, magnitude_max or 10], the level function's
    random sign), without an image. tests/test_batch_augment.py checks it against timm."""
    out = []
    with seeded_globals(seed):
        chosen = np.random.choice(randaug.ops, randaug.num_layers, replace=randaug.choice_weights is None,
                                  p=randaug.choice_weights)
        for op in chosen:
            if op.prob < 1.0 and random.random() > op.prob:
                continue
            magnitude = op.magnitude
            if op.magnitude_std == float("inf"):
                magnitude = random.uniform(0, magnitude)
            elif op.magnitude_std > 0:
                magnitude = random.gauss(magnitude, op.magnitude_std)
            magnitude = max(0.0, min(magnitude, op.magnitude_max or 10))
            args = op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()
            out.append((op.name, tuple(args)))
    return tuple(out)


# ---- drawing a clip's parameters ----------------------------------------------------------------
class TrainDraw:
    """Fine-tuning :class:`ClipParams` of a clip from its seed and frame size."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.randaug = build_randaug(cfg) if cfg.randaug_num_ops else None

    def __call__(self, height: int, width: int, seed: int) -> ClipParams:
        cfg = self.cfg
        rng = random.Random(seed)
        ops = draw_randaug(self.randaug, rng.getrandbits(63)) if self.randaug is not None else ()
        crop = random_resized_crop_box(height, width, cfg.scale, cfg.ratio, rng)
        flip = cfg.flip and rng.random() < 0.5
        noise_seed = rng.getrandbits(63)
        erase = erase_box(cfg.input_size, cfg.input_size, cfg.reprob, rng) if cfg.reprob > 0 else None
        return ClipParams(crop=crop, ops=ops, flip=flip, erase=erase, noise_seed=noise_seed)


class PretrainDraw:
    """Pre-training :class:`ClipParams` (VideoMAE's multi-scale crop only) from a seed."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def __call__(self, height: int, width: int, seed: int) -> ClipParams:
        cfg = self.cfg
        return ClipParams(crop=multi_scale_crop_box(height, width, cfg.input_size, cfg.pretrain_scales,
                                                    random.Random(seed)))


def draw_for(cfg: DataConfig, mode: str) -> TrainDraw | PretrainDraw:
    """The parameter draw of a dataset mode: "train" (fine-tuning) or "pretrain"."""
    return TrainDraw(cfg) if mode == "train" else PretrainDraw(cfg)


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


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) with the short side ``short`` and the aspect ratio kept (rounded)."""
    if height <= width:
        return short, max(short, int(round(width * short / height)))
    return max(short, int(round(height * short / width))), short


class EvalTransform:
    """The test views of one clip on the CPU, one at a time: resize the short side to
    ``cfg.short_side``, cut spatial crop ``crop``, normalise. The reference that
    far.data.batch_augment.EvalViews (what far test runs, on the model's device) is
    tested against."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def resize(self, frames: np.ndarray) -> np.ndarray:
        """Short side to ``cfg.short_side``, aspect ratio kept."""
        return resize_frames(frames, short_side_size(frames.shape[1], frames.shape[2], self.cfg.short_side))

    def crop(self, resized: np.ndarray, crop: int) -> torch.Tensor:
        """Float clip (C, T, S, S) of spatial view ``crop`` of already resized frames."""
        cfg = self.cfg
        top, left = eval_crop_offsets(resized.shape[1], resized.shape[2], cfg.input_size, cfg.test_crops)[crop]
        return to_normalised_tensor(resized[:, top:top + cfg.input_size, left:left + cfg.input_size], cfg.mean, cfg.std)

    def __call__(self, frames: np.ndarray, crop: int) -> torch.Tensor:
        """Float clip (C, T, S, S) of spatial view ``crop`` of ``frames`` (T, H, W, 3)."""
        return self.crop(self.resize(frames), crop)
