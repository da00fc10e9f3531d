"""The pace of the real ``far train`` on a GPU against ``far bench``'s step for the same
model and batch: is training fed at the GPU's pace?

For each backbone x variant x compile setting it runs ``far train`` (the CLI, in a
subprocess, exactly as the workflow does) on synthetic SSv2-like 240x428 VP9 videos with
the paper's SSv2 recipe (RandAugment m9-n4-mstd0.5, random resized crop, erasing 0.25,
repeated augmentation 2, Mixup/CutMix, bf16, ZeRO 0) and reports:

- steady clips/s: the median of the pace over the progress lines (``far.engine.runtime``
  logs the pace since its previous line) after the first third of the steps and after
  step 35 (compilation, worker start-up, the allocator's warm-up and the profiled steps
  come before);
- the share of time the training loop waited for the loader (the same lines);
- the GPU's busy share: ``nvidia-smi``'s utilisation (time with a kernel running) sampled
  every 100 ms over the same steady window;
- a torch.profiler record of steps 20-24 (``far train --profile``: ``<out>/<row>/profile``),
  summarised: the GPU's busy share in the trace, device time and span per step, host
  synchronisations and host-to-device copies per step;
- ``far bench``'s step (far.bench.timing.TrainStep: random clips, forward + backward +
  AdamW, bf16 autocast) at the same batch, compiled and eager.

It also measures, on one CPU thread, what a loader worker spends per video (decoding the
sampled frames alone, and the whole train item: decode + parameter draws) and the old
per-clip CPU augmentation (far.data.reference_augment) for comparison, and the batched
augmentation of one batch on the GPU alone.

    python benchmarks/train_pace.py --out bench-out/train_pace [--backbones vit_b,vit_s]
        [--variants far] [--compile on,off] [--compile-mode reduce-overhead] [--micro 24]
        [--workers 14] [--decoder nvdec] [--steps 150]

Results: benchmarks/results/train_pace.md (device, date and commands there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from far.engine.runtime import PACE_PATTERN  # noqa: E402

NUM_FRAMES, SIZE = 16, 224
PROFILED_UNTIL = 25  # far train --profile records optimizer steps 20-24


# ---- data ----------------------------------------------------------------------------------------
def make_data(folder: Path, classes: int, per_class: int, size: str, frames: int, workers: int, repeat: int
              ) -> dict[str, Any]:
    """Synthetic SSv2-like videos and their lists; the train list repeats them ``repeat`` times
    (so that one epoch has enough steps without encoding thousands of videos)."""
    far = [sys.executable, "-m", "far.cli", "data"]
    raw, prep = folder / "raw", folder / "prep"
    if not (prep / "report.json").is_file():
        t0 = time.perf_counter()
        subprocess.run(far + ["synth", "--kind", "ssv2", "--out", str(raw), "--classes", str(classes),
                              "--videos-per-class-train", str(per_class), "--videos-per-class-val", "1",
                              "--size", size, "--frames", str(frames), "--workers", str(workers), "--quiet"],
                       check=True)
        subprocess.run(far + ["prepare", "--dataset", "ssv2", "--root", str(raw), "--out", str(prep),
                              "--workers", str(workers), "--quiet"], check=True)
        print(f"data: {time.perf_counter() - t0:.0f} s", flush=True)
    report = json.loads((prep / "report.json").read_text())
    lines = (prep / "train.csv").read_text().splitlines()
    (folder / "train_repeated.csv").write_text("\n".join(lines * repeat) + "\n")
    return {"train_list": str(folder / "train_repeated.csv"), "val_list": str(prep / "val.csv"),
            "root": report["video_root"], "num_classes": report["num_classes"], "videos": len(lines)}


def run_config(data: dict[str, Any], backbone: str, variant: str, micro: int, workers: int, steps: int,
               compile_on: bool, compile_mode: str | None = None, decoder: str = "cpu") -> dict[str, Any]:
    """The paper's SSv2 fine-tuning recipe (Table 1) for one GPU, ``steps`` steps, no tracking."""
    return {
        "seed": 0,
        "model": {"backbone": backbone, "variant": variant, "num_classes": data["num_classes"],
                  "num_frames": NUM_FRAMES, "img_size": SIZE},
        "data": {"dataset": "ssv2", "train_list": data["train_list"], "val_list": data["val_list"],
                 "root": data["root"], "num_classes": data["num_classes"], "num_frames": NUM_FRAMES,
                 "input_size": SIZE, "short_side": SIZE, "num_sample": 2, "decoder": decoder},
        "optim": {"epochs": 1, "warmup_epochs": 0.1, "base_lr": 5e-4,
                  "layer_decay": 0.75 if backbone == "vit_b" else 0.7},
        "batch": {"derive": "accumulation", "total": micro, "micro": micro, "num_workers": workers,
                  "eval_micro": 48},
        "deepspeed": {"zero_stage": 0, "precision": "auto"},
        "compile": {"enabled": bool(compile_on), "mode": compile_mode},
        "test": {"run_at_end": False, "val_max_videos": 8},
        "tracking": {"enabled": False},
        "log": {"every_steps": 10, "progress_bar": "off"},
    }


# ---- one far train run ---------------------------------------------------------------------------
class GpuSampler:
    """``nvidia-smi`` utilisation every 100 ms, with arrival times."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, text=True)
        except FileNotFoundError:  # no NVIDIA driver tools: no busy share
            self.proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip().split(",")[0])))
            except ValueError:
                pass

    def between(self, t0: float, t1: float) -> float | None:
        vals = [u for t, u in self.samples if t0 <= t <= t1]
        return statistics.mean(vals) / 100 if vals else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


def train_once(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run far train on ``cfg``; the steady pace, loader wait and GPU busy share."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    sampler = GpuSampler()
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "far.cli", "train", "--config", str(cfg_path), "--out",
                             str(out / "run"), "--no-resume", "--profile", str(out / "profile")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.perf_counter(), line.rstrip()))
    code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop()
    (out / "train.log").write_text("\n".join(line for _, line in lines) + "\n")
    if code != 0:
        raise RuntimeError(f"far train failed ({code}); see {out / 'train.log'}:\n" +
                           "\n".join(line for _, line in lines[-30:]))
    pace = [(t, int(m[1]), int(m[2]), float(m[3]), float(m[4]) / 100) for t, line in lines
            if (m := re.search(PACE_PATTERN, line))]
    total = pace[-1][2]
    # Steady: after the first third, and after the profiled steps 20-24 and their export.
    warm = max(total / 3, PROFILED_UNTIL + 10)
    steady = [p for p in pace if p[1] > warm]
    first_t = max((t for t, step, *_ in pace if step <= warm), default=t0)
    return {
        "profile": trace_summary(out / "profile"),
        "steps": total,
        "clips_per_s": statistics.median(p[3] for p in steady),
        "data_wait_share": statistics.mean(p[4] for p in steady),
        "gpu_busy_share": sampler.between(first_t, steady[-1][0]),
        "first_third_s": first_t - t0,
        "wall_s": wall,
        "pace_lines": [{"step": p[1], "clips_per_s": p[3], "data_wait_share": p[4]} for p in pace],
    }


def trace_summary(folder: Path, steps: int = 5) -> dict[str, Any] | None:
    """From ``far train --profile``'s trace of ``steps`` steps: the GPU's busy share (the
    union of kernel, memcpy and memset intervals over the span from the first to the last
    device event), device time and span per step, and host synchronisations per step."""
    path = folder / "trace.json"
    if not path.is_file():
        return None
    events = json.loads(path.read_text()).get("traceEvents", [])
    intervals = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                       if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    if not intervals:
        return None
    busy, cur_start, cur_end = 0.0, *intervals[0]
    for start, end in intervals[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    span = max(e for _, e in intervals) - intervals[0][0]
    names = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "Memcpy HtoD (Pageable -> Device)",
             "Memcpy HtoD (Pinned -> Device)")
    count = {n: sum(e.get("name") == n for e in events if e.get("ph") == "X") / steps for n in names}
    return {"busy_share": busy / span, "device_busy_ms_per_step": busy / 1000 / steps,
            "span_ms_per_step": span / 1000 / steps, "per_step": count}


# ---- far bench's step at the same batch ----------------------------------------------------------
# far train's model.variant -> far bench's case (far train's baseline is the bench's global attention)
BENCH_CASE = {"baseline": "global", "far": "far"}


def bench_step(backbone: str, variant: str, batch: int, compiled: bool) -> dict[str, Any]:
    """``far bench``'s step for far train's ``variant`` at ``batch`` clips (15 timed steps)."""
    from far.bench.cases import case_config
    from far.bench.timing import TrainStep, time_step

    step = TrainStep(case_config(backbone, BENCH_CASE[variant]), batch,
                     compile_mode="default" if compiled else None)
    try:
        t = time_step(step, steps=15, warmup=5 if compiled else 3)
    finally:
        step.close()
    return {"step_ms": t["step_ms"], "clips_per_s": batch / t["step_ms"] * 1000}


# ---- CPU cost per video, GPU augmentation alone --------------------------------------------------
def worker_costs(data: dict[str, Any], n: int = 24) -> dict[str, Any]:
    """One thread: decode alone, the train item (decode + draws), and the old CPU path."""
    import random

    import torch

    from far.data.config import DataConfig
    from far.data.dataset import VideoDataset, read_list
    from far.data.reference_augment import TrainTransform
    from far.data.video import Video

    torch.set_num_threads(1)
    cfg = DataConfig.preset("ssv2", train_list=data["train_list"], root=data["root"],
                            num_classes=data["num_classes"])
    ds = VideoDataset(cfg, "train")
    samples = read_list(data["train_list"], data["root"])[:n]
    ref = TrainTransform(cfg)

    def timed(fn) -> float:
        fn(0), fn(1)  # warm: imports, first opens
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - t) / n * 1000

    def decode_only(i: int) -> None:
        video = Video(samples[i][0])
        video.frames(ds.frame_indices(len(video), random.Random(i), 0))

    decode = timed(decode_only)
    item = timed(lambda i: ds[i])
    frames = [ds[i]["frames"].numpy() for i in range(4)]
    old = timed(lambda i: [ref(frames[i % 4], i * 2 + k) for k in range(2)])
    return {"decode_ms": decode, "train_item_ms": item, "item_over_decode": item / decode,
            "old_cpu_augment_ms_per_video_2_copies": old}


def gpu_augment_ms(data: dict[str, Any], videos: int = 24) -> dict[str, Any]:
    import torch

    from far.data.batch_augment import ClipAugment
    from far.data.config import DataConfig
    from far.data.dataset import VideoDataset, collate

    cfg = DataConfig.preset("ssv2", train_list=data["train_list"], root=data["root"],
                            num_classes=data["num_classes"], num_sample=2)
    ds = VideoDataset(cfg, "train")
    batch = collate([ds[i] for i in range(videos)])
    batch["frames"] = batch["frames"].pin_memory()
    aug = ClipAugment(cfg)
    for _ in range(3):
        aug(batch, "cuda")
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t = time.perf_counter()
        start.record()
        aug(batch, "cuda")
        end.record()
        host = time.perf_counter() - t
        end.synchronize()
        times.append((start.elapsed_time(end), host * 1000))
    return {"videos": videos, "clips": videos * 2, "gpu_ms": statistics.median(t[0] for t in times),
            "host_launch_ms": statistics.median(t[1] for t in times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/train_pace")
    p.add_argument("--backbones", default="vit_b")
    p.add_argument("--variants", default="far")
    p.add_argument("--compile", default="on", help="on, off or on,off")
    p.add_argument("--compile-mode", default=None,
                   help="far train's compile.mode (torch.compile's mode, e.g. reduce-overhead: CUDA graphs); "
                        "far bench's step stays at the default mode")
    p.add_argument("--micro", type=int, default=24, help="videos per step (x 2 repeated-augmentation copies)")
    p.add_argument("--workers", type=int, default=14)
    p.add_argument("--decoder", default="cpu", choices=["cpu", "nvdec"],
                   help="far train's data.decoder (nvdec: the GPU's video decoder, far.data.nvdec)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", default="240x428")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--no-bench", action="store_true", help="skip far bench's step")
    p.add_argument("--no-costs", action="store_true", help="skip the per-video CPU and GPU augmentation costs")
    args = p.parse_args(argv)
    for variant in args.variants.split(","):
        if variant not in BENCH_CASE:
            p.error(f"--variants: {variant!r} is not one of {', '.join(BENCH_CASE)} (far train's model.variant)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    videos = args.classes * args.per_class
    data = make_data(out / "data", args.classes, args.per_class, args.size, args.frames, os.cpu_count() or 4,
                     repeat=-(-args.steps * args.micro // videos))
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv, "data": data, "rows": []}
    try:
        import torch

        result["device"] = torch.cuda.get_device_name(0)
        result["torch"] = torch.__version__
    except Exception as err:  # noqa: BLE001
        result["device"] = f"unknown ({err})"
    result["cpu_count"] = os.cpu_count()
    if not args.no_costs:
        result["worker_costs"] = worker_costs(data)
        import torch

        if torch.cuda.is_available():
            result["gpu_augment"] = gpu_augment_ms(data, args.micro)
        print(json.dumps({k: result.get(k) for k in ("worker_costs", "gpu_augment")}), flush=True)
    for backbone in args.backbones.split(","):
        for variant in args.variants.split(","):
            for compile_on in (c == "on" for c in args.compile.split(",")):
                mode = args.compile_mode if compile_on else None
                name = (f"{backbone}-{variant}-{'compiled' if compile_on else 'eager'}" + (f"-{mode}" if mode else "")
                        + ("-nvdec" if args.decoder == "nvdec" else ""))
                cfg = run_config(data, backbone, variant, args.micro, args.workers, args.steps, compile_on, mode,
                                 args.decoder)
                row = {"backbone": backbone, "variant": variant, "compiled": compile_on, "compile_mode": mode,
                       "clips_per_step": args.micro * 2, "workers": args.workers, "decoder": args.decoder}
                row["train"] = train_once(cfg, out / name)
                if not args.no_bench:
                    row["bench"] = bench_step(backbone, variant, args.micro * 2, compile_on)
                    row["train_over_bench"] = row["train"]["clips_per_s"] / row["bench"]["clips_per_s"]
                result["rows"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "train"} |
                                 {"train": {k: v for k, v in row["train"].items() if k != "pace_lines"}}), flush=True)
                (out / "train_pace.json").write_text(json.dumps(result, indent=2))
    (out / "train_pace.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
