"""Checkpoint loading: every format round-trips exactly; anything incomplete is refused."""

import argparse
import fractions
import logging
import pathlib

import pytest
import torch

from far.checkpoints import (CheckpointError, UntrustedCheckpointError, detect_format, encoder_state, load_checkpoint,
                             read_checkpoint, save_finetuned, to_format)
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


# ---- no code runs from a checkpoint ------------------------------------------------------
class _Payload:
    """Unpickles to a call of ``Path.touch(marker)``: what a malicious checkpoint would run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _refused(err: pytest.ExceptionInfo, path: pathlib.Path) -> None:
    msg = str(err.value)
    assert isinstance(err.value, UntrustedCheckpointError)
    assert str(path) in msg and "--trust-checkpoint" in msg and "pathlib" in msg, msg


def test_pickle_payload_is_refused_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(_official("videomae_pretrain", build_model(**SMALL)) | {"args": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build_model(**SMALL), path)
    _refused(err, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    _refused(err, path)
    assert not marker.exists()


def test_official_args_namespace_loads_without_trust(tmp_path):
    """The official VideoMAE/MVD saves carry an argparse.Namespace: on the allow-list."""
    args = argparse.Namespace(model="pretrain_videomae_small_patch16_224", window_size=(8, 14, 14), lr=1.5e-4)
    path = tmp_path / "official.pth"
    torch.save(_official("mvd_pretrain", build_model(**SMALL)) | {"args": args, "epoch": 399}, path)
    _, meta = read_checkpoint(path)
    assert meta["args"] == args


def test_trust_loads_a_legitimate_non_tensor_file_with_a_warning(tmp_path, caplog):
    path = tmp_path / "with_fraction.pth"
    torch.save(_official("videomae_pretrain", build_model(**SMALL)) | {"ratio": fractions.Fraction(3, 4)}, path)
    with pytest.raises(UntrustedCheckpointError, match=r"fractions\.Fraction"):
        load_checkpoint(build_model(**SMALL), path)
    with caplog.at_level(logging.WARNING, logger="far.checkpoints"):
        report = load_checkpoint(build_model(**SMALL), path, trust=True)
    assert report.format == "videomae_pretrain"
    assert any(r.levelno == logging.WARNING and "full unpickler" in r.getMessage() for r in caplog.records)
    assert read_checkpoint(path, trust=True)[1]["ratio"] == fractions.Fraction(3, 4)


def _run_cli(main, args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, err.getvalue()


def test_far_train_init_and_far_test_checkpoint_refuse_the_payload(tmp_path):
    import yaml

    from far.engine.evaluate import main as far_test
    from far.engine.train import main as far_train

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save(_official("videomae_pretrain", build_model(**SMALL)) | {"args": _Payload(marker)}, evil)
    run = {"seed": 0, "init": str(evil), "model": {"backbone": "vit_tiny_cpu", "depth": 2, "num_classes": 5},
           "data": {"dataset": "k400", "train_list": str(tmp_path / "train.csv"), "val_list": str(tmp_path / "val.csv"),
                    "root": str(tmp_path), "num_classes": 5, "num_frames": 8, "input_size": 64, "short_side": 64},
           "tracking": {"enabled": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    rc, err = _run_cli(far_train, ["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")])
    assert rc == 2 and str(evil) in err and "--trust-checkpoint" in err, err
    rc, err = _run_cli(far_test, ["--config", str(tmp_path / "run.yaml"), "--checkpoint", str(evil),
                                  "--out", str(tmp_path / "test")])
    assert rc == 2 and str(evil) in err and "--trust-checkpoint" in err, err
    assert not marker.exists()


# ---- resumable training states (far.engine.state, shared by far train and far pretrain) ----------
TOY_PRETRAIN = dict(method="videomae", model={"backbone": "vit_tiny_cpu"}, data={"random_clips": 8}, epochs=2, batch=4,
                    lr=1.5e-3, warmup_epochs=1, tracking={"enabled": False})


@pytest.fixture(scope="module")
def state_runs(tmp_path_factory):
    """A run stopped after epoch 1 (its resumable state) and the same run uninterrupted."""
    from far.pretrain.config import config_from_dict
    from far.pretrain.train import pretrain

    root = tmp_path_factory.mktemp("states")
    cfg = config_from_dict(TOY_PRETRAIN)
    pretrain(cfg, root / "part", progress=False, stop_after_epoch=1)
    full = pretrain(cfg, root / "full", progress=False)
    return cfg, root / "part", full


def _resume(state_runs, tmp_path, plant=None, **kw):
    import shutil

    from far.engine.state import latest_checkpoint
    from far.pretrain.train import pretrain

    cfg, part, _ = state_runs
    out = tmp_path / "run"
    shutil.copytree(part, out)
    if plant:
        plant(latest_checkpoint(out))
    return pretrain(cfg, out, progress=False, **kw)


def _with_payload(path: pathlib.Path, marker: pathlib.Path) -> None:
    obj = torch.load(path, weights_only=False)  # our own file, written by the run above
    torch.save(obj | {"payload": _Payload(marker)}, path)


def test_rng_state_file_is_plain_tensors(state_runs):
    from far.engine.state import latest_checkpoint

    st = torch.load(latest_checkpoint(state_runs[1]) / "rng-rank0.pt", weights_only=True)  # no allow-list at all
    assert isinstance(st["numpy"]["key"], torch.Tensor) and st["numpy"]["key"].shape == (624,)


@pytest.mark.parametrize("planted", ["rng-rank0.pt", "ds/state/mp_rank_00_model_states.pt"])
def test_payload_planted_in_a_run_checkpoint_is_refused(state_runs, tmp_path, planted):
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointError) as err:
        _resume(state_runs, tmp_path, plant=lambda ckpt: _with_payload(ckpt / planted, marker))
    assert planted.split("/")[-1] in str(err.value)
    _refused(err, pathlib.Path(str(err.value).split(": refused")[0]))
    assert not marker.exists()


def test_resume_matches_uninterrupted_and_old_rng_files_need_trust(state_runs, tmp_path):
    import numpy as np

    full = state_runs[2]
    assert _resume(state_runs, tmp_path / "a").epoch_loss == full.epoch_loss

    def old_format(ckpt):  # the numpy tuple as earlier versions saved it (an ndarray inside)
        path = ckpt / "rng-rank0.pt"
        st = torch.load(path, weights_only=True)
        n = st["numpy"]
        st["numpy"] = (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        torch.save(st, path)

    with pytest.raises(UntrustedCheckpointError, match=r"rng-rank0\.pt: refused.*numpy"):
        _resume(state_runs, tmp_path / "b", plant=old_format)
    assert _resume(state_runs, tmp_path / "c", plant=old_format, trust_checkpoint=True).epoch_loss == full.epoch_loss


def test_zero_stage_2_state_resumes_without_trust(tmp_path):
    """ZeRO 1/2 optimizer files hold DeepSpeed's loss scaler and fragment records: allow-listed."""
    from far.pretrain.config import config_from_dict
    from far.pretrain.train import pretrain

    cfg = config_from_dict(TOY_PRETRAIN | {"deepspeed": {"zero_stage": 2}})
    pretrain(cfg, tmp_path, progress=False, stop_after_epoch=1)
    assert pretrain(cfg, tmp_path, progress=False).resumed_from_epoch == 1
