"""Is the synthetic data learnable by the CPU backbones in a few hundred steps?

Generates synthetic-k400 and/or synthetic-ssv2 with ``far data synth``'s generator,
prepares them with ``far data prepare``'s code, decodes ONE centre view per video
once into memory (8 frames; K400: dense stride 2 centre clip, SSv2: the 8 segment
middles; short side 64, centre crop 64x64, ImageNet normalisation), then trains
``vit_tiny_cpu`` from scratch with plain torch (AdamW, constant lr 1e-3, batch 8, no
augmentation) for the ``baseline`` and ``far`` variants. Per epoch: train accuracy
(running, over the epoch's batches), val accuracy, for SSv2 also the within-pair val
accuracy (true class's logit above its pair partner's: chance 50 %), and wall time.

    python benchmarks/synthetic_learnability.py --kinds k400 ssv2 --classes 4 \\
        --videos-per-class-train 40 --videos-per-class-val 8 --size 64x80 --epochs 12
    # generator knobs: --synth object_scale=0.25 --synth background_contrast=0.4 ...

Writes a JSON of every number with ``--json PATH``. Results: benchmarks/results/synthetic_learnability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import av  # noqa: F401,E402  (PyAV before decord: see far/data/video.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from far.data import sampling  # noqa: E402
from far.data.dataset import read_list  # noqa: E402
from far.data.prepare import prepare  # noqa: E402
from far.data.synth import SynthSpec, generate  # noqa: E402
from far.data.transforms import eval_crop_offsets, resize_frames, to_normalised_tensor  # noqa: E402
from far.data.video import Video  # noqa: E402
from far.models.vit import build_model  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def decode_centre_view(path: str, kind: str, frames: int, stride: int, size: int) -> torch.Tensor:
    video = Video(path)
    if kind == "ssv2":
        idx = sampling.segment_test(len(video), frames, 0, 1)
    else:
        idx = sampling.dense_test(len(video), frames, stride, 0, 1)
    clip = video.frames(idx)
    h, w = clip.shape[1:3]
    scale = size / min(h, w)
    if (h, w) != (round(h * scale), round(w * scale)):
        clip = resize_frames(clip, (round(h * scale), round(w * scale)))
    (y, x), = eval_crop_offsets(clip.shape[1], clip.shape[2], size, 1)
    clip = clip[:, y:y + size, x:x + size]
    return to_normalised_tensor(clip, MEAN, STD)  # (C, T, H, W)


def load_split(list_file: Path, root: str, kind: str, args) -> tuple[torch.Tensor, torch.Tensor]:
    items = read_list(list_file, root)
    x = torch.stack([decode_centre_view(p, kind, args.num_frames, args.stride, args.input_size) for p, _ in items])
    y = torch.tensor([label for _, label in items])
    return x, y


def pair_partner(labels: torch.Tensor, class_names: dict[str, int]) -> torch.Tensor:
    """For SSv2-like labels: the index of the other class of the pair (generation order 2k, 2k+1)."""
    from far.data.synth import SSV2_PAIRS
    from far.data.layouts import strip_brackets

    partner = {}
    for fwd, bwd, _ in SSV2_PAIRS:
        a, b = strip_brackets(fwd), strip_brackets(bwd)
        if a in class_names and b in class_names:
            partner[class_names[a]] = class_names[b]
            partner[class_names[b]] = class_names[a]
    return torch.tensor([partner[int(c)] for c in labels])


@torch.no_grad()
def evaluate(model, x, y, partner=None, batch=32):
    model.eval()
    logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    acc = float((logits.argmax(1) == y).float().mean())
    pair = None
    if partner is not None:
        pair = float((logits.gather(1, y[:, None]) > logits.gather(1, partner[:, None])).float().mean())
    return acc, pair


def train_one(variant: str, data: dict, args, num_classes: int) -> dict:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model({"backbone": "vit_tiny_cpu", "variant": variant, "num_classes": num_classes})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    xtr, ytr, xva, yva, partner = data["xtr"], data["ytr"], data["xva"], data["yva"], data.get("partner")
    epochs, steps, t0 = [], 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        correct = seen = 0
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):  # drop the last partial batch
            idx = order[i:i + args.batch_size]
            logits = model(xtr[idx])
            loss = torch.nn.functional.cross_entropy(logits, ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            correct += int((logits.argmax(1) == ytr[idx]).sum())
            seen += len(idx)
        val, pair = evaluate(model, xva, yva, partner)
        row = {"epoch": epoch, "steps": steps, "train_acc": correct / seen, "val_acc": val,
               "wall_s": time.perf_counter() - t0}
        if pair is not None:
            row["val_pair_acc"] = pair
        epochs.append(row)
        extra = f"  pair {pair:.3f}" if pair is not None else ""
        print(f"  {variant:8s} ep {epoch:2d} step {steps:4d}  train {row['train_acc']:.3f}  val {val:.3f}{extra}"
              f"  {row['wall_s']:.1f}s", flush=True)
    return {"variant": variant, "epochs": epochs}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", nargs="+", default=["k400", "ssv2"], choices=["k400", "ssv2"])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--videos-per-class-train", type=int, default=40)
    ap.add_argument("--videos-per-class-val", type=int, default=8)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--frames", type=int, default=None, help="frames per generated video (SynthSpec default)")
    ap.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE", help="extra SynthSpec field")
    ap.add_argument("--seed", type=int, default=0, help="data seed and training seed")
    ap.add_argument("--variants", nargs="+", default=["baseline", "far"])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="keep the generated data here (default: a temporary folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    h, w = (int(v) for v in args.size.split("x"))
    extra = {k: _value(v) for k, v in (s.split("=", 1) for s in args.synth)}
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch {torch.__version__}, {args.threads} threads",
               "args": vars(args), "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        for kind in args.kinds:
            spec = SynthSpec(kind=kind, classes=args.classes, videos_per_class_train=args.videos_per_class_train,
                             videos_per_class_val=args.videos_per_class_val, height=h, width=w,
                             frames=args.frames, seed=args.seed, **extra)
            raw, lists = work / f"{kind}_raw", work / f"{kind}_lists"
            t0 = time.perf_counter()
            generate(spec, raw, progress=False)
            gen_s = time.perf_counter() - t0
            report = prepare(kind, raw, lists, progress=False)
            t0 = time.perf_counter()
            xtr, ytr = load_split(lists / "train.csv", report["video_root"], kind, args)
            xva, yva = load_split(lists / "val.csv", report["video_root"], kind, args)
            dec_s = time.perf_counter() - t0
            data = {"xtr": xtr, "ytr": ytr, "xva": xva, "yva": yva}
            if kind == "ssv2":
                data["partner"] = pair_partner(yva, json.loads((lists / "classes.json").read_text()))
            print(f"synthetic-{kind}: {spec}\n  generated {len(xtr) + len(xva)} videos in {gen_s:.1f}s, "
                  f"decoded in {dec_s:.1f}s; train {tuple(xtr.shape)}, val {tuple(xva.shape)}", flush=True)
            runs = [train_one(v, data, args, spec.classes) for v in args.variants]
            results["kinds"][kind] = {"spec": {k: v for k, v in spec.__dict__.items()},
                                      "generate_s": gen_s, "decode_s": dec_s, "runs": runs}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
