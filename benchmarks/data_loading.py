"""Throughput of far.data's loading: decode only the sampled frames (decord ``get_batch``)
versus a naive loader that decodes every frame and then indexes.

Three measurements, all on this machine's CPU:

1. decode: open a 300-frame 240x320 clip (H.264 .mp4 and VP9 .webm) and read 16 frames
   (SSv2 segment test view; K400 dense test view) -- sampled vs. full decode.
2. pipeline (one process = one DataLoader worker): a training item (decode + crop +
   RandAugment + erasing at 224 px, num_sample 1) and a test view (decode + resize +
   crop) on those clips -- sampled vs. naive.
3. loader: the training DataLoader over the default synthetic datasets
   (`far data synth --kind ssv2|k400` defaults, prepared), with 0 and 2 workers.

Usage: ``python benchmarks/data_loading.py [--out results.json] [--repeats N]``.
Prints a table and writes JSON (with the machine) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import av  # noqa: F401  (before decord: far/data/video.py explains the shared libvpx)
import numpy as np
import torch

from far.data.config import DataConfig
from far.data.dataset import VideoDataset
from far.data.encode import write_video
from far.data.loader import build_loader
from far.data.prepare import prepare
from far.data.synth import SynthSpec, generate, render_k400
from far.data.video import Video


class NaiveVideoDataset(VideoDataset):
    """The same dataset, but every frame is decoded and the sampled ones are picked afterwards."""

    def _decode(self, path: str, rng: Any, clip: int) -> np.ndarray:
        video = Video(path)
        everything = video.frames(range(len(video)))
        return everything[self.frame_indices(len(video), rng, clip)]


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and min seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"median_ms": 1e3 * med, "min_ms": 1e3 * min(times), "clips_per_s": 1.0 / med, "repeats": repeats}


def machine() -> dict[str, Any]:
    """CPU model, cores and library versions, for the record."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import decord

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "decord": decord.__version__, "av": av.__version__, "platform": platform.platform()}


def make_clips(folder: Path) -> dict[str, Path]:
    """A 300-frame 240x320 clip, written once as H.264 .mp4 and once as VP9 .webm."""
    frames = render_k400(np.random.default_rng(0), 0, 300, 240, 320)
    return {"h264": write_video(folder / "clip.mp4", frames, 30, "libx264"),
            "vp9": write_video(folder / "clip.webm", frames, 30, "libvpx-vp9")}


def bench_decode(clips: dict[str, Path], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for codec, path in clips.items():
        length = len(Video(path))
        for pattern, cfg in (("segment test view", DataConfig.preset("ssv2")), ("dense test view", DataConfig.preset("k400"))):
            ds = VideoDataset(cfg, "test", samples=[(str(path), 0)])
            idx = ds.frame_indices(length, None, 0)
            sampled = timed(lambda: Video(path).frames(idx), repeats)
            naive = timed(lambda: Video(path).frames(range(length))[idx], max(2, repeats // 3))
            rows.append({"bench": "decode", "codec": codec, "what": f"open + 16 frames ({pattern})",
                         "sampled": sampled, "naive": naive})
    return rows


def bench_pipeline(clips: dict[str, Path], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for codec, path in clips.items():
        for dataset in ("ssv2", "k400"):
            for mode in ("train", "test"):
                cfg = DataConfig.preset(dataset, num_classes=1, num_sample=1)
                fast = VideoDataset(cfg, mode, samples=[(str(path), 0)])
                slow = NaiveVideoDataset(cfg, mode, samples=[(str(path), 0)])
                # Test views: item 0 only, and the decode cache off, so each call decodes.
                get = (lambda ds: (setattr(ds, "_cache", None), ds[0])) if mode == "test" else (lambda ds: ds[0])
                sampled = timed(lambda: get(fast), repeats)
                naive = timed(lambda: get(slow), max(2, repeats // 3))
                what = f"{dataset} {'train item' if mode == 'train' else 'test clip'} (decode; augmentation on the device)"
                rows.append({"bench": "pipeline", "codec": codec, "what": what, "sampled": sampled, "naive": naive})
    return rows


def bench_loader(folder: Path, batches: int) -> list[dict[str, Any]]:
    rows = []
    for kind in ("ssv2", "k400"):
        raw, lists = folder / f"{kind}_raw", folder / f"{kind}_lists"
        t0 = time.perf_counter()
        generate(SynthSpec(kind=kind), raw, progress=False)
        synth_s = time.perf_counter() - t0
        report = prepare(kind, raw, lists, progress=False)
        cfg = DataConfig.preset(kind, train_list=str(lists / "train.csv"), root=report["video_root"],
                                num_classes=report["num_classes"])
        for workers in (0, 2):
            loader = build_loader(VideoDataset(cfg, "train"), 4, train=True, seed=0, num_workers=workers)
            it = iter(loader)
            next(it)  # workers started, first batch out
            t0 = time.perf_counter()
            clips = 0
            for _ in range(batches):
                clips += len(next(it)["params"])  # decoded videos x copies (augmented on the device)
            seconds = time.perf_counter() - t0
            rows.append({"bench": "loader", "codec": "vp9" if kind == "ssv2" else "h264",
                         "what": f"synthetic-{kind} train loader, batch 4 x num_sample 2, {workers} workers",
                         "clips_per_s": clips / seconds, "clips": clips, "seconds": seconds,
                         "synth_seconds": synth_s})
            del it, loader
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'bench':9} {'codec':5} {'what':58} {'sampled ms':>10} {'clips/s':>8} {'naive ms':>9} {'clips/s':>8} {'speed-up':>8}"]
    for r in rows:
        if r["bench"] == "loader":
            lines.append(f"{r['bench']:9} {r['codec']:5} {r['what']:58} {'':>10} {r['clips_per_s']:8.1f}")
            continue
        s, n = r["sampled"], r["naive"]
        lines.append(f"{r['bench']:9} {r['codec']:5} {r['what']:58} {s['median_ms']:10.1f} {s['clips_per_s']:8.2f} "
                     f"{n['median_ms']:9.1f} {n['clips_per_s']:8.2f} {n['median_ms'] / s['median_ms']:7.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/data_loading.json")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--loader-batches", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker's view: no intra-op parallelism
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = make_clips(folder)
        rows = bench_decode(clips, args.repeats) + bench_pipeline(clips, args.repeats) + bench_loader(
            folder, args.loader_batches)
    result = {"date": date.today().isoformat(), "machine": machine(), "repeats": args.repeats, "rows": rows}
    print(table(rows))
    print(json.dumps(result["machine"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
