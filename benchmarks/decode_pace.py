"""Decoding pace for training: far's CPU decoder (decord, one process per loader worker)
against the GPU's decoder (NVDEC through PyNvVideoCodec, many streams at once). Issue 16.

On a GPU machine, from the repository root (PyAV, decord and PyNvVideoCodec importable):

    python3 benchmarks/decode_pace.py --out $OUT/decode

Two kinds of test file, written here with far's encoder (far.data.encode.write_video):

- ``h264``: K400-like, 340x256 H.264 .mp4, 300 frames at 30 fps (10 s), x264's default
  keyframe interval (250): a random 16-frame window decodes from the keyframe before it,
  like mmaction2's test clips with a long keyframe interval;
- ``vp9``: SSv2-like, 428x240 VP9 .webm, 48 frames at 12 fps.

The frames are a textured panorama panned across the frame plus per-pixel noise, so the
files carry a real clip's bitrate (far's synthetic datasets compress far better). Each
video is read once with the training sampler of its dataset (K400: 16 frames at stride 4
from a random start; SSv2: 16 segments) and the same indices are used on both decoders.

With ``--loader``, far's own training DataLoader over the VP9 files is timed as well, with
``data.decoder`` cpu (decord in forked workers) and nvdec (far.data.nvdec in spawned
workers): videos/s that W workers hand to the training step.

Reported per kind: CPU milliseconds per video in one process and videos/s with W worker
processes (what W DataLoader workers can feed); NVDEC videos/s with K decoding threads
(one SimpleDecoder each, reconfigured per file, RGB frames left on the GPU), and how far
NVDEC's RGB frames are from decord's (colour conversion differs slightly).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import random
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

KINDS = {
    # kind: (suffix, codec, (H, W), frames, fps)
    "h264": (".mp4", "libx264", (256, 340), 300, 30),
    "vp9": (".webm", "libvpx-vp9", (240, 428), 48, 12),
}


def frames_of(seed: int, hw: tuple[int, int], n: int) -> np.ndarray:
    """(n, H, W, 3) uint8: a smooth random panorama panned at a random speed, plus noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    pano_w = w + 4 * n + 8
    coarse = rng.integers(0, 256, size=(h // 8 + 2, pano_w // 8 + 2, 3)).astype(np.float32)
    pano = np.kron(coarse, np.ones((8, 8, 1), np.float32))[:h, :pano_w]
    pano += rng.normal(0, 20, size=pano.shape).astype(np.float32)  # fine texture
    speed = rng.uniform(1.0, 4.0)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        x0 = int(t * speed)
        frame = pano[:, x0:x0 + w] + rng.normal(0, 4, size=(h, w, 3)).astype(np.float32)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _write(job: tuple[str, str, int]) -> str:
    from far.data.encode import write_video

    path, kind, seed = job
    _, codec, hw, n, fps = KINDS[kind]
    write_video(path, frames_of(seed, hw, n), fps=fps, codec=codec)
    return path


def make_videos(root: Path, kind: str, count: int, procs: int) -> list[str]:
    """``count`` test files of ``kind`` under ``root`` (made once, reused)."""
    suffix = KINDS[kind][0]
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root / f"{kind}_{i:04d}{suffix}"), kind, 1000 * (kind == "vp9") + i) for i in range(count)]
    todo = [j for j in jobs if not Path(j[0]).exists()]
    if todo:
        with mp.get_context("spawn").Pool(procs) as pool:
            pool.map(_write, todo)
    return [j[0] for j in jobs]


def indices_for(kind: str, length: int, seed: int) -> list[int]:
    """The training sampler's 16 frame indices (far.data.sampling)."""
    from far.data.sampling import dense_train, segment_train

    rng = random.Random(seed)
    if kind == "h264":
        return [int(i) for i in dense_train(length, 16, 4, rng)]
    return [int(i) for i in segment_train(length, 16, rng)]


def _cpu_read(job: tuple[str, str, int]) -> float:
    """Seconds to open ``path`` with far's decoder and read the sampled frames."""
    import av  # noqa: F401  (before decord: far/data/video.py)

    from far.data.video import Video

    path, kind, seed = job
    t0 = time.perf_counter()
    video = Video(path, check_truncation=False)
    frames = video.frames(indices_for(kind, len(video), seed))
    assert frames.shape[0] == 16
    return time.perf_counter() - t0


def cpu_pace(paths: list[str], kind: str, workers: list[int]) -> dict[str, Any]:
    jobs = [(p, kind, i) for i, p in enumerate(paths)]
    one = [_cpu_read(j) for j in jobs[: min(40, len(jobs))]]
    out: dict[str, Any] = {"ms_per_video_one_process": 1e3 * statistics.median(one)}
    for w in workers:
        ctx = mp.get_context("fork")
        with ctx.Pool(w) as pool:
            pool.map(_cpu_read, jobs[:w])  # start-up and imports
            t0 = time.perf_counter()
            pool.map(_cpu_read, jobs, chunksize=1)
            out[f"videos_per_s_{w}_workers"] = len(jobs) / (time.perf_counter() - t0)
    return out


def nvdec_pace(paths: list[str], kind: str, threads: list[int], repeats: int = 1) -> dict[str, Any]:
    import PyNvVideoCodec as nvc
    import torch

    out: dict[str, Any] = {}
    for k in threads:
        decoders: list[Any] = [None] * k
        lock = threading.Lock()
        counter = iter(range(len(paths) * repeats))
        times: list[float] = []

        def worker(slot: int) -> None:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                path = paths[i % len(paths)]
                t0 = time.perf_counter()
                if decoders[slot] is None:
                    decoders[slot] = nvc.SimpleDecoder(path, gpu_id=0, use_device_memory=True,
                                                      output_color_type=nvc.OutputColorType.RGB)
                else:
                    decoders[slot].reconfigure_decoder(path)
                dec = decoders[slot]
                frames = dec.get_batch_frames_by_index(indices_for(kind, len(dec), i % len(paths)))
                clip = torch.stack([torch.from_dlpack(f) for f in frames])  # (16, H, W, 3) uint8, GPU
                assert clip.shape[0] == 16
                times.append(time.perf_counter() - t0)

        # warm-up: one pass of k files (decoder sessions, CUDA context)
        warm = iter(range(k))
        with ThreadPoolExecutor(k) as pool:
            saved, counter = counter, warm
            list(pool.map(worker, range(k)))
            counter, times = saved, []
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            list(pool.map(worker, range(k)))
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        out[f"videos_per_s_{k}_threads"] = len(paths) * repeats / wall
        out[f"ms_per_video_{k}_threads_median"] = 1e3 * statistics.median(times)
    return out


def reference_frames(paths: list[str], kind: str, n: int = 4) -> list[np.ndarray]:
    """decord's sampled frames of the first ``n`` files (for :func:`agreement`)."""
    import av  # noqa: F401  (before decord: far/data/video.py)

    from far.data.video import Video

    out = []
    for i, path in enumerate(paths[:n]):
        ref = Video(path, check_truncation=False)
        out.append(ref.frames(indices_for(kind, len(ref), i)))
    return out


def agreement(paths: list[str], kind: str, refs: list[np.ndarray]) -> dict[str, float]:
    """Mean and max |NVDEC - decord| over the sampled frames of the files of ``refs``, NVDEC's
    frames as far's reader (far.data.nvdec) hands them to training."""
    from far.data.nvdec import NvdecVideo

    diffs, peaks = [], []
    for i, (path, ref) in enumerate(zip(paths, refs)):
        video = NvdecVideo(path)
        got = video.frames(indices_for(kind, len(video), i))
        if got.shape != ref.shape:
            return {"shape_mismatch": 1.0}
        d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        diffs.append(float(d.mean()))
        peaks.append(float(d.max()))
    return {"mean_abs_diff": statistics.mean(diffs), "max_abs_diff": max(peaks)}


def _cpu_phase(paths: list[str], kind: str, workers: list[int]) -> tuple[dict[str, Any], list[np.ndarray]]:
    return cpu_pace(paths, kind, workers), reference_frames(paths, kind)


def _nvdec_phase(paths: list[str], kind: str, threads: list[int], refs: list[np.ndarray]) -> dict[str, Any]:
    return {"pace": nvdec_pace(paths, kind, threads), "agreement": agreement(paths, kind, refs)}


def loader_pace(paths: list[str], decoder: str, workers: int, batch: int = 24, epochs: int = 2) -> float:
    """Videos/s of far's training DataLoader (SSv2 recipe's sampling and clip draws, 2
    copies a video; no augmentation, which runs on the GPU afterwards) with ``decoder``,
    over ``epochs`` epochs after a first one that starts the workers."""
    from far.data.config import DataConfig
    from far.data.dataset import VideoDataset
    from far.data.loader import build_loader

    cfg = DataConfig.preset("ssv2", num_classes=1, decoder=decoder)
    loader = build_loader(VideoDataset(cfg, "train", samples=[(p, 0) for p in paths]), batch, train=True, seed=0,
                          num_workers=workers, pin_memory=True)
    for _ in loader:  # workers started, CUDA contexts made
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in loader:
            n += b["frames"].shape[0]
    return n / (time.perf_counter() - t0)


def _loader_phase(paths: list[str], decoder: str, workers: list[int]) -> dict[str, float]:
    return {f"videos_per_s_{w}_workers": loader_pace(paths, decoder, w) for w in workers}


def in_fresh_process(fn, *args):  # noqa: ANN001, ANN201
    """``fn(*args)`` in a spawned process: decord's and PyAV's bundled FFmpeg must not share a
    process with PyNvVideoCodec's (loaded together, the NVDEC decoder crashed on the H200)."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:  # not daemonic: may fork
        return pool.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for decode_pace.json")
    p.add_argument("--videos-dir", help="folder for the test files (default: OUT/videos)")
    p.add_argument("--videos", type=int, default=240, help="test files per kind")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--workers", type=int, nargs="+", default=[8, 14], help="CPU decoding processes")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 4, 8, 16, 32], help="NVDEC decoding threads")
    p.add_argument("--no-nvdec", action="store_true")
    p.add_argument("--loader", action="store_true",
                   help="also far's training DataLoader with data.decoder cpu and nvdec (VP9 files)")
    args = p.parse_args(argv)
    out = Path(args.out)
    result: dict[str, Any] = {"date": date.today().isoformat(), "host": platform.node(),
                              "cpus": mp.cpu_count(), "kinds": {}}
    for kind in args.kinds:
        t0 = time.perf_counter()
        paths = make_videos(Path(args.videos_dir) if args.videos_dir else out / "videos", kind, args.videos, mp.cpu_count())
        sizes = [Path(q).stat().st_size for q in paths]
        row: dict[str, Any] = {"files": len(paths), "mean_kib": statistics.mean(sizes) / 1024,
                               "encode_s": time.perf_counter() - t0}
        print(f"[{kind}] {len(paths)} files, mean {row['mean_kib']:.0f} KiB", flush=True)
        row["cpu"], refs = in_fresh_process(_cpu_phase, paths, kind, args.workers)
        print(f"[{kind}] cpu {row['cpu']}", flush=True)
        if not args.no_nvdec:
            nv = in_fresh_process(_nvdec_phase, paths, kind, args.threads, refs)
            row["nvdec"], row["agreement"] = nv["pace"], nv["agreement"]
            print(f"[{kind}] nvdec {row['nvdec']}", flush=True)
            print(f"[{kind}] agreement {row['agreement']}", flush=True)
        if args.loader and kind == "vp9":
            row["loader"] = {"cpu": in_fresh_process(_loader_phase, paths, "cpu", args.workers)}
            if not args.no_nvdec:
                row["loader"]["nvdec"] = in_fresh_process(_loader_phase, paths, "nvdec", args.workers)
            print(f"[{kind}] loader {row['loader']}", flush=True)
        result["kinds"][kind] = row
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_pace.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
