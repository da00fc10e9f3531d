"""Offline pre-training (far.pretrain): masking, targets, short runs whose checkpoints load
through the normal fine-tuning loader, resume."""

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from far.checkpoints import load_checkpoint, read_checkpoint  # noqa: E402
from far.models import build_model  # noqa: E402
from far.pretrain.config import config_from_dict, load_config  # noqa: E402
from far.pretrain.losses import patchify, pixel_targets, unnormalise  # noqa: E402
from far.pretrain.masking import TubeMaskGenerator, tube_mask  # noqa: E402
from far.pretrain.config import encoder_config  # noqa: E402
from far.pretrain.models import PretrainEncoder  # noqa: E402

TOY = dict(model={"backbone": "vit_tiny_cpu"}, data={"random_clips": 16}, epochs=3, batch=4, lr=1.5e-3,
           warmup_epochs=1, tracking={"enabled": False})


# ---- masking ------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_tube_mask_ratio_and_shared_over_time(ratio):
    grid = (4, 4, 4)
    m = tube_mask(8, grid, ratio, generator=torch.Generator().manual_seed(0))
    assert m.shape == (8, 64) and m.dtype == torch.bool
    per_frame = m.view(8, 4, 16)
    assert (per_frame == per_frame[:, :1]).all()  # one spatial mask for every t
    assert (per_frame[:, 0].sum(1) == int(ratio * 16)).all()  # exact count per sample
    if ratio > 0:
        assert not (per_frame[0, 0] == per_frame[1, 0]).all() or not (per_frame[0, 0] == per_frame[2, 0]).all()


def test_tube_mask_deterministic_with_seed():
    a = tube_mask(4, (8, 14, 14), 0.9, generator=torch.Generator().manual_seed(3))
    b = tube_mask(4, (8, 14, 14), 0.9, generator=torch.Generator().manual_seed(3))
    c = tube_mask(4, (8, 14, 14), 0.9, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.view(4, 8, 196)[:, 0].sum(1).eq(176).all()  # int(0.9 * 196), as VideoMAE
    gen = TubeMaskGenerator((4, 4, 4), 0.9, seed=1)
    assert torch.equal(gen.at_step(5, 2), gen.at_step(5, 2)) and not torch.equal(gen.at_step(5, 2), gen.at_step(6, 2))
    with pytest.raises(ValueError, match="mask ratio"):
        tube_mask(1, (1, 2, 2), 1.0)


# ---- targets and the visible-only encoder ----------------------------------------------------
def test_patchify_order_and_normalised_targets():
    x = torch.randn(2, 3, 4, 32, 32)
    p = patchify(x, 2, 16)  # (B, N, 2*16*16, C)
    assert p.shape == (2, 2 * 2 * 2, 512, 3)
    # token 3 = (t=0, h=1, w=1): frames 0-1, rows 16-31, cols 16-31
    assert torch.equal(p[0, 3, :, 1], x[0, 1, 0:2, 16:32, 16:32].reshape(-1))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, [1, 5]] = True
    t = pixel_targets(x, mask, 2, 16)
    assert t.shape == (2, 2, 1536)
    per_channel = t.view(2, 2, 512, 3)
    assert per_channel.mean(2).abs().max() < 1e-4
    assert (per_channel.std(2) - 1).abs().max() < 1e-3
    raw = pixel_targets(x, mask, 2, 16, normalize=False)  # VideoMAE without --normlize_target
    assert torch.allclose(raw.view(2, 2, 512, 3), patchify(unnormalise(x), 2, 16)[mask].view(2, 2, 512, 3))


def test_encoder_sees_visible_tokens_only():
    torch.manual_seed(0)
    enc = PretrainEncoder(encoder_config({"backbone": "vit_tiny_cpu"}, pos_embed="videomae")).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    mask = tube_mask(2, enc.grid, 0.75, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = enc(x, mask)
        assert out.shape == (2, 16, 96)
        # change the pixels of every masked tube: the encoder output must not move
        pix = mask.view(2, 4, 4, 4)[:, 0]  # (B, h, w) spatial mask
        y = x.clone()
        for b in range(2):
            for h, w in pix[b].nonzero().tolist():
                y[b, :, :, h * 16:(h + 1) * 16, w * 16:(w + 1) * 16] = torch.randn(3, 8, 16, 16)
        assert torch.equal(enc(y, mask), out)


# ---- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, field", [
    ({"mehtod": "videomae"}, "mehtod"),
    ({"method": "simclr"}, "method"),
    ({"decoder": {"width": 50}}, "decoder.width"),
    ({"decoder": {"layers": 2}}, "decoder.layers"),
    ({"mask_ratio": 1.2}, "mask_ratio"),
    ({"epochs": 0}, "epochs"),
    ({"model": {"backbone": "vit_huge"}}, "model"),
    ({"tracking": {"uri": 3}}, "tracking.uri"),
    ({"deepspeed": {"zero_stage": 7}}, "deepspeed"),
    ({"warmup_epochs": 20, "epochs": 2}, "warmup_epochs"),
    ({"normalize_target": "no"}, "normalize_target"),
])
def test_config_errors_name_the_field(bad, field):
    with pytest.raises(ValueError, match=f"^{field}[.:]"):
        config_from_dict(bad)


def test_finetune_augmentation_fields_are_refused():
    from far.pretrain.data import build_source

    for name, value in (("randaug_magnitude", 0), ("reprob", 0.0), ("flip", False)):
        with pytest.raises(ValueError, match=f"^data.{name}: "):
            build_source({"dataset": "ssv2", name: value}, num_frames=8, img_size=64, seed=0)


def test_config_yaml_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: image_mae\nmodel: {backbone: vit_tiny_cpu}\ndata: {random_clips: 4}\n")
    cfg = load_config(path, epochs=2)
    assert cfg.method == "image_mae" and cfg.mask_ratio == 0.75 and cfg.epochs == 2
    assert config_from_dict({"method": "videomae"}).mask_ratio == 0.9


# ---- short runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from far.pretrain.train import pretrain

    root = tmp_path_factory.mktemp("pretrain")
    out = {}
    for method in ("image_mae", "videomae"):
        out[method] = pretrain(config_from_dict(TOY | {"method": method}), root / method, progress=False)
    out["mvd"] = pretrain(config_from_dict(TOY | {"method": "mvd"}), root / "mvd", progress=False,
                          teacher_video=out["videomae"].checkpoint, teacher_image=out["image_mae"].checkpoint)
    out["root"] = root
    return out


@pytest.mark.parametrize("method", ["videomae", "image_mae", "mvd"])
def test_loss_falls(runs, method):
    r = runs[method]
    assert len(r.epoch_loss) == 3
    assert r.epoch_loss[-1] < r.first_step_loss
    assert r.epoch_loss[-1] < r.epoch_loss[0]


def _only_new_modules(report):
    return report.initialised and all(k.startswith(("fc_norm.", "head.")) or ".tgi." in k for k in report.initialised)


def test_videomae_checkpoint_is_official_and_loads(runs):
    state, meta = read_checkpoint(runs["videomae"].checkpoint)
    assert meta["container"] == "model" and meta["epoch"] == 3 and "args" in meta
    assert "encoder.patch_embed.proj.weight" in state and "encoder.blocks.3.attn.q_bias" in state
    assert {"encoder.norm.weight", "encoder_to_decoder.weight", "mask_token", "decoder.head.weight",
            "decoder.norm.weight", "decoder.blocks.0.attn.qkv.weight"} <= set(state)
    assert state["decoder.head.weight"].shape[0] == 2 * 16 * 16 * 3
    assert "encoder_to_decoder.bias" not in state
    model = build_model(backbone="vit_tiny_cpu", variant="far", num_classes=12)
    report = load_checkpoint(model, runs["videomae"].checkpoint)
    assert report.format == "videomae_pretrain" and _only_new_modules(report)
    assert torch.equal(model.state_dict()["blocks.2.mlp.fc1.weight"], state["encoder.blocks.2.mlp.fc1.weight"])


def test_mvd_checkpoint_is_official_and_loads(runs):
    from far.models.pos_embed import position_embedding

    state, meta = read_checkpoint(runs["mvd"].checkpoint)
    assert "patch_embed.proj.weight" in state and "blocks.0.norm1.weight" in state and "norm.weight" in state
    assert not any(k.startswith("encoder.") for k in state)
    assert torch.equal(state["pos_embed"], position_embedding("mvd", 4, 4, 4, 96)[None])
    for k in ("decoder_img.head.weight", "decoder_vid.head.weight", "down_img.weight", "down_vid.weight",
              "mask_token_img", "mask_token_vid", "pos_embed_img", "pos_embed_vid"):
        assert k in state, k
    model = build_model(backbone="vit_tiny_cpu", variant="far", num_classes=12)
    report = load_checkpoint(model, runs["mvd"].checkpoint)
    assert report.format == "mvd_pretrain" and _only_new_modules(report)
    assert model.cfg.pos_embed == "mvd"
    assert any("max abs diff 0.00e+00" in n for n in report.notes)
    # every extra key was recognised as droppable by the loader's MVD rules
    assert set(report.dropped) | set(report.loaded) == set(state)


def test_mvd_needs_teachers():
    from far.pretrain.train import build_models

    with pytest.raises(ValueError, match="teacher-video"):
        build_models(config_from_dict(TOY | {"method": "mvd"}))


def test_resume_continues_to_the_same_weights(runs, tmp_path):
    from far.pretrain.train import pretrain

    cfg = config_from_dict(TOY | {"method": "videomae"})
    part = pretrain(cfg, tmp_path, progress=False, stop_after_epoch=1)
    assert len(part.epoch_loss) == 1 and not (tmp_path / "checkpoint.pth").exists()
    # what a crash while saving epoch 2 leaves behind must be ignored, not resumed from
    (tmp_path / "checkpoints" / ".tmp-ckpt-e0002-s00000008").mkdir()
    (tmp_path / "checkpoints" / "ckpt-e0002-s00000008").mkdir()  # no COMPLETE marker
    done = pretrain(cfg, tmp_path, progress=False)
    assert done.resumed_from_epoch == 1
    a, _ = read_checkpoint(done.checkpoint)
    b, _ = read_checkpoint(runs["videomae"].checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert done.epoch_loss == pytest.approx(runs["videomae"].epoch_loss, rel=1e-5)


def test_resuming_a_state_of_another_model_is_refused_clearly(tmp_path):
    """An output folder named by method and backbone keeps its resumable states when the
    params change that backbone: the resume must say so, not dump missing keys."""
    from far.pretrain.train import pretrain

    pretrain(config_from_dict(TOY | {"method": "videomae", "epochs": 2}), tmp_path, progress=False,
             stop_after_epoch=1)
    wider = config_from_dict(TOY | {"method": "videomae", "epochs": 2,
                                    "model": {"backbone": "vit_tiny_cpu", "embed_dim": 192, "num_heads": 12}})
    with pytest.raises(RuntimeError, match="resumable state is of another model.*delete"):
        pretrain(wider, tmp_path, progress=False)


def test_cli_reports_bad_config(tmp_path, capsys):
    from far.pretrain.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("method: videomae\nbatchsize: 3\n")
    assert main(["--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert f"{path}: batchsize: unknown key (known: batch," in capsys.readouterr().err
