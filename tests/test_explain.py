"""far explain (far/explain.py) and the synthetic datasets' object masks (far/data/synth.py).

GradCAM is checked where its answer is known: a constructed model whose logit reads one
token only must put all its heat on that token's (t, h, w) cell, in both token orders;
grouped and natural order models with the same weights must give the same maps; every
variant runs. The masks are checked against the rendered frames, and through the real
view (sampling, resize, crop) against what the model sees. The CLI writes its figure,
maps and localisation score on a tiny generated dataset with two random models.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from far.data.synth import (K400_CLASSES, SynthSpec, draw_frame, find_masks, generate, k400_video, object_masks,
                            read_masks, render_k400, render_ssv2, sample_ssv2_scene, ssv2_poses)
from far.explain import Explainer, energy_in_mask, gradcam, main, summarise_localisation, upsample
from far.models import build_model

TINY = {"backbone": "vit_tiny_cpu", "num_classes": 3, "drop_path": 0.0}  # 8x64x64 clips, 4x4x4 tokens


class PickToken(nn.Module):
    """A classifier input that is one token (index ``i`` in the model's order)."""

    def __init__(self, i: int):
        super().__init__()
        self.i = i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.i]


class SquaredNorm(nn.Module):
    """Logit 0 = |x|^2 (its gradient . x = 2|x|^2 > 0, so that token's heat is positive)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x ** 2).sum(-1)
        return torch.stack([s, -s, 0 * s], -1)


# ---- GradCAM ----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["grouped", "natural"])
def test_gradcam_peaks_at_the_one_token_the_logit_reads(order):
    torch.manual_seed(0)
    model = build_model(TINY, variant="far", token_order=order)
    t, h, w = model.cfg.grid
    cell = (2, 1, 2)  # (t, h, w) of the token read
    natural = (cell[0] * h + cell[1]) * w + cell[2]
    # Its position in the model's order: grouped = natural[:, perm].
    i = int((model.perm == natural).nonzero()) if model.perm is not None else natural
    model.token_pool, model.group_combine, model.fc_norm, model.head = PickToken(i), nn.Identity(), nn.Identity(), \
        SquaredNorm()
    model.train()
    cam, logits = gradcam(model, torch.randn(2, 3, 8, 64, 64), 0)
    assert cam.shape == (2, t, h, w) and logits.shape == (2, 3)
    for b in range(2):
        assert tuple(np.unravel_index(int(cam[b].argmax()), (t, h, w))) == cell
        assert cam[b][cell] > 0 and cam[b].sum() == cam[b][cell]  # no heat anywhere else
    assert model.training and not model.blocks[-1]._forward_hooks  # mode restored, hook removed


def _pair(**kw):
    """A grouped-order model and a natural-order one with the same weights."""
    torch.manual_seed(1)
    grouped = build_model(TINY, token_order="grouped", **kw)
    natural = build_model(TINY, token_order="natural", **kw)
    natural.load_state_dict(grouped.state_dict())
    return grouped, natural


@pytest.mark.parametrize("kw", [
    {"variant": "baseline"},  # global attention, global mean
    {"variant": "far"},  # HSDA + TGI before attention + group-mean classifier (concat)
    {"variant": "far", "group_combine": "average", "tgi": "after_mlp"},
    {"variant": "baseline", "attention": "head_split_temporal", "tgi": "after_attn", "tgi_groups": 1},
    {"variant": "baseline", "attention": "sparse_dense", "classifier": "group_mean"},
], ids=["baseline", "far", "far-average-after_mlp", "hs_temporal-tgi", "sparse_dense-groupmean"])
def test_gradcam_every_variant_same_map_in_both_orders(kw):
    grouped, natural = _pair(**kw)
    with torch.no_grad():  # make the heads matter: the default init scale leaves logits ~ 0
        for m in (grouped, natural):
            m.head.weight.mul_(1000)
    x = torch.randn(2, 3, 8, 64, 64)
    cam_g, logits_g = gradcam(grouped, x, [0, 2])
    cam_n, logits_n = gradcam(natural, x, [0, 2])
    assert cam_g.shape == (2, 4, 4, 4)
    assert torch.isfinite(cam_g).all() and (cam_g >= 0).all() and (cam_g.flatten(1).sum(1) > 0).all()
    torch.testing.assert_close(logits_g, logits_n, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cam_g, cam_n, rtol=1e-3, atol=1e-5 * float(cam_g.max()))


def test_token_weights_are_classical_gradcam_for_the_global_mean():
    """Behind a global mean every token gets the same gradient: per-token weights equal
    the token-averaged (classical) channel weights up to the factor N."""
    model, _ = _pair(variant="baseline")
    x = torch.randn(1, 3, 8, 64, 64)
    token, _ = gradcam(model, x, 1, weights="token")
    channel, _ = gradcam(model, x, 1, weights="channel")
    torch.testing.assert_close(token, channel, rtol=1e-4, atol=1e-6 * float(token.max()))


def test_upsample_covers_each_tubelet_and_the_frame():
    cam = torch.zeros(1, 4, 4, 4)
    cam[0, 1, 0, 0] = 1.0
    up = upsample(cam, 8, (64, 64))
    assert up.shape == (1, 8, 64, 64)
    assert up[0, [2, 3]].amax() > 0 and up[0, [0, 1, 4, 5, 6, 7]].amax() == 0  # frames of tubelet 1 only
    # the top-left patch: full heat at its centre, bilinear fading into its neighbours only
    assert up[0, 2, 7, 7] == 1 and up[0, 2, 24:].amax() == 0 and up[0, 2, :, 24:].amax() == 0


# ---- the pointing game ------------------------------------------------------------------------
def test_energy_in_mask():
    mask = np.zeros((2, 8, 8), bool)
    mask[:, 2:5, 3:6] = True
    assert energy_in_mask(mask.astype(float), mask) == 1.0
    assert energy_in_mask((~mask).astype(float), mask) == 0.0
    half = mask.astype(float) + (~mask) * (mask.sum() / (~mask).sum())
    assert energy_in_mask(half, mask) == pytest.approx(0.5)
    assert math.isnan(energy_in_mask(np.zeros((2, 8, 8)), mask))
    with pytest.raises(ValueError, match="shape"):
        energy_in_mask(np.ones((2, 8, 7)), mask)
    rows = [{"model": "a", "score": 0.2}, {"model": "a", "score": 0.6}, {"model": "a", "score": math.nan},
            {"model": "b", "score": math.nan}]
    s = summarise_localisation(rows)
    assert s["a"]["score"] == pytest.approx(0.4) and s["a"]["videos"] == 2
    assert s["b"]["score"] is None and s["b"]["videos"] == 0  # JSON null, not NaN


# ---- masks ------------------------------------------------------------------------------------
def test_masks_line_up_with_the_rendered_object():
    h, w = 64, 80
    rng = np.random.default_rng([3, 1])
    scene = sample_ssv2_scene(rng, h, w)
    frames = render_ssv2(scene, 1, 12)  # the reversed class of the first pair
    masks = object_masks(scene.shape, ssv2_poses(scene, 1, 12), h, w)
    k_frames, shape, poses = k400_video(np.random.default_rng([3, 2]), 1, 12, h, w)
    assert (k_frames == render_k400(np.random.default_rng([3, 2]), 1, 12, h, w)).all()  # the same draws
    assert shape == K400_CLASSES[1][1]
    k_masks = object_masks(shape, poses, h, w)
    for f in (0, 5, 11):
        for video, mask, bg in ((frames, masks, scene.background), (k_frames, k_masks, None)):
            assert 0.02 < mask[f].mean() < 0.5
            if bg is not None:  # outside the body the frame is the background, inside it is not
                assert (video[f][~mask[f]] == bg[~mask[f]]).all()
                assert (video[f][mask[f]] != bg[mask[f]]).any(-1).mean() > 0.95
    # The mask moves with the object: its centre follows the pose.
    for f in (0, 11):
        ys, xs = np.nonzero(k_masks[f])
        assert abs(xs.mean() + 0.5 - poses[f].cx) < 0.25 * poses[f].radius + 1
        assert abs(ys.mean() + 0.5 - poses[f].cy) < 0.25 * poses[f].radius + 1
    # draw_frame paints exactly the mask's pixels (alpha 1 object on a flat background).
    flat = np.full((h, w, 3), 10, np.uint8)
    painted = draw_frame(flat, shape, np.array([200, 200, 200]), np.array([90, 90, 90]), poses[0])
    assert ((painted != flat).any(-1) == k_masks[0]).all()


# ---- far explain on a tiny dataset ------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny K400-like dataset with masks, its lists, two random fine-tuned checkpoints."""
    from far.checkpoints import save_finetuned
    from far.data.prepare import prepare

    root = tmp_path_factory.mktemp("explain")
    spec = SynthSpec(kind="k400", classes=2, videos_per_class_train=1, videos_per_class_val=2, height=64, width=80,
                     frames=24, seed=2)
    generate(spec, root / "raw", progress=False)
    report = prepare("k400", root / "raw", root / "prep", progress=False)
    data = {"dataset": "k400", "train_list": str(root / "prep/train.csv"), "val_list": str(root / "prep/val.csv"),
            "root": report["video_root"], "num_classes": 2, "num_frames": 8, "sampling": "dense", "stride": 2,
            "input_size": 64, "short_side": 64, "num_sample": 1}
    for variant in ("baseline", "far"):
        run = {"seed": 0, "model": {"backbone": "vit_tiny_cpu", "variant": variant, "num_classes": 2},
               "data": data, "batch": {"total": 4, "micro": 4, "num_workers": 0}, "tracking": {"enabled": False}}
        (root / f"{variant}.yaml").write_text(yaml.safe_dump(run))
        torch.manual_seed(0)
        model = build_model(run["model"])
        with torch.no_grad():
            model.head.weight.mul_(1000)
        (root / variant).mkdir()
        save_finetuned(model, root / variant / "model.pth")
    return root


def test_synth_writes_masks_that_prepare_ignores(work):
    report = json.loads((work / "prep" / "report.json").read_text())
    assert report["num_classes"] == 2
    val = [line.rsplit(" ", 1)[0] for line in (work / "prep" / "val.csv").read_text().splitlines()]
    assert len(val) == 4 and all(p.endswith(".mp4") for p in val)
    assert len(list((work / "raw" / "masks").glob("*.npz"))) == 6  # train and val
    path = Path(report["video_root"]) / val[0]
    m = read_masks(find_masks(path))
    assert m.masks.shape == (24, 64, 80) and m.masks.dtype == bool and m.poses.shape == (24, 5)
    assert find_masks(path).stat().st_size < 4000  # bit-packed and compressed


def test_the_view_mask_covers_the_object_the_model_sees(work):
    ex = Explainer.load(work / "far.yaml", work / "far" / "model.pth").explain(0)
    assert ex.frames.shape == (8, 64, 64, 3) and ex.heat.shape == (8, 64, 64) and ex.tokens.shape == (4, 4, 4)
    assert ex.mask is not None and ex.mask.shape == (8, 64, 64) and 0 <= ex.score <= 1
    frames = ex.frames.astype(float)
    for f in range(8):  # the object's colour inside the mask, the background's outside
        inside, outside = frames[f][ex.mask[f]].mean(0), frames[f][~ex.mask[f]].mean(0)
        assert np.abs(inside - outside).sum() > 100


def test_cli_writes_figure_maps_and_score(work, capsys):
    out = work / "out"
    code = main(["--config", str(work / "baseline.yaml"), "--checkpoint", str(work / "baseline" / "model.pth"),
                 "--config", str(work / "far.yaml"), "--checkpoint", str(work / "far" / "model.pth"),
                 "--name", "VideoMAE", "--name", "FAR", "--one-per-class", "--score", "--frames", "4",
                 "--out", str(out)])
    assert code == 0
    figures = sorted(out.glob("*.png"))
    assert len(figures) == 2 and all(f.stat().st_size > 10_000 for f in figures)  # one per class
    for name in ("VideoMAE", "FAR"):
        maps = sorted((out / "maps" / name).glob("*.npy"))
        assert len(maps) == 4  # two videos x (upsampled, tokens)
        assert np.load(next(p for p in maps if not p.name.endswith(".tokens.npy"))).shape == (8, 64, 64)
    summary = json.loads((out / "localisation.json").read_text())
    assert set(summary["models"]) == {"VideoMAE", "FAR"}
    for s in summary["models"].values():
        assert s["videos"] == 4 and 0 <= s["score"] <= 1
    rows = list(csv.DictReader((out / "localisation.csv").open()))
    assert len(rows) == 8 and {r["model"] for r in rows} == {"VideoMAE", "FAR"}
    # a wrong pairing of flags is refused
    assert main(["--config", str(work / "far.yaml"), "--out", str(out), "--checkpoint", "a", "--checkpoint", "b"]) == 2
