"""Clip sources for pre-training: a far.data training dataset, or toy clips for tests.

A source is a map-style ``torch.utils.data.Dataset``; :func:`clip_maker` gives the
function that turns one of its batches into clips (B * k, C, T, H, W) on the device
(k = repeated-augmentation copies, flattened into the batch). far.data's dataset yields
decoded frames, augmented on the device by far.data.batch_augment; :class:`ToyClips`
yields ready ImageNet-normalised clips (``"video"``: (k, C, T, H, W)).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import Dataset

from far.config import ConfigError, from_mapping
from far.data.config import IMAGENET_MEAN, IMAGENET_STD


class ToyClips(Dataset):
    """``n`` deterministic clips of a bright square moving over a smooth random background.

    For tests and smoke runs (``data: {random_clips: N}``): structured enough that the
    reconstruction and distillation losses fall within a few steps, no decoding at all.
    """

    def __init__(self, n: int, frames: int, size: int, seed: int = 0):
        self.n, self.frames, self.size, self.seed = int(n), int(frames), int(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        t, s = self.frames, self.size
        low = torch.rand(3, 1, 4, 4, generator=g)
        bg = torch.nn.functional.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)[:, 0]
        video = bg[:, None].repeat(1, t, 1, 1).clone()  # (C, T, H, W) in [0, 1]
        side = max(2, s // 4)
        colour = torch.rand(3, generator=g)
        x0, y0 = torch.randint(0, s - side, (2,), generator=g).tolist()
        vx, vy = (torch.randint(-3, 4, (2,), generator=g) * max(1, s // 32)).tolist()
        for f in range(t):
            x = int(min(max(x0 + vx * f, 0), s - side))
            y = int(min(max(y0 + vy * f, 0), s - side))
            video[:, f, y:y + side, x:x + side] = colour[:, None, None]
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
        return {"video": ((video - mean) / std)[None], "label": torch.zeros(1, dtype=torch.long), "index": i,
                "replaced": []}


# DataConfig fields of fine-tuning's augmentation, refused in a pre-training config so
# that nobody believes they apply (VideoMAE pre-trains with the multi-scale crop only).
FINETUNE_ONLY_FIELDS = frozenset({"randaug_magnitude", "randaug_std", "randaug_num_ops", "reprob", "scale",
                                  "ratio", "flip"})


def build_source(data: Mapping[str, Any], *, num_frames: int, img_size: int, seed: int) -> Dataset:
    """The training clips named by a config's ``data`` section.

    ``{random_clips: N}`` gives :class:`ToyClips`; anything else is a far.data
    ``DataConfig`` (its ``num_frames``/``input_size`` default to the model's) and gives
    far.data's training dataset.
    """
    data = dict(data)
    if "random_clips" in data:
        n = data.pop("random_clips")
        if data:
            raise ValueError(f"pretrain config field 'data.{sorted(data)[0]}': not allowed with random_clips")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError("data.random_clips", f"must be a positive integer, got {n!r}")
        return ToyClips(n, num_frames, img_size, seed)
    from far.data.config import DataConfig

    finetune_only = sorted(set(data) & FINETUNE_ONLY_FIELDS)
    if finetune_only:
        raise ConfigError(f"data.{finetune_only[0]}", "a fine-tuning augmentation setting; pre-training clips get "
                                                      "VideoMAE's multi-scale crop only (data.pretrain_scales)")
    data.setdefault("num_frames", num_frames)
    data.setdefault("input_size", img_size)
    dcfg = from_mapping(DataConfig, data, "data")
    if dcfg.num_frames != num_frames or dcfg.input_size != img_size:
        raise ConfigError("data", f"clips of {dcfg.num_frames}x{dcfg.input_size}x{dcfg.input_size} "
                                  f"do not fit the model's {num_frames}x{img_size}x{img_size}")
    return _far_data_train_set(dcfg)


def _far_data_train_set(dcfg) -> Dataset:
    """far.data's training list with pre-training augmentation (labels loaded, unused)."""
    from far.data.dataset import VideoDataset

    return VideoDataset(dcfg, "pretrain")


def clip_maker(source: Dataset) -> Callable[[dict[str, Any], Any], torch.Tensor]:
    """``batch, device -> clips`` for ``source``'s batches: far.data's pre-training
    augmentation (multi-scale crop, on the device) or, for toy clips, the clips as they are."""
    if isinstance(source, ToyClips):
        return lambda batch, device: batch["video"].to(device, non_blocking=True)
    from far.data.batch_augment import ClipAugment

    return ClipAugment(source.cfg, "pretrain")


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """far.data's train collate for its items; toy clips: ``video`` (B * copies, C, T, H, W)."""
    if "video" in batch[0]:
        return {"video": torch.cat([b["video"] for b in batch]), "label": torch.cat([b["label"] for b in batch]),
                "replaced": []}
    from far.data.dataset import collate as data_collate

    return data_collate(batch)


def steps_per_epoch(n_items: int, batch: int, world: int = 1) -> int:
    return max(1, math.floor(n_items / (batch * world)))
