"""``far data check``: released fine-tuned models against the user's validation data.

End to end without the internet: a checkpoint in VideoMAE's official fine-tuned layout
(``{"module": state_dict}`` with its head) is served by a local HTTP server, fetched
through a ``kind: finetuned`` registry entry, tested on a tiny synthetic SSv2 with
``far test``'s multi-view code path and compared with a stated "published" number. Its
head predicts one class whatever the input, so the measured top-1 is known exactly (half
of the videos are of that class). Plus the verdict on constructed numbers, the
validation-set-size check, the registry's new fields, and the Hugging Face fine-tuned
layout through the same loader.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from far.checkpoints import CheckpointError, load_checkpoint, to_format
from far.engine.data_check import EXIT_FAIL, check_set_size, judge, sampling_error
from far.fetch import RegistryError, load_registry
from far.models import build_model

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAR = [sys.executable, "-m", "far.cli"]
TINY = dict(backbone="vit_tiny_cpu", depth=1, drop_path=0.0, num_classes=2, variant="baseline")
DRIVE_ID = "released_finetuned_id"


# ---- the registry ---------------------------------------------------------------------------
def test_project_registry_lists_the_released_finetuned_models() -> None:
    reg = load_registry(REPO / "params" / "checkpoints.yaml")
    # (name, published top-1, views) as in VideoMAE's MODEL_ZOO.md and issue 20's table
    for name, top1, views in [("videomae_vit_s_ssv2_ft", 66.8, (2, 3)), ("videomae_vit_b_ssv2_800ep_ft", 69.6, (2, 3)),
                              ("videomae_vit_b_ssv2_ft", 70.8, (2, 3)), ("videomae_vit_s_k400_ft", 79.0, (5, 3)),
                              ("videomae_vit_b_k400_ft", 80.0, (5, 3))]:
        spec = reg[name]
        assert spec.kind == "finetuned" and spec.format == "finetuned" and spec.sources[0].kind == "gdrive"
        assert spec.published.top1 == top1 and (spec.published.clips, spec.published.crops) == views
        assert spec.published.top5 > top1 and spec.sha256 is None  # no hash is published for these files
    hf = {s.sources[0].repo for s in reg.values() if s.kind == "finetuned" and s.format == "hf_videomae"}
    assert hf == {f"MCG-NJU/videomae-{b}-finetuned-{d}" for b in ("small", "base") for d in ("kinetics", "ssv2")}
    assert all(s.published is None for s in reg.values() if s.kind == "pretrained")


def _ft_entry(**published: object) -> dict:
    pub = {"dataset": "ssv2", "top1": 50.0, "top5": 100.0, "clips": 2, "crops": 3, "source": "stated by the test"}
    return {"name": "tiny_ft", "kind": "finetuned", "method": "videomae", "backbone": "vit_s",
            "pretrain_dataset": "ssv2", "format": "finetuned", "filename": "tiny_ft.pth",
            "sources": [{"kind": "gdrive", "id": DRIVE_ID}], "sha256": None, "size": None, "published": pub | published}


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda e: e.pop("published"), "(tiny_ft).published: required for kind finetuned"),
    (lambda e: e.update(kind="pretrained"), "(tiny_ft).published: required for kind finetuned and only there"),
    (lambda e: e["published"].update(top1=101), "(tiny_ft).published.top1: must be a percentage"),
    (lambda e: e["published"].update(top5=40.0), "(tiny_ft).published.top5"),
    (lambda e: e["published"].update(crops=2), "(tiny_ft).published.crops"),
    (lambda e: e["published"].pop("source"), "missing field(s) ['source']"),
    (lambda e: e.update(kind="best"), "(tiny_ft).kind: must be one of pretrained, finetuned"),
    (lambda e: e.update(format="videomae_pretrain"), "(tiny_ft).format: a fine-tuned entry"),
])
def test_registry_errors_name_the_field(tmp_path: Path, mutate, needle: str) -> None:
    entry = _ft_entry()
    mutate(entry)
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": [entry]}))
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


# ---- the verdict ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("measured", "status", "words"), [
    (66.3, "pass", "your data reproduce the released model within 1 points"),
    (67.8, "pass", "within 1 points"),
    (65.0, "borderline", "borderline: measured 65.00 vs published 66.80 (-1.80 points)"),
    (63.8, "borderline", "borderline"),  # exactly 3 below: not more than fail_below
    (63.7, "fail", "do not train yet: the released model scores 63.70 on your data, 3.10 points below"),
    (69.0, "borderline", "above the published 66.80"),
    (float("nan"), "fail", "do not train yet: no video could be tested"),
])
def test_verdict(measured: float, status: str, words: str) -> None:
    v = judge(66.8, measured, tolerance=1.0, fail_below=3.0, dataset="ssv2", num_classes=174)
    assert v.status == status and words in v.text, v.text
    assert v.exit_status == (EXIT_FAIL if status == "fail" else 0)
    assert (v.causes == []) == (status == "pass")
    if status == "fail" and math.isfinite(measured):
        assert any("SSv2 conversion" in c for c in v.causes) and any("--data_set" in c for c in v.causes)


def test_verdict_puts_the_evidence_first() -> None:
    size = check_set_size("k400", 19796, 19000)
    v = judge(80.0, 0.3, dataset="k400", num_classes=400, set_size=size, unreadable=4, missing=796)
    assert v.status == "fail"
    assert v.causes[0].startswith("near chance (chance is 0.25 %): the label mapping")
    assert v.causes[1].startswith("the K400 copy: 19,000 videos listed of 19,796 annotated")
    assert v.causes[2].startswith("corrupt or missing files: 4 unreadable at test time, 796 missing")
    assert any("short side 320" in c for c in v.causes)
    with pytest.raises(ValueError):
        judge(80.0, 79.0, tolerance=2.0, fail_below=1.0)


# ---- the validation-set size -------------------------------------------------------------------
def test_set_size_names_the_matching_copy() -> None:
    for n, words in [(19796, "MMAction"), (19761, "2019"), (17747, "Kinetics site serves now")]:
        r = check_set_size("k400", n, n)
        assert r["ok"] and words in r["matches"] and r["text"].startswith(f"{n:,} videos listed: matches")
    r = check_set_size("k400", None, 19700)
    assert not r["ok"] and r["matches"] is None
    assert "matches none of the known sizes (19,796, 19,761, 17,747); nearest 19,761" in r["text"] and "-61" in r["text"]
    assert check_set_size("ssv2", 24777, 24777)["ok"]
    r = check_set_size("ssv2", 24777, 24770)
    assert not r["ok"] and "7 videos are missing or unusable" in r["text"]
    assert check_set_size("ssv2", 4, 4, known=((4, "the synthetic set"),))["matches"] == "the synthetic set"
    assert sampling_error(70.0, 24777) == pytest.approx(0.291, abs=1e-3)


# ---- loading: official and Hugging Face fine-tuned layouts, complete or refused ---------------
def test_hf_finetuned_layout_loads_through_the_same_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model(**TINY).eval()
    hf = to_format(src.state_dict(), "hf_videomae")  # the names VideoMAEForVideoClassification saves
    for key in ("videomae.embeddings.patch_embeddings.projection.weight",
                "videomae.encoder.layer.0.attention.attention.query.weight",
                "videomae.encoder.layer.0.attention.attention.q_bias", "videomae.encoder.layer.0.output.dense.weight",
                "fc_norm.weight", "classifier.weight", "classifier.bias"):
        assert key in hf, key
    torch.save(hf, tmp_path / "pytorch_model.bin")
    dst = build_model(**TINY).eval()
    report = load_checkpoint(dst, tmp_path / "pytorch_model.bin", complete=True)
    assert report.format == "hf_videomae" and not report.initialised
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    # an HF file without its classifier is a pre-training to the loader, but not a released model
    torch.save({k: v for k, v in hf.items() if not k.startswith("classifier.")}, tmp_path / "headless.bin")
    with pytest.raises(CheckpointError, match=r"missing 2 keys.*head\.(weight|bias).*complete model is required"):
        load_checkpoint(build_model(**TINY), tmp_path / "headless.bin", complete=True)
    assert "head.weight" in load_checkpoint(build_model(**TINY), tmp_path / "headless.bin").initialised


def test_official_finetuned_layout_is_complete_or_refused(tmp_path: Path) -> None:
    src = build_model(**TINY)
    state = src.state_dict()
    torch.save({"module": state}, tmp_path / "ft.pth")
    assert load_checkpoint(build_model(**TINY), tmp_path / "ft.pth", complete=True).format == "finetuned"
    torch.save({"module": {k: v for k, v in state.items() if not k.startswith("fc_norm.")}}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"fc_norm\.weight"):
        load_checkpoint(build_model(**TINY), tmp_path / "cut.pth", complete=True)


# ---- end to end: served, fetched, tested, compared -------------------------------------------------
def _constant_checkpoint() -> bytes:
    """{"module": state_dict} of the tiny model whose head always says class 0."""
    torch.manual_seed(0)
    state = build_model(**TINY).state_dict()
    state["head.weight"] = torch.zeros_like(state["head.weight"])
    state["head.bias"] = torch.tensor([5.0, 0.0])
    buf = io.BytesIO()
    torch.save({"module": state, "epoch": 39}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served() -> str:
    body = _constant_checkpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.startswith("/gd/download?") and f"id={DRIVE_ID}" in self.path:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/gd"
    httpd.shutdown()
    httpd.server_close()


def _far(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(FAR + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_released_model_fetched_tested_and_compared(tmp_path: Path, served: str) -> None:
    from far.data.cli import main as data_main

    assert data_main(["synth", "--kind", "ssv2", "--out", str(tmp_path / "raw"), "--classes", "2",
                      "--videos-per-class-train", "1", "--videos-per-class-val", "2", "--size", "64x80",
                      "--frames", "16", "--quiet"]) == 0
    assert data_main(["prepare", "--dataset", "ssv2", "--root", str(tmp_path / "raw"), "--out",
                      str(tmp_path / "prep"), "--quiet"]) == 0
    reg = tmp_path / "checkpoints.yaml"
    reg.write_text(yaml.safe_dump({"version": 1, "checkpoints": [_ft_entry()]}))
    env = ENV | {"FAR_GDRIVE_URL": served}
    common = ["--prepared", "prep", "--model", "{backbone: vit_tiny_cpu, depth: 1}", "--data", "{short_side: 64}",
              "--workers", "0", "--no-progress"]
    r = _far(["data", "check", "--checkpoint", "tiny_ft", "--registry", str(reg), "--dest", "ckpt",
              "--report", "reports/data_check.md", "--known-size", "4"] + common, tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ckpt" / "tiny_ft.pth").read_bytes() == _constant_checkpoint()  # fetched from the server
    check = json.loads((tmp_path / "reports" / "data_check.json").read_text())["checks"][0]
    assert check["measured"]["top1"] == 50.0 and check["measured"]["videos"] == 4  # 2 of 4 videos are class 0
    assert check["expected"] == {"top1": 50.0, "top5": 100.0} and check["difference"]["top1"] == 0.0
    assert check["views"] == "2x3" and check["checkpoint"]["format"] == "finetuned"
    assert check["set_size"]["ok"] and check["unreadable"] == [] and check["verdict"]["status"] == "pass"
    md = (tmp_path / "reports" / "data_check.md").read_text()
    assert "PASS: your data reproduce the released model within 1 points" in md
    assert (tmp_path / "reports" / "data_check" / "tiny_ft" / "test" / "metrics.json").is_file()

    # The same file by path with a published number it cannot reach: fails, and the exit status says so.
    r = _far(["data", "check", "--checkpoint", "ckpt/tiny_ft.pth", "--published-top1", "80",
              "--report", "reports/fail.md"] + common, tmp_path, env)
    assert r.returncode == EXIT_FAIL, r.stdout + r.stderr
    assert "FAIL: do not train yet" in r.stdout
    md = (tmp_path / "reports" / "fail.md").read_text()
    assert "30.00 points below its published 80.00" in md and "matches none of the known sizes (24,777)" in md
    assert "Likely causes" in md and "the validation set: 4 videos listed" in md
