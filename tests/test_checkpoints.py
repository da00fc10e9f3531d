"""Checkpoint loading: every format round-trips exactly; anything incomplete is refused."""

import pytest
import torch

from far.checkpoints import CheckpointError, detect_format, encoder_state, load_checkpoint, save_finetuned, to_format
from far.models import build_model

SMALL = dict(backbone="vit_tiny_cpu", depth=2, drop_path=0.0, num_classes=5)


def _official(fmt, model):
    """A checkpoint in the official layout of ``fmt``, decoder parts included."""
    enc = to_format(encoder_state(model.state_dict()), fmt)
    if fmt == "videomae_pretrain":
        enc |= {"decoder.blocks.0.mlp.fc1.weight": torch.randn(4, 4), "encoder_to_decoder.weight": torch.randn(4, 96),
                "mask_token": torch.zeros(1, 1, 4), "encoder.norm.weight": torch.ones(96), "encoder.norm.bias": torch.zeros(96)}
        return {"model": enc, "epoch": 1600}
    if fmt == "mvd_pretrain":
        pos = model.pos_embed[model.layout.inv_perm][None].clone()
        enc |= {"decoder_img.blocks.0.norm1.weight": torch.ones(4), "decoder_vid.head.weight": torch.randn(4, 4),
                "mask_token_img": torch.zeros(1, 1, 4), "pos_embed_vid": torch.zeros(1, 64, 4), "pos_embed": pos,
                "norm.weight": torch.ones(96), "norm.bias": torch.zeros(96)}
        return {"model": enc}
    if fmt == "hf_videomae":
        return enc | {"videomae.layernorm.weight": torch.ones(96), "videomae.layernorm.bias": torch.zeros(96),
                      "decoder.decoder_layers.0.output.dense.weight": torch.randn(4, 4)}
    raise AssertionError(fmt)


def _copy_new_modules(src, dst, report):
    with torch.no_grad():
        s = src.state_dict()
        for k in report.initialised:
            dst.state_dict()[k].copy_(s[k])


@pytest.mark.parametrize("fmt", ["videomae_pretrain", "mvd_pretrain", "hf_videomae"])
@pytest.mark.parametrize("variant", ["baseline", "far"])
def test_pretrained_formats_round_trip(tmp_path, fmt, variant):
    torch.manual_seed(0)
    pos = "mvd" if fmt == "mvd_pretrain" else "videomae"
    src = build_model(**SMALL, variant=variant, pos_embed=pos).eval()
    path = tmp_path / "ckpt.pth"
    torch.save(_official(fmt, src), path)
    torch.manual_seed(1)
    dst = build_model(**SMALL, variant=variant).eval()  # VideoMAE flavour: MVD must switch it
    report = load_checkpoint(dst, path)
    assert report.format == fmt
    assert all(k.startswith(("fc_norm.", "head.")) or ".tgi." in k for k in report.initialised)
    assert any("decoder" in r for r in report.dropped.values())
    assert dst.cfg.pos_embed == pos
    if fmt == "mvd_pretrain":
        assert any("max abs diff 0.00e+00" in n for n in report.notes)
    _copy_new_modules(src, dst, report)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_finetuned_round_trip_and_strictness(tmp_path):
    torch.manual_seed(0)
    far = build_model(**SMALL, variant="far").eval()
    save_finetuned(far, tmp_path / "far.pth", epoch=3)
    again = build_model(**SMALL, variant="far").eval()
    report = load_checkpoint(again, tmp_path / "far.pth")
    assert report.format == "finetuned" and not report.initialised
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(far(x), again(x))
    # a FAR checkpoint does not fit the baseline: the TGI keys are named
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.0\.tgi"):
        load_checkpoint(build_model(**SMALL, variant="baseline"), tmp_path / "far.pth")
    # DeepSpeed-style {"module": ...} saves of the reference code load too
    torch.save({"module": far.state_dict()}, tmp_path / "ds.pth")
    assert load_checkpoint(build_model(**SMALL, variant="far"), tmp_path / "ds.pth").format == "finetuned"


def test_missing_key_is_refused_by_name(tmp_path):
    ck = _official("videomae_pretrain", build_model(**SMALL))
    del ck["model"]["encoder.blocks.1.mlp.fc2.weight"]
    torch.save(ck, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"missing 1 keys.*blocks\.1\.mlp\.fc2\.weight"):
        load_checkpoint(build_model(**SMALL), tmp_path / "c.pth")


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    ck = _official("videomae_pretrain", build_model(backbone="vit_tiny_cpu", depth=2))
    torch.save(ck, tmp_path / "c.pth")
    wider = build_model(backbone="vit_tiny_cpu", depth=2, embed_dim=192)
    with pytest.raises(CheckpointError, match=r"patch_embed\.proj\.weight: checkpoint \(96, 3, 2, 16, 16\) vs model \(192, 3, 2, 16, 16\)"):
        load_checkpoint(wider, tmp_path / "c.pth")
    # a deeper model would be half-loaded: refused
    with pytest.raises(CheckpointError, match=r"blocks\.2\."):
        load_checkpoint(build_model(backbone="vit_tiny_cpu", depth=3), tmp_path / "c.pth")


def test_wrong_head_size_is_refused(tmp_path):
    save_finetuned(build_model(**SMALL), tmp_path / "f.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(5, 96\) vs model \(9, 96\)"):
        load_checkpoint(build_model(**(SMALL | {"num_classes": 9})), tmp_path / "f.pth")


def test_truncated_and_empty_files_are_refused(tmp_path):
    torch.save(_official("mvd_pretrain", build_model(**SMALL)), tmp_path / "c.pth")
    data = (tmp_path / "c.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth: unreadable"):
        load_checkpoint(build_model(**SMALL), tmp_path / "trunc.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(build_model(**SMALL), tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(build_model(**SMALL), tmp_path / "nope.pth")


def test_unknown_keys_are_refused():
    with pytest.raises(CheckpointError, match="unrecognised"):
        detect_format({"resnet.conv1.weight": torch.zeros(1)})
    state = _official("hf_videomae", build_model(**SMALL))
    state["videomae.encoder.layer.0.attention.attention.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: videomae\.encoder\.layer\.0\.attention\.attention\.extra"):
        load_checkpoint(build_model(**SMALL), state)


def test_safetensors_hf_file(tmp_path):
    from safetensors.torch import save_file

    src = build_model(**SMALL).eval()
    save_file({k: v.contiguous() for k, v in _official("hf_videomae", src).items()}, tmp_path / "model.safetensors")
    dst = build_model(**SMALL).eval()
    report = load_checkpoint(dst, tmp_path / "model.safetensors")
    assert report.format == "hf_videomae" and "norm.weight" in report.dropped
