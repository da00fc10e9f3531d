"""The batched tensor augmentation (far.data.batch_augment) against the reference PIL path
(far.data.reference_augment: timm's own RandAugment ops) and against timm's draws.

Tolerances, stated once (pixel values 0-255 of uint8 op outputs):
- exact: Invert, Posterize (0-8 bits), Solarize, SolarizeAdd, Brightness, Sharpness,
  Equalize; crop/resize, flip, normalisation and erasing (the same functions on both paths);
- at most 1 (rounding of a blend or a lookup table): AutoContrast, Color, Contrast;
- geometric ops (Rotate, ShearX/Y, TranslateX/YRel): torchvision's tensor affine is
  bilinear. Against PIL's *bilinear* at most 1 inside the image (2 px away from the edge
  of the exposed fill: PIL cuts the edge hard, torchvision blends it); against the
  reference's *bicubic* at most 8 and a mean of at most 1.5 there, on smooth images.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from far.data.batch_augment import OPS, ClipAugment, EvalViews, apply_ops, finish, seeded_normal
from far.data.config import DataConfig
from far.data.dataset import collate
from far.data.reference_augment import TrainTransform, augment_clip
from far.data.transforms import (RANDAUG_FILL, ClipParams, TrainDraw, build_randaug, draw_randaug, pil_op,
                                 seeded_globals)

GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
EXACT = ("Invert", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd", "BrightnessIncreasing",
         "SharpnessIncreasing", "Equalize")
WITHIN_ONE = ("AutoContrast", "ColorIncreasing", "ContrastIncreasing")


def smooth_frame(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    """A smooth random RGB frame (a 6x8 random image upsampled): natural-image-like."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((1, 3, 6, 8), generator=g) * 255
    x = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 255)
    return x[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def pil(name: str, args: tuple, frame: np.ndarray, resample=None) -> np.ndarray:
    from PIL import Image

    resample = Image.BICUBIC if resample is None else resample
    return np.asarray(pil_op(name)(Image.fromarray(frame), *args, fillcolor=RANDAUG_FILL, resample=resample))


def tensor(name: str, args: tuple, frame: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(frame).permute(2, 0, 1)[None]  # one frame (T=1, 3, H, W)
    return apply_ops(x, ((name, args),))[0].permute(1, 2, 0).numpy()


def erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` shrunk by ``margin`` pixels (4-neighbourhood; outside the frame counts as False)."""
    for _ in range(margin):
        m = np.pad(mask, 1)
        mask = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask


def inside(name: str, args: tuple, shape: tuple[int, int], margin: int = 2) -> np.ndarray:
    """Pixels the op maps from inside the source frame, ``margin`` px away from the exposed fill."""
    from PIL import Image

    white = np.full((*shape, 3), 255, np.uint8)
    hit = np.asarray(pil_op(name)(Image.fromarray(white), *args, fillcolor=(0, 0, 0), resample=Image.NEAREST))
    return erode(hit[..., 0] == 255, margin)


# A spread of arguments per op (after timm's level functions), both signs.
CASES = [("AutoContrast", ()), ("Equalize", ()), ("Invert", ()),
         ("PosterizeIncreasing", (0,)), ("PosterizeIncreasing", (1,)), ("PosterizeIncreasing", (4,)),
         ("SolarizeIncreasing", (0,)), ("SolarizeIncreasing", (100,)), ("SolarizeIncreasing", (256,)),
         ("SolarizeAdd", (0,)), ("SolarizeAdd", (90,)), ("SolarizeAdd", (110,)),
         ("ColorIncreasing", (0.1,)), ("ColorIncreasing", (1.9,)), ("ContrastIncreasing", (0.2,)),
         ("ContrastIncreasing", (1.8,)), ("BrightnessIncreasing", (0.3,)), ("BrightnessIncreasing", (1.7,)),
         ("SharpnessIncreasing", (0.1,)), ("SharpnessIncreasing", (1.9,)),
         ("Rotate", (23.0,)), ("Rotate", (-29.5,)), ("ShearX", (0.27,)), ("ShearX", (-0.3,)), ("ShearY", (0.25,)),
         ("ShearY", (-0.12,)), ("TranslateXRel", (0.4,)), ("TranslateXRel", (-0.33,)), ("TranslateYRel", (0.41,)),
         ("TranslateYRel", (-0.07,))]


def test_every_op_of_the_policy_has_a_tensor_version():
    randaug = build_randaug(DataConfig.preset("ssv2"))
    assert {op.name for op in randaug.ops} <= set(OPS)
    assert len(randaug.ops) == 15
    with pytest.raises(ValueError, match="no tensor version"):
        apply_ops(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (("Cutout", ()),))


def _torchvision_geometric(name: str, x: torch.Tensor, arg: float) -> torch.Tensor:
    """What the geometric ops were before far's own warp: torchvision's tensor affine/rotate."""
    import torchvision.transforms.v2.functional as tvf
    from torchvision.transforms import InterpolationMode

    bil, fill = InterpolationMode.BILINEAR, [float(v) for v in RANDAUG_FILL]
    h, w = x.shape[-2:]
    if name == "Rotate":
        return tvf.rotate(x, arg, interpolation=bil, fill=fill)
    shear = {"ShearX": (math.degrees(math.atan(arg)), 0.0), "ShearY": (0.0, math.degrees(math.atan(arg)))}
    translate = {"TranslateXRel": (-arg * w, 0.0), "TranslateYRel": (0.0, -arg * h)}
    return tvf.affine(x, angle=0.0, translate=list(translate.get(name, (0.0, 0.0))), scale=1.0,
                      shear=list(shear.get(name, (0.0, 0.0))), interpolation=bil, fill=fill, center=[0.0, 0.0])


@pytest.mark.parametrize("name,args", [c for c in CASES if c[0] in GEOMETRIC] + [("Rotate", (0.0,)), ("Rotate", (90.0,))])
def test_geometric_ops_equal_torchvisions_affine_bit_for_bit(name, args):
    """far's warp builds the sampling grid's matrix on the host (no synchronising copy on
    a GPU); on the same frames it gives torchvision's affine/rotate result exactly."""
    gen = torch.Generator().manual_seed(5)
    for shape in ((4, 3, 48, 64), (2, 3, 37, 29)):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        assert torch.equal(OPS[name](x[None], [args])[0], _torchvision_geometric(name, x, *args)), (name, args, shape)


def test_sharpness_equals_torchvisions_bit_for_bit():
    """far's Sharpness (its kernel made once per device: no synchronising copy on a GPU)
    gives torchvision's adjust_sharpness exactly."""
    import torchvision.transforms.v2.functional as tvf

    gen = torch.Generator().manual_seed(6)
    for shape, factor in (((4, 3, 48, 64), 0.1), ((2, 3, 37, 29), 1.9), ((1, 3, 2, 9), 0.5), ((3, 3, 5, 5), 0.0)):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        assert torch.equal(OPS["SharpnessIncreasing"](x[None], [(factor,)])[0], tvf.adjust_sharpness(x, factor)), \
            (shape, factor)


@pytest.mark.parametrize("name,args", CASES, ids=[f"{n}{a}" for n, a in CASES])
def test_op_equals_timm_pil_op(name, args):
    from PIL import Image

    for seed in range(3):
        frame = smooth_frame(seed)
        ref = pil(name, args, frame).astype(int)
        out = tensor(name, args, frame).astype(int)
        diff = np.abs(ref - out)
        if name in EXACT:
            assert diff.max() == 0, (name, args, diff.max())
        elif name in WITHIN_ONE:
            assert diff.max() <= 1, (name, args, diff.max())
        else:
            keep = inside(name, args, frame.shape[:2])
            same_interp = np.abs(pil(name, args, frame, Image.BILINEAR).astype(int) - out)[keep]
            assert same_interp.max() <= 1, (name, args, same_interp.max())  # the geometry is PIL's
            assert diff[keep].max() <= 8 and diff[keep].mean() <= 1.5, (name, args, diff[keep].max())
            # Away from the image, both fill with the reference grey.
            fill = erode(~inside(name, args, frame.shape[:2], margin=0), 3)
            if fill.any():
                assert (out[fill] == 128).all() and (ref[fill] == 128).all()


def test_an_op_gives_each_of_several_clips_its_own_arguments_bit_for_bit():
    """Every op takes several clips with one argument tuple each: each clip comes out
    exactly as that clip alone with its arguments."""
    gen = torch.Generator().manual_seed(7)
    by_name: dict[str, list[tuple]] = {}
    for name, args in CASES:
        by_name.setdefault(name, []).append(args)
    for name, arg_list in by_name.items():
        x = torch.randint(0, 256, (len(arg_list), 2, 3, 20, 26), dtype=torch.uint8, generator=gen)
        out = OPS[name](x, arg_list)
        for i, args in enumerate(arg_list):
            assert torch.equal(out[i], OPS[name](x[i:i + 1], [args])[0]), (name, args)
    assert max(len(v) for v in by_name.values()) >= 3


def test_ops_on_a_clip_are_the_same_on_every_frame():
    frames = np.repeat(smooth_frame(3)[None], 4, axis=0)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    for name, args in CASES:
        out = apply_ops(x, ((name, args),))
        assert all(torch.equal(out[0], out[k]) for k in range(4)), name


# ---- draws ---------------------------------------------------------------------------------------
def test_draws_replay_timm_randaugment_exactly(monkeypatch):
    """timm's RandAugment, run on an image with its op functions recording their calls,
    applies exactly the ops and arguments that draw_randaug returns for the same seed."""
    from PIL import Image
    from timm.data import auto_augment

    randaug = build_randaug(DataConfig.preset("ssv2"))
    calls: list[tuple[str, tuple]] = []
    for op in randaug.ops:
        def record(img, *args, _name=op.name, **kwargs):
            calls.append((_name, tuple(args)))
            return img
        op.aug_fn = record
    img = Image.new("RGB", (8, 8))
    applied = Counter()
    for seed in range(500):
        calls.clear()
        with seeded_globals(seed):
            randaug(img)
        drawn = draw_randaug(randaug, seed)
        assert list(drawn) == calls, seed
        applied[len(drawn)] += 1
    assert set(applied) == {0, 1, 2, 3, 4}
    assert auto_augment.NAME_TO_OP  # timm's table itself is untouched by the recording


def test_draw_distribution_matches_timm_policy():
    """Fixed-seed statistics of 8000 clips' draws for rand-m9-n4-mstd0.5-inc1: each of the
    15 ops is picked with probability 1/15 per layer and applied with probability 0.5; the
    magnitude is N(9, 0.5) clamped to [0, 10]; signed ops are negated half of the time."""
    cfg = DataConfig.preset("ssv2")
    draw = TrainDraw(cfg)
    n = 8000
    counts: Counter = Counter()
    per_clip: Counter = Counter()
    rotations, shear_sign = [], []
    for seed in range(n):
        ops = draw(240, 320, seed).ops
        per_clip[len(ops)] += 1
        for name, args in ops:
            counts[name] += 1
            if name == "Rotate":
                rotations.append(args[0])
            if name == "ShearX":
                shear_sign.append(args[0] > 0)
    # ops: chi-square against uniform, 14 degrees of freedom (99.9 % quantile 36.1)
    expected = n * 4 * 0.5 / 15
    chi2 = sum((counts[op.name] - expected) ** 2 / expected for op in draw.randaug.ops)
    assert len(counts) == 15 and chi2 < 36.1, (chi2, counts)
    # applied ops per clip: Binomial(4, 0.5)
    for k in range(5):
        p = math.comb(4, k) / 16
        assert abs(per_clip[k] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (k, per_clip)
    # magnitude: |angle| = 30 * clamp(N(9, 0.5), 0, 10) / 10: mean 26.99, sd 1.5 (clamped above 10)
    mags = np.abs(rotations) / 3.0
    assert abs(mags.mean() - 8.998) < 0.1 and 0.4 < mags.std() < 0.55 and mags.max() <= 10.0
    assert abs(np.mean(np.array(rotations) > 0) - 0.5) < 0.06
    assert abs(np.mean(shear_sign) - 0.5) < 0.06


def test_params_are_per_clip_and_ssv2_never_flips():
    ssv2 = TrainDraw(DataConfig.preset("ssv2"))
    k400 = TrainDraw(DataConfig.preset("k400"))
    ssv2_params = [ssv2(240, 320, s) for s in range(400)]
    assert not any(p.flip for p in ssv2_params)
    flips = sum(k400(240, 320, s).flip for s in range(400))
    assert 160 < flips < 240
    assert len({p.crop for p in ssv2_params}) > 390  # different clips, different draws
    assert ssv2(240, 320, 5) == TrainDraw(DataConfig.preset("ssv2"))(240, 320, 5)  # a pure function of the seed
    erased = [p.erase is not None for p in ssv2_params]
    assert abs(np.mean(erased) - 0.25) < 0.07


# ---- the whole path ------------------------------------------------------------------------------
def batch_of(videos: list[np.ndarray], params: list[list[ClipParams]]) -> dict:
    items = [{"frames": torch.from_numpy(v), "params": p, "label": torch.zeros(len(p), dtype=torch.long),
              "index": i, "replaced": []} for i, (v, p) in enumerate(zip(videos, params))]
    return collate(items)


def test_batched_path_equals_reference_path_on_the_same_params():
    cfg = DataConfig.preset("ssv2", input_size=32, short_side=32, reprob=0.5)
    draw = TrainDraw(cfg)
    videos = [np.stack([smooth_frame(10 * v + t, 48, 64) for t in range(4)]) for v in range(6)]
    exact = inexact = 0
    diffs = []
    for v, frames in enumerate(videos * 4):
        params = [draw(48, 64, 100 * v + k) for k in range(2)]
        out = ClipAugment(cfg)(batch_of([frames], [params]), "cpu")
        for k, p in enumerate(params):
            ref = augment_clip(frames, p, cfg, antialias=False)
            names = [name for name, _ in p.ops]
            if set(names) <= set(EXACT):
                assert torch.equal(out[k], ref), p
                exact += 1
            elif not any(n in ("Equalize", "AutoContrast") for n in names[1:]):
                # (A histogram op after an inexact one turns a one-level difference into a
                # jump between levels: compared op by op above, not here.)
                # One grey level is 1 / (255 * 0.225) ~ 0.017 after normalisation.
                diffs.append(float((out[k] - ref).abs().mean()))
                inexact += 1
    # Whole clips with interpolating ops (up to 4 in a row, on small 48x64 frames where the
    # fill edge is a large share): mean |difference| below 0.08 (~4.6 grey levels) for every
    # clip, and below 0.03 (~1.7 levels) for the median clip.
    assert max(diffs) < 0.08 and float(np.median(diffs)) < 0.03, sorted(diffs)
    assert exact >= 5 and inexact >= 5, (exact, inexact)


def test_videos_of_different_sizes_in_one_batch():
    cfg = DataConfig.preset("ssv2", input_size=16, short_side=16, reprob=0.0)
    draw = TrainDraw(cfg)
    small = np.stack([smooth_frame(1, 30, 40)] * 2)
    large = np.stack([smooth_frame(2, 48, 64)] * 2)
    ps, pl = [draw(30, 40, 1)], [draw(48, 64, 2)]
    together = ClipAugment(cfg)(batch_of([large, small], [pl, ps]), "cpu")
    assert torch.equal(together[1], ClipAugment(cfg)(batch_of([small], [ps]), "cpu")[0])  # padding unseen
    assert torch.equal(together[0], ClipAugment(cfg)(batch_of([large], [pl]), "cpu")[0])


def test_same_seed_same_batch_and_clip_consistency():
    cfg = DataConfig.preset("ssv2", input_size=16, short_side=16, reprob=1.0)
    t = TrainTransform(cfg)
    frames = np.repeat(smooth_frame(4, 30, 40)[None], 3, axis=0)
    a, b = t(frames, 9), t(frames, 9)
    assert torch.equal(a, b)
    p = t.draw(30, 40, 9)
    top, left, h, w = p.erase
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[top:top + h, left:left + w] = False
    assert all(torch.equal(a[:, 0][:, keep], a[:, k][:, keep]) for k in range(3))  # same ops, crop on every frame
    assert not torch.equal(a[:, 0], a[:, 1])  # fresh erasing noise per frame


def test_erasing_noise_is_standard_normal_per_seed_and_fills_only_the_box():
    """The erasing noise (``seeded_normal``: counter-based, nothing to seed or wait for on a
    GPU) is standard normal, a function of its clip's seed and its position alone, different
    between seeds; ``finish`` puts it in each erased clip's box on every frame, nowhere else."""
    seeds = [2**62 + 12345, 7, 8]  # 63-bit, as TrainDraw's, and neighbouring small seeds
    together = seeded_normal(seeds, [100_000, 200_000, 200_000], "cpu")
    a, b = together[100_000:300_000], together[300_000:]
    assert torch.equal(a, seeded_normal([7], [200_000], "cpu"))  # not the batch's other seeds
    assert torch.equal(a[:1000], seeded_normal([7], [1000], "cpu"))  # nor how many values are drawn
    z = together.double().sort().values
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    n = len(z)
    ks = torch.maximum(torch.arange(1, n + 1) / n - cdf, cdf - torch.arange(n) / n).max()
    assert ks < 1.63 / math.sqrt(n), ks  # Kolmogorov-Smirnov, alpha = 1 %
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert 4.5 < float(z.abs().max()) < 5.5  # a 24-bit uniform's normal quantile: tails to 5.4 sigma
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.01  # seeds 7 and 8 independent
    assert abs(float(torch.corrcoef(torch.stack([a[1:], a[:-1]]))[0, 1])) < 0.01  # neighbours independent
    cfg = DataConfig.preset("ssv2", input_size=16, short_side=16)
    params = [ClipParams(crop=(0, 0, 16, 16), erase=(2, 3, 5, 7), noise_seed=99), ClipParams(crop=(0, 0, 16, 16)),
              ClipParams(crop=(0, 0, 16, 16), erase=(0, 0, 16, 1), noise_seed=2**63 - 1)]
    x = torch.rand(3, 4, 3, 16, 16) * 255
    plain = finish(x.clone(), [ClipParams(crop=p.crop) for p in params], cfg)
    out = finish(x.clone(), params, cfg)
    assert torch.equal(out[1], plain[1])
    for i, (top, left, h, w) in ((0, (2, 3, 5, 7)), (2, (0, 0, 16, 1))):
        box = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
        noise = seeded_normal([params[i].noise_seed], [3 * 4 * h * w], "cpu").view(3, 4, h, w)
        assert torch.equal(out[i][box], noise)
        out[i][box] = plain[i][box]
        assert torch.equal(out[i], plain[i])  # outside the box: untouched
        assert not torch.equal(noise[:, 0], noise[:, 1])  # fresh noise per frame


@pytest.mark.parametrize("size,dataset", [((48, 64), "ssv2"), ((64, 48), "k400"), ((40, 40), "ssv2")])
def test_test_views_equal_the_cpu_reference(size, dataset):
    """EvalViews (far test, on the device) = EvalTransform (one view at a time, CPU), view by
    view, for landscape, portrait and square frames; each clip is resized once."""
    from far.data.transforms import EvalTransform

    cfg = DataConfig.preset(dataset, input_size=32, short_side=36, test_clips=2)
    h, w = size
    videos = [np.stack([smooth_frame(7 * v + t, h, w) for t in range(4)]) for v in range(2)]
    items = [{"frames": torch.from_numpy(f), "label": v, "video_index": v, "clip": v % 2, "replaced": []}
             for v, f in enumerate(videos)]
    video, video_index, view, label = EvalViews(cfg)(collate(items), "cpu")
    ref = EvalTransform(cfg)
    assert video.shape == (2 * cfg.test_crops, 3, 4, 32, 32)
    for v, frames in enumerate(videos):
        for crop in range(cfg.test_crops):
            i = v * cfg.test_crops + crop
            assert torch.allclose(video[i], ref(frames, crop), atol=1e-5), (v, crop)
            assert (int(video_index[i]), int(view[i]), int(label[i])) == (v, (v % 2) * cfg.test_crops + crop, v)


@pytest.mark.gpu
def test_cuda_path_equals_cpu_path():
    """On CUDA the same params give the CPU result: exact ops bit for bit, interpolating ops
    within float rounding, the erasing noise too."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = DataConfig.preset("k400", input_size=112, short_side=112, reprob=0.0)
    draw = TrainDraw(cfg)
    videos = [np.stack([smooth_frame(10 * v + t, 240, 320) for t in range(8)]) for v in range(8)]
    params = [[draw(240, 320, 7 * v + k) for k in range(2)] for v in range(8)]
    batch = batch_of(videos, params)
    cpu = ClipAugment(cfg)(batch, "cpu")
    gpu = ClipAugment(cfg)(batch, "cuda").cpu()
    diff = (cpu - gpu).abs()
    assert diff.mean() < 2e-3 and diff.max() < 0.1, (diff.mean(), diff.max())
    # Erasing: the same noise on both devices (up to erfinv's rounding), and no host
    # synchronisation on the GPU (a seeded CUDA generator per clip made one each).
    erasing = DataConfig.preset("ssv2", input_size=112, short_side=112, reprob=1.0)
    draw = TrainDraw(erasing)
    batch = batch_of(videos[:4], [[draw(240, 320, 11 * v + k) for k in range(2)] for v in range(4)])
    assert sum(p.erase is not None for p in batch["params"]) >= 6
    batch["frames"] = batch["frames"].pin_memory()  # as the loader hands them over
    augment = ClipAugment(erasing)
    augment(batch, "cuda")  # warm-up: the per-device constants and grids are made once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(batch, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu, out = ClipAugment(erasing)(batch, "cpu"), out.cpu()
    assert (cpu - out).abs().mean() < 2e-3
    for i, p in enumerate(batch["params"]):
        if p.erase is not None:
            top, left, h, w = p.erase
            box = (i, slice(None), slice(None), slice(top, top + h), slice(left, left + w))
            assert torch.allclose(out[box], cpu[box], rtol=1e-5, atol=1e-6), i
    noise = seeded_normal([3, 2**63 - 1], [500_000, 12_345], "cuda").cpu()
    assert torch.allclose(noise, seeded_normal([3, 2**63 - 1], [500_000, 12_345], "cpu"), rtol=1e-5, atol=1e-6)
    # The test views too (far test on the GPU).
    items = [{"frames": torch.from_numpy(f), "label": 0, "video_index": v, "clip": 0, "replaced": []}
             for v, f in enumerate(videos[:3])]
    cpu_views = EvalViews(cfg)(collate(items), "cpu")[0]
    gpu_views = EvalViews(cfg)(collate(items), "cuda")[0].cpu()
    assert (cpu_views - gpu_views).abs().max() < 0.05  # a grey level at most (rounding of the resize)
