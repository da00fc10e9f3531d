"""Fine-tuning augmentation against the reference recipe (VideoMAE / MVD fine-tuning):
clip-level random erasing, RandAugment's fill colour, RandAugment before the crop.

See /work/shared/reference/videomae-mvd-facts.md ("Random erasing", "RandAugment")
and docs/data.md ("Augmentation").
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from far.data.config import DataConfig
from far.data.reference_augment import TrainTransform, apply_ops_pil
from far.data.transforms import ERASE_AREA, ERASE_MIN_ASPECT, erase_clip

# Crop = the whole (square) frame, no RandAugment: what comes out is the input plus erasing.
PLAIN = dict(randaug_num_ops=0, scale=(1.0, 1.0), ratio=(1.0, 1.0))


def transform(**kw) -> TrainTransform:
    return TrainTransform(DataConfig.preset("ssv2", **{"input_size": 16, "short_side": 16, **kw}))


def erased_mask(x: torch.Tensor, value: int, cfg: DataConfig) -> torch.Tensor:
    """(T, H, W) bool: pixels of clip ``x`` (C, T, H, W) that no longer hold the constant ``value``."""
    expected = ((value / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)).view(3, 1, 1, 1)
    return ~torch.isclose(x, expected.expand_as(x), atol=1e-5).all(0)


def bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


# ---- random erasing: the reference's clip-level ("cube") erasing ---------------------------------
def test_erasing_is_one_rectangle_on_every_frame():
    t = transform(reprob=1.0, **PLAIN)
    frames = np.full((6, 16, 16, 3), 90, np.uint8)
    for seed in range(50):
        x = t(frames, seed)
        mask = erased_mask(x, 90, t.cfg)
        assert mask[0].any(), seed  # reprob 1: every clip is erased
        assert all(torch.equal(mask[0], mask[k]) for k in range(6)), seed  # the same place on every frame
        top, left, h, w = bounding_box(mask[0])
        assert int(mask[0].sum()) == h * w, seed  # one filled rectangle
        box = x[:, :, top:top + h, left:left + w]
        assert not torch.equal(box[:, 0], box[:, 1])  # per-pixel noise, drawn afresh for each frame


def test_erasing_probability_is_per_clip():
    """2000 clips of 4 frames at reprob 0.25: each clip is erased on all frames or on none,
    and the erased fraction is within 4 binomial standard deviations of 0.25 (per-frame
    erasing would erase some frame of 1 - 0.75^4 = 68 % of the clips)."""
    t = transform(reprob=0.25, **PLAIN)
    frames = np.full((4, 16, 16, 3), 90, np.uint8)
    n, erased = 2000, 0
    for seed in range(n):
        per_frame = erased_mask(t(frames, seed), 90, t.cfg).flatten(1).any(1)
        assert bool(per_frame.all()) or not bool(per_frame.any()), seed
        erased += bool(per_frame.all())
    assert abs(erased - 0.25 * n) <= 4 * math.sqrt(n * 0.25 * 0.75), erased


def test_erasing_rectangle_area_and_aspect_within_the_reference_bounds():
    height, width = 60, 80
    areas, aspects = [], []
    for seed in range(2000):
        x = torch.zeros(3, 2, height, width)
        box = erase_clip(x, 1.0, random.Random(seed), torch.Generator().manual_seed(seed))
        assert box is not None
        top, left, h, w = box
        assert 0 < h < height and 0 < w < width and top + h <= height and left + w <= width
        assert bool((x[:, :, top:top + h, left:left + w] != 0).all())  # noise fills the box ...
        x[:, :, top:top + h, left:left + w] = 0
        assert not x.any()  # ... and nothing outside it
        # h and w are each rounded to the pixel: allow half a pixel either way.
        assert (h - 0.5) * (w - 0.5) <= ERASE_AREA[1] * height * width
        assert (h + 0.5) * (w + 0.5) >= ERASE_AREA[0] * height * width
        assert (h - 0.5) / (w + 0.5) <= 1 / ERASE_MIN_ASPECT and (h + 0.5) / (w - 0.5) >= ERASE_MIN_ASPECT
        areas.append(h * w / (height * width))
        aspects.append(h / w)
    assert (ERASE_AREA[0], ERASE_AREA[1], ERASE_MIN_ASPECT) == (0.02, 1 / 3, 0.3)
    # The draws span the ranges (sizes too large for the frame are redrawn, so the top is thinner).
    assert min(areas) < 0.03 and max(areas) > 0.3
    assert min(aspects) < 0.4 and max(aspects) > 2.5
    assert 0.4 < float(np.mean(np.log(aspects) > 0)) < 0.6  # log-uniform: tall as often as wide


def test_erasing_probability_zero_and_one():
    x = torch.zeros(3, 2, 8, 8)
    assert all(erase_clip(x, 0.0, random.Random(s), torch.Generator()) is None for s in range(100))
    assert not x.any()
    assert all(erase_clip(torch.zeros(3, 2, 8, 8), 1.0, random.Random(s), torch.Generator()) for s in range(100))


def test_transform_is_a_pure_function_of_the_seed():
    t = transform(reprob=1.0)  # RandAugment on, crops, erasing
    frames = np.random.default_rng(0).integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    a, b, other = t(frames, 7), t(frames, 7), t(frames, 8)
    assert torch.equal(a, b) and not torch.equal(a, other)
    assert torch.equal(transform(reprob=1.0)(frames, 7), a)  # a new instance too
    # the caller's random state is untouched
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


# ---- RandAugment: fill colour, order --------------------------------------------------------------
def only_op(t: TrainTransform, name: str) -> None:
    """Make ``t``'s RandAugment apply the op ``name`` every time (with n ops per frame)."""
    ops = [op for op in t.randaug.ops if op.name == name]
    assert len(ops) == 1, [op.name for op in t.randaug.ops]
    ops[0].prob = 1.0
    t.randaug.ops = ops


def test_randaugment_fills_with_the_reference_grey():
    t = transform(reprob=0.0, randaug_num_ops=1, scale=(1.0, 1.0), ratio=(1.0, 1.0), input_size=32, short_side=32)
    only_op(t, "Rotate")  # >= ~20 degrees at magnitude 9: the corners are exposed
    frames = np.full((2, 32, 32, 3), 10, np.uint8)
    mean, std = torch.tensor(t.cfg.mean), torch.tensor(t.cfg.std)
    for seed in range(5):
        x = t(frames, seed)
        corners = x[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (C, T, 4)
        rgb = (corners * std.view(3, 1, 1) + mean.view(3, 1, 1)) * 255
        assert torch.allclose(rgb, torch.full_like(rgb, 128.0), atol=1e-3), rgb[:, 0, 0]
        centre = x[:, :, 16, 16] * std.view(3, 1) + mean.view(3, 1)
        assert torch.allclose(centre * 255, torch.full_like(centre, 10.0), atol=1e-3)  # the image itself


def test_randaugment_runs_on_the_full_frame_before_the_crop(monkeypatch):
    import far.data.reference_augment as ref

    t = transform(reprob=0.0, input_size=16, short_side=16, randaug_num_ops=1)
    only_op(t, "Invert")
    sizes = []
    real = ref.pil_op

    def record(name):
        op = real(name)

        def wrapped(img, *args, **kwargs):
            sizes.append(img.size)
            return op(img, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(ref, "pil_op", record)
    x = t(np.zeros((3, 48, 64, 3), np.uint8), seed=0)
    assert x.shape == (3, 3, 16, 16)
    assert sizes == [(64, 48)] * 3  # PIL (width, height) of the original frames, once per frame


def test_translation_is_relative_to_the_frame_so_crops_can_miss_the_fill():
    """A translation exposes a band of fill colour at the frame's edge; the crop, taken
    afterwards, may miss it or lie entirely inside it. Cropping first would expose fill
    inside every crop, next to image content."""
    t = transform(reprob=0.0, randaug_num_ops=1, input_size=16, short_side=16)
    only_op(t, "TranslateXRel")  # ~40 % of the width at magnitude 9
    frames = np.full((1, 48, 64, 3), 10, np.uint8)
    kinds = set()
    for seed in range(60):
        content = ~erased_mask(t(frames, seed), 10, t.cfg)[0]  # whatever the fill colour
        kinds.add("no fill" if content.all() else "only fill" if not content.any() else "both")
    assert {"no fill", "only fill"} <= kinds, kinds


@pytest.mark.parametrize("num_ops", [0, 4])
def test_randaugment_is_identical_on_every_frame_at_full_resolution(num_ops):
    t = transform(reprob=0.0, randaug_num_ops=num_ops)
    frame = np.random.default_rng(2).integers(0, 256, (1, 24, 32, 3), dtype=np.uint8)
    frames = np.repeat(frame, 3, axis=0)
    for seed in range(10):
        out = apply_ops_pil(frames, t.draw(24, 32, seed).ops)
        assert out.shape == frames.shape and all(np.array_equal(out[0], out[k]) for k in range(3))
    changed = [not np.array_equal(apply_ops_pil(frames, t.draw(24, 32, s).ops)[0], frame[0]) for s in range(10)]
    assert any(changed) if num_ops else not any(changed)
