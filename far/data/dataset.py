"""Video datasets over ``path label`` lists: train items (repeated augmentation) and test views.

Train and pre-training item ``i`` -> ``{"frames": (T, H, W, 3) uint8, "params": [ClipParams] *
num_sample, "label": (num_sample,) long, "index": i, "replaced": [(path, error), ...]}``: one
decode and ``num_sample`` draws of augmentation parameters. Workers only decode: the
augmentation itself runs batched on the model's device (far.data.batch_augment.ClipAugment).

Test item ``i`` (one per video x temporal clip) -> ``{"frames": (T, H, W, 3) uint8, "label": int,
"video_index": int, "clip": int, "replaced": [...]}``: one decode per temporal clip; the
short-side resize and the ``test_crops`` spatial crops (views ``clip * test_crops + crop``)
are cut on the model's device (far.data.batch_augment.EvalViews).

Corrupt files met at run time are never skipped silently: each is replaced by the next
index (mod len) that decodes and listed in the ``"replaced"`` field of its *own* items
only (not of a neighbour's item that stepped over it while looking for a replacement),
so a training epoch counts every corrupt video once. It is logged with
``logging.warning`` once per process (a test item is one view, and a video has up to 15).
For test views the replacement's own label and ``video_index`` are returned: all
views of the corrupt video then duplicate the replacement's views, which leaves the
replacement's per-video mean unchanged; the corrupt video is simply missing from the
evaluation and the evaluator counts it from ``"replaced"`` with :func:`unique_videos`.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from far.data import sampling
from far.data.config import DataConfig
from far.data.transforms import draw_for
from far.data.video import CorruptVideo, open_video

log = logging.getLogger(__name__)


def read_list(list_file: str | Path, root: str | Path = "") -> list[tuple[str, int]]:
    """Read a ``path label`` list (space separated, no header); join relative paths to ``root``.

    The path may contain spaces: the label is the last field.
    """
    samples = []
    for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            path, label = line.rsplit(" ", 1)
            label_int = int(label)
        except ValueError as err:
            raise ValueError(f"{list_file}:{n}: expected 'path label', got {line!r}") from err
        p = Path(path)
        samples.append((str(p if p.is_absolute() or not root else Path(root) / p), label_int))
    return samples


class VideoDataset(Dataset):
    """Train (``mode="train"``), pre-training (``mode="pretrain"``) or multi-view test
    (``mode="test"``) dataset of a DataConfig.

    Train and pre-training items are sampled alike (random temporal window / segments,
    ``num_sample`` copies); they differ in the spatial augmentation parameters drawn:
    fine-tuning's (:class:`far.data.transforms.TrainDraw`) or VideoMAE pre-training's
    (:class:`far.data.transforms.PretrainDraw`).

    ``samples`` overrides the list file (a list of (path, label)); otherwise
    ``cfg.train_list`` (train) or ``cfg.val_list`` (test) is read, relative to ``cfg.root``.
    """

    def __init__(self, cfg: DataConfig, mode: str = "train", samples: list[tuple[str, int]] | None = None) -> None:
        if mode not in ("train", "pretrain", "test"):
            raise ValueError(f"mode must be 'train', 'pretrain' or 'test', got {mode!r}")
        self.cfg = cfg
        self.mode = mode
        if samples is None:
            list_file = cfg.val_list if mode == "test" else cfg.train_list
            if not list_file:
                raise ValueError(f"DataConfig.{'val_list' if mode == 'test' else 'train_list'}: empty")
            samples = read_list(list_file, cfg.root)
        if not samples:
            raise ValueError(f"{mode} dataset has no videos")
        self.samples = list(samples)
        bad = [lab for _, lab in self.samples if not 0 <= lab < cfg.num_classes]
        if bad:
            raise ValueError(f"DataConfig.num_classes: {cfg.num_classes} but labels include {bad[0]}")
        if cfg.decoder == "nvdec":
            from far.data.nvdec import check_available

            check_available()  # before any work: a missing library or GPU is a config error
        self.draw = draw_for(cfg, mode) if mode != "test" else None
        self._main_rng = torch.Generator().manual_seed(cfg.seed)
        self._warned: set[str] = set()  # corrupt videos already logged by this process
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()  # decoded_cache_mb (LRU)
        self._decoded_bytes = 0
        self._too_large: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Spawned loader workers (data.decoder nvdec) receive the dataset pickled by torch's
        # multiprocessing, which would move the generator's state tensor to shared memory
        # (and fails doing so); plain bytes travel as they are.
        state = dict(self.__dict__)
        state["_main_rng"] = bytes(self._main_rng.get_state().numpy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rng = torch.Generator()
        rng.set_state(torch.frombuffer(bytearray(state["_main_rng"]), dtype=torch.uint8))
        self.__dict__.update(state, _main_rng=rng)

    def reseed(self, seed: int) -> None:
        """Reset the item-seed stream used when loading in the main process (num_workers=0)."""
        self._main_rng = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.samples) * (self.cfg.test_clips if self.mode == "test" else 1)

    # ------------------------------------------------------------------ helpers

    def _item_seed(self) -> int:
        # In a worker, torch's global RNG is seeded by the DataLoader (base_seed from its
        # generator + worker id): deterministic for a loader seed. In the main process a
        # dataset-owned generator is used instead of touching global state.
        gen = None if get_worker_info() is not None else self._main_rng
        return int(torch.randint(0, 2**62, (1,), generator=gen).item())

    def frame_indices(self, length: int, rng: random.Random | None = None, clip: int = 0) -> np.ndarray:
        """The frames this dataset samples from a video of ``length`` frames: a training
        draw from ``rng``, or test clip ``clip`` (of ``test_clips``) with ``rng`` None."""
        cfg = self.cfg
        if cfg.sampling == "segment":
            if rng is not None:
                return sampling.segment_train(length, cfg.num_frames, rng)
            return sampling.segment_test(length, cfg.num_frames, clip, cfg.test_clips)
        if rng is not None:
            return sampling.dense_train(length, cfg.num_frames, cfg.stride, rng, cfg.short_video)
        return sampling.dense_test(length, cfg.num_frames, cfg.stride, clip, cfg.test_clips, cfg.short_video)

    def _decode(self, path: str, rng: random.Random | None, clip: int) -> np.ndarray:
        if not self.cfg.decoded_cache_mb or path in self._too_large:
            video = open_video(path, self.cfg.decoder)
            return video.frames(self.frame_indices(len(video), rng, clip))
        frames = self._decoded.get(path)
        if frames is None:
            video = open_video(path, self.cfg.decoder)
            frames = video.frames(range(len(video)))
            self._remember(path, frames)
        else:
            self._decoded.move_to_end(path)
        return frames[self.frame_indices(len(frames), rng, clip)]

    def _remember(self, path: str, frames: np.ndarray) -> None:
        """Keep ``frames`` (a whole decoded video) within ``decoded_cache_mb``, least recently
        used out first; a video larger than the whole budget is not kept."""
        budget = self.cfg.decoded_cache_mb * 2**20
        if frames.nbytes > budget:
            self._too_large.add(path)  # from now on: the sampled frames only
            return
        while self._decoded and self._decoded_bytes + frames.nbytes > budget:
            _, old = self._decoded.popitem(last=False)
            self._decoded_bytes -= old.nbytes
        self._decoded[path] = frames
        self._decoded_bytes += frames.nbytes

    def _decode_with_replacement(self, video_index: int, rng: random.Random | None, clip: int
                                 ) -> tuple[int, np.ndarray, list[tuple[str, str]]]:
        """(index decoded, frames, [(path, reason)] of ``video_index``'s video if it was corrupt)."""
        failed: list[tuple[str, str]] = []
        n = len(self.samples)
        for k in range(min(self.cfg.max_replace_tries, n)):
            j = (video_index + k) % n
            path = self.samples[j][0]
            try:
                return j, self._decode(path, rng, clip), failed[:1]
            except CorruptVideo as err:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("corrupt video %s (%s); replaced by the next readable index "
                                "(not logged again by this process)", path, err.reason)
                failed.append((path, err.reason))
        raise RuntimeError(f"{len(failed)} consecutive corrupt videos from index {video_index}: {failed}")

    # ------------------------------------------------------------------ items

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.mode == "test":
            return self._test_item(index)
        seed = self._item_seed()
        rng = random.Random(seed)
        j, frames, replaced = self._decode_with_replacement(index, rng, 0)
        assert self.draw is not None
        height, width = frames.shape[1:3]
        params = [self.draw(height, width, rng.getrandbits(63)) for _ in range(self.cfg.num_sample)]
        label = self.samples[j][1]
        return {"frames": torch.from_numpy(np.ascontiguousarray(frames)), "params": params,
                "label": torch.full((self.cfg.num_sample,), label, dtype=torch.long), "index": index,
                "replaced": replaced}

    def _test_item(self, index: int) -> dict[str, Any]:
        video_index, clip = divmod(index, self.cfg.test_clips)
        j, frames, replaced = self._decode_with_replacement(video_index, None, clip)
        return {"frames": torch.from_numpy(np.ascontiguousarray(frames)), "label": self.samples[j][1],
                "video_index": j, "clip": clip, "replaced": replaced}


def unique_videos(replaced: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """One ``(path, reason)`` per corrupt video, sorted by path.

    Items report a corrupt video once per view (and per epoch); counts and reports are
    per video. Where one video failed with several reasons (e.g. different frames per
    view), the first reason in sorted order is kept, so the result is deterministic.
    """
    first: dict[str, str] = {}
    for path, reason in sorted((str(p), str(r)) for p, r in replaced):
        first.setdefault(path, reason)
    return list(first.items())


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch train or test items.

    Train: ``frames`` uint8 (B, T, H, W, 3), zero-padded to the batch's largest frame,
    ``sizes`` (B, 2) each video's own (H, W), ``params`` the B * num_sample clips' draws
    with the copies of one video adjacent, ``label`` and ``index`` (B * num_sample,).
    Test: ``frames`` and ``sizes`` as for training, ``label``, ``video_index``, ``clip`` (B,).
    Both: ``replaced``, all items' (path, error) lists joined.
    """
    replaced = [r for item in batch for r in item["replaced"]]
    sizes = torch.tensor([b["frames"].shape[1:3] for b in batch], dtype=torch.long)
    if "clip" in batch[0]:
        return {"frames": _pad_stack([b["frames"] for b in batch]), "sizes": sizes,
                "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
                "video_index": torch.tensor([b["video_index"] for b in batch], dtype=torch.long),
                "clip": torch.tensor([b["clip"] for b in batch], dtype=torch.long),
                "replaced": replaced}
    return {"frames": _pad_stack([b["frames"] for b in batch]), "sizes": sizes,
            "params": [p for b in batch for p in b["params"]],
            "label": torch.cat([b["label"] for b in batch]),
            "index": torch.cat([torch.full((len(b["label"]),), b["index"], dtype=torch.long) for b in batch]),
            "replaced": replaced}


def _pad_stack(frames: list[torch.Tensor]) -> torch.Tensor:
    """Stack (T, H, W, 3) frames of possibly different sizes, zero-padded at the bottom/right."""
    height = max(f.shape[1] for f in frames)
    width = max(f.shape[2] for f in frames)
    if all(f.shape[1:3] == (height, width) for f in frames):
        return torch.stack(frames)
    out = torch.zeros((len(frames), frames[0].shape[0], height, width, 3), dtype=frames[0].dtype)
    for i, f in enumerate(frames):
        out[i, :, :f.shape[1], :f.shape[2]] = f
    return out
