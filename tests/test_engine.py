"""far train / far test end to end on a small synthetic dataset, through the real CLI.

One module-scoped set-up (a synthetic K400-like dataset written as real H.264 files, a
short VideoMAE pre-training in the official checkpoint format) serves every test:
learning from the pre-trained checkpoint, same-seed determinism, SIGKILL + resume,
a 2-rank torchrun run whose test counts every video once, MLflow contents, an
unreachable tracking store, config refusal.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ENV = os.environ | {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("MLFLOW_TRACKING_URI", None)
FAR = [sys.executable, "-m", "far.cli"]
CLASSES = 4


def _run(args: list[str], cwd: Path, timeout: int = 240, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Synthetic data + a VideoMAE pre-trained checkpoint (official format)."""
    root = tmp_path_factory.mktemp("engine")
    _run(FAR + ["data", "synth", "--kind", "k400", "--out", "raw", "--classes", str(CLASSES),
                "--videos-per-class-train", "24", "--videos-per-class-val", "3", "--size", "64x80", "--quiet"], root)
    _run(FAR + ["data", "prepare", "--dataset", "k400", "--root", "raw", "--out", "prep", "--quiet"], root)
    video_root = json.loads((root / "prep" / "report.json").read_text())["video_root"]
    data = {"dataset": "k400", "train_list": "prep/train.csv", "val_list": "prep/val.csv", "root": video_root,
            "num_classes": CLASSES, "num_frames": 8, "sampling": "dense", "stride": 2, "input_size": 64,
            "short_side": 64, "num_sample": 1, "flip": True}
    pre = {"method": "videomae", "model": {"backbone": "vit_tiny_cpu"}, "epochs": 2, "batch": 4,
           "data": {k: v for k, v in data.items() if k != "flip"},  # pre-training: multi-scale crop only
           "lr": 1.5e-3, "warmup_epochs": 1, "mask_ratio": 0.75, "normalize_target": False, "num_workers": 0,
           "tracking": {"enabled": False}}
    (root / "pretrain.yaml").write_text(yaml.safe_dump(pre))
    _run(FAR + ["pretrain", "--method", "videomae", "--config", "pretrain.yaml", "--out", "pre", "--no-progress",
                "--no-tracking"], root, timeout=300)
    assert (root / "pre" / "checkpoint.pth").is_file()
    run = {
        "seed": 3,
        "init": "pre/checkpoint.pth",
        "model": {"backbone": "vit_tiny_cpu", "variant": "far", "num_classes": CLASSES},
        "data": data | {"randaug_magnitude": 0, "reprob": 0.0},
        "optim": {"epochs": 4, "warmup_epochs": 1, "base_lr": 0.1, "layer_decay": 0.75},
        "batch": {"derive": "accumulation", "total": 8, "micro": 4, "num_workers": 0, "eval_micro": 12},
        "augment": {"mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.1},
        "test": {"clips": 2, "crops": 3, "run_at_end": True},
        "checkpoint": {"keep_last": 2},
        "tracking": {"uri": "sqlite:///mlflow.db", "experiment": "engine-test", "run_name": "ref",
                     "description": "far's engine test: a tiny FAR on synthetic K400",
                     "tags": {"cell": "k400/videomae/vit_s"}},
        "log": {"progress_bar": "off", "every_steps": 2},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    return root


def _history(out: Path) -> list[dict[str, str]]:
    with (out / "history.csv").open() as f:
        return list(csv.DictReader(f))


def _steps(out: Path) -> list[dict[str, str]]:
    with (out / "steps.csv").open() as f:
        return list(csv.DictReader(f))


def _results(out: Path) -> tuple[list[tuple[str, str]], dict]:
    hist = [(r["train_loss"], r["val_top1"]) for r in _history(out)]
    m = json.loads((out / "test" / "metrics.json").read_text())
    return hist, {k: m[k] for k in ("top1", "top5", "videos")}


@pytest.fixture(scope="module")
def reference(work) -> Path:
    _run(FAR + ["train", "--config", "run.yaml", "--out", "ref"], work)
    return work / "ref"


def test_finetune_from_pretrained_learns(reference):
    info = json.loads((reference / "train.json").read_text())
    assert info["init_report"]["format"] == "videomae_pretrain"
    assert info["steps"] == 4 * 12 and info["batch"] == {"total": 8, "micro": 4, "accumulation": 2}
    hist = _history(reference)
    assert len(hist) == 4
    assert float(hist[-1]["train_loss"]) < float(hist[0]["train_loss"])
    # steps.csv: a row every log.every_steps (2) optimizer steps, the loss since the previous row.
    steps = _steps(reference)
    assert [int(r["step"]) for r in steps] == list(range(2, 49, 2))
    assert all(0 < float(r["loss"]) < 10 and 0 <= float(r["data_wait_share"]) <= 1 for r in steps)
    metrics = json.loads((reference / "test" / "metrics.json").read_text())
    assert metrics["videos"] == metrics["expected_videos"] == CLASSES * 3 and metrics["views"] == 6
    assert 0 <= metrics["top1"] <= 100  # 48 steps; beating chance: test_finetune_beats_chance
    with (reference / "test" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == CLASSES * 3 and len({r["video"] for r in rows}) == len(rows)
    assert all(int(r["views"]) == 6 for r in rows)


def test_finetune_beats_chance(work):
    """~150 optimizer steps from the pre-trained checkpoint: clearly above chance (25 %)."""
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["optim"] |= {"epochs": 12, "base_lr": 0.032}  # peak lr 1e-3 at total batch 8
    cfg["tracking"]["enabled"] = False
    (work / "run_long.yaml").write_text(yaml.safe_dump(cfg))
    _run(FAR + ["train", "--config", "run_long.yaml", "--out", "long"], work, timeout=900)
    metrics = json.loads((work / "long" / "test" / "metrics.json").read_text())
    assert metrics["top1"] > 100.0 / CLASSES + 15, metrics


def test_same_seed_same_metrics_and_unreachable_tracking(work, reference):
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["tracking"]["uri"] = "http://127.0.0.1:9"  # nothing listens there
    (work / "run_dead_store.yaml").write_text(yaml.safe_dump(cfg))
    r = _run(FAR + ["train", "--config", "run_dead_store.yaml", "--out", "again"], work)
    assert r.stderr.count("unreachable") == 1, r.stderr[-3000:]  # said once, training went on
    assert _results(work / "again") == _results(reference)


def test_sigkill_then_resume_matches_uninterrupted(work, reference):
    out = work / "killed"
    proc = subprocess.Popen(FAR + ["train", "--config", "run.yaml", "--out", "killed"], cwd=work, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    ckpts = out / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any((p / "COMPLETE").is_file() for p in ckpts.glob("ckpt-e0001-*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "train.json").exists()
    # a half-written checkpoint of the crash must never be picked up
    fake = ckpts / "ckpt-e0003-s00000012"
    fake.mkdir()
    (fake / "trainer.json").write_text("{ not json")
    _run(FAR + ["train", "--config", "run.yaml", "--out", "killed"], work)
    info = json.loads((out / "train.json").read_text())
    assert info["resumed_from"] is not None and info["resumed_from"][0] >= 1
    assert _results(out) == _results(reference)
    # The per-step rows of the killed attempt after its checkpoint are not listed twice.
    same = lambda rows: [(r["step"], r["loss"], r["lr"]) for r in rows]  # noqa: E731
    assert same(_steps(out)) == same(_steps(reference))
    assert len(list(ckpts.glob("ckpt-*"))) == 2  # keep_last
    # Killed after an epoch's metrics were written but before its checkpoint: the redone
    # epoch must not be listed twice.
    (out / "train.json").unlink()
    shutil.rmtree(sorted(ckpts.glob("ckpt-*"))[-1])
    _run(FAR + ["train", "--config", "run.yaml", "--out", "killed"], work)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_mlflow_run_holds_params_metrics_artifacts(work, reference):
    from mlflow.tracking import MlflowClient

    info = json.loads((reference / "train.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    p = run.data.params
    assert p["optim.base_lr"] == "0.1" and p["model.attention"] == "head_split_sparse_dense" and p["seed"] == "3"
    assert p["batch.resolved_accumulation"] == "2" and "model.gflops_per_view" in p
    t = run.data.tags
    assert t["seed"] == "3" and t["cell"] == "k400/videomae/vit_s" and len(t["data_version"]) == 12
    assert len(t["git_commit"]) == 40  # the tests run inside the repository
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == [1, 2, 3, 4]
    assert run.data.metrics["test/top1"] == pytest.approx(json.loads((reference / "test/metrics.json").read_text())["top1"])
    assert "val/top1" in run.data.metrics and "train/clips_per_s" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert {"config.yaml", "history.csv", "train.json", "test/metrics.json", "test/predictions.csv"} <= arts
    assert run.info.status == "FINISHED" and run.info.run_name == "ref"
    assert "train/data_wait_share" in run.data.metrics
    # The experiment carries its description (what MLflow's UI shows above the runs).
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.note.content"] == "far's engine test: a tiny FAR on synthetic K400"


def test_two_rank_torchrun_train_and_test_count_every_video_once(work):
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["optim"]["epochs"] = 1
    cfg["test"]["run_at_end"] = False
    cfg["tracking"]["enabled"] = False
    (work / "run2.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
                "-m", "far.cli"]
    _run(torchrun + ["train", "--config", "run2.yaml", "--out", "ddp"], work, timeout=300)
    info = json.loads((work / "ddp" / "train.json").read_text())
    assert info["world_size"] == 2 and info["batch"] == {"total": 8, "micro": 4, "accumulation": 1}
    # 11 videos x 6 views = 66 items over 2 ranks; 11 is odd so shards of videos are uneven
    _run(torchrun + ["test", "--config", "run2.yaml", "--checkpoint", "ddp/model.pth", "--out", "ddp/test",
                     "--max-videos", "11"], work, timeout=300)
    m = json.loads((work / "ddp" / "test" / "metrics.json").read_text())
    assert m["videos"] == m["expected_videos"] == 11 and m["world_size"] == 2
    assert m["videos_with_missing_views"] == 0
    with (work / "ddp" / "test" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 and len({r["video"] for r in rows}) == 11
    # the same test on one rank gives the same numbers
    _run(FAR + ["test", "--config", "run2.yaml", "--checkpoint", "ddp/model.pth", "--out", "ddp/test1",
                "--max-videos", "11"], work)
    m1 = json.loads((work / "ddp" / "test1" / "metrics.json").read_text())
    assert (m1["top1"], m1["top5"], m1["videos"]) == (m["top1"], m["top5"], m["videos"])


def test_corrupt_val_video_is_reported(work, reference):
    bad_root = work / "corrupt"
    if bad_root.exists():
        shutil.rmtree(bad_root)
    shutil.copytree(work / "prep", bad_root)
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    first = (bad_root / "val.csv").read_text().splitlines()[0].rsplit(" ", 1)[0]
    broken = work / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    lines = (bad_root / "val.csv").read_text().splitlines()
    lines[0] = f"{broken} {lines[0].rsplit(' ', 1)[1]}"
    (bad_root / "val.csv").write_text("\n".join(lines) + "\n")
    cfg["data"]["val_list"] = str(bad_root / "val.csv")
    cfg["tracking"]["enabled"] = False
    (work / "run_corrupt.yaml").write_text(yaml.safe_dump(cfg))
    _run(FAR + ["test", "--config", "run_corrupt.yaml", "--checkpoint", "ref/model.pth", "--out", "corrupt_test"],
         work)
    m = json.loads((work / "corrupt_test" / "metrics.json").read_text())
    assert [u["path"] for u in m["unreadable"]] == [str(broken)]
    assert m["videos"] == m["expected_videos"] - 1
    assert first  # the replaced entry was a real video


def test_bad_config_refused_naming_the_field(work):
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["optim"]["layer_decay"] = 1.5
    (work / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = _run(FAR + ["train", "--config", "bad.yaml", "--out", "bad"], work, check=False)
    assert r.returncode == 2 and "optim.layer_decay" in r.stderr
    assert not (work / "bad" / "checkpoints").exists()


def test_sigterm_saves_a_checkpoint_and_exits_143(work, reference):
    out = work / "preempted"
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["tracking"]["enabled"] = False
    (work / "run_term.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(FAR + ["train", "--config", "run_term.yaml", "--out", "preempted"], cwd=work, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "config.yaml").is_file():  # set-up done: training has started
            break
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    ckpts = sorted((out / "checkpoints").glob("ckpt-*"))
    assert ckpts and (ckpts[-1] / "COMPLETE").is_file()
    state = json.loads((ckpts[-1] / "trainer.json").read_text())
    assert state["global_step"] > 0 and not (out / "train.json").exists()
    _run(FAR + ["train", "--config", "run_term.yaml", "--out", "preempted"], work)
    info = json.loads((out / "train.json").read_text())
    assert info["resumed_from"] == [state["epoch"], state["step_in_epoch"]] and info["steps"] == 48
    # The interrupted epoch's loss averages all its 12 x 2 micro-batches, not only the resumed ones.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss_batches"] for r in rows] == [24] * 4


def _full_recipe(work: Path, name: str) -> str:
    """The run config with Table 1's augmentation on: Mixup 0.8, CutMix 1.0, RandAugment,
    random erasing, repeated augmentation (2 copies)."""
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["data"] |= {"randaug_magnitude": 9, "reprob": 0.25, "num_sample": 2}
    cfg["augment"] = {"mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}
    cfg["optim"]["epochs"] = 1
    cfg["test"]["run_at_end"] = False
    cfg["tracking"]["enabled"] = False
    (work / name).write_text(yaml.safe_dump(cfg))
    return name


def test_full_recipe_same_seed_gives_byte_identical_model_one_and_two_ranks(work):
    """Mixup/CutMix draw from numpy's global RNG in the main process: it must be seeded."""
    cfg = _full_recipe(work, "run_full.yaml")
    for out in ("full_a", "full_b"):
        _run(FAR + ["train", "--config", cfg, "--out", out], work)
    assert (work / "full_a" / "model.pth").read_bytes() == (work / "full_b" / "model.pth").read_bytes()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29733",
                "-m", "far.cli"]
    for out in ("full_ddp_a", "full_ddp_b"):
        _run(torchrun + ["train", "--config", cfg, "--out", out], work, timeout=300)
    assert (work / "full_ddp_a" / "model.pth").read_bytes() == (work / "full_ddp_b" / "model.pth").read_bytes()


def test_compiled_training_keeps_plain_keys_and_resumes_exactly(work):
    """compile.enabled: the model is compiled in place inside the DeepSpeed engine (here with
    the aot_eager backend: the graph capture without code generation; inductor is checked
    on the GPU, benchmarks/results/train_pace.md). model.pth has the plain model's keys and
    loads into far test; stopping after epoch 1 and resuming ends byte-identical."""
    import torch

    cfg = _full_recipe(work, "run_compiled.yaml")
    full = yaml.safe_load((work / cfg).read_text())
    full["optim"]["epochs"] = 2
    full["compile"] = {"enabled": True, "backend": "aot_eager"}
    full["test"]["run_at_end"] = True
    (work / cfg).write_text(yaml.safe_dump(full))
    _run(FAR + ["train", "--config", cfg, "--out", "compiled"], work, timeout=400)
    _run(FAR + ["train", "--config", cfg, "--out", "compiled_resumed", "--stop-after-epoch", "1"], work, timeout=400)
    _run(FAR + ["train", "--config", cfg, "--out", "compiled_resumed"], work, timeout=400)
    a = (work / "compiled" / "model.pth").read_bytes()
    assert a == (work / "compiled_resumed" / "model.pth").read_bytes()
    state = torch.load(work / "compiled" / "model.pth", weights_only=True)
    keys = list(state["model"]) if "model" in state else list(state)
    assert keys and not any("_orig_mod" in k for k in keys)
    from far.models import build_model, model_config

    assert sorted(keys) == sorted(build_model(model_config(full["model"])).state_dict())
    assert json.loads((work / "compiled" / "test" / "metrics.json").read_text())["videos"] == CLASSES * 3


def test_an_abandoned_attempts_mlflow_run_is_marked_killed(tmp_path):
    """A job killed before its first checkpoint leaves its MLflow run RUNNING; the next
    attempt in the same folder, which starts a new run, marks it KILLED."""
    from mlflow.tracking import MlflowClient

    from far.engine.tracking import make_tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = make_tracker(True, uri, "exp", "job", None, True, out=tmp_path / "run")
    second = make_tracker(True, uri, "exp", "job", None, True, out=tmp_path / "run")
    second.end("FINISHED")
    client = MlflowClient(tracking_uri=uri)
    old = client.get_run(first.run_id)
    assert old.info.status == "KILLED" and old.data.tags["far.superseded_by"] == second.run_id
    assert client.get_run(second.run_id).info.status == "FINISHED"
    # resuming the same run (its id from the checkpoint) leaves it alone
    again = make_tracker(True, uri, "exp", "job", second.run_id, True, out=tmp_path / "run")
    assert again.run_id == second.run_id and client.get_run(second.run_id).info.status == "RUNNING"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights: skipped elsewhere, with the reason)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_while_checkpointing_is_named(work, small_disk):
    cfg = yaml.safe_load((work / "run.yaml").read_text())
    cfg["tracking"]["enabled"] = False
    (work / "run_disk.yaml").write_text(yaml.safe_dump(cfg))
    r = _run(FAR + ["train", "--config", "run_disk.yaml", "--out", str(small_disk / "out")], work, check=False)
    assert r.returncode != 0
    assert "no space left on device" in r.stderr and str(small_disk / "out" / "checkpoints") in r.stderr, r.stderr[-3000:]
    assert "MiB free" in r.stderr and "Traceback" not in r.stderr
    assert not list((small_disk / "out" / "checkpoints").glob("*ckpt-*"))  # the partial one is gone
