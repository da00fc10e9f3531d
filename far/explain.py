"""``far explain``: GradCAM of the ViT family (the paper's Figures 6 and 7) and a
localisation score where the paper has only pictures.

GradCAM (Selvaraju et al., the paper's [54]) here takes the gradient of the class logit
with respect to the **last block's output tokens** ``A`` (B, N, D), caught by a forward
hook on ``model.blocks[-1]`` (no model code is involved). Each token's heat is

    cam_n = ReLU( sum_d  dy/dA_nd * A_nd )                  (``weights="token"``, default)

and is put back on the (T', H', W') token grid from the model's token order (grouped
or natural, ``far.models.layout.TokenLayout.inv_perm``), then upsampled to the clip:
each temporal token covers ``tubelet_size`` frames, space is bilinear.

Why per-token weights: behind the last block the ViT only pools. With the global-mean
classifier every token receives the same gradient, so this *is* classical GradCAM
(channel weights = the gradient averaged over tokens, ``weights="channel"``). With FAR's
group-mean classifier the two checkerboard groups reach the head through different
weights; per-token weights give each group its own (classical GradCAM would average the
two and colour group 0 with group 1's weights).

The localisation score is the energy-based pointing game: the share of a map's heat that
falls inside the object's mask, for the frames and the view the model saw. The
synthetic datasets write each video's masks (``far data synth``,
``far.data.synth.read_masks``); :func:`view_mask` cuts them exactly as the test view is
cut (temporal sampling, short-side resize, centre crop).

One view per video: the first temporal clip of ``test.clips = 1`` (the dataset's own
test sampling) and the centre crop, through the same ``EvalViews`` as ``far test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from far.layout import GRADCAM_LOCALISATION, GRADCAM_SCORES, gradcam_figure

log = logging.getLogger(__name__)

WEIGHTS = ("token", "channel")


# ---- GradCAM ----------------------------------------------------------------------------------
def gradcam(model: torch.nn.Module, clip: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None,
            *, weights: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """GradCAM of ``model`` (a far.models.FARVisionTransformer) on ``clip`` (B, C, T, H, W).

    ``target``: the class explained per clip (one int for all, or B ints); None = the
    predicted class. Returns ``(cam, logits)``: ``cam`` (B, T', H', W') >= 0 on the token
    grid in natural (t, h, w) order, ``logits`` (B, classes), both detached. The model is
    run in eval mode and left in the mode it was in.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    caught: dict[str, torch.Tensor] = {}

    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        # A fresh leaf in place of the block's output: its gradient is exactly dy/dA, and
        # nothing before it needs a backward (nor parameters that require grad).
        leaf = output.detach().requires_grad_(True)
        caught["tokens"] = leaf
        return leaf

    handle = model.blocks[-1].register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(clip)
            b = logits.shape[0]
            if target is None:
                tgt = logits.argmax(-1)
            else:
                tgt = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1).expand(b)
            # Clips are independent in eval mode, so one backward of the sum gives each its own gradient.
            (grads,) = torch.autograd.grad(logits.gather(1, tgt[:, None]).sum(), caught["tokens"])
    finally:
        handle.remove()
        model.train(was_training)
    tokens = caught["tokens"].detach()
    grads = grads.detach()
    if weights == "channel":
        grads = grads.mean(dim=1, keepdim=True)
    cam = F.relu((grads.float() * tokens.float()).sum(-1))  # (B, N) in the model's token order
    if getattr(model, "perm", None) is not None:  # grouped order -> natural (t, h, w)
        cam = cam[:, model.layout.inv_perm.to(cam.device)]
    t, h, w = model.cfg.grid
    return cam.reshape(b, t, h, w), logits.detach()


def upsample(cam: torch.Tensor, frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Token-grid maps (B, T', H', W') -> (B, frames, H, W): each temporal token covers
    ``frames // T'`` frames (a tubelet), space is interpolated bilinearly."""
    b, t = cam.shape[:2]
    if frames % t:
        raise ValueError(f"{frames} frames do not split into {t} temporal tokens")
    x = cam.repeat_interleave(frames // t, dim=1)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp_(min=0)


# ---- the localisation score -------------------------------------------------------------------
def energy_in_mask(cam: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> float:
    """Energy-based pointing game: the share of ``cam``'s heat (>= 0) inside ``mask`` (bool,
    same shape). NaN for a map without heat."""
    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
    total = float(np.clip(cam, 0, None).sum())
    return float(np.clip(cam, 0, None)[mask].sum() / total) if total > 0 else math.nan


def view_mask(masks: np.ndarray, indices: np.ndarray, frame_size: tuple[int, int], short_side: int,
              input_size: int) -> np.ndarray:
    """The object masks of the centre test view: frames ``indices`` of ``masks`` (F, H0, W0),
    resized as the decoded frames (``frame_size``) are to the short side ``short_side``
    (bilinear, then half-covered pixels count), cut to the centre ``input_size`` crop.
    Returns (T, S, S) bool."""
    from far.data.transforms import eval_crop_offsets, short_side_size

    h, w = frame_size
    size = short_side_size(h, w, short_side)
    m = torch.from_numpy(masks[np.asarray(indices)].astype(np.float32))[None]
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0]
    top, left = eval_crop_offsets(size[0], size[1], input_size, 1)[0]
    return (m[:, top:top + input_size, left:left + input_size] >= 0.5).numpy()


# ---- one model, one video ---------------------------------------------------------------------
@dataclass
class Explained:
    """One model's explanation of one video's centre view."""

    video: str
    label: int
    target: int  # the class explained
    prob: float  # softmax score P of ``target``
    pred: int
    tokens: np.ndarray  # (T', H', W') GradCAM on the token grid
    heat: np.ndarray  # (T, S, S) upsampled to the frames
    frames: np.ndarray  # (T, S, S, 3) uint8: what the model saw
    mask: np.ndarray | None  # (T, S, S) bool object masks of the view, when the dataset has them
    score: float  # energy_in_mask(heat, mask), NaN without masks


@dataclass
class Explainer:
    """A fine-tuned model and its test set: :meth:`explain` any video of its val list."""

    model: torch.nn.Module
    dataset: Any  # far.data.dataset.VideoDataset, test mode, one view per video
    device: torch.device
    name: str

    @classmethod
    def load(cls, config: str | Path, checkpoint: str | Path, *, name: str | None = None,
             trust_checkpoint: bool = False, device: torch.device | None = None) -> "Explainer":
        """The model of run config ``config`` with the weights of ``checkpoint`` (as ``far test``
        loads them) and the val list as a one-view test set."""
        from far.checkpoints import load_checkpoint
        from far.engine.config import load_run_config
        from far.engine.data import eval_dataset
        from far.models import build_model

        run = load_run_config(config)
        model = build_model(run.model_config())
        load_checkpoint(model, checkpoint, trust=trust_checkpoint)
        device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        model.to(device).eval()
        dataset = eval_dataset(run, clips=1, crops=1)
        return cls(model, dataset, device, name or Path(checkpoint).parent.name)

    def index_of(self, video: str) -> int:
        """Index in the val list of ``video``: an index, a path as listed, or a file name/stem."""
        if video.isdigit():
            i = int(video)
            if not 0 <= i < len(self.dataset.samples):
                raise ValueError(f"video index {i} is outside the val list (0..{len(self.dataset.samples) - 1})")
            return i
        for i, (path, _) in enumerate(self.dataset.samples):
            if video in (path, Path(path).name, Path(path).stem) or Path(path).resolve() == Path(video).resolve():
                return i
        raise ValueError(f"video {video!r} is not in the val list {self.dataset.cfg.val_list}")

    def one_per_class(self) -> list[int]:
        """The first video of each class in the val list, by class."""
        first: dict[int, int] = {}
        for i, (_, label) in enumerate(self.dataset.samples):
            first.setdefault(label, i)
        return [first[c] for c in sorted(first)]

    def explain(self, index: int, *, target: str = "label", weights: str = "token") -> Explained:
        """GradCAM of val video ``index`` for its true class (``target="label"``, the
        paper's P) or the predicted one (``"pred"``)."""
        from far.data.batch_augment import EvalViews
        from far.data.dataset import collate
        from far.data.synth import find_masks, read_masks
        from far.data.video import Video

        cfg = self.dataset.cfg
        item = self.dataset[index]
        path, label = self.dataset.samples[item["video_index"]][0], int(item["label"])
        clip = EvalViews(cfg)(collate([item]), self.device)[0]
        cam, logits = gradcam(self.model, clip, None if target == "pred" else label, weights=weights)
        probs = torch.softmax(logits.float(), -1)[0]
        pred = int(probs.argmax())
        tgt = pred if target == "pred" else label
        s = cfg.input_size
        heat = upsample(cam, clip.shape[2], (s, s))[0].cpu().numpy()
        mean = torch.tensor(cfg.mean, device=clip.device).view(3, 1, 1, 1) * 255
        std = torch.tensor(cfg.std, device=clip.device).view(3, 1, 1, 1) * 255
        frames = (clip[0] * std + mean).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
        mask, score = None, math.nan
        mask_file = find_masks(path)
        if mask_file is not None:
            masks = read_masks(mask_file).masks
            length = len(Video(path))
            if length != len(masks):
                raise ValueError(f"{mask_file}: {len(masks)} frames of masks, but the video has {length}")
            # The frames the dataset sampled for this view (its own test sampling, clip 0 of 1).
            indices = self.dataset.frame_indices(length, None, 0)
            mask = view_mask(masks, indices, tuple(item["frames"].shape[1:3]), cfg.short_side, s)
            score = energy_in_mask(heat, mask)
        return Explained(path, label, tgt, float(probs[tgt]), pred, cam[0].cpu().numpy(), heat, frames, mask, score)


# ---- the figure -------------------------------------------------------------------------------
def plot_explanations(rows: Sequence[tuple[str, Explained]], path: str | Path, *, class_names: Sequence[str] | None = None,
                      max_frames: int = 8, title: str | None = None, label: str | None = None) -> Path:
    """The paper's layout (Figures 6/7): one row per model (the first row on top: the
    baseline, then FAR), the clip's frames in a row with the GradCAM heat over them
    (jet: red high, blue low; each map scaled to its own maximum over the clip), the
    softmax score P of the explained class at the row's start, and the object's outline
    (white) where the dataset has masks. ``max_frames`` evenly spaced frames are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = min(ex.frames.shape[0] for _, ex in rows)
    shown = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(1.6 * len(shown) + 1.6, 1.75 * len(rows) + 0.7),
                             squeeze=False)
    name_of = (lambda c: class_names[c] if class_names and 0 <= c < len(class_names) else f"class {c}")
    im = None
    for r, (model_name, ex) in enumerate(rows):
        peak = float(ex.heat.max()) or 1.0
        for c, f in enumerate(shown):
            ax = axes[r, c]
            ax.imshow(ex.frames[f])
            im = ax.imshow(ex.heat[f] / peak, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if ex.mask is not None and ex.mask[f].any():
                ax.contour(ex.mask[f].astype(np.float32), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=8)
        score = "" if math.isnan(ex.score) else f"\nin mask {ex.score:.2f}"
        axes[r, 0].set_ylabel(f"{model_name}\nP = {ex.prob:.2f}{score}", fontsize=9)
    first = rows[0][1]
    head = title or f"{Path(first.video).name}: {name_of(first.target)}"
    if label:
        head = f"{head}\n{label}"
    fig.suptitle(head, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if im is not None:
        cax = fig.add_axes((0.945, 0.15, 0.012, 0.7))
        fig.colorbar(im, cax=cax).set_label("GradCAM (scaled to the clip's max)", fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the localisation score of a run ----------------------------------------------------------
def localisation(explainer: Explainer, indices: Sequence[int], *, target: str = "label",
                 weights: str = "token") -> list[dict[str, Any]]:
    """Per-video rows (video, label, pred, prob, score) of the pointing game over ``indices``."""
    rows = []
    for i in indices:
        ex = explainer.explain(i, target=target, weights=weights)
        rows.append({"model": explainer.name, "video": ex.video, "label": ex.label, "pred": ex.pred,
                     "target": ex.target, "prob": ex.prob, "score": ex.score})
    return rows


def summarise_localisation(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean pointing-game score per model over its videos with masks (and how many;
    the score is None when no video has masks)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        scores = [r["score"] for r in rows if r["model"] == name and not math.isnan(r["score"])]
        # None (JSON null) rather than NaN, which strict JSON readers refuse.
        out[name] = {"score": float(np.mean(scores)) if scores else None, "videos": len(scores),
                     "videos_without_masks_or_heat": sum(r["model"] == name for r in rows) - len(scores)}
    return out


# ---- far explain ------------------------------------------------------------------------------
def _class_names(explainer: Explainer) -> list[str] | None:
    """Class names from the prepared lists' classes.json (name -> index), if there."""
    from far.data.prepare import read_class_names

    names = read_class_names(Path(explainer.dataset.cfg.val_list).parent / "classes.json")
    return [names[i] for i in sorted(names)] or None


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``far explain``."""
    from far.cli import add_job_flags

    p = argparse.ArgumentParser(
        prog="far explain",
        description="GradCAM figures (paper Figures 6/7: baseline above, FAR below) and the localisation "
                    "score (share of GradCAM heat inside the object's mask) of fine-tuned models.")
    p.add_argument("--config", action="append", required=True,
                   help="a run config (RUN.yaml); repeat for each model, in row order (baseline first)")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="the fine-tuned weights of each --config, in the same order")
    p.add_argument("--name", action="append", help="each model's row label (default: the checkpoint's folder)")
    p.add_argument("--out", required=True, help="folder for the figures, maps/ and localisation.*")
    p.add_argument("--video", action="append", default=[],
                   help="a val-list video to draw (index, path as listed, file name or stem); repeatable")
    p.add_argument("--one-per-class", action="store_true", help="draw the first val video of each class")
    p.add_argument("--score", action="store_true",
                   help="score every val video (or the first --max-videos): localisation.{csv,json}")
    p.add_argument("--max-videos", type=int, help="score the first N val videos only")
    p.add_argument("--target", choices=["label", "pred"], default="label",
                   help="explain the true class (default; P is its softmax score) or the predicted one")
    p.add_argument("--weights", choices=list(WEIGHTS), default="token",
                   help="GradCAM weights per token (default) or the token-averaged channel weights")
    p.add_argument("--frames", type=int, default=8, help="frames shown per row (default %(default)s)")
    p.add_argument("--title", help="a line under each figure's title (e.g. the data label)")
    add_job_flags(p, trusts="the checkpoints")
    return p


def main(argv: list[str] | None = None) -> int:
    """``far explain --config RUN.yaml --checkpoint CKPT [--config ... --checkpoint ...] --out DIR``."""
    from far.checkpoints import CheckpointError
    from far.engine.config import ConfigError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(args.config) != len(args.checkpoint):
        print(f"far explain: {len(args.config)} --config but {len(args.checkpoint)} --checkpoint", file=sys.stderr)
        return 2
    names = args.name or []
    if names and len(names) != len(args.config):
        print(f"far explain: {len(names)} --name for {len(args.config)} models", file=sys.stderr)
        return 2
    for ckpt in args.checkpoint:
        if not Path(ckpt).is_file():
            print(f"far explain: checkpoint {ckpt} does not exist", file=sys.stderr)
            return 2
    try:
        models = [Explainer.load(c, k, name=names[i] if names else None, trust_checkpoint=args.trust_checkpoint)
                  for i, (c, k) in enumerate(zip(args.config, args.checkpoint))]
    except ConfigError as err:
        print(f"far explain: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"far explain: {err}", file=sys.stderr)
        return 2
    if len({m.name for m in models}) != len(models):
        print("far explain: two models share a name; give each a --name", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = models[0]
    try:
        drawn = [first.index_of(v) for v in args.video]
    except ValueError as err:
        print(f"far explain: {err}", file=sys.stderr)
        return 2
    if args.one_per_class:
        drawn += [i for i in first.one_per_class() if i not in drawn]
    if not drawn and not args.score:
        drawn = [0]
    names_of = _class_names(first)
    for i in drawn:
        path = first.dataset.samples[i][0]
        rows = []
        for m in models:
            ex = m.explain(m.index_of(path), target=args.target, weights=args.weights)
            stem = Path(ex.video).stem
            (out / "maps" / m.name).mkdir(parents=True, exist_ok=True)
            np.save(out / "maps" / m.name / f"{stem}.npy", ex.heat.astype(np.float32))
            np.save(out / "maps" / m.name / f"{stem}.tokens.npy", ex.tokens.astype(np.float32))
            rows.append((m.name, ex))
        fig = plot_explanations(rows, out / gradcam_figure(path), class_names=names_of, max_frames=args.frames,
                                label=args.title)
        log.info("wrote %s (%s)", fig, ", ".join(f"{n}: P={e.prob:.2f}" for n, e in rows))
    if args.score:
        rows_all: list[dict[str, Any]] = []
        for m in models:
            n = len(m.dataset.samples) if args.max_videos is None else min(args.max_videos, len(m.dataset.samples))
            rows_all += localisation(m, range(n), target=args.target, weights=args.weights)
        write_localisation(out, rows_all, models, args)
    return 0


def write_localisation(out: Path, rows: Sequence[dict[str, Any]], models: Sequence[Explainer],
                       args: argparse.Namespace) -> None:
    """``out/localisation.csv`` (one row per model x video; score ``nan`` for a video without
    masks) and ``out/localisation.json`` (per model: the mean score, videos, its config and
    checkpoint)."""
    fields = ["model", "video", "label", "pred", "target", "prob", "score"]
    with (out / GRADCAM_SCORES).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    summary = summarise_localisation(rows)
    for m, cfg, ckpt in zip(models, args.config, args.checkpoint):
        summary[m.name] |= {"config": str(cfg), "checkpoint": str(ckpt)}
    doc = {"metric": "energy-based pointing game: share of GradCAM heat inside the object mask, "
                     "mean over the val videos with masks (centre view)",
           "target": args.target, "weights": args.weights, "models": summary}
    (out / GRADCAM_LOCALISATION).write_text(json.dumps(doc, indent=2) + "\n")
    for name, s in summary.items():
        if s["score"] is None:
            log.warning("localisation %s: no video with object masks (real data, or a synthetic dataset "
                        "generated before far data synth wrote masks/: regenerate it)", name)
        else:
            log.info("localisation %s: %.3f over %d videos", name, s["score"], s["videos"])


__all__ = ["Explained", "Explainer", "energy_in_mask", "gradcam", "localisation", "plot_explanations",
           "summarise_localisation", "upsample", "view_mask"]
