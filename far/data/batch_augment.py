"""Clip augmentation as batched tensor ops on the model's device (GPU, or the CPU).

DataLoader workers only decode (uint8 frames of the sampled indices) and draw each clip's
:class:`far.data.transforms.ClipParams`; :class:`ClipAugment` turns a batch of decoded
videos into normalised float clips wherever the model runs. The same code runs on CUDA
and on the CPU, so the CPU default uses it too.

Per clip, with that clip's parameters on all of its frames at once (the frames are the
batch dimension of each op):

1. RandAugment on the decoded frames at their full size, parameterised exactly like timm's
   PIL ops (:data:`OPS`, built on torchvision's ``transforms.v2.functional`` where it has
   the op; each op takes several clips with their own arguments, and a geometric op
   resamples all frames of a clip in one ``grid_sample``);
2. the random resized crop, resized to the input size (bilinear on floats, no
   antialiasing for fine-tuning as the reference; with antialiasing for pre-training, as
   PIL's resize in VideoMAE's pre-training crop).

Then for the whole batch at once: flip where drawn, normalisation, and random erasing of
each drawn rectangle (normal noise from the clip's ``noise_seed``, made on the device by a
counter-based hash, :func:`seeded_normal`: no generator to seed, nothing to wait for).

Against timm's PIL ops (tests/test_batch_augment.py): Invert, Posterize, Solarize,
SolarizeAdd, crop/resize, flip, normalisation and erasing are exact; Equalize, AutoContrast
and the colour blends (Color, Contrast, Brightness, Sharpness) differ by the rounding of
a pixel value; the geometric ops (Rotate, ShearX/Y, TranslateX/YRel) resample bilinearly,
as torchvision's tensor affine does (nearest and bilinear only), where the reference asks
PIL for bicubic (the difference is measured and bounded in the tests and documented in
docs/data.md). They go through :func:`warp`, which equals torchvision's affine and rotate
but builds its small matrices on the host and copies them without making the host wait
for the device; Sharpness likewise (:func:`_sharpness`, torchvision's with its kernel
made once per device).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from far.data.config import DataConfig
from far.data.transforms import RANDAUG_FILL, ClipParams, eval_crop_offsets, short_side_size

_FILL = [float(v) for v in RANDAUG_FILL]


def _tv() -> Any:
    import far.torchvision_compat  # noqa: F401  (CPU torch with a CUDA torchvision wheel)
    import torchvision.transforms.v2.functional as tvf

    return tvf


def _device_tensor(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small float32 tensor on ``device``, copied without making the host wait.

    ``torch.tensor(..., device=cuda)`` copies from pageable host memory, and such a copy
    waits for everything queued before it on the stream (the whole previous training step:
    92 such waits a step in the H200 profile, benchmarks/results/train_pace.md). From
    pinned memory with ``non_blocking`` the copy is queued like a kernel."""
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.float32)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


_CONSTANTS: dict[tuple[tuple[float, ...], str], torch.Tensor] = {}
_BASE_GRIDS: dict[tuple[int, int, str], torch.Tensor] = {}


def _constant(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """``values`` as a float32 tensor on ``device``, made once per device (fill, mean, std)."""
    key = (tuple(float(v) for v in values), str(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = _device_tensor(key[0], device)
    return _CONSTANTS[key]


def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1, h*w, 3) pixel-centre coordinates about the image centre, and ones (torchvision's
    affine grid before its matrix), made once per size and device."""
    key = (h, w, str(device))
    if key not in _BASE_GRIDS:
        grid = torch.empty(1, h, w, 3, dtype=torch.float32, device=device)
        grid[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device))
        grid[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).unsqueeze_(-1))
        grid[..., 2].fill_(1)
        _BASE_GRIDS[key] = grid.view(1, h * w, 3)
    return _BASE_GRIDS[key]


def inverse_affine(angle: float, translate: Sequence[float], shear: Sequence[float], center: Sequence[float]
                   ) -> list[float]:
    """The 2 x 3 map from output to input pixel (row-major) of rotating by ``angle`` degrees
    (counter-clockwise on screen), shearing by ``shear`` degrees (x, y) and translating by
    ``translate`` pixels, about ``center`` (pixels, relative to the image centre): the
    inverse of T C R Sy Sx C^-1, torchvision's affine convention."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    # Forward linear part R(rot) Sy Sx: [[a, b], [c, d]], determinant 1.
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def _per_clip(values: Sequence[float], x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One value per clip of ``x`` (m, T, 3, H, W), as an (m, 1, 1, 1, 1) tensor on its device."""
    if len(values) == 1:  # one clip (how ClipAugment calls the ops): a fill kernel, no copy to pin
        return torch.full((1, 1, 1, 1, 1), values[0], dtype=dtype, device=x.device)
    return _device_tensor(torch.tensor(values, dtype=dtype), x.device).view(-1, 1, 1, 1, 1)


def warp(x: torch.Tensor, matrices: Sequence[Sequence[float]]) -> torch.Tensor:
    """uint8 clips (m, T, 3, H, W), clip i resampled through ``matrices[i]``
    (:func:`inverse_affine`): bilinear, the reference's fill colour outside. Equals
    torchvision's tensor affine and rotate for the same matrix (tested), without its
    synchronising host-to-device copies, and for all m clips in one grid_sample."""
    m, t, c, h, w = x.shape
    theta = torch.tensor(matrices, dtype=torch.float32).view(m, 2, 3)
    theta = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32))  # on the host
    grid = _base_grid(h, w, x.device).matmul(_device_tensor(theta, x.device)).view(m, h, w, 2)
    # A clip's frames share its grid: they are channels of one image to grid_sample.
    img = F.grid_sample(x.reshape(m, t * c, h, w).float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    # Where the sample comes from inside the image (a bilinear share): the rest takes the fill.
    inside = F.grid_sample(torch.ones((m, 1, h, w), device=x.device), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    fill = _constant(_FILL, x.device).view(1, 1, c, 1, 1)
    out = img.view(m, t, c, h, w).sub_(fill).mul_(inside.view(m, 1, 1, h, w)).add_(fill)
    return out.round_().to(x.dtype)


def _affine(x: torch.Tensor, translate: Sequence[Sequence[float]] | None = None,
            shear: Sequence[Sequence[float]] | None = None) -> torch.Tensor:
    # timm's shears and translations are PIL affine maps about the top-left corner
    # (output (x, y) <- input (x + f y, y) for ShearX); torchvision's convention with the
    # centre at the top-left pixel corner is the same map.
    h, w = x.shape[-2:]
    n = x.shape[0]
    translate = translate or [(0.0, 0.0)] * n
    shear = shear or [(0.0, 0.0)] * n
    return warp(x, [inverse_affine(0.0, tr, sh, center=(-0.5 * w, -0.5 * h)) for tr, sh in zip(translate, shear)])


def _shear_x(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    return _affine(x, shear=[(math.degrees(math.atan(a[0])), 0.0) for a in args])


def _shear_y(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    return _affine(x, shear=[(0.0, math.degrees(math.atan(a[0]))) for a in args])


def _translate_x_rel(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    # PIL's (1, 0, p, 0, 1, 0) samples input x + p: the content moves left by p pixels.
    return _affine(x, translate=[(-a[0] * x.shape[-1], 0.0) for a in args])


def _translate_y_rel(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    return _affine(x, translate=[(0.0, -a[0] * x.shape[-2]) for a in args])


def _rotate(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    # About the image centre, counter-clockwise for positive degrees as PIL's rotate.
    return warp(x, [inverse_affine(-a[0], (0.0, 0.0), (0.0, 0.0), center=(0.0, 0.0)) for a in args])


def _posterize(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    # Keep the top `bits` bits: 0 bits is black, as the reference's Pillow; 8 or more, unchanged.
    masks = [(0xFF << (8 - min(max(int(a[0]), 0), 8))) & 0xFF for a in args]
    return x.bitwise_and(_per_clip(masks, x, torch.uint8))


def _solarize(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    # PIL inverts pixels >= threshold; timm's threshold 256 (magnitude 0) inverts none.
    return torch.where(x >= _per_clip([a[0] for a in args], x), 255 - x, x)


def _solarize_add(x: torch.Tensor, args: Sequence[tuple[float, ...]], threshold: int = 128) -> torch.Tensor:
    # timm's lookup table: i + add (at most 255) below the threshold, unchanged above.
    add = _per_clip([int(a[0]) for a in args], x, torch.int16)
    return torch.where(x < threshold, (x.to(torch.int16) + add).clamp_(max=255).to(x.dtype), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma of uint8 frames, floored as its colour ops do: float (..., 1, H, W)."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, ratios: Sequence[float]) -> torch.Tensor:
    """torchvision's blend of uint8 ``x`` with ``other`` (ratio r: r x + (1 - r) other,
    truncated), with one ratio per clip. ``addcmul`` rounds as torchvision's
    ``add_(alpha=)`` does (one fused multiply-add; tested bit for bit)."""
    keep = _per_clip(ratios, x)
    rest = _per_clip([1.0 - r for r in ratios], x)
    return torch.addcmul(x.mul(keep), other, rest).clamp_(0, 255).to(x.dtype)


def _brightness(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    return x.mul(_per_clip([a[0] for a in args], x)).clamp_(0, 255).to(x.dtype)


def _color(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    return _blend(x, _gray(x), [a[0] for a in args])


def _contrast(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    # The mean grey of each frame, as torchvision (and PIL per image) computes it.
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), [a[0] for a in args])


_SHARPEN = (1.0 / 13.0,) * 4 + (5.0 / 13.0,) + (1.0 / 13.0,) * 4  # torchvision's smoothing kernel, row-major


def _sharpness(x: torch.Tensor, args: Sequence[tuple[float, ...]]) -> torch.Tensor:
    """torchvision's ``adjust_sharpness`` of uint8 clips (m, T, 3, H, W), one factor per clip,
    with its 3 x 3 kernel made once per device: torchvision makes it with ``torch.tensor(...,
    device=cuda)`` at every call, a synchronising copy from pageable memory (the 11 left in
    a paper batch, benchmarks/results/train_pace.md, check 13)."""
    factors = [a[0] for a in args]
    if min(factors) < 0:
        raise ValueError(f"sharpness factors ({factors}) must not be negative.")
    m, t, c, h, w = x.shape
    if x.numel() == 0 or h <= 2 or w <= 2:
        return x
    out = x.reshape(m * t, c, h, w).to(torch.float32, copy=True)
    kernel = _constant(_SHARPEN, x.device).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    blurred = F.conv2d(out, kernel, groups=c).round_().view(m, t, c, h - 2, w - 2)
    inner = out.view(m, t, c, h, w)[..., 1:-1, 1:-1]
    inner.addcmul_(blurred.sub_(inner), _per_clip([1.0 - f for f in factors], x))
    return out.clamp_(0, 255).to(x.dtype).view(m, t, c, h, w)


def _per_image(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """An op without arguments that torchvision applies to each image of a batch."""
    return lambda x, args: fn(x.reshape(-1, *x.shape[-3:])).reshape(x.shape)


# timm's RandAugment ops (timm.data.auto_augment.NAME_TO_OP), by name. Each takes uint8
# clips (m, T, 3, H, W) and one tuple of arguments per clip (what timm's level function
# returns for it), and applies clip i's arguments to every frame of clip i.
OPS: dict[str, Callable[..., torch.Tensor]] = {
    "AutoContrast": _per_image(lambda x: _tv().autocontrast(x)),
    "Equalize": _per_image(lambda x: _tv().equalize(x)),
    "Invert": lambda x, args: 255 - x,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize,
    "PosterizeOriginal": _posterize,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _color,
    "ColorIncreasing": _color,
    "Contrast": _contrast,
    "ContrastIncreasing": _contrast,
    "Brightness": _brightness,
    "BrightnessIncreasing": _brightness,
    "Sharpness": _sharpness,
    "SharpnessIncreasing": _sharpness,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x_rel,
    "TranslateYRel": _translate_y_rel,
}


def _identity(name: str, args: tuple[float, ...]) -> bool:
    """Ops that leave the frames as they are for these arguments (not worth a kernel)."""
    return name == "Rotate" and args[0] % 360 == 0


def apply_ops(x: torch.Tensor, ops: Sequence[tuple[str, tuple[float, ...]]]) -> torch.Tensor:
    """RandAugment ``ops`` (from :func:`far.data.transforms.draw_randaug`) on the uint8 frames
    (T, 3, H, W) of one clip: every frame gets the same ops and arguments.

    One clip at a time, although :data:`OPS` take several: grouping a batch's clips by op
    (gather, op, scatter back) cut the launches by a third but added more device time in the
    gathers and copies than it saved (H200, benchmarks/results/train_pace.md, run 16)."""
    x = x.unsqueeze(0)
    for name, args in ops:
        if _identity(name, args):
            continue
        try:
            op = OPS[name]
        except KeyError:
            raise ValueError(f"RandAugment op {name!r} has no tensor version (known: {sorted(OPS)})") from None
        x = op(x, [args])
    return x[0]


def crop_resize(x: torch.Tensor, box: tuple[int, int, int, int], size: int, antialias: bool) -> torch.Tensor:
    """Cut ``box`` (top, left, h, w) from frames (T, 3, H, W) and resize it to ``size`` x
    ``size``: float (T, 3, size, size) in [0, 255], bilinear (half-pixel centres)."""
    top, left, h, w = box
    crop = x[..., top:top + h, left:left + w].float()
    if (h, w) == (size, size):
        return crop
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def normalise(x: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """(N, T, 3, S, S) in [0, 255] -> normalised (N, 3, T, S, S), as the model takes it."""
    mean = _constant(cfg.mean, x.device).to(x.dtype).view(1, 1, 3, 1, 1) * 255.0
    std = _constant(cfg.std, x.device).to(x.dtype).view(1, 1, 3, 1, 1) * 255.0
    return x.sub_(mean).div_(std).permute(0, 2, 1, 3, 4).contiguous()


_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """SplitMix64's output function (Steele et al.): a 64-bit seed mixed into 64 fresh bits (host)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' ``lowbias32`` with the hash-prospector's multipliers
    0x21f0aaad, 0x735a2d97), in place on int64 values in [0, 2^32). The multipliers are below
    2^31, so no product overflows int64: the same integers on every device."""
    x.bitwise_xor_(x >> 16).mul_(0x21F0AAAD).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15).mul_(0x735A2D97).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 15)


def seeded_normal(seeds: Sequence[int], counts: Sequence[int], device: torch.device | str,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise for several seeds at once: the concatenation of ``counts[j]``
    values for each ``seeds[j]`` (63-bit ints), made on ``device`` without synchronising it.

    Counter-based, so a seed's values depend on that seed and their index only (not on the
    other seeds of the call, nor on the device, up to the rounding of ``erfinv``): value l of
    a seed hashes (l, the seed's two 32-bit keys from SplitMix64) with two rounds of
    :func:`_mix32` into 32 bits, whose top 24 make an odd multiple v of 2^-24 in (-1, 1)
    (uniform, symmetric, exact in float32), and the value is sqrt(2) erfinv(v): the normal
    quantile of a 24-bit uniform (tails to 5.4 sigma, as float32 Box-Muller's). The per-seed
    keys and offsets travel in one small tensor, copied from pinned memory without making
    the host wait. Unlike a seeded generator per clip, the values are the same on the CPU
    and the GPU (the gpu test compares the erased boxes); check 12 had suspected such
    generators of synchronising, which check 13 refuted (benchmarks/results/train_pace.md)."""
    device = torch.device(device)
    total = sum(counts)
    if total == 0:
        return torch.empty(0, dtype=dtype, device=device)
    keys = [_splitmix64(int(s) & _M64) for s in seeds]
    starts = [0]
    for n in counts[:-1]:
        starts.append(starts[-1] + n)
    table = torch.tensor([[s + n for s, n in zip(starts, counts)], starts,
                          [k & _M32 for k in keys], [k >> 32 for k in keys]], dtype=torch.int64)
    table = _device_tensor(table, device)
    ends, starts_d, key_a, key_b = table.unbind(0)
    index = torch.arange(total, dtype=torch.int64, device=device)
    owner = torch.searchsorted(ends, index, right=True)
    # The index of each value within its seed, keyed by the seed:
    x = index.sub_(starts_d.index_select(0, owner)).bitwise_xor_(key_a.index_select(0, owner))
    x = _mix32(_mix32(x).bitwise_xor_(key_b.index_select(0, owner)))
    v = x.bitwise_right_shift_(8).mul_(2).sub_((1 << 24) - 1).to(dtype).mul_(2.0 ** -24)
    return v.erfinv_().mul_(math.sqrt(2.0))


def finish(x: torch.Tensor, params: Sequence[ClipParams], cfg: DataConfig) -> torch.Tensor:
    """Flip, normalise and erase a batch of resized clips ``x`` (N, T, 3, S, S) in [0, 255];
    returns (N, 3, T, S, S) float, as the model takes it. Each erased clip's box gets fresh
    standard normal noise on every frame and pixel (the reference's "pixel" mode), made from
    its ``noise_seed`` by :func:`seeded_normal` for the whole batch at once."""
    for i, p in enumerate(params):
        if p.flip:  # one clip at a time: a list index would be copied to the device
            x[i] = x[i].flip(-1)
    x = normalise(x, cfg)
    erased = [(i, p.erase, p.noise_seed) for i, p in enumerate(params) if p.erase is not None]
    if erased:
        c, t = x.shape[1:3]
        counts = [c * t * h * w for _, (_, _, h, w), _ in erased]
        noise = seeded_normal([seed for *_, seed in erased], counts, x.device, x.dtype)
        for (i, (top, left, h, w), _), chunk in zip(erased, noise.split(counts)):
            x[i, :, :, top:top + h, left:left + w] = chunk.view(c, t, h, w)
    return x


class ClipAugment:
    """A batch of decoded videos -> augmented, normalised clips on ``device``.

    ``mode`` "train" (fine-tuning: RandAugment, crop, flip, erasing) or "pretrain"
    (VideoMAE's multi-scale crop, antialiased resize). Call it on a batch from
    :func:`far.data.dataset.collate`: ``frames`` uint8 (B, T, H, W, 3) (padded to the
    batch's largest frame), ``sizes`` (B, 2) each video's (H, W), ``params`` one
    :class:`ClipParams` per clip, the ``num_sample`` copies of a video adjacent.
    """

    def __init__(self, cfg: DataConfig, mode: str = "train") -> None:
        if mode not in ("train", "pretrain"):
            raise ValueError(f"mode must be 'train' or 'pretrain', got {mode!r}")
        self.cfg = cfg
        self.antialias = mode == "pretrain"
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def __call__(self, batch: dict[str, Any], device: torch.device | str) -> torch.Tensor:
        """(N, 3, T, S, S) float32 on ``device``, N = number of clips (videos x copies).

        On a GPU the work runs on a CUDA stream of its own, and the caller's stream waits
        for it. torchvision's affine ops (and ``normalise``) copy small parameter tensors
        from pageable host memory, and such a copy makes the host wait for everything
        queued before it on its stream: on the model's stream that is the whole previous
        training step, so the GPU then idles while the host launches the augmentation
        (92 such copies a step in the H200 profile, benchmarks/results/train_pace.md).
        """
        device = torch.device(device)
        if device.type != "cuda":
            return self._augment(batch, device)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        caller = torch.cuda.current_stream(device)
        with torch.cuda.stream(stream):
            x = self._augment(batch, device)
        caller.wait_stream(stream)
        x.record_stream(caller)  # allocated on the side stream, used on the caller's
        return x

    def _augment(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        params: list[ClipParams] = batch["params"]
        frames = batch["frames"].to(device, non_blocking=True).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        sizes = batch["sizes"].tolist()
        copies = len(params) // frames.shape[0]
        size = self.cfg.input_size
        out = torch.empty((len(params), frames.shape[1], 3, size, size), dtype=torch.float32, device=frames.device)
        for i, p in enumerate(params):
            v = i // copies
            h, w = sizes[v]
            clip = apply_ops(frames[v, :, :, :h, :w], p.ops)
            out[i] = crop_resize(clip, p.crop, size, self.antialias)
        return finish(out, params, self.cfg)


class EvalViews:
    """A batch of decoded test clips -> their spatial views on ``device``.

    Each clip is resized once (short side to ``cfg.short_side``, bilinear without
    antialiasing, rounded to whole grey levels as the decoded frames are), then its
    ``test_crops`` crops are cut and normalised. Returns ``(video, video_index, view,
    label)``: ``video`` (B * crops, C, T, S, S), the others (B * crops,) on the CPU, with
    ``view = clip * test_crops + crop``. far.data.transforms.EvalTransform is the
    one-view CPU reference (tests/test_batch_augment.py).
    """

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: dict[str, Any], device: torch.device | str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        s, crops = cfg.input_size, cfg.test_crops
        frames = batch["frames"].to(device, non_blocking=True).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        out = torch.empty((frames.shape[0] * crops, frames.shape[1], 3, s, s), dtype=torch.float32,
                          device=frames.device)
        for i, (h, w) in enumerate(batch["sizes"].tolist()):
            clip = frames[i, :, :, :h, :w].float()
            size = short_side_size(h, w, cfg.short_side)
            if size != (h, w):
                clip = F.interpolate(clip, size=size, mode="bilinear", align_corners=False, antialias=False)
                clip = clip.round_().clamp_(0, 255)
            for k, (top, left) in enumerate(eval_crop_offsets(size[0], size[1], s, crops)):
                out[i * crops + k] = clip[..., top:top + s, left:left + s]
        video = normalise(out, cfg)
        rep = lambda t: t.repeat_interleave(crops)  # noqa: E731
        view = rep(batch["clip"]) * crops + torch.arange(crops).repeat(len(batch["clip"]))
        return video, rep(batch["video_index"]), view, rep(batch["label"])
