"""``data.decoder: nvdec`` (far.data.nvdec): the plumbing on the CPU with a stand-in for
PyNvVideoCodec that decodes with decord, the real decoder on a GPU (``-m gpu``)."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import torch

from far.config import ConfigError
from far.data import nvdec
from far.data.config import DataConfig
from far.data.dataset import VideoDataset
from far.data.encode import write_video
from far.data.loader import build_loader
from far.data.prepare import prepare
from far.data.synth import SynthSpec, generate
from far.data.video import CorruptVideo, Video, open_video

SPEC = SynthSpec(kind="ssv2", classes=2, videos_per_class_train=2, videos_per_class_val=1,
                 height=48, width=64, frames=24, fps=12, seed=3)


@pytest.fixture(scope="module")
def ssv2(tmp_path_factory):
    raw = tmp_path_factory.mktemp("nvdec_raw")
    generate(SPEC, raw, progress=False)
    out = tmp_path_factory.mktemp("nvdec_lists")
    report = prepare("ssv2", raw, out, progress=False)
    return DataConfig.preset("ssv2", train_list=str(out / "train.csv"), val_list=str(out / "val.csv"),
                             root=report["video_root"], num_classes=2, num_frames=8, input_size=32, short_side=32)


class FakeDecoder:
    """PyNvVideoCodec.SimpleDecoder's interface, decoding with decord; records its calls."""

    created = 0
    reconfigured = 0

    def __init__(self, path, gpu_id=0, use_device_memory=True, output_color_type=None):
        FakeDecoder.created += 1
        self._open(path)

    def _open(self, path):
        try:
            self.video = Video(path)
        except CorruptVideo as err:
            raise RuntimeError(f"Failed to open {path}") from err

    def reconfigure_decoder(self, path):
        FakeDecoder.reconfigured += 1
        self._open(path)

    def __len__(self):
        return len(self.video)

    def get_batch_frames_by_index(self, indices):
        assert list(indices) == sorted(set(indices))  # NvdecVideo asks for each frame once, in order
        return [np.ascontiguousarray(f) for f in self.video.frames(indices)]  # numpy has __dlpack__


@pytest.fixture
def fake_nvc(monkeypatch):
    module = types.ModuleType("PyNvVideoCodec")
    module.SimpleDecoder = FakeDecoder
    module.OutputColorType = types.SimpleNamespace(RGB="rgb")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(nvdec, "_SESSION", {})
    FakeDecoder.created = FakeDecoder.reconfigured = 0
    return module


def videos(cfg: DataConfig) -> list[str]:
    return [str(Path(cfg.root) / line.split()[0]) for line in Path(cfg.train_list).read_text().splitlines()]


def test_nvdec_video_reads_the_asked_frames_with_one_session(ssv2, fake_nvc):
    paths = videos(ssv2)
    for path in paths:
        idx = [5, 0, 5, 23, 7]  # any order, repeats
        assert np.array_equal(open_video(path, "nvdec").frames(idx), Video(path).frames(idx))
    assert (FakeDecoder.created, FakeDecoder.reconfigured) == (1, len(paths) - 1)
    with pytest.raises(IndexError, match="out of range"):
        open_video(paths[0], "nvdec").frames([24])


def test_a_corrupt_file_is_reported_by_name_and_the_next_one_decodes(ssv2, fake_nvc, tmp_path):
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1aE\xdf\xa3" + bytes(4000))
    with pytest.raises(CorruptVideo) as err:
        open_video(bad, "nvdec")
    assert err.value.path == str(bad) and "NVDEC" in err.value.reason
    good = videos(ssv2)[0]
    assert np.array_equal(open_video(good, "nvdec").frames([1, 2]), Video(good).frames([1, 2]))


def test_dataset_items_are_the_cpu_decoders(ssv2, fake_nvc):
    cpu = VideoDataset(ssv2, "train")
    gpu = VideoDataset(dataclasses.replace(ssv2, decoder="nvdec"), "train")
    for i in range(len(cpu)):
        a, b = cpu[i], gpu[i]
        assert torch.equal(a["frames"], b["frames"]) and a["params"] == b["params"]
    pickle.dumps(gpu)  # spawned workers receive the dataset pickled


def test_nvdec_is_refused_before_work_where_it_cannot_run(ssv2, monkeypatch):
    cfg = dataclasses.replace(ssv2, decoder="nvdec")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # not installed
    with pytest.raises(ConfigError, match="decoder.*PyNvVideoCodec"):
        VideoDataset(cfg, "train")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", types.ModuleType("PyNvVideoCodec"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="decoder.*CUDA"):
        VideoDataset(cfg, "train")
    with pytest.raises(ConfigError, match="decoder.*'gpu' is not one of cpu, nvdec"):
        DataConfig.preset("ssv2", decoder="gpu")


def test_nvdec_workers_are_spawned_not_forked(ssv2, fake_nvc):
    gpu = VideoDataset(dataclasses.replace(ssv2, decoder="nvdec"), "train")
    loader = build_loader(gpu, 2, train=True, seed=0, num_workers=1)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    cpu = build_loader(VideoDataset(ssv2, "train"), 2, train=True, seed=0, num_workers=1)
    assert cpu.multiprocessing_context is None


def test_spawned_workers_give_the_forked_workers_batches(ssv2):
    """A dataset crosses into spawned workers (how nvdec's start) intact: the same batches as
    forked workers. (The generator's state tensor once failed to move to shared memory on
    the way, on the H200 and here.)"""
    from torch.utils.data import DataLoader

    from far.data.dataset import collate

    ds = VideoDataset(ssv2, "train")
    batches = {}
    for ctx in ("fork", "spawn"):
        loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate, multiprocessing_context=ctx,
                            generator=torch.Generator().manual_seed(0))
        batches[ctx] = list(loader)
    for a, b in zip(batches["fork"], batches["spawn"], strict=True):
        assert torch.equal(a["frames"], b["frames"]) and a["params"] == b["params"]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._item_seed() == ds._item_seed()


def _nvdec_frames(path: str, idx: list[int]) -> np.ndarray:
    return open_video(path, "nvdec").frames(idx)


@pytest.mark.gpu
def test_nvdec_frames_match_decord_within_two_levels(tmp_path):
    """The real decoder on a VP9 and an H.264 file: the same frames as decord up to NVDEC's
    RGB rounding (measured: mean 0.64, max 2 levels). NVDEC runs in a fresh process, as in
    a spawned loader worker (decord is loaded in this one)."""
    pytest.importorskip("PyNvVideoCodec")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 144, 192, 3)).astype(np.float32)  # NVDEC's VP9 needs >= 128 rows
    frames = [np.clip(np.roll(base[0], 3 * t, axis=1) + rng.normal(0, 3, base.shape[1:]), 0, 255).astype(np.uint8)
              for t in range(40)]
    idx = [0, 7, 7, 39, 20, 3]
    for name, codec in (("v.webm", "libvpx-vp9"), ("v.mp4", "libx264")):
        path = str(write_video(tmp_path / name, frames, 12, codec))
        ref = Video(path).frames(idx).astype(int)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            got = pool.submit(_nvdec_frames, path, idx).result().astype(int)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 2 and np.abs(got - ref).mean() < 1.0, name
